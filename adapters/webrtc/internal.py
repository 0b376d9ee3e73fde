"""The internal HTTP API between web processes: signaling on one process reaches the room of a
Space another process owns (``placement.py``) through ``/internal/media/{space_id}/...``.

``InternalLink`` is the calling side (offers, candidates, leaves, the audio of a remote room);
``InternalApi`` answers those calls on the owner. Both sign with the instance's internal key."""

from __future__ import annotations

import contextlib
import hmac
import itertools
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import WSMsgType, web

from adapters.webrtc.placement import Node
from adapters.webrtc.room import MediaError
from adapters.webrtc.ticks import decode_tick, encode_tick
from core.errors import DomainError
from core.messages import describe
from core.ports import AudioTick

if TYPE_CHECKING:
    from adapters.webrtc.router import Rooms

log = logging.getLogger(__name__)
INTERNAL_HEADER = "X-Spacebridge-Internal"


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


async def _answered(work: Awaitable[dict[str, Any]]) -> web.Response:
    """An internal media request's outcome: the result, who owns the Space now (409), or why not (400)."""
    try:
        return web.json_response(await work)
    except MediaMoved as m:
        return web.json_response({"owner": {"id": m.owner.id, "url": m.owner.url}}, status=409)
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

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()


class InternalApi:
    """The ``/internal/media/{space_id}/...`` endpoints: other processes' signaling using this
    process's rooms (offer, hls, candidate, leave) and audio consumers reading them (ticks)."""

    def __init__(self, rooms: Rooms) -> None:
        self.rooms = rooms
        self._tap_ids = itertools.count()

    async def offer(self, request: web.Request) -> web.Response:
        """POST /internal/media/{space_id}/offer from another process's signaling."""
        self.rooms.link.check(request)
        pid, sdp = await _fields(request, "pid", "sdp")
        return await _answered(self.rooms.local_offer(request.match_info["space_id"], pid, sdp))

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
        room = self.rooms.rooms.get(request.match_info["space_id"])

        async def add() -> dict[str, Any]:
            return {"applied": room is not None and await room.add_candidate(pid, candidate, mid)}

        return await _answered(add())

    async def leave(self, request: web.Request) -> web.Response:
        self.rooms.link.check(request)
        room = self.rooms.rooms.get(request.match_info["space_id"])
        if room is not None:
            (pid,) = await _fields(request, "pid")
            await room.remove_participant(pid)
        return web.json_response({})

    async def ticks(self, request: web.Request) -> web.StreamResponse:
        """GET /internal/media/{space_id}/ticks: this room's audio for a consumer in another process."""
        self.rooms.link.check(request)
        space_id = request.match_info["space_id"]
        placement = self.rooms.placement
        if not placement.owns(space_id):
            owner = await placement.owner(space_id)
            return web.json_response({"owner": {"id": owner.id, "url": owner.url} if owner else None}, status=409)
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
