"""Signaling for the web room: one WebSocket per participant, JSON messages (docs/webrtc-protocol.md).

The socket turns messages into core commands with the caller's Account (from a verified join
token) and pushes the Space's domain events back. Role changes re-point the media at once: the
server stops mixing a demoted or muted speaker before any client could react.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import logging
import struct
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from adapters.webrtc import frames, hls
from adapters.webrtc.candidates import CandidatePolicy
from adapters.webrtc.drain import SOCKETS, Sockets
from adapters.webrtc.outbox import OUTBOX, Limits, dumps, outbox, receive
from adapters.webrtc.placement import LocalPlacement, Node, Placement
from adapters.webrtc.room import MediaError, OpusEncoder, Room
from core import events as ev
from core.bus import BusGap
from core.commands import BUILTIN_TABLE, CommandTable, Ports, dispatch
from core.errors import Conflict, DomainError, Forbidden, Invalid
from core.ids import new_id
from core.messages import describe
from core.model.accounts import Actor
from core.model.space import SpaceState
from core.ports import FRAME_SAMPLES, AudioFrame, AudioTick
from core.services import Core
from core.tokens import JoinTokens

if TYPE_CHECKING:
    from plugins.manager import PluginManager

log = logging.getLogger(__name__)
MAX_MESSAGE = 64 * 1024
HELLO_TIMEOUT_S = 10.0
WATCH_EVERY_S = 1.0  # how often a process checks that the Spaces it has sockets for still have media
HLS_KEEP_S = 600.0  # an ended Space's HLS files stay this long
INTERNAL_HEADER = "X-Spacebridge-Internal"
RETRY_AFTER_S = 5.0  # what an error frame says for service.unavailable when the error names no time
# the web protocol's own codes (core.messages words the core's)
WORDING = {
    **frames.WORDING,
    "protocol.binary": "Send JSON text, not binary messages.",
    "protocol.unknown_type": "Unknown message type {type}.",
    "server.error": "Something went wrong on our side handling that message; the room goes on, try again.",
}


# the ``access.revoked`` error frame's sentence, by what took access away (then the socket closes 4001)
REVOKED = {
    "ticket.refunded": "Your ticket was refunded, so your place in this Space has ended.",
    "removed": "A moderator removed you from this Space.",
    "blocked": "The host has blocked you from their Spaces.",
    "other": "Your access to this Space has ended.",
}
_TICK_HEAD = struct.Struct("<QH")
_PCM_BYTES = FRAME_SAMPLES * 2


def encode_tick(tick: AudioTick) -> bytes:
    """seq, speaker count, the mix, then each speaker's id and frame: 16-bit little-endian PCM."""
    parts = [_TICK_HEAD.pack(tick.seq, len(tick.speakers)), tick.mix.astype("<i2").tobytes()]
    for pid, pcm in tick.speakers.items():
        raw = pid.encode()
        parts += [bytes([len(raw)]), raw, pcm.astype("<i2").tobytes()]
    return b"".join(parts)


def decode_tick(data: bytes) -> AudioTick:
    """The inverse of ``encode_tick``; anything else raises ``ValueError``."""
    try:
        seq, count = _TICK_HEAD.unpack_from(data)
        at = _TICK_HEAD.size
        mix = np.frombuffer(data, dtype="<i2", count=FRAME_SAMPLES, offset=at).astype(np.int16)
        at += _PCM_BYTES
        speakers: dict[str, Any] = {}
        for _ in range(count):
            n = data[at]
            pid = data[at + 1:at + 1 + n].decode()
            at += 1 + n
            speakers[pid] = np.frombuffer(data, dtype="<i2", count=FRAME_SAMPLES, offset=at).astype(np.int16)
            at += _PCM_BYTES
    except (struct.error, IndexError, ValueError) as e:  # numpy says "buffer is smaller" with ValueError
        raise ValueError(f"a malformed audio tick ({e})") from None
    if at != len(data):
        raise ValueError("a malformed audio tick (trailing bytes)")
    return AudioTick(seq, mix, speakers)


