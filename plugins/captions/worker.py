"""Speech recognition in child processes, so it never holds the server's GIL.

PocketSphinx (and the other back-ends' Python bindings) keep the GIL while they decode: finishing an
utterance blocked the event loop for 250-330 ms when it ran in a thread, longer than the room's 60 ms
jitter buffer, so the room itself dropped audio (and captions got worse under load). Each worker is
a Python child running ``main()`` below, speaking a tiny framed protocol over its stdin/stdout;
it holds one ``SpeakerStream`` per speaker it is given and answers every request in order.

Frames: 4-byte big-endian length, then a pickle (both ends are this module: trusted).
Requests: ``("feed", pid, seq, pcm_bytes)``, ``("forget", pid)``. Replies: ``("ok", payload)`` or
``("error", text)``; the first message a worker sends is its readiness (the model loaded, or why not).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pickle
import struct
import sys
from collections import deque
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from plugins.captions.engine import Line, SpeakerStream, recognizer_factory

HEADER = struct.Struct("!I")
MAX_MESSAGE = 16 * 1024 * 1024
READY_TIMEOUT_S = 60.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerConfig:
    backend: str = "pocketsphinx"
    model_path: str = ""
    language: str = "en"
    max_utterance_s: float = 8.0


class WorkerGone(RuntimeError):
    """The worker process exited or broke the protocol; it is started again (its speakers afresh)."""


class RecognitionFailed(RuntimeError):
    """The worker is fine but could not do this request (its words say why)."""


# ---- child side -----------------------------------------------------------------------------------
def _read(stream: IO[bytes]) -> Any:
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (size,) = HEADER.unpack(head)
    return pickle.loads(stream.read(size))


def _write(stream: IO[bytes], message: Any) -> None:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(HEADER.pack(len(body)) + body)
    stream.flush()


def serve(config: WorkerConfig, inp: IO[bytes], out: IO[bytes]) -> None:
    """The worker's loop: until its parent closes stdin (or dies, which closes it too)."""
    try:
        make = recognizer_factory(config.backend, config.model_path, config.language)
        make()  # the model loads here, once, before the parent counts the worker as ready
    except Exception as e:
        where = f" from {config.model_path}" if config.model_path else ""
        _write(out, ("error", f"{config.backend} could not load its model{where}: "
                              f"{getattr(e, 'detail', None) or e}"))
        return
    _write(out, ("ok", None))
    streams: dict[str, SpeakerStream] = {}
    while (msg := _read(inp)) is not None:
        try:
            if msg[0] == "feed":
                _, pid, seq, pcm = msg
                stream = streams.get(pid)
                if stream is None:
                    stream = streams[pid] = SpeakerStream(make, max_utterance_s=config.max_utterance_s)
                frames = list(np.frombuffer(pcm, dtype=np.int16).reshape(-1, 960))
                lines = stream.feed(seq, frames)
                _write(out, ("ok", [(x.text, x.start_s, x.end_s) for x in lines]))
            elif msg[0] == "forget":
                streams.pop(msg[1], None)
                _write(out, ("ok", None))
            else:
                _write(out, ("error", f"unknown request {msg[0]!r}"))
        except Exception as e:
            _write(out, ("error", f"{type(e).__name__}: {e}"))


def main() -> None:
    serve(WorkerConfig(**json.loads(sys.argv[1])), sys.stdin.buffer, sys.stdout.buffer)


