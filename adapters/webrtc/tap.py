"""The AudioTap port (core/ports.py): a Space's room audio for captions, recording and Discord.

Consumers may run in any process: they read the room here when this process owns the Space
(always, on one process), else stream it from the owner (``InternalLink.ticks``), follow the Space
when it moves, and end with the Space."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from adapters.webrtc.placement import Node
from adapters.webrtc.room import OpusEncoder, Room
from core.model.space import SpaceState
from core.ports import FRAME_SAMPLES, AudioFrame, AudioTick

if TYPE_CHECKING:
    from adapters.webrtc.router import Rooms

WATCH_EVERY_S = 1.0  # how long to wait before asking again who serves a Space nobody serves yet


class RoomAudio:
    """``AudioTap`` over the media router's rooms, here or in the process that owns the Space."""

    def __init__(self, rooms: Rooms) -> None:
        self.rooms = rooms
        self._tap_ids = itertools.count()

    async def _sources(self, space_id: str) -> AsyncIterator[Room | Node]:
        """Where the Space's audio is, for as long as the Space lives: this process's room (it owns
        the Space, or takes it when nobody does and it runs media), or the process that owns it."""
        rooms, placement = self.rooms, self.rooms.placement
        while not rooms.closed:
            if placement.owns(space_id):
                room = rooms.room(space_id)
                room.start()
                yield room
            else:
                owner = await placement.owner(space_id)
                if owner is None and placement.media:
                    owner = await placement.claim(space_id)
                    if owner.id == placement.node.id:
                        continue  # ours now: the next round reads it here
                if owner is not None and owner.id != placement.node.id:
                    yield owner
                    await asyncio.sleep(0.5)  # it went away: give its lease time to run out
                else:
                    await asyncio.sleep(WATCH_EVERY_S)  # nobody serves it yet
            if rooms.closed:
                return
            view = await rooms.core.view(space_id)
            if view.space.state == SpaceState.ENDED:
                return

    async def ticks(self, space_id: str) -> AsyncIterator[AudioTick]:
        async for source in self._sources(space_id):
            if isinstance(source, Node):
                async for tick in self.rooms.link.ticks(source, space_id):
                    yield tick
                continue
            key = f"tap-{next(self._tap_ids)}"
            sub = source.tick_taps.subscribe(key)
            try:
                with contextlib.suppress(EOFError):
                    while True:
                        seq, mix, frames = await sub.next()
                        yield AudioTick(seq, mix, frames)
            finally:
                source.tick_taps.unsubscribe(key)  # a consumer that stops must not keep a queue filling

    async def mix(self, space_id: str) -> AsyncIterator[AudioFrame]:
        async for tick in self.ticks(space_id):
            yield AudioFrame(tick.seq, tick.mix)

    async def speakers(self, space_id: str) -> AsyncIterator[AudioFrame]:
        async for tick in self.ticks(space_id):
            for pid, pcm in tick.speakers.items():
                yield AudioFrame(tick.seq, pcm, speaker_id=pid)

    async def opus_packets(self, space_id: str) -> AsyncIterator[tuple[int, bytes]]:
        """The very packets listeners get (no re-encode) where the room is here, e.g. for Discord voice
        playback; from another process's room, its mix encoded here (one encode per consumer)."""
        async for source in self._sources(space_id):
            if isinstance(source, Node):
                encoder = OpusEncoder()
                async for tick in self.rooms.link.ticks(source, space_id):
                    for packet in encoder.encode(tick.mix, tick.seq):
                        yield tick.seq, bytes(packet)
                continue
            key = f"tap-{next(self._tap_ids)}"
            sub = source.packet_taps.subscribe(key)
            try:
                with contextlib.suppress(EOFError):
                    while True:
                        packet = await sub.next()
                        yield int(packet.pts) // FRAME_SAMPLES, bytes(packet)
            finally:
                source.packet_taps.unsubscribe(key)
