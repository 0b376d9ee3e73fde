"""Presence over real sockets: a host's network blip, a reload, a second tab, an oversized frame and a
speaker's blip keep the Space and the seat; only a grace period running out ends it.

A whole instance (aiohttp, signaling, presence keeper, durable job runner) on a free port. The person
whose network fails talks through ``tests/support/faultproxy.py``, whose ``reset()`` drops the TCP
connection without a WebSocket close frame, as a lost Wi-Fi does. Every wait is on a frame or a row.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.webrtc.room import restrict_candidates
from core.model.accounts import Actor
from spacebridge.app import Instance, build, start, stop
from spacebridge.config import load_settings
from tests.integration.webrtc.test_room_media import Client
from tests.support.faultproxy import FaultProxy
from tests.support.loopback import LOOPBACK, ensure_loopback_alias

CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


class Tab:
    """One browser tab's signaling socket: what it was sent, in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []  # every frame, kept for assertions on order
        self._unread: list[dict[str, Any]] = []
        self._n = 0

    async def recv(self, kind: str, timeout: float = 10, **match: Any) -> dict[str, Any]:
        """The next frame of ``kind`` whose (``a__b``-dotted) fields equal ``match``."""
        deadline = time.monotonic() + timeout
        while True:
            for m in self._unread:
                if m.get("type") == kind and all(_get(m, k) == v for k, v in match.items()):
                    self._unread.remove(m)
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind} {match}; got {self.seen[-6:]}")
            try:
                msg = await self.ws.receive(timeout=left)
            except TimeoutError:
                raise AssertionError(f"no {kind} {match}; got {self.seen[-6:]}") from None
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"socket ended ({self.ws.close_code}) waiting for {kind} {match}: {msg}")
            frame = json.loads(msg.data)
            self.seen.append(frame)
            self._unread.append(frame)

    async def event(self, kind: str, timeout: float = 10, **match: Any) -> dict[str, Any]:
        frame = await self.recv("event", timeout, event__type=kind, **{f"event__{k}": v for k, v in match.items()})
        event: dict[str, Any] = frame["event"]
        return event

    async def command(self, name: str, **args: Any) -> dict[str, Any]:
        self._n += 1
        cid = f"c{self._n}"
        await self.ws.send_json({"type": "command", "id": cid, "name": name, "args": args})
        deadline = time.monotonic() + 10
        while True:
            for m in self._unread:
                if m.get("id") == cid and m.get("type") in ("ok", "error"):
                    self._unread.remove(m)
                    return m
            msg = await self.ws.receive(timeout=max(deadline - time.monotonic(), 0.01))
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"socket ended ({self.ws.close_code}) waiting for the answer to {name}")
            frame = json.loads(msg.data)
            self.seen.append(frame)
            self._unread.append(frame)

    def events(self) -> list[str]:
        return [f["event"]["type"] for f in self.seen if f.get("type") == "event"]

    async def closed(self, timeout: float = 10) -> int | None:
        """Read until the socket ends; the close code (None: dropped without a close frame)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.ws.receive(timeout=max(deadline - time.monotonic(), 0.01))
            if msg.type in CLOSED:
                return self.ws.close_code
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.seen.append(json.loads(msg.data))


def _get(m: Any, dotted: str) -> Any:
    for part in dotted.split("__"):
        m = m.get(part) if isinstance(m, dict) else None
    return m


@dataclass
class Room:
    platform: Instance
    http: aiohttp.ClientSession
    space_id: str
    host_id: str
    fan_id: str

    async def tab(self, account_id: str, via: FaultProxy | None = None, role: str = "listener") -> Tab:
        """A socket that said hello and got its welcome (through ``via`` if given)."""
        tab = await self.socket(via)
        await tab.ws.send_json({"type": "hello", "token": self.token(account_id, role)})
        await tab.recv("welcome")
        return tab

    async def socket(self, via: FaultProxy | None = None) -> Tab:
        base = f"http://127.0.0.1:{via.port}" if via is not None else self.platform.url
        return Tab(await self.http.ws_connect(f"{base}/ws/{self.space_id}"))

    def token(self, account_id: str, role: str) -> str:
        return self.platform.tokens.issue(self.space_id, account_id, role, self.platform.core.now())

    async def connections(self, account_id: str) -> int:
        """How many connections the database holds for the person now."""
        async with self.platform.core.uow() as uow:
            return await uow.presence.live_count(self.space_id, account_id,
                                                 self.platform.core.now() - timedelta(days=1))

    async def until_connections(self, account_id: str, n: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while (got := await self.connections(account_id)) != n:
            if time.monotonic() > deadline:
                raise AssertionError(f"{got} connections of {account_id}, wanted {n}")
            await asyncio.sleep(0.02)

    async def state(self) -> tuple[str, str]:
        view = await self.platform.core.view(self.space_id)
        return view.space.state.value, view.space.host_id


async def _room(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: Any) -> AsyncIterator[Room]:
    monkeypatch.setenv("SPACEBRIDGE_DATA_DIR", str(tmp_path))
    p = await build(load_settings(database_url=url, job_workers=1, presence_heartbeat_s=0.5, presence_stale_s=5,
                                  **settings))
    await start(p, "127.0.0.1", 0)
    try:
        core = p.core
        hana = await core.ensure_account("web", "hana", "Hana")
        finn = await core.ensure_account("web", "finn", "Finn")
        space = await core.create_space(Actor(account_id=hana.id, is_community_admin=True), "Blips happen")
        async with aiohttp.ClientSession() as http:
            yield Room(p, http, space.id, hana.id, finn.id)
    finally:
        await stop(p)


@pytest.fixture
async def room(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Room]:
    """SQLite and PostgreSQL; the default grace periods (180 s / 60 s): nothing expires in a test."""
    async for r in _room(database_url, tmp_path, monkeypatch):
        yield r


@pytest.fixture
async def sqlite_room(sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Room]:
    async for r in _room(sqlite_url, tmp_path, monkeypatch):
        yield r


@pytest.fixture
async def short_grace_room(database_url: str, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Room]:
    async for r in _room(database_url, tmp_path, monkeypatch, host_grace_s=1.0, speaker_grace_s=1.0):
        yield r


def _net(room: Room) -> FaultProxy:
    """The network of the person whose connection fails: a proxy in front of the room's port."""
    port = int(room.platform.url.rsplit(":", 1)[1])
    return FaultProxy("127.0.0.1", port)