# ---- parent side ----------------------------------------------------------------------------------
class Worker:
    """One child process; requests are answered in order, so a FIFO of futures pairs them up."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.proc: asyncio.subprocess.Process | None = None
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.reader: asyncio.Task[None] | None = None
        self.speakers: set[str] = set()
        self.lock = asyncio.Lock()
        self.retry_at = 0.0  # after a crash, not restarted before this (loop time): no restart storm

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None and self.reader is not None \
            and not self.reader.done()

    async def start(self) -> None:
        cfg = json.dumps(self.config.__dict__)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from plugins.captions.worker import main; main()", cfg,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=MAX_MESSAGE)
        ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append(ready)
        self.reader = asyncio.create_task(self._read())
        try:
            await asyncio.wait_for(ready, READY_TIMEOUT_S)
        except BaseException:
            await self.close()
            raise

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        error: BaseException = WorkerGone("the captions worker exited")
        try:
            while True:
                head = await self.proc.stdout.readexactly(HEADER.size)
                (size,) = HEADER.unpack(head)
                if size > MAX_MESSAGE:
                    raise WorkerGone("the captions worker sent an oversized reply")
                kind, payload = pickle.loads(await self.proc.stdout.readexactly(size))
                fut = self.waiting.popleft()
                if fut.done():
                    continue
                if kind == "ok":
                    fut.set_result(payload)
                else:
                    fut.set_exception(RecognitionFailed(str(payload)))
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass
        except WorkerGone as e:
            error = e
        finally:
            while self.waiting:
                fut = self.waiting.popleft()
                if not fut.done():
                    fut.set_exception(error)

    async def call(self, *request: Any) -> Any:
        if not self.alive:
            raise WorkerGone("the captions worker is not running")
        assert self.proc is not None and self.proc.stdin is not None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        body = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        async with self.lock:  # frames of two requests must not interleave in the pipe
            self.waiting.append(fut)
            try:
                self.proc.stdin.write(HEADER.pack(len(body)) + body)
                await self.proc.stdin.drain()
            except (ConnectionError, RuntimeError) as e:
                raise WorkerGone(f"the captions worker is gone ({e})") from None
        return await fut

    async def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.stdin is not None and not proc.stdin.is_closing():
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 5.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader


class WorkerPool:
    """Speakers spread over ``size`` processes (a speaker stays on one, its stream lives there).

    Workers start on first use; one that dies is started again on the next batch, at most every
    ``RESTART_AFTER_S`` (batches in between are lost, not queued)."""

    RESTART_AFTER_S = 2.0

    def __init__(self, config: WorkerConfig, size: int) -> None:
        self.config = config
        self.workers = [Worker(config) for _ in range(max(1, size))]
        self.home: dict[str, Worker] = {}
        self.starting: dict[int, asyncio.Task[None]] = {}
        self.restarts = 0

    async def _ready(self, w: Worker) -> None:
        if w.alive:
            return
        key = id(w)
        task = self.starting.get(key)
        if task is None or task.done():
            loop = asyncio.get_running_loop()
            if w.proc is not None:  # it ran and died
                await w.close()
                self.restarts += 1
                w.retry_at = loop.time() + self.RESTART_AFTER_S
                log.warning("a captions worker exited; starting another")
            if loop.time() < w.retry_at:
                raise WorkerGone("the captions worker is restarting")
            task = self.starting[key] = asyncio.ensure_future(w.start())
        try:
            await asyncio.shield(task)
        except (WorkerGone, RecognitionFailed, TimeoutError, OSError) as e:
            w.retry_at = asyncio.get_running_loop().time() + self.RESTART_AFTER_S
            raise WorkerGone(f"the captions worker did not start: {e}") from None

    async def start(self) -> None:
        """Start the first worker now: proves the model loads where it will run (or says why not)."""
        await self._ready(self.workers[0])

    async def feed(self, pid: str, seq: int, frames: list[np.ndarray[Any, Any]]) -> list[Line]:
        w = self.home.get(pid)
        if w is None:
            w = min(self.workers, key=lambda x: len(x.speakers))
            self.home[pid] = w
            w.speakers.add(pid)
        await self._ready(w)
        pcm = np.concatenate(frames).astype(np.int16).tobytes()
        got = await w.call("feed", pid, seq, pcm)
        return [Line(t, s, e) for t, s, e in got]

    async def forget(self, pid: str) -> None:
        w = self.home.pop(pid, None)
        if w is not None:
            w.speakers.discard(pid)
            if w.alive:
                with contextlib.suppress(WorkerGone, RuntimeError):
                    await w.call("forget", pid)

    async def close(self) -> None:
        for task in self.starting.values():
            task.cancel()
        for w in self.workers:
            await w.close()
        self.home.clear()

