"""The web room's WebSocket protocol: one socket per participant, JSON frames (docs/webrtc-protocol.md).

The socket turns frames into table commands with the caller's Account (from a verified join token),
hands offers, candidates and HLS requests to the media router (``router.py``), and pushes the
Space's domain events back through it. Its end is a disconnect; only the ``leave`` frame leaves.

A socket may be open on a Space that is not live: a *scheduled* one (a waiting room: table commands
for that state work, media does not, and ``space.started`` lets the page move into the room) or an
*ended* one (commands get the table's own ``space.closed``). The person joins (presence) only once
the Space is live; the access rules (tickets, blocks, guests) are checked at hello either way."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, WSMsgType, web

from adapters.webrtc import frames
from adapters.webrtc.drain import SOCKETS, Sockets
from adapters.webrtc.outbox import OUTBOX, dumps, outbox, receive
from adapters.webrtc.room import MediaError
from adapters.webrtc.router import Rooms
from core.commands import BUILTIN_TABLE, CommandTable, Ports, dispatch, role_in
from core.errors import Conflict, DomainError, Forbidden, Invalid
from core.ids import new_id
from core.messages import describe
from core.model.accounts import Actor
from core.model.space import Space, SpaceState
from core.services import Core, access_error
from core.tokens import JoinTokens
from core.usecases.queries import SpaceView

if TYPE_CHECKING:
    from plugins.manager import PluginManager

log = logging.getLogger(__name__)
MAX_MESSAGE = 64 * 1024
HELLO_TIMEOUT_S = 10.0
RETRY_AFTER_S = 5.0  # what an error frame says for service.unavailable when the error names no time
# the web protocol's own codes (core.messages words the core's)
WORDING = {
    **frames.WORDING,
    "protocol.binary": "Send JSON text, not binary messages.",
    "protocol.unknown_type": "Unknown message type {type}.",
    "server.error": "Something went wrong on our side handling that message; the room goes on, try again.",
}


@dataclass
class Conn:
    """One socket's person: who, the role they said hello with, and whether they are *in* the Space
    (presence recorded). Not yet while the Space is scheduled, never in an ended one, never a guest."""

    actor: Actor
    role: str
    connection: str
    present: bool
    shown: str = "live"  # the Space's state the welcome showed
    ports: Ports | None = None  # tickets and links for this socket's client (its own address)


def _result(value: Any) -> Any:
    """A command's result as the ``ok`` frame carries it: plain JSON values only, else null."""
    if isinstance(value, dict | int | bool | str) or value is None:
        return value
    return None