async def test_a_hosts_network_blip_keeps_the_space_and_the_room_sees_away_then_back(room: Room) -> None:
    with _net(room) as wifi:
        host = await room.tab(room.host_id, via=wifi, role="speaker")
        fan = await room.tab(room.fan_id)
        wifi.reset()  # the TCP connection is gone: no close frame, no leave
        assert await host.closed() in (None, 1006)
        away = await fan.event("participant.away", account_id=room.host_id)
        assert away["role"] == "host" and away["until"]
        assert await room.state() == ("live", room.host_id)

        host = await room.tab(room.host_id, via=wifi, role="speaker")  # the page reconnects: a fresh hello
        back = await fan.event("participant.back", account_id=room.host_id)
        assert back["role"] == "host"
        assert (await host.command("react", emoji="👏"))["type"] == "ok"  # the host is the host again
        await fan.event("reaction.sent", emoji="👏")
        assert "space.ended" not in fan.events()
        assert await room.state() == ("live", room.host_id)


async def test_a_reload_ends_nothing(sqlite_room: Room) -> None:
    room = sqlite_room
    old = await room.tab(room.host_id, role="speaker")
    fan = await room.tab(room.fan_id)
    new = await room.tab(room.host_id, role="speaker")  # the reloaded page connects before the old one closes
    await room.until_connections(room.host_id, 2)
    await old.ws.close()  # a browser closes the old page's socket with 1001 "going away"
    await room.until_connections(room.host_id, 1)
    assert (await new.command("react", emoji="🔥"))["type"] == "ok"
    await fan.event("reaction.sent", emoji="🔥")
    seen = fan.events()
    assert "space.ended" not in seen
    assert seen.count("participant.away") == seen.count("participant.back") <= 1
    assert await room.state() == ("live", room.host_id)


