"""The internal HTTP API between web processes: signaling on one process reaches the room of a
Space another process owns (``placement.py``) through ``/internal/media/{space_id}/...``.

``InternalLink`` is the calling side (offers, candidates, leaves, the audio of a remote room, a
Discord Stage's speakers forwarded to the owner); ``InternalApi`` answers those calls on the owner.
Both sign with the instance's internal key."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import logging
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
from aiohttp import WSMsgType, web

from adapters.webrtc.placement import Node
from adapters.webrtc.room import ExternalSource, MediaError, Room
from adapters.webrtc.ticks import decode_tick, encode_tick
from core.errors import DomainError
from core.messages import describe
from core.model.space import SpaceState
from core.ports import AudioTick

if TYPE_CHECKING:
    from adapters.webrtc.router import Rooms

log = logging.getLogger(__name__)
INTERNAL_HEADER = "X-Spacebridge-Internal"
SPEAKER_PACKET, SPEAKER_GONE = 1, 2  # a forwarded speaker's frame kinds (``encode_speaker``)
MAX_GROUP = 100  # characters of a speaker group's name (``discord:<guild id>``)
_SEQ = struct.Struct(">H")
_PTS = struct.Struct(">Q")


def encode_speaker(account: str, seq: int | None, opus: bytes = b"") -> bytes:
    """One forwarded speaker frame: kind, account id, then the RTP sequence number and the Opus
    payload (``seq`` None: the speaker is gone, the owner stops mixing them now)."""
    raw = account.encode()
    if not 0 < len(raw) < 256:
        raise ValueError("an account id is 1 to 255 bytes")
    if seq is None:
        return bytes([SPEAKER_GONE, len(raw)]) + raw
    return bytes([SPEAKER_PACKET, len(raw)]) + raw + _SEQ.pack(seq & 0xFFFF) + opus


def decode_speaker(data: bytes) -> tuple[str, int | None, bytes]:
    """The inverse of ``encode_speaker``; anything else raises ``ValueError``."""
    if len(data) < 3 or data[0] not in (SPEAKER_PACKET, SPEAKER_GONE):
        raise ValueError("not a speaker frame")
    end = 2 + data[1]
    account = data[2:end].decode()  # UnicodeDecodeError is a ValueError
    if not account or len(data) < end:
        raise ValueError("a speaker frame without its account")
    if data[0] == SPEAKER_GONE:
        if len(data) != end:
            raise ValueError("a malformed speaker frame (trailing bytes)")
        return account, None, b""
    if len(data) <= end + _SEQ.size:
        raise ValueError("a speaker packet without Opus")
    return account, _SEQ.unpack_from(data, end)[0], data[end + _SEQ.size:]


class MediaMoved(Exception):
    """The Space's media is owned by another process now: ask ``owner``."""

    def __init__(self, owner: Node) -> None:
        super().__init__(owner.id)
        self.owner = owner


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


def _elsewhere(owner: Node | None) -> web.Response:
    """409: this process does not serve the Space; who does (None while nobody does)."""
    return web.json_response({"owner": {"id": owner.id, "url": owner.url} if owner else None}, status=409)


async def _answered(work: Awaitable[dict[str, Any]]) -> web.Response:
    """An internal media request's outcome: the result, who owns the Space now (409), or why not (400)."""
    try:
        return web.json_response(await work)
    except MediaMoved as m:
        return _elsewhere(m.owner)
    except DomainError as e:
        return web.json_response({"code": e.code, "detail": describe(e)}, status=400)


