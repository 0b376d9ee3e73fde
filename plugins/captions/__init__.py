"""Live captions: each speaker's voice from the room, segmented by voice activity and recognised
in worker processes (``worker.py`` says why not threads), posted to the core as caption lines that every adapter shows.

The stage turns captions on per Space (``captions`` command on every platform, core-owned); this
plugin follows that switch, and picks up live captioned Spaces again after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from core import events as ev
from core.errors import Invalid
from plugins.api import PluginContext
from plugins.captions.engine import recognizer_factory
from plugins.captions.worker import RecognitionFailed, WorkerConfig, WorkerGone, WorkerPool

BATCH_TICKS = 10  # 200 ms of audio per hand-off to a worker process
QUIET_TICKS = 60  # a speaker absent this long (1.2 s) is treated as having stopped talking
MAX_BACKLOG = 50  # batches (10 s) a slow recogniser may lag before old audio is dropped


class CaptionsConfig(BaseModel):
    """``[plugins.captions]`` in the config file."""

    model_config = ConfigDict(extra="forbid")
    backend: Literal["pocketsphinx", "vosk", "faster-whisper"] = "pocketsphinx"
    model_path: str = ""  # a local model directory (required for vosk and faster-whisper)
    language: str = "en"
    max_utterance_s: float = Field(8.0, ge=1.0, le=30.0)
    workers: int = Field(0, ge=0, le=64)  # recognition processes; 0 = one per core


@dataclass
class _Speaker:
    batch: list[npt.NDArray[np.int16]] = field(default_factory=list)
    batch_seq: int = 0
    last_heard: int = 0
    queue: asyncio.Queue[tuple[int, list[npt.NDArray[np.int16]]] | None] = field(
        default_factory=lambda: asyncio.Queue(MAX_BACKLOG))
    worker: asyncio.Task[None] | None = None
    dropped: int = 0


class CaptionsPlugin:
    name = "captions"
    version = "1.0.0"

    def __init__(self) -> None:
        self.ctx: PluginContext | None = None
        self.config = CaptionsConfig()
        self.pool: WorkerPool | None = None
        self.rooms: dict[str, asyncio.Task[None]] = {}

    async def setup(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self.config = CaptionsConfig.model_validate(ctx.config)
        cfg = self.config
        recognizer_factory(cfg.backend, cfg.model_path, cfg.language)  # the back-end is installed
        self.pool = WorkerPool(WorkerConfig(cfg.backend, cfg.model_path, cfg.language, cfg.max_utterance_s),
                               cfg.workers or os.cpu_count() or 1)
        if cfg.model_path:  # a model of one's own: prove it loads before the plugin counts as set up
            try:
                await self.pool.start()
            except WorkerGone as e:
                await self.pool.close()
                raise Invalid("captions.backend_unavailable", detail=str(e)) from None
        ctx.subscribe(self.on_event, "captions.toggled", "space.ended", "space.started")
        for space in await ctx.queries.live_spaces():
            if space.captions_enabled and await ctx.enabled_for(space.id):
                self._start(space.id)

    async def teardown(self) -> None:
        for task in list(self.rooms.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.rooms.clear()
        if self.pool is not None:
            await self.pool.close()

    async def on_event(self, e: ev.Event) -> None:
        if isinstance(e, ev.CaptionsToggled):
            if e.enabled:
                self._start(e.space_id)
            else:
                await self._stop(e.space_id)
        elif isinstance(e, ev.SpaceEnded):
            await self._stop(e.space_id)

    def _start(self, space_id: str) -> None:
        assert self.ctx is not None
        if space_id not in self.rooms and self.ctx.audio is not None:
            self.rooms[space_id] = self.ctx.spawn(self._caption(space_id), f"captions for {space_id}")
            self.ctx.spawn(self._warm(), "starting a captions worker")

    async def _warm(self) -> None:
        """A worker takes a moment to load its model: start it before the first words arrive."""
        assert self.pool is not None
        try:
            await self.pool.start()
        except WorkerGone as e:
            assert self.ctx is not None
            self.ctx.log.warning("captions: %s", e)

    async def _stop(self, space_id: str) -> None:
        task = self.rooms.pop(space_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _caption(self, space_id: str) -> None:
        """Read the room tick by tick; each speaker's audio goes to their own worker in batches."""
        assert self.ctx is not None
        speakers: dict[str, _Speaker] = {}
        try:
            async for tick in self.ctx.ticks(space_id):
                for pid, pcm in tick.speakers.items():
                    sp = speakers.get(pid)
                    if sp is None:
                        sp = speakers[pid] = _Speaker(batch_seq=tick.seq)
                        sp.worker = asyncio.ensure_future(self._work(space_id, pid, sp))
                    if not sp.batch:
                        sp.batch_seq = tick.seq
                    elif sp.batch_seq + len(sp.batch) != tick.seq:  # fill a short gap with silence
                        gap = tick.seq - sp.batch_seq - len(sp.batch)
                        if gap <= QUIET_TICKS:
                            sp.batch.extend(np.zeros_like(pcm) for _ in range(gap))
                        else:
                            self._send(sp)
                            sp.batch_seq = tick.seq
                    sp.batch.append(pcm)
                    sp.last_heard = tick.seq
                    if len(sp.batch) >= BATCH_TICKS:
                        self._send(sp)
                for pid, sp in speakers.items():
                    quiet = tick.seq - sp.last_heard
                    if pid not in tick.speakers and 0 < quiet <= QUIET_TICKS:
                        if not sp.batch:
                            sp.batch_seq = tick.seq
                        sp.batch.append(np.zeros(960, dtype=np.int16))  # silence lets the segmenter end a line
                        if len(sp.batch) >= BATCH_TICKS or quiet == QUIET_TICKS:
                            self._send(sp)
        finally:
            workers = [sp.worker for sp in speakers.values() if sp.worker is not None]
            for w in workers:
                w.cancel()
            if workers:  # a worker cut off while posting a caption must unwind before the database goes
                await asyncio.wait(workers, timeout=5.0)

    def _send(self, sp: _Speaker) -> None:
        if not sp.batch:
            return
        item = (sp.batch_seq, sp.batch)
        sp.batch = []
        if sp.queue.full():  # the recogniser cannot keep up: lose old audio, never memory
            with contextlib.suppress(asyncio.QueueEmpty):
                sp.queue.get_nowait()
            sp.dropped += 1
            if sp.dropped in (1, 100) and self.ctx is not None:
                self.ctx.log.warning("captions are behind; %d batches of audio skipped", sp.dropped)
        sp.queue.put_nowait(item)

    async def _work(self, space_id: str, pid: str, sp: _Speaker) -> None:
        assert self.ctx is not None and self.pool is not None
        key = f"{space_id}/{pid}"
        try:
            while True:
                item = await sp.queue.get()
                if item is None:
                    return
                seq, frames = item
                try:
                    lines = await self.pool.feed(key, seq, frames)
                except (WorkerGone, RecognitionFailed) as e:  # this batch is lost; the next one tries again
                    self.ctx.log.warning("captions for %s: %s", pid, e)
                    continue
                for line in lines:
                    await self.ctx.actions.post_caption(space_id, pid, line.text, line.start_s, line.end_s)
        finally:
            await asyncio.shield(self.pool.forget(key))
