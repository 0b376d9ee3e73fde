"""Signaling for the web room: one WebSocket per participant, JSON messages (docs/webrtc-protocol.md).

The socket turns messages into core commands with the caller's Account (from a verified join
token) and pushes the Space's domain events back. Role changes re-point the media at once: the
server stops mixing a demoted or muted speaker before any client could react.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from adapters.webrtc.room import MediaError, Room
from core import events as ev
from core.errors import Conflict, DomainError, Forbidden, Invalid
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


class Rooms:
    """The media rooms this process serves, opened on first join and closed when the Space ends."""

    def __init__(self, core: Core, *, ice_servers: list[str] | None = None, announce: set[str] | None = None) -> None:
        self.core = core
        self.ice_servers = ice_servers or []
        self.announce = announce
        self.rooms: dict[str, Room] = {}
        self.sockets: dict[str, dict[str, web.WebSocketResponse]] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        self._tap_ids = itertools.count()
        core.bus.subscribe(self.on_event)

    def room(self, space_id: str) -> Room:
        r = self.rooms.get(space_id)
        if r is None:
            r = self.rooms[space_id] = Room(space_id, ice_servers=self.ice_servers, announce=self.announce)
            r.on_levels = lambda levels: self._spawn(self._broadcast(space_id, {"type": "levels", "levels": levels}))
        return r

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _broadcast(self, space_id: str, message: dict[str, Any]) -> None:
        frame = json.dumps(message)
        for ws in list(self.sockets.get(space_id, {}).values()):
            with contextlib.suppress(Exception):
                await ws.send_str(frame)

    async def on_event(self, event: ev.Event) -> None:
        space_id = getattr(event, "space_id", None)
        if space_id is None or (space_id not in self.sockets and space_id not in self.rooms):
            return
        if isinstance(event, ev.RoleChanged | ev.SpeakerMuted | ev.SpaceEnded | ev.ParticipantLeft):
            await self._sync_publishers(space_id)
        if isinstance(event, ev.SpaceNotice) and event.account_id is not None:
            target = self.sockets.get(space_id, {}).get(event.account_id)
            if target is not None:
                with contextlib.suppress(Exception):
                    await target.send_json({"type": "event", "event": event.to_dict()})
            return
        await self._broadcast(space_id, {"type": "event", "event": event.to_dict()})
        if isinstance(event, ev.RoleChanged):
            target = self.sockets.get(space_id, {}).get(event.account_id)
            if target is not None:
                with contextlib.suppress(Exception):
                    await target.send_json({"type": "renegotiate", "role": event.role,
                                        "publish": event.role != "listener"})
        if isinstance(event, ev.SpaceEnded):
            room = self.rooms.pop(space_id, None)
            if room is not None:
                await room.close()
            for ws in list(self.sockets.pop(space_id, {}).values()):
                with contextlib.suppress(Exception):
                    await ws.close(code=4000, message=b"space ended")

    async def _sync_publishers(self, space_id: str) -> None:
        room = self.rooms.get(space_id)
        if room is not None:
            view = await self.core.view(space_id)
            room.set_publishers(view.space.publishers())

    # ---- the AudioTap port (core/ports.py): the room's audio for captions, recording, Discord -----
    async def mix(self, space_id: str) -> AsyncIterator[AudioFrame]:
        room = self.room(space_id)
        room.start()
        sub = room.taps.subscribe(f"tap-{next(self._tap_ids)}")
        with contextlib.suppress(EOFError):
            while True:
                seq, pcm = await sub.next()
                yield AudioFrame(seq, pcm)

    async def speakers(self, space_id: str) -> AsyncIterator[AudioFrame]:
        room = self.room(space_id)
        room.start()
        sub = room.speaker_taps.subscribe(f"tap-{next(self._tap_ids)}")
        with contextlib.suppress(EOFError):
            while True:
                seq, pid, pcm = await sub.next()
                yield AudioFrame(seq, pcm, speaker_id=pid)

    async def ticks(self, space_id: str) -> AsyncIterator[AudioTick]:
        room = self.room(space_id)
        room.start()
        key = f"tap-{next(self._tap_ids)}"
        sub = room.tick_taps.subscribe(key)
        try:
            with contextlib.suppress(EOFError):
                while True:
                    seq, mix, frames = await sub.next()
                    yield AudioTick(seq, mix, frames)
        finally:
            room.tick_taps.unsubscribe(key)  # a consumer that stops must not keep a queue filling

    async def opus_packets(self, space_id: str) -> AsyncIterator[tuple[int, bytes]]:
        """The very packets listeners get (no re-encode), e.g. for Discord voice playback."""
        room = self.room(space_id)
        room.start()
        sub = room.listeners.subscribe(f"tap-{next(self._tap_ids)}")
        with contextlib.suppress(EOFError):
            while True:
                packet = await sub.next()
                yield int(packet.pts) // FRAME_SAMPLES, bytes(packet)

    async def close(self) -> None:
        for room in list(self.rooms.values()):
            await room.close()
        self.rooms.clear()


Command = Callable[[Core, Actor, str, dict[str, Any]], Awaitable[Any]]


def _arg(args: dict[str, Any], name: str, kind: type = str) -> Any:
    v = args.get(name)
    if not isinstance(v, kind) or (kind is str and not v):
        raise Invalid("protocol.bad_argument", argument=name)
    return v


COMMANDS: dict[str, Command] = {
    "raise_hand": lambda c, a, s, _: c.raise_hand(a, s),
    "lower_hand": lambda c, a, s, _: c.lower_hand(a, s),
    "react": lambda c, a, s, x: c.react(a, s, _arg(x, "emoji")),
    "comment": lambda c, a, s, x: c.comment(a, s, _arg(x, "text")),
    "approve": lambda c, a, s, x: c.approve(a, s, _arg(x, "account_id")),
    "deny": lambda c, a, s, x: c.deny(a, s, _arg(x, "account_id")),
    "invite": lambda c, a, s, x: c.invite(a, s, _arg(x, "account_id")),
    "accept_invite": lambda c, a, s, _: c.accept_invite(a, s),
    "promote": lambda c, a, s, x: c.promote(a, s, _arg(x, "account_id"), _arg(x, "role")),
    "demote": lambda c, a, s, x: c.demote(a, s, _arg(x, "account_id")),
    "mute": lambda c, a, s, x: c.mute(a, s, _arg(x, "account_id"), True),
    "unmute": lambda c, a, s, x: c.mute(a, s, _arg(x, "account_id"), False),
    "remove": lambda c, a, s, x: c.remove(a, s, _arg(x, "account_id"), block=bool(x.get("block")),
                                          reason=str(x.get("reason", ""))),
    "pin": lambda c, a, s, x: c.pin(a, s, _arg(x, "title"), url=x.get("url"), message_ref=x.get("message_ref")),
    "unpin": lambda c, a, s, x: c.unpin(a, s, _arg(x, "pin_id")),
    "captions": lambda c, a, s, x: c.set_captions(a, s, _arg(x, "enabled", bool)),
    "clear_queue": lambda c, a, s, _: c.clear_queue(a, s),
    "end": lambda c, a, s, _: c.end_space(a, s),
}
GUEST_COMMANDS: frozenset[str] = frozenset()


def _result(value: Any) -> Any:
    if isinstance(value, dict | int | bool | str) or value is None:
        return value
    return None


class Signaling:
    def __init__(self, core: Core, rooms: Rooms, tokens: JoinTokens, *, plugins: PluginManager | None = None) -> None:
        self.core, self.rooms, self.tokens = core, rooms, tokens
        self.plugins = plugins

    def _plugin_commands(self) -> list[dict[str, Any]]:
        return [c.public() for c in self.plugins.command_list()] if self.plugins is not None else []

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        space_id = request.match_info["space_id"]
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, heartbeat=20)
        await ws.prepare(request)
        try:
            actor, role = await self._hello(ws, space_id)
        except DomainError as e:
            await self._error(ws, e)
            await ws.close(code=4001, message=e.code.encode())
            return ws
        except (TimeoutError, ValueError):
            await ws.send_json({"type": "error", "code": "protocol.no_hello",
                                "message": "Send {\"type\": \"hello\", \"token\": ...} first."})
            await ws.close(code=4002)
            return ws
        pid = actor.account_id
        self.rooms.sockets.setdefault(space_id, {})[pid] = ws
        try:
            await self._serve(ws, space_id, actor, role)
        finally:
            if self.rooms.sockets.get(space_id, {}).get(pid) is ws:
                del self.rooms.sockets[space_id][pid]
            room = self.rooms.rooms.get(space_id)
            if room is not None:
                await room.remove_participant(pid)
            if role != "guest":
                with contextlib.suppress(DomainError):
                    await self.core.leave(actor, space_id)
        return ws

    async def _hello(self, ws: web.WebSocketResponse, space_id: str) -> tuple[Actor, str]:
        msg = await asyncio.wait_for(ws.receive(), HELLO_TIMEOUT_S)
        if msg.type != WSMsgType.TEXT:
            raise ValueError("no hello")
        data = json.loads(msg.data)
        if not isinstance(data, dict) or data.get("type") != "hello":
            raise ValueError("no hello")
        grant = self.tokens.verify(str(data.get("token", "")), self.core.now(), space_id=space_id)
        if grant.account_id is None:
            view = await self.core.view(space_id)
            if view.space.visibility.value != "public":
                raise Forbidden("space.guests_not_allowed", space_id=space_id)
            actor = Actor(account_id=f"guest-{id(ws):x}", platform="web")
            if view.space.state != SpaceState.LIVE:
                code = "space.not_live" if view.space.state == SpaceState.SCHEDULED else "space.ended"
                raise Conflict(code, space_id=space_id, state=view.space.state.value)
            await ws.send_json({"type": "welcome", "you": {"account_id": None, "role": "guest"},
                                "space": view.as_dict(), "commands": []})
            return actor, "guest"
        actor = Actor(account_id=grant.account_id, platform="web")
        joined = await self.core.join(actor, space_id)
        view = await self.core.view(space_id)
        await ws.send_json({"type": "welcome", "you": {"account_id": actor.account_id, "role": joined.role.value},
                            "space": view.as_dict(), "captions": await self.core.recent_captions(space_id),
                            "comments": await self.core.recent_comments(space_id),
                            "commands": self._plugin_commands()})
        return actor, joined.role.value

    async def _serve(self, ws: web.WebSocketResponse, space_id: str, actor: Actor, role: str) -> None:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                if msg.type == WSMsgType.ERROR:
                    break
                await ws.send_json({"type": "error", "code": "protocol.binary", "message": "Send JSON text."})
                continue
            try:
                data = json.loads(msg.data)
                if not isinstance(data, dict):
                    raise ValueError
            except ValueError:
                await ws.send_json({"type": "error", "code": "protocol.bad_json", "message": "Not a JSON object."})
                continue
            kind = data.get("type")
            try:
                if kind == "offer":
                    await self._offer(ws, space_id, actor, role, data)
                elif kind == "command":
                    await self._command(ws, space_id, actor, role, data)
                elif kind == "ping":
                    await ws.send_json({"type": "pong"})
                else:
                    await ws.send_json({"type": "error", "code": "protocol.unknown_type",
                                        "message": f"Unknown message type {str(kind)[:40]!r}."})
            except DomainError as e:
                await self._error(ws, e, data.get("id"))

    async def _offer(self, ws: web.WebSocketResponse, space_id: str, actor: Actor, role: str,
                     data: dict[str, Any]) -> None:
        sdp = data.get("sdp")
        if not isinstance(sdp, str):
            raise MediaError("sdp.invalid", detail="offer needs an sdp string")
        view = await self.core.view(space_id)
        room = self.rooms.room(space_id)
        room.set_publishers(view.space.publishers())
        publish = actor.account_id in view.space.publishers()
        answer = await room.add_participant(actor.account_id, sdp, publish=publish)
        await ws.send_json({"type": "answer", "sdp": answer, "publish": publish})

    async def _command(self, ws: web.WebSocketResponse, space_id: str, actor: Actor, role: str,
                       data: dict[str, Any]) -> None:
        name, args = data.get("name"), data.get("args") or {}
        plugin_names = set(self.plugins.commands) if self.plugins is not None else set()
        if not isinstance(name, str) or (name not in COMMANDS and name not in plugin_names):
            raise Invalid("protocol.unknown_command", name=str(name)[:40], known=sorted({*COMMANDS, *plugin_names}))
        if not isinstance(args, dict):
            raise Invalid("protocol.bad_argument", argument="args")
        if role == "guest" and name not in GUEST_COMMANDS:
            raise Forbidden("guest.link_account", command=name)
        if name not in COMMANDS and self.plugins is not None:
            reply = await self.plugins.invoke(name, actor, space_id, args, "web")
            await ws.send_json({"type": "ok", "id": data.get("id"), "result": {"text": reply.text, "url": reply.url}})
            return
        result = await COMMANDS[name](self.core, actor, space_id, args)
        await ws.send_json({"type": "ok", "id": data.get("id"), "result": _result(result)})

    async def _error(self, ws: web.WebSocketResponse, e: DomainError, cid: Any = None) -> None:
        with contextlib.suppress(Exception):
            await ws.send_json({"type": "error", "id": cid, "code": e.code, "message": describe(e), "data": e.data})