class InternalLink:
    """This process calling another process's internal media API (one shared HTTP session)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._http: aiohttp.ClientSession | None = None

    def token(self) -> str:
        return hmac.new(self.key.encode(), b"spacebridge-internal", "sha256").hexdigest()

    def check(self, request: web.Request) -> None:
        """403 unless the request carries the instance's internal token (no key: never allowed)."""
        if not self.key or not hmac.compare_digest(request.headers.get(INTERNAL_HEADER, ""), self.token()):
            raise web.HTTPForbidden(text="internal endpoint")

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        return self._http

    async def post(self, owner: Node, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the owner: its answer, ``MediaMoved`` if it gave the Space up, else ``MediaError``."""
        try:
            async with self._session().post(owner.url.rstrip("/") + path, json=body,
                                            headers={INTERNAL_HEADER: self.token()}) as r:
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

    async def ticks(self, owner: Node, space_id: str) -> AsyncIterator[AudioTick]:
        """Another process's room, tick by tick, over its internal WebSocket (``InternalApi.ticks``)."""
        url = owner.url.rstrip("/") + f"/internal/media/{space_id}/ticks"
        try:
            async with self._session().ws_connect(url, headers={INTERNAL_HEADER: self.token()}, heartbeat=5.0,
                                                  timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                                                  max_msg_size=1 << 20) as ws:
                async for msg in ws:
                    if msg.type != WSMsgType.BINARY:
                        return
                    yield decode_tick(msg.data)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            log.info("audio of %s from %s stopped: %s", space_id, owner.id, e)

    async def packets(self, owner: Node, space_id: str) -> AsyncIterator[tuple[int, bytes]]:
        """Another process's room as its encoded packets, ``(pts, Opus)`` (``InternalApi.packets``),
        until the link or the room ends: what a relay fans out to its listeners."""
        url = owner.url.rstrip("/") + f"/internal/media/{space_id}/packets"
        try:
            async with self._session().ws_connect(url, headers={INTERNAL_HEADER: self.token()}, heartbeat=2.0,
                                                  timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                                                  max_msg_size=1 << 16) as ws:
                async for msg in ws:
                    if msg.type != WSMsgType.BINARY or len(msg.data) <= _PTS.size:
                        return
                    yield _PTS.unpack_from(msg.data)[0], msg.data[_PTS.size:]
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            log.debug("packets of %s from %s stopped: %s", space_id, owner.id, type(e).__name__)  # relay.py logs it

    async def speakers(self, owner: Node, space_id: str, group: str,
                       outgoing: Callable[[], Awaitable[bytes]]) -> AsyncIterator[tuple[int, bytes]]:
        """Speakers of ``group`` into another process's room (``InternalApi.speakers``): sends each
        frame ``outgoing`` gives (``encode_speaker``) and yields what the owner plays back to the
        group, ``(pts, Opus)`` of its mix without them, until the link or the room ends."""
        url = owner.url.rstrip("/") + f"/internal/media/{space_id}/speakers?group={quote(group, safe='')}"
        try:
            async with self._session().ws_connect(url, headers={INTERNAL_HEADER: self.token()}, heartbeat=5.0,
                                                  timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                                                  max_msg_size=1 << 16) as ws:

                async def send() -> None:
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        while not ws.closed:
                            await ws.send_bytes(await outgoing())

                sender = asyncio.create_task(send())
                try:
                    async for msg in ws:
                        if msg.type != WSMsgType.BINARY or len(msg.data) <= _PTS.size:
                            return
                        yield _PTS.unpack_from(msg.data)[0], msg.data[_PTS.size:]
                finally:
                    sender.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sender
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            log.info("speakers of %s to %s stopped: %s", space_id, owner.id, e)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()


class InternalApi:
    """The ``/internal/media/{space_id}/...`` endpoints: other processes' signaling using this
    process's rooms (offer, hls, candidate, leave), audio consumers reading them (ticks) and a
    Discord Stage's speakers mixed into them (speakers)."""

    def __init__(self, rooms: Rooms) -> None:
        self.rooms = rooms
        self._tap_ids = itertools.count()

    async def offer(self, request: web.Request) -> web.Response:
        """POST /internal/media/{space_id}/offer from another process's signaling."""
        self.rooms.link.check(request)
        pid, sdp = await _fields(request, "pid", "sdp")
        exclude = (await request.json()).get("exclude") or []  # relays that refused this listener
        if not isinstance(exclude, list) or not all(isinstance(x, str) for x in exclude):
            raise web.HTTPBadRequest(text="exclude is a list of process ids")
        return await _answered(self.rooms.local_offer(request.match_info["space_id"], pid, sdp, set(exclude)))

    async def relay(self, request: web.Request) -> web.Response:
        """POST /internal/media/{space_id}/relay: a listener the owner sends to this process's relay
        room (``relay.py``); ``limit`` is the share the owner picked us under."""
        self.rooms.link.check(request)
        pid, sdp = await _fields(request, "pid", "sdp")
        limit = (await request.json()).get("limit")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise web.HTTPBadRequest(text="limit is a whole number")
        return await _answered(self.rooms.relays.offer(request.match_info["space_id"], pid, sdp, limit))

    async def packets(self, request: web.Request) -> web.StreamResponse:
        """GET /internal/media/{space_id}/packets (WebSocket): the room's encoded packets, each frame
        the pts (8 bytes, big-endian) and the Opus payload, for a relay in another process; 409 names
        the owner when it is not this process."""
        self.rooms.link.check(request)
        space_id = request.match_info["space_id"]
        if not self.rooms.placement.owns(space_id):
            return _elsewhere(await self.rooms.placement.owner(space_id))
        room = self.rooms.room(space_id)
        room.start()
        ws = web.WebSocketResponse(heartbeat=2.0)
        await ws.prepare(request)
        key = f"packets-{next(self._tap_ids)}"
        sub = room.packet_taps.subscribe(key)
        try:
            with contextlib.suppress(EOFError, ConnectionError, RuntimeError):
                while not ws.closed:
                    packet = await sub.next()
                    await ws.send_bytes(_PTS.pack(int(packet.pts)) + bytes(packet))
        finally:
            room.packet_taps.unsubscribe(key)
            await ws.close()
        return ws

    async def status(self, request: web.Request) -> web.Response:
        """GET /internal/media/status: who this process serves, as owner and as relay (operators, tests)."""
        self.rooms.link.check(request)
        rooms = self.rooms
        owned = {sid: {"listeners": sorted(p for p in r.participants if p not in r.publishers),
                       "speakers": sorted(p for p in r.participants if p in r.publishers),
                       "packet_subscribers": len(r.packet_taps), "sent": r.sent()}
                 for sid, r in rooms.rooms.items()}
        return web.json_response({"node": rooms.placement.node.id, "url": rooms.placement.node.url,
                                  "owned": sorted(s for s in rooms.rooms if rooms.placement.owns(s)),
                                  "rooms": owned, "relays": rooms.relays.status(), "per_process": rooms.share_limit()})

    async def hls(self, request: web.Request) -> web.Response:
        self.rooms.link.check(request)
        (pid,) = await _fields(request, "pid")
        return await _answered(self.rooms.local_hls(request.match_info["space_id"], pid))

    async def candidate(self, request: web.Request) -> web.Response:
        self.rooms.link.check(request)
        (pid,) = await _fields(request, "pid")
        body = await request.json()
        candidate, mid = body.get("candidate"), body.get("sdp_mid")
        if not (candidate is None or isinstance(candidate, str)) or not (mid is None or isinstance(mid, str)):
            raise web.HTTPBadRequest(text="candidate and sdp_mid are strings or null")
        space_id = request.match_info["space_id"]
        room = self.rooms.rooms.get(space_id)
        if room is None or pid not in room.participants:
            room = self.rooms.relays.by_space.get(space_id) or room

        async def add() -> dict[str, Any]:
            return {"applied": room is not None and await room.add_candidate(pid, candidate, mid)}

        return await _answered(add())

    async def leave(self, request: web.Request) -> web.Response:
        self.rooms.link.check(request)
        space_id = request.match_info["space_id"]
        (pid,) = await _fields(request, "pid")
        room = self.rooms.rooms.get(space_id)
        if room is not None:
            await room.remove_participant(pid)
        await self.rooms.relays.leave(space_id, pid)
        return web.json_response({})

    async def ticks(self, request: web.Request) -> web.StreamResponse:
        """GET /internal/media/{space_id}/ticks: this room's audio for a consumer in another process."""
        self.rooms.link.check(request)
        space_id = request.match_info["space_id"]
        if not self.rooms.placement.owns(space_id):
            return _elsewhere(await self.rooms.placement.owner(space_id))
        room = self.rooms.room(space_id)
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

    async def speakers(self, request: web.Request) -> web.StreamResponse:
        """GET /internal/media/{space_id}/speakers?group=G (WebSocket): another process's platform
        speakers (a Discord Stage whose bot runs there) mixed into this room.

        Each binary frame in is ``encode_speaker``'s: the packets of one account enter the same
        jitter buffer and decoder as a local Discord speaker (``jitter.SpeakerStream``), as an
        external speaker of group G, heard only while the core has them on stage. Out go the group's
        mix-minus packets, ``(pts, Opus)``, for the Stage to play. Their speakers leave the mix when
        the socket closes. 409 names the owner when this process does not serve the Space (it claims
        a Space nobody serves, as an offer would)."""
        self.rooms.link.check(request)
        space_id, group = request.match_info["space_id"], request.query.get("group", "")
        if not group or len(group) > MAX_GROUP:
            raise web.HTTPBadRequest(text=f"group is 1 to {MAX_GROUP} characters")
        placement = self.rooms.placement
        if not placement.owns(space_id):
            owner = await placement.claim(space_id) if placement.media else await placement.owner(space_id)
            if owner is None or owner.id != placement.node.id:
                return _elsewhere(owner)
        view = await self.rooms.core.view(space_id)
        if view.space.state != SpaceState.LIVE:
            return web.json_response({"code": "space.not_live", "detail": "the Space is not live"}, status=400)
        from adapters.discord.jitter import SpeakerStream  # here only: processes without Discord never load it

        room = self.rooms.room(space_id)
        room.set_publishers(view.space.publishers())  # a room this call opened knows its stage at once
        ws = web.WebSocketResponse(heartbeat=5.0, max_msg_size=1 << 16)
        await ws.prepare(request)
        tap, key = room.group_tap(group), f"speakers-{next(self._tap_ids)}"
        sub = tap.subscribe(key)
        streams: dict[str, SpeakerStream] = {}
        loop = asyncio.get_running_loop()

        async def play() -> None:
            with contextlib.suppress(EOFError, ConnectionError, RuntimeError):
                while not ws.closed:
                    pts, packet = await sub.next()
                    await ws.send_bytes(_PTS.pack(pts) + packet)
            await ws.close()  # the room closed (ended, or moved): the sender asks who serves it now

        player = asyncio.create_task(play())
        try:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY:
                    break
                try:
                    account, seq, opus = decode_speaker(msg.data)
                except ValueError as e:
                    log.info("room %s: a bad speaker frame dropped: %s", space_id, e)
                    continue
                stream = streams.get(account)
                if seq is None:
                    if stream is not None:
                        self._drop_external(room, account, streams.pop(account))
                    continue
                if stream is None:
                    stream = streams[account] = SpeakerStream()
                    room.add_external(account, group, stream)
                stream.arrived = loop.time()
                stream.push(seq, opus)
        finally:
            player.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await player
            tap.unsubscribe(key)
            for account, stream in streams.items():
                self._drop_external(room, account, stream)
            await ws.close()
        return ws

    @staticmethod
    def _drop_external(room: Room, account: str, stream: ExternalSource) -> None:
        """Out of the mix, unless another link has put them in since."""
        ext = room.external.get(account)
        if ext is not None and ext.source is stream:
            room.remove_external(account)
