"""Relay rooms: listeners of a Space served by a media process that does not own it.

When the Space's owner holds its share of listeners (``placement.py`` says who decides and how), the
next ones are answered by another media process, a *relay*. It runs no mixer and no encoder: it
subscribes once to the owner's encoded packets (``/internal/media/<space>/packets``: the room's single
encode, 50 small frames a second) and hands each to its own listeners the way the owner's tick does
(``Room.deliver``: the same ``Outlet``s and native batch, the latest packet as a new listener's first
at connection). Speakers are never here: publishing goes to the owner, which mixes; a listener
promoted on stage offers again (``renegotiate``) and that offer goes to the owner.

The upstream is not the listeners' connection. When it drops (the owner restarts, a network blip)
the relay asks again who owns the Space and reconnects with backoff; its listeners stay connected
and hear the room again as soon as packets flow. If nobody owns the Space any more (its owner died
and the lease ran out) the relay takes it, as an offer would, and feeds its relay listeners from its
own room. A listener's RTP timestamps never go backwards across upstreams. A relay whose last
listener leaves closes its upstream; when the Space ends its listeners' connections are closed like
the owner's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from adapters.webrtc.internal import MediaMoved
from adapters.webrtc.room import MediaError, Room
from core.errors import Conflict
from core.model.space import SpaceState
from core.ports import FRAME_SAMPLES
from core.redis_support import Backoff

if TYPE_CHECKING:
    from adapters.webrtc.router import Rooms

log = logging.getLogger(__name__)
NOBODY: frozenset[str] = frozenset()  # a relay has no speakers: every participant gets the room's packets


class RelayRoom(Room):
    """A room without a mixer: its listeners get the packets ``upstream`` yields (one connection's
    worth per call; called again, with backoff, whenever one ends)."""

    def __init__(self, space_id: str, upstream: Callable[[], AsyncIterator[tuple[int, bytes]]],
                 **kwargs: Any) -> None:
        super().__init__(space_id, **kwargs)
        self.upstream = upstream
        self.connected = False  # packets are flowing from the owner now
        self.connections = 0  # upstream connections that delivered packets (each reconnect counts)
        self.received = 0
        self._offset = 0  # added to the owner's timestamps: a new owner starts again from 0
        self._last_out: int | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._pump(), name=f"relay:{self.space_id}")

    async def _pump(self) -> None:
        """Packets from upstream to the listeners, for as long as the relay lives. One log line when
        the upstream is lost and one when it is back, not one per try."""
        backoff = Backoff(0.1, 2.0)
        lost_at: float | None = None
        while True:
            fresh = True
            try:
                async for pts, payload in self.upstream():
                    if fresh:
                        fresh = False
                        self.connected = True
                        self.connections += 1
                        backoff.reset()
                        if lost_at is not None:
                            log.info("relay of %s: upstream back after %.1f s", self.space_id,
                                     time.monotonic() - lost_at)
                            lost_at = None
                        if self._last_out is not None and pts + self._offset <= self._last_out:
                            self._offset = self._last_out + FRAME_SAMPLES - pts
                    out = pts + self._offset
                    self._last_out = out
                    self.received += 1
                    self.deliver(payload, out, NOBODY)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # placement unreachable, a bad frame: the listeners wait, we retry
                log.debug("relay of %s: upstream failed: %s: %s", self.space_id, type(e).__name__, e)
            if lost_at is None:
                lost_at = time.monotonic()
                log.info("relay of %s: no packets from upstream; reconnecting with backoff (listeners stay)",
                         self.space_id)
            self.connected = False
            await backoff.wait()

    async def add_participant(self, pid: str, offer_sdp: str, publish: bool = False) -> str:
        return await super().add_participant(pid, offer_sdp, publish=False)


class Relays:
    """This process's relay rooms, one per Space it relays, and the offers they take."""

    def __init__(self, rooms: Rooms) -> None:
        self.rooms = rooms
        self.by_space: dict[str, RelayRoom] = {}
        self._tap_ids = itertools.count()

    def holds(self, space_id: str, pid: str) -> bool:
        relay = self.by_space.get(space_id)
        return relay is not None and pid in relay.participants

    def room(self, space_id: str) -> RelayRoom:
        relay = self.by_space.get(space_id)
        if relay is None:
            r = self.rooms
            relay = self.by_space[space_id] = RelayRoom(
                space_id, lambda: self._upstream(space_id), ice_servers=r.ice_servers, announce=r.announce,
                allowed=r.allowed)
            relay.start()  # packets flow before the first listener connects: its first packet is ready
        return relay

    async def offer(self, space_id: str, pid: str, sdp: str, limit: int) -> dict[str, Any]:
        """A listener the owner sent here: answered unless they are on stage (``MediaMoved``: the
        owner takes them) or this process already holds ``limit`` of the Space's listeners
        (``media.relay_full``: the owner picks again without us)."""
        view = await self.rooms.core.view(space_id)
        if view.space.state != SpaceState.LIVE:
            raise Conflict("space.ended" if view.space.state == SpaceState.ENDED else "space.not_live",
                           space_id=space_id)
        if pid in view.space.publishers():
            owner = await self.rooms.placement.owner(space_id)
            if owner is None:
                raise MediaError("media.unavailable", detail="nobody serves the Space's media yet")
            raise MediaMoved(owner)
        if not self.holds(space_id, pid) and self.rooms.share(space_id) >= limit:
            raise MediaError("media.relay_full", detail="this media process holds its share of the Space")
        try:
            with self.rooms.pending(space_id, pid):
                relay = self.room(space_id)
                own = self.rooms.rooms.get(space_id)
                if own is not None and pid in own.participants:  # this process owned them before: one connection
                    await own.remove_participant(pid)
                answer = await relay.add_participant(pid, sdp)
        finally:
            left = self.by_space.get(space_id)
            if left is not None and not left.participants and not self.rooms.pending_for(space_id):
                await self.close(space_id)  # the offer was refused (bad SDP): no upstream for nobody
        await self.rooms.placement.publish_load()
        return {"sdp": answer, "publish": False}

    async def leave(self, space_id: str, pid: str) -> None:
        """Their connection here ends; the last one out closes the upstream."""
        relay = self.by_space.get(space_id)
        if relay is None or pid not in relay.participants:
            return
        await relay.remove_participant(pid)
        if not relay.participants and not self.rooms.pending_for(space_id):
            await self.close(space_id)
        await self.rooms.placement.publish_load()

    async def close(self, space_id: str) -> None:
        relay = self.by_space.pop(space_id, None)
        if relay is not None:
            await relay.close()

    async def close_all(self) -> None:
        for space_id in list(self.by_space):
            await self.close(space_id)

    async def _upstream(self, space_id: str) -> AsyncIterator[tuple[int, bytes]]:
        """One connection to where the Space's encode is now: the owner's packet stream, or this
        process's own room when it owns the Space (it took it over when nobody served it)."""
        rooms, placement = self.rooms, self.rooms.placement
        owner = await placement.owner(space_id)
        if owner is None and placement.media:
            if (await rooms.core.view(space_id)).space.state != SpaceState.LIVE:
                return
            owner = await placement.claim(space_id)
        if owner is None:
            return
        if owner.id != placement.node.id:
            async for item in rooms.link.packets(owner, space_id):
                yield item
            return
        room = rooms.room(space_id)
        room.start()
        key = f"relay-{next(self._tap_ids)}"
        sub = room.packet_taps.subscribe(key)
        try:
            with contextlib.suppress(EOFError):
                while True:
                    packet = await sub.next()
                    yield int(packet.pts), bytes(packet)
        finally:
            room.packet_taps.unsubscribe(key)

    def status(self) -> dict[str, Any]:
        return {sid: {"listeners": sorted(r.participants), "connected": r.connected, "connections": r.connections,
                      "received": r.received, "sent": r.sent()} for sid, r in self.by_space.items()}
