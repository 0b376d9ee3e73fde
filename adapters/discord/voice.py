"""The room's mix played on a Discord Stage, as the room's own Opus packets (no re-encode).

discord.py's ``AudioPlayer`` is a thread that asks its source for one 20 ms frame at a time and
stops for good when it gets ``b""``. The room produces packets on the event loop. Between them is a
small bounded queue: a late packet is replaced by Opus silence (so playback never stops), and if
the player falls behind the oldest packets are dropped, so latency stays at a few frames. What it
plays is the room's mix without the Stage's own speakers when any are mixed (``voice_rx.StageBridge``);
receiving their voice is ``voice_rx.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
from collections.abc import AsyncIterator

import discord

log = logging.getLogger(__name__)

OPUS_SILENCE = b"\xf8\xff\xfe"  # one 20 ms Opus frame of silence
DEPTH = 5  # frames (100 ms) kept for the player; more means Discord hears the room later


class RoomAudioSource(discord.AudioSource):
    def __init__(self, depth: int = DEPTH) -> None:
        self._q: queue.Queue[bytes] = queue.Queue(maxsize=depth)
        self.played = 0
        self.silent = 0
        self.dropped = 0
        self._closed = False

    def push(self, packet: bytes) -> None:
        """From the event loop: never blocks; drops the oldest frame when the player is behind."""
        while True:
            try:
                self._q.put_nowait(packet)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._q.get_nowait()
                    self.dropped += 1

    def read(self) -> bytes:
        if self._closed:
            return b""
        try:
            packet = self._q.get_nowait()
        except queue.Empty:
            self.silent += 1
            return OPUS_SILENCE
        self.played += 1
        return packet

    def is_opus(self) -> bool:
        return True

    def close(self) -> None:
        self._closed = True

    def cleanup(self) -> None:
        self._closed = True


async def feed(source: RoomAudioSource, packets: AsyncIterator[tuple[int, bytes]]) -> None:
    """Copy the room's packets into the player's queue until the room closes or we are cancelled."""
    try:
        async for _, packet in packets:
            source.push(packet)
    finally:
        source.close()
        aclose = getattr(packets, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(aclose())
