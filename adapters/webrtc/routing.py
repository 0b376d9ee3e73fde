"""Where a participant's media goes (a mixin of ``router.Rooms``): the room of the process that owns
the Space, or for a listener the owner has no room for, a relay room of another media process
(``relay.py``, ``placement.py``). It remembers, per person, which process holds their connection, so
candidates and leaves go there, a connection replaced elsewhere is closed, and when a process goes
away only the people it served are told ``reconnect_media``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from adapters.webrtc.internal import InternalLink, MediaMoved
from adapters.webrtc.placement import Node, Placement
from adapters.webrtc.room import MediaError, Room
from core.errors import Conflict
from core.model.space import SpaceState

if TYPE_CHECKING:
    from aiohttp import web

    from adapters.webrtc.relay import Relays
    from core.services import Core

log = logging.getLogger(__name__)
WATCH_EVERY_S = 1.0  # how often a process checks that the Spaces it has sockets for still have media


class Routing:
    """Offers, candidates, leaves and HLS requests to the process that holds the person's media."""

    core: Core
    placement: Placement
    link: InternalLink
    relays: Relays
    rooms: dict[str, Room]
    sockets: dict[str, dict[str, web.WebSocketResponse]]
    media_at: dict[str, str]  # Space -> the owner our sockets' media went to
    media_of: dict[str, dict[str, Node]]  # Space -> person -> the process holding their media
    _pending: dict[str, set[str]]  # Space -> people whose offer this process is answering now
    hls_dir: Path | None
    per_process: int
    max_listeners: int

    if TYPE_CHECKING:
        def room(self, space_id: str) -> Room: ...

        def hls_url(self, space_id: str) -> str: ...

        def send(self, ws: web.WebSocketResponse, message: dict[str, Any]) -> bool: ...

        def _spawn(self, coro: Awaitable[None]) -> None: ...

    async def offer(self, space_id: str, pid: str, sdp: str) -> dict[str, Any]:
        """Answer a participant's offer in the room that owns the Space, wherever it runs, or in the
        relay room the owner sends a listener to when it holds its share (``placement.py``)."""
        exclude: list[str] = []  # relays that turned out full or unreachable: the owner picks again
        for _ in range(6):
            result, owner = await self._at_owner(
                space_id, pid, lambda: self.local_offer(space_id, pid, sdp, set(exclude)),
                f"/internal/media/{space_id}/offer", {"pid": pid, "sdp": sdp, "exclude": exclude})
            if "hls" in result:  # the room is full everywhere: no WebRTC connection of theirs stays
                self._media_gone(space_id, pid, owner)
                return result
            if "relay" not in result:
                self._media_now(space_id, pid, owner)
                return result
            relay, limit = Node(str(result["relay"]["id"]), str(result["relay"]["url"])), int(result["limit"])
            try:
                if relay.id == self.placement.node.id:
                    answer = await self.relays.offer(space_id, pid, sdp, limit)
                else:
                    answer = await self.link.post(relay, f"/internal/media/{space_id}/relay",
                                                  {"pid": pid, "sdp": sdp, "limit": limit})
            except MediaMoved:
                continue  # on stage by now: the owner takes them
            except MediaError as e:
                if e.code not in ("media.relay_full", "media.unavailable"):
                    raise
                exclude.append(relay.id)
                continue
            self._media_now(space_id, pid, relay)
            return answer
        raise MediaError("media.unavailable", detail="the Space's media is moving; try again")

    def _media_now(self, space_id: str, pid: str, node: Node) -> None:
        """The person's media is at ``node`` now; a connection of theirs elsewhere is closed."""
        held = self.media_of.setdefault(space_id, {})
        before = held.get(pid)
        held[pid] = node
        if before is not None and before.id != node.id:
            self._spawn(self._leave_at(before, space_id, pid))

    def _media_gone(self, space_id: str, pid: str, owner: Node) -> None:
        """The person listens over HLS now: a relay's connection of theirs is closed (the owner's
        own is, where it answered)."""
        before = self.media_of.get(space_id, {}).pop(pid, None)
        if before is not None and before.id != owner.id:
            self._spawn(self._leave_at(before, space_id, pid))

    async def _leave_at(self, node: Node, space_id: str, pid: str) -> None:
        if node.id == self.placement.node.id:
            await self.local_leave(space_id, pid)
            return
        with contextlib.suppress(aiohttp.ClientError, MediaError, MediaMoved, TimeoutError):
            await self.link.post(node, f"/internal/media/{space_id}/leave", {"pid": pid})

    async def local_leave(self, space_id: str, pid: str) -> None:
        room = self.rooms.get(space_id)
        if room is not None:
            await room.remove_participant(pid)
        await self.relays.leave(space_id, pid)

    async def listen_hls(self, space_id: str, pid: str) -> dict[str, Any]:
        """A listener asked for HLS: out of the WebRTC room, and the room running so HLS is written."""
        result, owner = await self._at_owner(space_id, pid, lambda: self.local_hls(space_id, pid),
                                             f"/internal/media/{space_id}/hls", {"pid": pid})
        self._media_gone(space_id, pid, owner)
        return result

    async def _at_owner(self, space_id: str, pid: str, here: Callable[[], Awaitable[dict[str, Any]]], path: str,
                        body: dict[str, Any]) -> tuple[dict[str, Any], Node]:
        for _ in range(4):
            owner = await self.placement.owner(space_id)
            if owner is None:
                owner = await self.placement.claim(space_id) if self.placement.media else await self.placement.pick()
                if owner is None:
                    raise MediaError("media.unavailable", detail="no media process is running")
            try:
                result = await here() if owner.id == self.placement.node.id else await self.link.post(owner, path, body)
            except MediaMoved:
                continue  # it changed hands while we asked: ask the new owner
            was = self.media_at.get(space_id)
            self.media_at[space_id] = owner.id
            if was is not None and was != owner.id:
                # the Space moved and this offer got there first: everyone else here must follow it
                # now (the watcher compares with what is recorded, which this offer just changed)
                self._spawn(self._reconnect(space_id, was, but=pid))
            return result, owner
        raise MediaError("media.unavailable", detail="the Space's media is moving; try again")

    async def _reconnect(self, space_id: str, gone: str, but: str | None = None) -> None:
        """``reconnect_media`` to this process's sockets of the Space whose media was at ``gone``
        (or not recorded); those a live relay serves stay connected."""
        held = self.media_of.get(space_id, {})
        for pid, ws in list(self.sockets.get(space_id, {}).items()):
            node = held.get(pid)
            if pid == but or (node is not None and node.id != gone):
                continue
            held.pop(pid, None)
            self.send(ws, {"type": "reconnect_media"})

    async def candidate(self, space_id: str, pid: str, candidate: str | None, sdp_mid: str | None) -> None:
        """A trickled ICE candidate, to the room that took the participant's offer (here or not)."""
        node = self.media_of.get(space_id, {}).get(pid)
        room = self.rooms.get(space_id)
        if node is not None and node.id == self.placement.node.id and self.relays.holds(space_id, pid):
            room = self.relays.by_space[space_id]
        if room is not None and pid in room.participants:
            await room.add_candidate(pid, candidate, sdp_mid)
            return
        if node is None or node.id == self.placement.node.id:
            return  # no offer of theirs is held: a late candidate of an offer that is gone
        with contextlib.suppress(MediaMoved, MediaError):  # it moved or went: the client is told to offer again
            await self.link.post(node, f"/internal/media/{space_id}/candidate",
                                 {"pid": pid, "candidate": candidate, "sdp_mid": sdp_mid})

    async def local_hls(self, space_id: str, pid: str) -> dict[str, Any]:
        owner = await self.placement.claim(space_id)
        if owner.id != self.placement.node.id:
            raise MediaMoved(owner)
        if self.hls_dir is None:
            raise MediaError("media.no_hls", detail="this instance does not write HLS")
        room = self.room(space_id)
        await self.local_leave(space_id, pid)
        room.start()
        return {"hls": self.hls_url(space_id), "reason": "asked"}

    @contextlib.contextmanager
    def pending(self, space_id: str, pid: str) -> Iterator[None]:
        """``pid``'s offer is being answered here: it counts in ``share`` before it is in a room."""
        waiting = self._pending.setdefault(space_id, set())
        waiting.add(pid)
        try:
            yield
        finally:
            waiting.discard(pid)
            if not waiting:
                self._pending.pop(space_id, None)

    def pending_for(self, space_id: str) -> set[str]:
        return self._pending.get(space_id, set())

    def share(self, space_id: str) -> int:
        """The Space's WebRTC listeners on this process: its room's, its relay's, and offers in flight."""
        room = self.rooms.get(space_id)
        here = {p for p in room.participants if p not in room.publishers} if room is not None else set()
        relay = self.relays.by_space.get(space_id)
        if relay is not None:
            here |= set(relay.participants)
        return len(here | self.pending_for(space_id))

    def share_limit(self) -> int:
        """A room's listeners this process takes before the owner sends more to relays."""
        return min(self.per_process or self.max_listeners, self.max_listeners)

    def load(self) -> dict[str, int]:
        """Listeners per Space on this process, for the heartbeat other processes pick relays by."""
        return {sid: self.share(sid) for sid in {*self.rooms, *self.relays.by_space}}

    async def local_offer(self, space_id: str, pid: str, sdp: str, exclude: set[str] | None = None) -> dict[str, Any]:
        owner = await self.placement.claim(space_id)
        if owner.id != self.placement.node.id:
            raise MediaMoved(owner)
        view = await self.core.view(space_id)
        if view.space.state != SpaceState.LIVE:
            raise Conflict("space.ended" if view.space.state == SpaceState.ENDED else "space.not_live",
                           space_id=space_id)
        room = self.room(space_id)
        room.set_publishers(view.space.publishers())
        publish = pid in view.space.publishers()
        if not publish and pid not in room.participants:
            elsewhere = await self._elsewhere(space_id, exclude or set())
            if elsewhere is not None:
                return elsewhere
        with self.pending(space_id, pid):
            if self.relays.holds(space_id, pid):  # one connection per person in this process
                await self.relays.leave(space_id, pid)
            return {"sdp": await room.add_participant(pid, sdp, publish=publish), "publish": publish}

    async def _elsewhere(self, space_id: str, exclude: set[str]) -> dict[str, Any] | None:
        """Where a new listener goes when not here: a relay while this process holds its share
        (``per_process``) and another holds less, then here up to ``max_listeners``, then a relay
        under that, then HLS (where it is written; else here after all). None: here."""
        here = self.share(space_id)
        for limit in dict.fromkeys((self.share_limit(), self.max_listeners)):
            if here < limit:
                return None
            try:
                relay = await self.placement.pick_relay(space_id, limit, exclude)
            except MediaError:  # Redis is away: who else has room is unknown, so here it is
                relay = None
            if relay is not None:
                return {"relay": {"id": relay.id, "url": relay.url}, "limit": limit}
        if self.hls_dir is None:
            return None
        self.room(space_id).start()  # the HLS stream comes from the room's ticks
        return {"hls": self.hls_url(space_id), "reason": "room_full"}

    async def leave(self, space_id: str, pid: str) -> None:
        node = self.media_of.get(space_id, {}).pop(pid, None)
        if node is not None:
            await self._leave_at(node, space_id, pid)
            return
        room = self.rooms.get(space_id)
        if room is not None or self.relays.holds(space_id, pid):
            await self.local_leave(space_id, pid)
            return
        owner_id = self.media_at.get(space_id)
        if owner_id is None or owner_id == self.placement.node.id:
            return
        owner = await self.placement.owner(space_id)
        if owner is not None and owner.id == owner_id:
            await self._leave_at(owner, space_id, pid)

    async def _watch(self) -> None:
        """Sockets here whose media process went away (or gave the Space up) are told to reconnect
        their media; their offers then land on whichever media process takes the Space over. Those
        a relay serves stay where they are while the relay lives (it follows the owner itself)."""
        while True:
            await asyncio.sleep(WATCH_EVERY_S)
            for space_id, was in list(self.media_at.items()):
                if not self.sockets.get(space_id):
                    self.media_at.pop(space_id, None)
                    self.media_of.pop(space_id, None)
                    continue
                try:
                    now = await self.placement.owner(space_id)
                except Exception:
                    log.exception("cannot read who serves %s", space_id)
                    continue
                if now is not None and now.id == was:
                    continue
                log.info("media for %s moved from %s; asking its clients here to reconnect", space_id, was)
                self.media_at.pop(space_id, None)
                await self._reconnect(space_id, was)
            await self._watch_relays()

    async def _watch_relays(self) -> None:
        """People whose media a relay served that stopped renewing its heartbeat (it died) offer again."""
        held = {n.id for where in self.media_of.values() for n in where.values()} - {self.placement.node.id}
        if not held:
            return
        try:
            alive = await self.placement.alive(held)
        except Exception:  # Redis away: what is not known to be dead stays
            return
        for space_id, where in list(self.media_of.items()):
            if not where:
                self.media_of.pop(space_id, None)
                continue
            # the Space's owner is _watch's to follow (its lease, which is taken back with its heartbeat
            # when Redis returns): only relays are judged by their heartbeat here
            for gone in ({n.id for n in where.values()} & (held - alive)) - {self.media_at.get(space_id)}:
                log.info("media process %s serving %s is gone; asking its clients here to reconnect", gone, space_id)
                await self._reconnect(space_id, gone)