class Signaling:
    """The ``/ws/{space_id}`` endpoint: hello, frames, table commands, leave; replies through outboxes."""

    def __init__(self, core: Core, rooms: Rooms, tokens: JoinTokens, *, plugins: PluginManager | None = None) -> None:
        self.core, self.rooms, self.tokens = core, rooms, tokens
        self.plugins = plugins
        self.ports = Ports()  # tickets and share links, set by the composition root where it has them
        # per socket, where set: the links (share, Checkout's return) on the address this client used
        self.ports_for: Callable[[web.Request], Ports] | None = None
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
            ports = self.ports_for(request) if self.ports_for is not None else self.ports
            await self._connected(ws, space_id, sockets, ports)
        finally:
            if sockets is not None:
                sockets.open.discard(ws)
        return ws

    async def _connected(self, ws: web.WebSocketResponse, space_id: str, sockets: Sockets | None,
                         ports: Ports) -> None:
        try:
            conn = await self._hello(ws, space_id, new_id())
            conn.ports = ports
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
        pid = conn.actor.account_id
        self.rooms.sockets.setdefault(space_id, {})[pid] = ws
        tabs = self._tabs.setdefault((space_id, pid), [])
        tabs.append(ws)
        try:
            if not conn.present:  # the Space may have started (or ended) before this socket got its events
                with contextlib.suppress(DomainError):
                    view = await self.core.view(space_id)
                    if view.space.state.value != conn.shown:
                        snapshot = await self._snapshot(view, conn.actor.account_id)
                        self.rooms.send(ws, {"type": "space", "id": None, "space": snapshot})
            await self._serve(ws, space_id, conn)
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
            if conn.present and not (sockets is not None and sockets.draining):
                try:  # a restart is not a disconnect: its rows go stale, and are swept if nobody returns
                    await self.core.disconnect(space_id, pid, conn.connection)
                except Exception as e:  # owed: the presence keeper retries it (its row is not kept fresh)
                    log.warning("disconnect of %s from %s not recorded yet: %s", pid, space_id, e)

    async def _leave(self, ws: web.WebSocketResponse, space_id: str, conn: Conn) -> None:
        """The explicit ``leave`` message: the person leaves (a host hands over or ends the Space), then
        the socket closes with 1000. Closing a tab is not this; it is a disconnect. Someone who never
        joined (a waiting room, an ended Space) only closes."""
        if conn.present:
            await self.core.leave(conn.actor, space_id)
        await ws.close(code=WSCloseCode.OK, message=b"left")

    async def _hello(self, ws: web.WebSocketResponse, space_id: str, connection: str) -> Conn:
        msg = await asyncio.wait_for(ws.receive(), HELLO_TIMEOUT_S)
        if msg.type != WSMsgType.TEXT:
            raise ValueError("no hello")
        data = frames.parse(msg.data)  # strict: deep nesting, NaN or 1e999 get a protocol.* error, no traceback
        if data.get("type") != "hello":
            raise ValueError("no hello")
        token = data.get("token")
        grant = self.tokens.verify(token if isinstance(token, str) else "", self.core.now(), space_id=space_id)
        if grant.account_id is None:  # a guest only listens: no commands, whatever the table lets guests do
            actor = Actor(account_id=f"guest-{id(ws):x}", platform="web")
            view = await self.core.view(space_id)
            self._guest_allowed(view.space)  # public, no tickets; the state counts at every offer
            await ws.send_json({"type": "welcome", "you": {"account_id": None, "role": "guest"},
                                "space": await self._snapshot(view, None), "commands": []})
            return Conn(actor, "guest", connection, present=False, shown=view.space.state.value)
        actor = Actor(account_id=grant.account_id, platform="web")
        # Join first: the Space is almost always live, and the join reads it anyway (a view before it
        # cost every join one more read on the critical path). Not live: the same access rule, without joining.
        try:
            role, present = (await self.core.join(actor, space_id, connection=connection)).role.value, True
        except Conflict as e:
            if e.code not in ("space.not_live", "space.ended"):
                raise
            space = (await self.core.view(space_id)).space
            await self._admitted(space, actor.account_id)
            role, present = role_in(space, actor.account_id), False
        # the welcome's parts are independent reads: made together, not one after another
        view, captions, comments = await asyncio.gather(
            self.core.view(space_id), self.core.recent_captions(space_id), self.core.recent_comments(space_id))
        await ws.send_json({"type": "welcome", "you": {"account_id": actor.account_id, "role": role},
                            "space": await self._snapshot(view, actor.account_id),
                            "captions": captions, "comments": comments, "commands": self._commands()})
        return Conn(actor, role, connection, present, view.space.state.value)

    async def _snapshot(self, view: SpaceView, account_id: str | None) -> dict[str, Any]:
        """The Space as this client draws it: the core's view plus ``away`` (seats kept for people
        whose connection dropped, the host's absence among them: until when) and, for a moderator,
        ``present`` (who is here: the audience they invite or promote from). A late joiner, a
        reload or a ``sync`` gets them from the server, not only from events it happened to see."""
        out = view.as_dict()
        out["away"] = {}
        if view.space.state != SpaceState.LIVE:
            return out
        moderator = account_id is not None and view.space.is_moderator(account_id)
        room = await self.core.queries.room_presence(view.space.id, present=moderator)
        out["away"] = {a: until.isoformat() for a, until in room.away.items()}
        if moderator:
            out["present"] = room.present
        out["names"] = {**room.names, **out["names"]}
        return out

    async def _admitted(self, space: Space, account_id: str) -> None:
        """The core's join rule (blocks, tickets) for a Space that is not live, which that rule would
        refuse for its state alone: checked as if the Space were live, without joining it."""
        as_live = replace(space, state=SpaceState.LIVE)
        await self.core.run(lambda uow: self.core.ctx.check_access(uow, as_live, account_id))

    def _guest_allowed(self, space: Space) -> None:
        """Guests come only into public Spaces that sell no tickets and are not for subscribers (a
        subscribers-first Space lets them in once it opens to everyone: the core's rule)."""
        if space.visibility.value != "public":
            raise Forbidden("space.guests_not_allowed", space_id=space.id)
        if space.ticketing is not None:
            raise Forbidden("ticket.required", space_id=space.id, price_minor=space.ticketing.price_minor,
                            currency=space.ticketing.currency)
        if space.subscribers is not None:
            refused = access_error(replace(space, state=SpaceState.LIVE), "", blocked=False, paid=False,
                                   now=self.core.now())
            if refused is not None:
                raise refused

    async def _present(self, space_id: str, conn: Conn) -> None:
        """Join now if the Space went live since this socket said hello (the host started it): an
        offer, HLS request or command from a waiting room makes the person present, as hello would."""
        if conn.present or conn.role == "guest":
            return
        if (await self.core.view(space_id)).space.state == SpaceState.LIVE:
            joined = await self.core.join(conn.actor, space_id, connection=conn.connection)
            conn.role, conn.present = joined.role.value, True

    async def _serve(self, ws: web.WebSocketResponse, space_id: str, conn: Conn) -> None:
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
                    await self._frame(ws, space_id, conn, kind, cid, data)
                except DomainError as e:
                    await self._error(ws, e, cid)
                except Exception as e:  # a bug or an outage the core did not name: the socket stays open
                    where = traceback.extract_tb(e.__traceback__)[-1]
                    log.error("web room %s: a %s frame from %s failed: %s at %s:%s", space_id,
                              str(kind)[:20], conn.actor.account_id, type(e).__name__, where.filename, where.lineno)
                    log.debug("the failure in full", exc_info=e)
                    await self._error(ws, Invalid("server.error"), cid)
        finally:
            await box.shutdown()

    async def _frame(self, ws: web.WebSocketResponse, space_id: str, conn: Conn, kind: Any,
                     cid: str | int | None, data: dict[str, Any]) -> None:
        if kind in ("offer", "hls", "command"):
            await self._present(space_id, conn)
        if kind == "offer":
            await self._offer(ws, space_id, conn.actor, conn.role, data)
        elif kind == "candidate":
            await self._candidate(space_id, conn.actor, data)
        elif kind == "hls":
            await self._hls(ws, space_id, conn.actor, conn.role, cid, data)
        elif kind == "command":
            await self._command(ws, space_id, conn.actor, conn.role, data, conn.ports or self.ports)
        elif kind == "ping":
            self.rooms.send(ws, {"type": "pong", "id": cid})
        elif kind == "sync":  # the whole Space now, e.g. after events a client could not apply
            snapshot = await self._snapshot(await self.core.view(space_id), conn.actor.account_id)
            self.rooms.send(ws, {"type": "space", "id": cid, "space": snapshot})
        elif kind == "leave":  # explicit: the person leaves, then the socket closes 1000 (a close alone is not this)
            await self._leave(ws, space_id, conn)
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
        live public Space that sells no tickets. Media needs a live Space: ``space.not_live`` while it
        is scheduled, ``space.ended`` once it is over."""
        if role != "guest":
            await self.core.may_join(actor.account_id, space_id)
            return
        space = (await self.core.view(space_id)).space
        self._guest_allowed(space)
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
                       data: dict[str, Any], ports: Ports) -> None:
        """A table command (core/commands.py): checked, run and answered with ``ok`` and its result."""
        table, name, args = self._table(), data.get("name"), data.get("args")
        command = table.get(name) if isinstance(name, str) else None
        if (isinstance(args, dict) and "account_id" in args and "person" not in args and command is not None
                and any(o.name == "person" for o in command.options)):
            args = {("person" if k == "account_id" else k): v for k, v in args.items()}  # the old web name
        outcome = await dispatch(self.core, actor, name, space_id, args, table=table, ports=ports,
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