async def _fields(request: web.Request, *names: str) -> list[str]:
    """String fields of an internal request's JSON body, or 400."""
    try:
        body = await request.json()
        values = [body[n] for n in names]
    except (ValueError, KeyError, TypeError):
        raise web.HTTPBadRequest(text=f"a JSON object with {', '.join(names)}") from None
    if not all(isinstance(v, str) and v for v in values):
        raise web.HTTPBadRequest(text=f"{', '.join(names)} must be non-empty strings")
    return values


async def _answered(work: Awaitable[dict[str, Any]]) -> web.Response:
    """An internal media request's outcome: the result, who owns the Space now (409), or why not (400)."""
    try:
        return web.json_response(await work)
    except MediaMoved as m:
        return web.json_response({"owner": {"id": m.owner.id, "url": m.owner.url}}, status=409)
    except DomainError as e:
        return web.json_response({"code": e.code, "detail": describe(e)}, status=400)


def _supersedes(message: dict[str, Any]) -> str | None:
    """Frames a newer one of the same kind makes worthless while still queued: audio levels."""
    return "levels" if message.get("type") == "levels" else None


class MediaMoved(Exception):
    def __init__(self, owner: Node) -> None:
        super().__init__(owner.id)
        self.owner = owner


class Rooms:
    """The media rooms of this process, and the way to the room of a Space another process owns.

    Rooms open on first join (or when an audio consumer asks for one) on the process that owns the
    Space (``placement.py``) and close when the Space ends."""

    def __init__(self, core: Core, *, ice_servers: list[str] | None = None, announce: set[str] | None = None,
                 placement: Placement | None = None, internal_key: str = "", hls_dir: Path | None = None,
                 hls_segment_s: float = 1.0, hls_list_size: int = 6, max_listeners: int = 500) -> None:
        self.core = core
        self.hls_dir = hls_dir  # None: no HLS
        self.hls_segment_s, self.hls_list_size = hls_segment_s, hls_list_size
        self.max_listeners = max_listeners  # WebRTC listeners per room; more are sent to HLS
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
        self._tasks: set[asyncio.Future[None]] = set()
        self._tap_ids = itertools.count()
        self._http: aiohttp.ClientSession | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._closed = False
        self.placement.on_lost = self._lost
        self.placement.on_relay = self._broadcast
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
        if space_id is None or (space_id not in self.sockets and space_id not in self.rooms):
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
        room = self.rooms.get(space_id)
        if event.status == "paid" or (owner not in here and (room is None or owner not in room.participants)):
            return
        try:
            await self.core.may_join(owner, space_id)
        except Forbidden:
            await self.cut_off(space_id, owner, f"ticket.{event.status}")

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

    # ---- placement: which process's room a participant's media goes to ------------------------------
    async def offer(self, space_id: str, pid: str, sdp: str) -> dict[str, Any]:
        """Answer a participant's offer in the room that owns the Space, wherever it runs."""
        return await self._at_owner(space_id, pid, lambda: self.local_offer(space_id, pid, sdp),
                                    f"/internal/media/{space_id}/offer", {"pid": pid, "sdp": sdp})

    async def listen_hls(self, space_id: str, pid: str) -> dict[str, Any]:
        """A listener asked for HLS: out of the WebRTC room, and the room running so HLS is written."""
        return await self._at_owner(space_id, pid, lambda: self.local_hls(space_id, pid),
                                    f"/internal/media/{space_id}/hls", {"pid": pid})

    async def _at_owner(self, space_id: str, pid: str, here: Callable[[], Awaitable[dict[str, Any]]], path: str,
                        body: dict[str, Any]) -> dict[str, Any]:
        for _ in range(4):
            owner = await self.placement.owner(space_id)
            if owner is None:
                owner = await self.placement.claim(space_id) if self.placement.media else await self.placement.pick()
                if owner is None:
                    raise MediaError("media.unavailable", detail="no media process is running")
            try:
                result = await here() if owner.id == self.placement.node.id else await self._forward(owner, path, body)
            except MediaMoved:
                continue  # it changed hands while we asked: ask the new owner
            was = self.media_at.get(space_id)
            self.media_at[space_id] = owner.id
            if was is not None and was != owner.id:
                # the Space moved and this offer got there first: everyone else here must follow it
                # now (the watcher compares with what is recorded, which this offer just changed)
                self._spawn(self._broadcast(space_id, {"type": "reconnect_media"}, but=pid))
            return result
        raise MediaError("media.unavailable", detail="the Space's media is moving; try again")

    async def candidate(self, space_id: str, pid: str, candidate: str | None, sdp_mid: str | None) -> None:
        """A trickled ICE candidate, to the room that took the participant's offer (here or not)."""
        room = self.rooms.get(space_id)
        if room is not None and pid in room.participants:
            await room.add_candidate(pid, candidate, sdp_mid)
            return
        owner_id = self.media_at.get(space_id)
        if owner_id is None or owner_id == self.placement.node.id:
            return  # no offer of theirs is held: a late candidate of an offer that is gone
        owner = await self.placement.owner(space_id)
        if owner is not None and owner.id == owner_id:
            with contextlib.suppress(MediaMoved):  # it moved: the client is told to offer again
                await self._forward(owner, f"/internal/media/{space_id}/candidate",
                                    {"pid": pid, "candidate": candidate, "sdp_mid": sdp_mid})

    async def local_hls(self, space_id: str, pid: str) -> dict[str, Any]:
        owner = await self.placement.claim(space_id)
        if owner.id != self.placement.node.id:
            raise MediaMoved(owner)
        if self.hls_dir is None:
            raise MediaError("media.no_hls", detail="this instance does not write HLS")
        room = self.room(space_id)
        if pid in room.participants:
            await room.remove_participant(pid)
        room.start()
        return {"hls": self.hls_url(space_id), "reason": "asked"}

    async def local_offer(self, space_id: str, pid: str, sdp: str) -> dict[str, Any]:
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
        if (not publish and self.hls_dir is not None and pid not in room.participants
                and room.listener_count() >= self.max_listeners):
            room.start()  # the HLS stream comes from the room's ticks
            return {"hls": self.hls_url(space_id), "reason": "room_full"}
        return {"sdp": await room.add_participant(pid, sdp, publish=publish), "publish": publish}

    async def leave(self, space_id: str, pid: str) -> None:
        room = self.rooms.get(space_id)
        if room is not None:
            await room.remove_participant(pid)
            return
        owner_id = self.media_at.get(space_id)
        if owner_id is None or owner_id == self.placement.node.id:
            return
        owner = await self.placement.owner(space_id)
        if owner is not None and owner.id == owner_id:
            with contextlib.suppress(aiohttp.ClientError, MediaError, MediaMoved, TimeoutError):
                await self._forward(owner, f"/internal/media/{space_id}/leave", {"pid": pid})

    def _internal_token(self) -> str:
        return hmac.new(self.internal_key.encode(), b"spacebridge-internal", "sha256").hexdigest()

    def check_internal(self, request: web.Request) -> None:
        if not self.internal_key or not hmac.compare_digest(request.headers.get(INTERNAL_HEADER, ""),
                                                            self._internal_token()):
            raise web.HTTPForbidden(text="internal endpoint")

    async def _forward(self, owner: Node, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        try:
            async with self._http.post(owner.url.rstrip("/") + path, json=body,
                                       headers={INTERNAL_HEADER: self._internal_token()}) as r:
                data: dict[str, Any] = await r.json(content_type=None)
                if r.status == 409 and "owner" in data:
                    raise MediaMoved(Node.decode(json.dumps(data["owner"])))
                if r.status >= 400:
                    raise MediaError(str(data.get("code", "media.unavailable")),
                                     detail=str(data.get("detail", f"the media process said {r.status}")))
                return data
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            log.info("media process %s unreachable for %s: %s", owner.id, path, type(e).__name__)
            raise MediaError("media.unavailable", detail="the Space's media process is unreachable") from None

    async def internal_offer(self, request: web.Request) -> web.Response:
        """POST /internal/media/{space_id}/offer from another process's signaling."""
        self.check_internal(request)
        pid, sdp = await _fields(request, "pid", "sdp")
        return await _answered(self.local_offer(request.match_info["space_id"], pid, sdp))

    async def internal_hls(self, request: web.Request) -> web.Response:
        self.check_internal(request)
        (pid,) = await _fields(request, "pid")
        return await _answered(self.local_hls(request.match_info["space_id"], pid))

    async def internal_candidate(self, request: web.Request) -> web.Response:
        self.check_internal(request)
        (pid,) = await _fields(request, "pid")
        body = await request.json()
        candidate, mid = body.get("candidate"), body.get("sdp_mid")
        if not (candidate is None or isinstance(candidate, str)) or not (mid is None or isinstance(mid, str)):
            raise web.HTTPBadRequest(text="candidate and sdp_mid are strings or null")
        room = self.rooms.get(request.match_info["space_id"])

        async def add() -> dict[str, Any]:
            return {"applied": room is not None and await room.add_candidate(pid, candidate, mid)}

        return await _answered(add())

    async def internal_leave(self, request: web.Request) -> web.Response:
        self.check_internal(request)
        room = self.rooms.get(request.match_info["space_id"])
        if room is not None:
            (pid,) = await _fields(request, "pid")
            await room.remove_participant(pid)
        return web.json_response({})

    async def _watch(self) -> None:
        """Sockets here whose media process went away (or gave the Space up) are told to reconnect
        their media; their offers then land on whichever media process takes the Space over."""
        while True:
            await asyncio.sleep(WATCH_EVERY_S)
            for space_id, was in list(self.media_at.items()):
                if not self.sockets.get(space_id):
                    self.media_at.pop(space_id, None)
                    continue
                try:
                    now = await self.placement.owner(space_id)
                except Exception:
                    log.exception("cannot read who serves %s", space_id)
                    continue
                if now is not None and now.id == was:
                    continue
                log.info("media for %s moved from %s; asking %d clients to reconnect", space_id, was,
                         len(self.sockets.get(space_id, {})))
                self.media_at.pop(space_id, None)
                await self._broadcast(space_id, {"type": "reconnect_media"})

    async def _lost(self, space_id: str) -> None:
        await self._close_room(space_id, ended=False)

    async def _sources(self, space_id: str) -> AsyncIterator[Room | Node]:
        """Where the Space's audio is, for as long as the Space lives: this process's room (it owns
        the Space, or takes it when nobody does and it runs media), or the process that owns it."""
        while not self._closed:
            if self.placement.owns(space_id):
                room = self.room(space_id)
                room.start()
                yield room
            else:
                owner = await self.placement.owner(space_id)
                if owner is None and self.placement.media:
                    owner = await self.placement.claim(space_id)
                    if owner.id == self.placement.node.id:
                        continue  # ours now: the next round reads it here
                if owner is not None and owner.id != self.placement.node.id:
                    yield owner
                    await asyncio.sleep(0.5)  # it went away: give its lease time to run out
                else:
                    await asyncio.sleep(WATCH_EVERY_S)  # nobody serves it yet
            if self._closed:
                return
            view = await self.core.view(space_id)
            if view.space.state == SpaceState.ENDED:
                return

    async def _remote_ticks(self, owner: Node, space_id: str) -> AsyncIterator[AudioTick]:
        """Another process's room, tick by tick, over its internal WebSocket (``internal_ticks``)."""
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        url = owner.url.rstrip("/") + f"/internal/media/{space_id}/ticks"
        try:
            async with self._http.ws_connect(url, headers={INTERNAL_HEADER: self._internal_token()}, heartbeat=5.0,
                                             timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                                             max_msg_size=1 << 20) as ws:
                async for msg in ws:
                    if msg.type != WSMsgType.BINARY:
                        return
                    yield decode_tick(msg.data)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            log.info("audio of %s from %s stopped: %s", space_id, owner.id, e)

    async def internal_ticks(self, request: web.Request) -> web.StreamResponse:
        """GET /internal/media/{space_id}/ticks: this room's audio for a consumer in another process."""
        self.check_internal(request)
        space_id = request.match_info["space_id"]
        if not self.placement.owns(space_id):
            owner = await self.placement.owner(space_id)
            return web.json_response({"owner": {"id": owner.id, "url": owner.url} if owner else None}, status=409)
        room = self.room(space_id)
        room.start()
        ws = web.WebSocketResponse(heartbeat=5.0)
        await ws.prepare(request)
        key = f"remote-{next(self._tap_ids)}"
        sub = room.tick_taps.subscribe(key)
        try:
            with contextlib.suppress(EOFError, ConnectionError, RuntimeError):
                while not ws.closed:
                    seq, mix, frames = await sub.next()
                    await ws.send_bytes(encode_tick(AudioTick(seq, mix, frames)))
        finally:
            room.tick_taps.unsubscribe(key)
            await ws.close()
        return ws

    async def _resync(self, space_id: str) -> None:
        """The Space's whole view to its sockets here, in place of events that never arrived."""
        with contextlib.suppress(DomainError):
            await self._broadcast(space_id, {"type": "space", "space": (await self.core.view(space_id)).as_dict()})

    async def _sync_publishers(self, space_id: str) -> None:
        room = self.rooms.get(space_id)
        if room is not None:
            view = await self.core.view(space_id)
            room.set_publishers(view.space.publishers())

    # ---- the AudioTap port (core/ports.py): the room's audio for captions, recording, Discord -----
    # Consumers may run in any process: they read the room here when this process owns the Space
    # (always, on one process), else stream it from the owner, follow the Space when it moves, and
    # end with the Space.
    async def ticks(self, space_id: str) -> AsyncIterator[AudioTick]:
        async for source in self._sources(space_id):
            if isinstance(source, Node):
                async for tick in self._remote_ticks(source, space_id):
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
                async for tick in self._remote_ticks(source, space_id):
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

    async def close(self) -> None:
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for space_id in list(self.rooms):
            await self._close_room(space_id, ended=False)
        await self.placement.close()
        if self._http is not None:
            await self._http.close()


def _result(value: Any) -> Any:
    if isinstance(value, dict | int | bool | str) or value is None:
        return value
    return None


class Signaling:
    def __init__(self, core: Core, rooms: Rooms, tokens: JoinTokens, *, plugins: PluginManager | None = None) -> None:
        self.core, self.rooms, self.tokens = core, rooms, tokens
        self.plugins = plugins
        self.ports = Ports()  # tickets and share links, set by the composition root where it has them
        self._offered: set[web.WebSocketResponse] = set()  # sockets whose media is in a room
        # every open socket of a person in a Space, oldest first: the newest gets the events, and when it
        # closes the next newest takes over (a second tab keeps working when the other one closes)
        self._tabs: dict[tuple[str, str], list[web.WebSocketResponse]] = {}

    def _table(self) -> CommandTable:
        """Every command of this instance: the core's and the loaded plugins' (core/commands.py)."""
        return self.plugins.table if self.plugins is not None else BUILTIN_TABLE

    def _commands(self) -> list[dict[str, Any]]:
        """``welcome.commands``: the whole table; the page draws its controls from it."""
        return self._table().public()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """One participant's socket. Its end is a *disconnect*, never a leave (that is the ``leave``
        message or End): only the person's last connection counts and a seat is kept for a grace
        period (core/presence.py). A server shutting down closes it with 1012 and records nothing."""
        space_id = request.match_info["space_id"]
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, heartbeat=20)
        await ws.prepare(request)
        sockets = request.app.get(SOCKETS)
        if sockets is not None:
            if sockets.draining:
                await ws.close(code=WSCloseCode.SERVICE_RESTART, message=b"server restarting")
                return ws
            sockets.open.add(ws)
        try:
            await self._connected(ws, space_id, sockets)
        finally:
            if sockets is not None:
                sockets.open.discard(ws)
        return ws

    async def _connected(self, ws: web.WebSocketResponse, space_id: str, sockets: Sockets | None) -> None:
        connection = new_id()
        try:
            actor, role = await self._hello(ws, space_id, connection)
        except DomainError as e:
            await self._error(ws, e)
            # 4002: the first frame was no hello; 1013: try again later (the database is away); 4001: refused
            code = 4002 if e.code.startswith("protocol.") else 1013 if e.code == "service.unavailable" else 4001
            with contextlib.suppress(Exception):  # the client may be gone already
                await ws.close(code=code, message=e.code.encode())
            return
        except (TimeoutError, ValueError):
            with contextlib.suppress(Exception):
                await ws.send_json({"type": "error", "code": "protocol.no_hello",
                                    "message": "Send {\"type\": \"hello\", \"token\": ...} first."})
                await ws.close(code=4002)
            return
        pid = actor.account_id
        self.rooms.sockets.setdefault(space_id, {})[pid] = ws
        tabs = self._tabs.setdefault((space_id, pid), [])
        tabs.append(ws)
        try:
            await self._serve(ws, space_id, actor, role)
        finally:
            tabs.remove(ws)
            if not tabs:
                self._tabs.pop((space_id, pid), None)
            here = self.rooms.sockets.get(space_id, {})
            latest = here.get(pid) is ws
            if latest and tabs:
                here[pid] = tabs[-1]  # the person's newest other tab gets the events from now on
            elif latest:
                del here[pid]
            if latest and ws in self._offered:  # an older tab closing must not cut a newer one's audio
                with contextlib.suppress(Exception):  # the media side may be gone already (moved, ended)
                    await self.rooms.leave(space_id, pid)
                if tabs and tabs[-1] in self._offered:  # its media was replaced by this tab's: offer anew
                    self._offered.discard(tabs[-1])
                    with contextlib.suppress(Exception):
                        mine = (await self.core.view(space_id)).space.role_of(pid)
                        now = mine.value if mine is not None else "listener"
                        self.rooms.send(tabs[-1], {"type": "renegotiate", "role": now, "publish": now != "listener"})
            self._offered.discard(ws)
            if role != "guest" and not (sockets is not None and sockets.draining):
                try:  # a restart is not a disconnect: its rows go stale, and are swept if nobody returns
                    await self.core.disconnect(space_id, pid, connection)
                except Exception as e:  # owed: the presence keeper retries it (its row is not kept fresh)
                    log.warning("disconnect of %s from %s not recorded yet: %s", pid, space_id, e)

    async def _leave(self, ws: web.WebSocketResponse, space_id: str, actor: Actor, role: str) -> None:
        """The explicit ``leave`` message: the person leaves (a host hands over or ends the Space), then
        the socket closes with 1000. Closing a tab is not this; it is a disconnect."""
        if role != "guest":
            await self.core.leave(actor, space_id)
        await ws.close(code=WSCloseCode.OK, message=b"left")

    async def _hello(self, ws: web.WebSocketResponse, space_id: str,
                     connection: str | None = None) -> tuple[Actor, str]:
        msg = await asyncio.wait_for(ws.receive(), HELLO_TIMEOUT_S)
        if msg.type != WSMsgType.TEXT:
            raise ValueError("no hello")
        data = frames.parse(msg.data)  # strict: deep nesting, NaN or 1e999 get a protocol.* error, no traceback
        if data.get("type") != "hello":
            raise ValueError("no hello")
        token = data.get("token")
        grant = self.tokens.verify(token if isinstance(token, str) else "", self.core.now(), space_id=space_id)
        if grant.account_id is None:
            actor = Actor(account_id=f"guest-{id(ws):x}", platform="web")
            await self._entitled(space_id, actor, "guest")  # public, no tickets, live: as at every offer
            view = await self.core.view(space_id)
            await ws.send_json({"type": "welcome", "you": {"account_id": None, "role": "guest"},
                                "space": view.as_dict(), "commands": []})
            return actor, "guest"
        actor = Actor(account_id=grant.account_id, platform="web")
        joined = await self.core.join(actor, space_id, connection=connection)
        view = await self.core.view(space_id)
        await ws.send_json({"type": "welcome", "you": {"account_id": actor.account_id, "role": joined.role.value},
                            "space": view.as_dict(), "captions": await self.core.recent_captions(space_id),
                            "comments": await self.core.recent_comments(space_id),
                            "commands": self._commands()})
        return actor, joined.role.value

    async def _serve(self, ws: web.WebSocketResponse, space_id: str, actor: Actor, role: str) -> None:
        """Answer the socket's frames until it closes. Every reply goes through the socket's outbox; a
        frame that fails gets an error frame (its code only, never internal text) and the socket stays."""
        box = outbox(ws, self.rooms.outbox_limits)
        try:
            async for msg in receive(ws, box):
                if msg.type != WSMsgType.TEXT:
                    if msg.type == WSMsgType.ERROR:
                        break
                    await self._error(ws, Invalid("protocol.binary"))
                    continue
                cid: str | int | None = None
                kind: Any = None
                try:
                    data = frames.parse(msg.data)
                    cid, kind = frames.request_id(data), data.get("type")
                    await self._frame(ws, space_id, actor, role, kind, cid, data)
                except DomainError as e:
                    await self._error(ws, e, cid)
                except Exception as e:  # a bug or an outage the core did not name: the socket stays open
                    where = traceback.extract_tb(e.__traceback__)[-1]
                    log.error("web room %s: a %s frame from %s failed: %s at %s:%s", space_id,
                              str(kind)[:20], actor.account_id, type(e).__name__, where.filename, where.lineno)
                    log.debug("the failure in full", exc_info=e)
                    await self._error(ws, Invalid("server.error"), cid)
        finally:
            await box.shutdown()

    async def _frame(self, ws: web.WebSocketResponse, space_id: str, actor: Actor, role: str, kind: Any,
                     cid: str | int | None, data: dict[str, Any]) -> None:
        if kind == "offer":
            await self._offer(ws, space_id, actor, role, data)
        elif kind == "candidate":
            await self._candidate(space_id, actor, data)
        elif kind == "hls":
            await self._hls(ws, space_id, actor, role, cid, data)
        elif kind == "command":
            await self._command(ws, space_id, actor, role, data)
        elif kind == "ping":
            self.rooms.send(ws, {"type": "pong", "id": cid})
        elif kind == "sync":  # the whole Space now, e.g. after events a client could not apply
            self.rooms.send(ws, {"type": "space", "id": cid, "space": (await self.core.view(space_id)).as_dict()})
        elif kind == "leave":  # explicit: the person leaves, then the socket closes 1000 (a close alone is not this)
            await self._leave(ws, space_id, actor, role)
        else:
            raise Invalid("protocol.unknown_type", type=str(kind)[:40])

    async def _offer(self, ws: web.WebSocketResponse, space_id: str, actor: Actor, role: str,
                     data: dict[str, Any]) -> None:
        sdp = data.get("sdp")
        if not isinstance(sdp, str):
            raise MediaError("sdp.invalid", detail="an offer needs an sdp string")
        await self._entitled(space_id, actor, role)
        result = await self.rooms.offer(space_id, actor.account_id, sdp)
        self._offered.add(ws)
        cid = frames.request_id(data)
        if "hls" in result:
            self.rooms.send(ws, self.rooms.hls_grant(space_id, actor.account_id, result["hls"], result["reason"], cid))
            return
        # the offer's id comes back, so a client that offered again meanwhile knows which answer is whose
        self.rooms.send(ws, {"type": "answer", "sdp": result["sdp"], "publish": result["publish"], "id": cid})

    async def _entitled(self, space_id: str, actor: Actor, role: str) -> None:
        """The join rule again, at every offer and HLS grant (access can end while a socket is open):
        a paid, unrefunded ticket where one is needed, not blocked, not removed; a guest only in a
        live public Space that sells no tickets."""
        if role != "guest":
            await self.core.may_join(actor.account_id, space_id)
            return
        space = (await self.core.view(space_id)).space
        if space.visibility.value != "public":
            raise Forbidden("space.guests_not_allowed", space_id=space_id)
        if space.ticketing is not None:
            raise Forbidden("ticket.required", space_id=space_id, price_minor=space.ticketing.price_minor,
                            currency=space.ticketing.currency)
        if space.state != SpaceState.LIVE:
            code = "space.not_live" if space.state == SpaceState.SCHEDULED else "space.ended"
            raise Conflict(code, space_id=space_id, state=space.state.value)

    async def _hls(self, ws: web.WebSocketResponse, space_id: str, actor: Actor, role: str, cid: str | int | None,
                   data: dict[str, Any]) -> None:
        """``{"type": "hls"}``: listen over HLS; ``"renew": true`` only asks for a fresh token for the
        URL already playing (reason ``renewed``), without touching the media."""
        await self._entitled(space_id, actor, role)
        if data.get("renew") is True:
            grant = self.rooms.hls_grant(space_id, actor.account_id, self.rooms.hls_url(space_id), "renewed", cid)
        else:
            result = await self.rooms.listen_hls(space_id, actor.account_id)
            grant = self.rooms.hls_grant(space_id, actor.account_id, result["hls"], result["reason"], cid)
        self.rooms.send(ws, grant)

    async def _candidate(self, space_id: str, actor: Actor, data: dict[str, Any]) -> None:
        """Trickle ICE: a candidate the browser found after its offer went out. No reply unless wrong."""
        candidate, mid = data.get("candidate"), data.get("sdpMid")
        if not (candidate is None or isinstance(candidate, str)) or not (mid is None or isinstance(mid, str)):
            raise MediaError("candidate.invalid", detail="candidate is a string (an a=candidate value) or null")
        await self.rooms.candidate(space_id, actor.account_id, candidate, mid)

    async def _command(self, ws: web.WebSocketResponse, space_id: str, actor: Actor, role: str,
                       data: dict[str, Any]) -> None:
        """A table command (core/commands.py): checked, run and answered with ``ok`` and its result."""
        table, name, args = self._table(), data.get("name"), data.get("args")
        command = table.get(name) if isinstance(name, str) else None
        if (isinstance(args, dict) and "account_id" in args and "person" not in args and command is not None
                and any(o.name == "person" for o in command.options)):
            args = {("person" if k == "account_id" else k): v for k, v in args.items()}  # the old web name
        outcome = await dispatch(self.core, actor, name, space_id, args, table=table, ports=self.ports,
                                 guest=role == "guest")
        self.rooms.send(ws, {"type": "ok", "id": frames.request_id(data), "result": _result(outcome.result)})

    async def _error(self, ws: web.WebSocketResponse, e: DomainError, cid: Any = None) -> None:
        """The error frame for ``e``: its code, a fixed sentence, its data; ``retry_after_s`` on top
        when trying again later can work (rate limits, an outage). Queued once the socket has an outbox,
        else (refusing a hello) written before the caller closes the socket."""
        frame: dict[str, Any] = {"type": "error", "id": cid, "code": e.code, "message": describe(e, WORDING),
                                 "data": e.data}
        if e.code == "service.unavailable" or "retry_after_s" in e.data:
            frame["retry_after_s"] = e.data.get("retry_after_s", RETRY_AFTER_S)
        if ws.get(OUTBOX) is not None:
            self.rooms.send(ws, frame)
            return
        with contextlib.suppress(Exception):
            await ws.send_str(dumps(frame))
