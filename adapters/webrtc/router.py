"""The media router: this process's media rooms, one per Space, and the way to the room of a Space
another process owns (``placement.py``).

It places each participant's offer and trickled candidates in the owning room or, for a listener
the owner has no room for, in a relay room of another media process (``relay.py``), here or through
``internal.py``; hands out HLS grants, relays the Space's events to its sockets here, re-points
the media on role changes before any client could react, and cuts a person off the moment their
access ends. The audio tap (``tap.py``) and the internal endpoints (``internal.py``) hang off it."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

from aiohttp import web

from adapters.webrtc import hls
from adapters.webrtc.candidates import CandidatePolicy
from adapters.webrtc.internal import InternalApi, InternalLink
from adapters.webrtc.outbox import Limits, dumps, outbox
from adapters.webrtc.placement import LocalPlacement, Node, Placement
from adapters.webrtc.relay import Relays
from adapters.webrtc.room import Room
from adapters.webrtc.routing import Routing
from adapters.webrtc.tap import RoomAudio
from core import events as ev
from core.bus import BusGap
from core.errors import DomainError, Forbidden
from core.ports import AudioFrame, AudioTick
from core.services import Core

log = logging.getLogger(__name__)
HLS_KEEP_S = 600.0  # an ended Space's HLS files stay this long

# the ``access.revoked`` error frame's sentence, by what took access away (then the socket closes 4001)
REVOKED = {
    "ticket.refunded": "Your ticket was refunded, so your place in this Space has ended.",
    "subscription.ended": "Your subscription no longer covers this Space, so your place in it has ended.",
    "removed": "A moderator removed you from this Space.",
    "blocked": "The host has blocked you from their Spaces.",
    "other": "Your access to this Space has ended.",
}


def _supersedes(message: dict[str, Any]) -> str | None:
    """Frames a newer one of the same kind makes worthless while still queued: audio levels."""
    return "levels" if message.get("type") == "levels" else None


class Rooms(Routing):
    """The media rooms of this process, and the way to the room of a Space another process owns.

    Rooms open on first join (or when an audio consumer asks for one) on the process that owns the
    Space (``placement.py``) and close when the Space ends."""

    def __init__(self, core: Core, *, ice_servers: list[str] | None = None, announce: set[str] | None = None,
                 placement: Placement | None = None, internal_key: str = "", hls_dir: Path | None = None,
                 hls_segment_s: float = 1.0, hls_list_size: int = 6, max_listeners: int = 500,
                 per_process: int | None = None) -> None:
        self.core = core
        self.hls_dir = hls_dir  # None: no HLS
        self.hls_segment_s, self.hls_list_size = hls_segment_s, hls_list_size
        self.max_listeners = max_listeners  # WebRTC listeners of a room on one process; more go elsewhere or to HLS
        # a room's listeners this process takes before the owner sends the next ones to relays (placement.py);
        # 0: max_listeners (``share_limit``)
        self.per_process = per_process or 0
        self.writers: dict[str, hls.HlsWriter] = {}
        self.ice_servers = ice_servers or []
        self.announce = announce
        self.allowed: CandidatePolicy | None = None  # remote ICE candidates rooms may contact (None: public only)
        self.placement: Placement = placement or LocalPlacement()
        self.internal_key = internal_key
        self.rooms: dict[str, Room] = {}
        self.sockets: dict[str, dict[str, web.WebSocketResponse]] = {}
        self.outbox_limits = Limits()  # per socket: a client that falls this far behind is closed (1013)
        self.media_at: dict[str, str] = {}  # Space -> the node our sockets' media went to
        self.media_of: dict[str, dict[str, Node]] = {}  # Space -> person -> the process holding their media
        self._pending: dict[str, set[str]] = {}  # Space -> people whose offer this process is answering now
        self._tasks: set[asyncio.Future[None]] = set()
        self.link = InternalLink(internal_key)  # calls to the process that owns a Space
        self.internal = InternalApi(self)  # the /internal/media endpoints other processes call
        self.tap = RoomAudio(self)  # the AudioTap port over these rooms
        self.relays = Relays(self)  # listeners of Spaces another process owns (relay.py)
        self._watcher: asyncio.Task[None] | None = None
        self.closed = False
        self.placement.on_lost = self._lost
        self.placement.on_relay = self._broadcast
        self.placement.load = self.load
        self.hls_access = hls.HlsAccess(internal_key)  # every HLS request's token (any web process checks it)
        core.bus.subscribe(self.on_event)
        core.bus.subscribe(self.hls_access.on_event)

    @property
    def distributed(self) -> bool:
        return not isinstance(self.placement, LocalPlacement)

    async def start(self) -> None:
        await self.placement.start()
        if self.distributed:
            self._watcher = asyncio.create_task(self._watch())
        if self.hls_dir is not None:  # what ended Spaces left behind (and a restart forgot to remove)
            await asyncio.to_thread(hls.remove_stale, self.hls_dir, HLS_KEEP_S)

    def room(self, space_id: str) -> Room:
        r = self.rooms.get(space_id)
        if r is None:
            r = self.rooms[space_id] = Room(space_id, ice_servers=self.ice_servers, announce=self.announce,
                                            allowed=self.allowed)
            r.on_levels = lambda levels: self._spawn(self._levels(space_id, levels))
            if self.hls_dir is not None:
                writer = self.writers[space_id] = hls.HlsWriter(
                    self.hls_dir / self.hls_key(space_id), segment_s=self.hls_segment_s, list_size=self.hls_list_size)
                r.sinks.append(lambda p: writer.write(bytes(p), int(p.pts)))
        return r

    async def _close_room(self, space_id: str, *, ended: bool) -> None:
        room = self.rooms.pop(space_id, None)
        if room is not None:
            await room.close()
        writer = self.writers.pop(space_id, None)
        if writer is not None:
            await asyncio.to_thread(writer.close, ended=ended)

    async def _remove_hls_later(self, directory: Path) -> None:
        await asyncio.sleep(HLS_KEEP_S)
        await asyncio.to_thread(hls.remove, directory)

    def hls_key(self, space_id: str) -> str:
        """The Space's HLS directory: unguessable, so only people who joined (and passed the ticket
        check) learn it; Space ids themselves are public."""
        mac = hmac.new(self.internal_key.encode(), f"hls:{space_id}".encode(), "sha256").hexdigest()[:20]
        return f"{space_id}-{mac}"

    def hls_url(self, space_id: str) -> str:
        return f"/hls/{self.hls_key(space_id)}/{hls.PLAYLIST}"

    def hls_grant(self, space_id: str, subject: str, url: str, reason: str, cid: Any = None) -> dict[str, Any]:
        """The ``hls`` frame for one person whose access was just checked: the playlist URL with their
        own short-lived token (segments listed in it carry it too) and when to ask for a fresh one."""
        token = self.hls_access.issue(space_id, subject)
        return {"type": "hls", "url": f"{url}?{hls.TOKEN_PARAM}={token}", "reason": reason,
                "expires_in_s": self.hls_access.ttl_s, "id": cid}

    async def _levels(self, space_id: str, levels: dict[str, float]) -> None:
        message = {"type": "levels", "levels": levels}
        await self._broadcast(space_id, message)
        if self.distributed:
            with contextlib.suppress(Exception):
                await self.placement.relay(space_id, message)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def send(self, ws: web.WebSocketResponse, message: dict[str, Any]) -> bool:
        """Queue ``message`` for one socket (its outbox writes it); never waits on the socket."""
        return outbox(ws, self.outbox_limits).put(dumps(message), supersedes=_supersedes(message))

    async def _broadcast(self, space_id: str, message: dict[str, Any], but: str | None = None) -> None:
        """Queue ``message`` for every socket of the Space: one slow reader delays nobody else."""
        frame, kind = dumps(message), _supersedes(message)
        for pid, ws in list(self.sockets.get(space_id, {}).items()):
            if pid != but:
                outbox(ws, self.outbox_limits).put(frame, supersedes=kind)

    async def on_event(self, event: ev.Event) -> None:
        if isinstance(event, BusGap):  # another process's events were lost: every page here reads afresh
            for sid in list(self.sockets):
                self._spawn(self._resync(sid))
            return
        space_id = getattr(event, "space_id", None)
        if space_id is None or (space_id not in self.sockets and space_id not in self.rooms
                                and space_id not in self.relays.by_space):
            return
        if isinstance(event, ev.RoleChanged | ev.SpeakerMuted | ev.SpaceEnded | ev.ParticipantLeft):
            await self._sync_publishers(space_id)
        if isinstance(event, ev.SpaceNotice) and event.account_id is not None:
            target = self.sockets.get(space_id, {}).get(event.account_id)
            if target is not None:
                self.send(target, {"type": "event", "event": event.to_dict()})
            return
        if isinstance(event, ev.TicketChanged):
            await self._ticket_changed(event)
            return
        if isinstance(event, ev.SubscriptionChanged):  # names nobody to the room: only its owner is checked
            await self._recheck(space_id, event.account_id, "subscription.ended")
            return
        await self._broadcast(space_id, {"type": "event", "event": event.to_dict()})
        if isinstance(event, ev.ParticipantLeft) and event.reason in ("removed", "blocked"):
            await self.cut_off(space_id, event.account_id, event.reason)
        elif isinstance(event, ev.AccountBlocked):
            await self.cut_off(space_id, event.account_id, "blocked")
        if isinstance(event, ev.RoleChanged):
            target = self.sockets.get(space_id, {}).get(event.account_id)
            if target is not None:
                self.send(target, {"type": "renegotiate", "role": event.role, "publish": event.role != "listener"})
        if isinstance(event, ev.SpaceEnded):
            await self._close_room(space_id, ended=True)
            await self.relays.close(space_id)  # its listeners' connections close, as the owner's do
            self.media_of.pop(space_id, None)
            if self.hls_dir is not None:  # players still finishing the last segments have this long
                self._spawn(self._remove_hls_later(self.hls_dir / self.hls_key(space_id)))
            if self.placement.owns(space_id) and self.distributed:
                with contextlib.suppress(Exception):
                    await self.placement.release(space_id)
            self.media_at.pop(space_id, None)
            for ws in list(self.sockets.pop(space_id, {}).values()):
                outbox(ws, self.outbox_limits).close(4000, "space ended")  # after the space.ended event

    async def _ticket_changed(self, event: ev.TicketChanged) -> None:
        """A ticket's news goes to its owner and the Space's moderators only (it names a buyer); a
        ticket that stopped being paid cuts its owner off at once if that took their access away."""
        space_id, owner = event.space_id, event.account_id
        here = self.sockets.get(space_id, {})
        if here:
            space = (await self.core.view(space_id)).space
            frame = dumps({"type": "event", "event": event.to_dict()})
            for pid, ws in list(here.items()):
                if pid in (owner, space.host_id) or pid in space.cohosts:
                    outbox(ws, self.outbox_limits).put(frame)
        if event.status != "paid":
            await self._recheck(space_id, owner, f"ticket.{event.status}")

    async def _recheck(self, space_id: str, pid: str, reason: str) -> None:
        """Someone's access may have ended: if they are here and the core now refuses them, cut them off."""
        room = self.rooms.get(space_id)
        if (pid not in self.sockets.get(space_id, {}) and (room is None or pid not in room.participants)
                and not self.relays.holds(space_id, pid)):
            return
        try:
            await self.core.may_join(pid, space_id)
        except Forbidden:
            await self.cut_off(space_id, pid, reason)

    async def cut_off(self, space_id: str, pid: str, reason: str) -> None:
        """Access was taken away (a refund, a block, a removal): the person's media here leaves the
        room now, and their socket here gets an ``access.revoked`` error frame, then close 4001 (a page
        does not reconnect on it). Their HLS tokens are refused from the same event (``HlsAccess``)."""
        with contextlib.suppress(Exception):  # the media side may be gone already (moved, ended)
            await self.leave(space_id, pid)
        ws = self.sockets.get(space_id, {}).get(pid)
        if ws is None:
            return
        self.send(ws, {"type": "error", "id": None, "code": "access.revoked",
                       "message": REVOKED.get(reason, REVOKED["other"]), "data": {"reason": reason}})
        outbox(ws, self.outbox_limits).close(4001, "access.revoked")

    def _internal_token(self) -> str:
        return self.link.token()

    def check_internal(self, request: web.Request) -> None:
        self.link.check(request)

    # ---- the /internal/media endpoints (internal.py), as routes of this process's web app -----------
    async def internal_offer(self, request: web.Request) -> web.Response:
        return await self.internal.offer(request)

    async def internal_hls(self, request: web.Request) -> web.Response:
        return await self.internal.hls(request)

    async def internal_candidate(self, request: web.Request) -> web.Response:
        return await self.internal.candidate(request)

    async def internal_leave(self, request: web.Request) -> web.Response:
        return await self.internal.leave(request)

    async def internal_ticks(self, request: web.Request) -> web.StreamResponse:
        return await self.internal.ticks(request)

    async def _lost(self, space_id: str) -> None:
        await self._close_room(space_id, ended=False)

    async def _resync(self, space_id: str) -> None:
        """The Space's whole view to its sockets here, in place of events that never arrived."""
        with contextlib.suppress(DomainError):
            view = await self.core.view(space_id)
            room = await self.core.queries.room_presence(space_id)  # everyone gets it; ``present`` is per socket
            snapshot = {**view.as_dict(), "away": {a: t.isoformat() for a, t in room.away.items()}}
            await self._broadcast(space_id, {"type": "space", "space": snapshot})

    async def _sync_publishers(self, space_id: str) -> None:
        room = self.rooms.get(space_id)
        if room is not None:
            view = await self.core.view(space_id)
            room.set_publishers(view.space.publishers())

    # ---- the AudioTap port (core/ports.py), served by tap.py ------------------------------------------
    def ticks(self, space_id: str) -> AsyncIterator[AudioTick]:
        return self.tap.ticks(space_id)

    def mix(self, space_id: str) -> AsyncIterator[AudioFrame]:
        return self.tap.mix(space_id)

    def speakers(self, space_id: str) -> AsyncIterator[AudioFrame]:
        return self.tap.speakers(space_id)

    def opus_packets(self, space_id: str) -> AsyncIterator[tuple[int, bytes]]:
        return self.tap.opus_packets(space_id)

    async def close(self) -> None:
        self.closed = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self.relays.close_all()
        for space_id in list(self.rooms):
            await self._close_room(space_id, ended=False)
        await self.placement.close()
        await self.link.close()