async def test_closing_a_second_tab_leaves_the_first_working(sqlite_room: Room) -> None:
    room = sqlite_room
    first = await room.tab(room.host_id, role="speaker")
    fan = await room.tab(room.fan_id)
    second = await room.tab(room.host_id, role="speaker")
    await room.until_connections(room.host_id, 2)
    await second.ws.close()
    await room.until_connections(room.host_id, 1)
    # the first tab still answers commands and is still told what happens in the room
    assert (await first.command("react", emoji="🎉"))["type"] == "ok"
    assert (await fan.command("raise_hand"))["type"] == "ok"
    await first.event("hand.raised", account_id=room.fan_id)
    assert (await first.command("approve", account_id=room.fan_id))["type"] == "ok"
    await fan.recv("renegotiate", role="speaker")
    assert not {"participant.away", "participant.left", "space.ended"} & set(fan.events())
    assert await room.state() == ("live", room.host_id)
    # closing the other tab first works the same way round
    third = await room.tab(room.host_id, role="speaker")
    await room.until_connections(room.host_id, 2)
    await first.ws.close()
    await room.until_connections(room.host_id, 1)
    assert (await fan.command("react", emoji="👏"))["type"] == "ok"
    await third.event("reaction.sent", emoji="👏")
    assert "participant.away" not in fan.events()


async def test_an_oversized_frame_closes_only_that_socket_1009_and_the_host_comes_back(sqlite_room: Room) -> None:
    room = sqlite_room
    host = await room.tab(room.host_id, role="speaker")
    fan = await room.tab(room.fan_id)
    await host.ws.send_str(json.dumps({"type": "ping", "pad": "x" * (64 * 1024 + 1)}))
    assert await host.closed() == 1009
    await fan.event("participant.away", account_id=room.host_id)
    assert await room.state() == ("live", room.host_id)
    host = await room.tab(room.host_id, role="speaker")
    await fan.event("participant.back", account_id=room.host_id)
    assert (await host.command("react", emoji="👏"))["type"] == "ok"
    assert "space.ended" not in fan.events()


async def test_a_speakers_blip_keeps_the_seat(sqlite_room: Room) -> None:
    room = sqlite_room
    host = await room.tab(room.host_id, role="speaker")
    with _net(room) as wifi:
        fan = await room.tab(room.fan_id, via=wifi)
        assert (await host.command("promote", account_id=room.fan_id, role="speaker"))["type"] == "ok"
        await fan.recv("renegotiate", role="speaker")
        wifi.reset()
        assert await fan.closed() in (None, 1006)
        away = await host.event("participant.away", account_id=room.fan_id)
        assert away["role"] == "speaker"
        assert (await room.platform.core.view(room.space_id)).space.speakers == [room.fan_id]
        fan = await room.tab(room.fan_id, via=wifi)
        welcome = next(f for f in fan.seen if f["type"] == "welcome")
        assert welcome["you"]["role"] == "speaker"
        await host.event("participant.back", account_id=room.fan_id, role="speaker")
    assert (await room.platform.core.view(room.space_id)).space.speakers == [room.fan_id]


async def test_when_the_host_is_not_back_in_time_the_space_ends_host_disconnected(short_grace_room: Room) -> None:
    room = short_grace_room
    with _net(room) as wifi:
        host = await room.tab(room.host_id, via=wifi, role="speaker")
        fan = await room.tab(room.fan_id)
        await host.event("participant.joined", account_id=room.fan_id)
        wifi.reset()
        await fan.event("participant.away", account_id=room.host_id)
        ended = await fan.event("space.ended", timeout=30)  # the durable grace job, a second later
        assert ended["reason"] == "host_disconnected"
        assert await fan.closed() == 4000
        assert fan.events().index("participant.away") < fan.events().index("space.ended")
    assert (await room.state())[0] == "ended"


async def test_a_speaker_not_back_in_time_becomes_a_listener_and_the_space_goes_on(short_grace_room: Room) -> None:
    room = short_grace_room
    host = await room.tab(room.host_id, role="speaker")
    with _net(room) as wifi:
        fan = await room.tab(room.fan_id, via=wifi)
        assert (await host.command("promote", account_id=room.fan_id, role="speaker"))["type"] == "ok"
        await fan.recv("renegotiate", role="speaker")
        wifi.reset()
        await host.event("participant.away", account_id=room.fan_id)
        await host.event("role.changed", account_id=room.fan_id, role="listener", timeout=30)
    assert (await room.platform.core.view(room.space_id)).space.speakers == []
    assert await room.state() == ("live", room.host_id)
    assert (await host.command("react", emoji="👏"))["type"] == "ok"


HOSTILE_HELLOS = {
    "deep nesting": "[" * 5000 + "]" * 5000,
    "deep object": '{"type": "hello", "token": ' + '{"a": ' * 3000 + "1" + "}" * 3000 + "}",
    "NaN": '{"type": "hello", "token": NaN}',
    "Infinity": '{"type": "hello", "token": 1e999}',
    "not JSON": "{hello",
    "a list": '["hello"]',
}


@pytest.mark.parametrize("text", list(HOSTILE_HELLOS.values()), ids=list(HOSTILE_HELLOS))
async def test_a_hostile_hello_gets_a_clear_error_and_close(sqlite_room: Room, text: str,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    room = sqlite_room
    caplog.set_level(logging.WARNING)
    tab = await room.socket()
    await tab.ws.send_str(text)
    error = await tab.recv("error")
    assert error["code"].startswith("protocol."), error
    assert "Traceback" not in json.dumps(error) and "Error" not in error["message"]
    assert await tab.closed() == 4002
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "a hostile hello left an error in the log"
    assert await room.connections(room.host_id) == 0
    fine = await room.tab(room.host_id, role="speaker")  # the server is unharmed
    assert (await fine.command("react", emoji="👏"))["type"] == "ok"


async def test_the_tab_left_over_is_asked_to_offer_again_when_the_newer_tabs_media_goes(
        tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Media is one per person: the newer tab's offer replaced the older's. When the newer tab closes, the
    older one is told ``renegotiate`` (its role, publish) and its new offer is answered."""
    ensure_loopback_alias()
    async for room in _room(sqlite_url, tmp_path, monkeypatch, ice_announce=[LOOPBACK],
                            ice_allowed_networks=["127.0.0.0/8"]):
        clients: list[Client] = []
        try:
            first = await room.tab(room.host_id, role="speaker")
            assert (await _offer(first, clients))["publish"] is True
            second = await room.tab(room.host_id, role="speaker")
            assert (await _offer(second, clients))["publish"] is True
            await second.ws.close()
            assert await first.recv("renegotiate") == {"type": "renegotiate", "role": "host", "publish": True}
            assert (await _offer(first, clients))["publish"] is True
            assert await room.state() == ("live", room.host_id)
        finally:
            for c in clients:
                await c.pc.close()


async def _offer(tab: Tab, clients: list[Client]) -> dict[str, Any]:
    """A new peer connection publishing a tone, offered over ``tab``; the answer frame."""
    client = Client(440)
    clients.append(client)
    pc = client.pc
    await pc.setLocalDescription(await pc.createOffer())
    await tab.ws.send_json({"type": "offer", "sdp": restrict_candidates(pc.localDescription.sdp, {LOOPBACK})})
    return await tab.recv("answer", timeout=20)


async def test_a_hello_while_the_database_is_away_is_told_to_try_again_later(
        pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not 4001 (which tells a page not to reconnect): an error frame with ``retry_after_s``, close 1013."""
    from tests.conftest import _truncate

    await _truncate(pg_url)
    with FaultProxy.for_url(pg_url) as db:
        async for room in _room(db.url(pg_url), tmp_path, monkeypatch, min_free_disk_mb=0,
                                database_connect_timeout_s=1.0, database_statement_timeout_s=1.0):
            db.cut()
            tab = await room.socket()
            await tab.ws.send_json({"type": "hello", "token": room.token(room.fan_id, "listener")})
            error = await tab.recv("error", timeout=30)
            assert error["code"] == "service.unavailable" and error["retry_after_s"] > 0
            assert await tab.closed() == 1013
            db.restore()
            deadline = time.monotonic() + 60
            while True:  # the page tries again, as told, until the database is back
                tab = await room.socket()
                await tab.ws.send_json({"type": "hello", "token": room.token(room.fan_id, "listener")})
                msg = await tab.ws.receive(timeout=30)
                if json.loads(msg.data)["type"] == "welcome" or time.monotonic() > deadline:
                    break
                await tab.closed()
            assert json.loads(msg.data)["type"] == "welcome"
