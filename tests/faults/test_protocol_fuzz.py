"""Hostile frames over a real WebSocket: no traceback, no dropped socket, nothing changed by a refusal."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.commands import COMMAND_NAMES as COMMANDS
from core.model.accounts import Actor
from spacebridge.app import Instance

TIMEOUT_S = 30.0
ARG_NAMES = ["account_id", "emoji", "text", "role", "block", "reason", "title", "url", "message_ref", "pin_id",
             "enabled", "count", "who", "member", "action", "words", "out", "args", "person", "up", "when", "host",
             "code", "on"]
TYPES = ["offer", "candidate", "hls", "command", "ping", "hello", "pong", "welcome", "event", "levels"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def _commands(names: list[str]) -> st.SearchStrategy[str]:
    args = st.dictionaries(st.sampled_from(ARG_NAMES), json_values, max_size=4) | json_values
    frame = st.fixed_dictionaries({"type": st.just("command"), "name": st.sampled_from(names) | st.text(max_size=8),
                                   "args": args}, optional={"id": json_values})
    return frame.map(json.dumps)


typed = st.fixed_dictionaries({"type": st.sampled_from(TYPES) | json_values},
                              optional={"id": json_values, "sdp": json_values | st.just("v=0\r\nnot sdp"),
                                        "candidate": json_values | st.just("candidate:1 1 udp 1 127.0.0.1 9 typ host"),
                                        "sdpMid": json_values, "name": json_values}).map(json.dumps)
hostile_text = st.sampled_from([
    "[" * 5000 + "]" * 5000,
    '{"type": "command", "name": "react", "args": ' + "{\"a\": " * 40 + "1" + "}" * 40 + "}",
    '{"type": "ping", "id": NaN}', '{"type": "ping", "x": Infinity}', '{"type": "ping", "x": -Infinity}',
    '{"type": "ping", "x": 1e999}', '{"type": "ping", "x": 123456789012345678901234567890}',
    '{"type": "command", "name": "remove", "args": {"account_id": "x", "block": "yes", "reason": 5}}',
    '{"type": "command", "name": "react", "args": {"emoji": "' + "\\ud800" + '"}}',
    '{"type": "command", "name": "comment", "args": {"text": "' + "x" * 60000 + '"}}',
    "", "null", "[]", "42", '"hello"', "{", '{"type": "ping"', "\x00", "{}",
]) | st.text(max_size=60)


@pytest.fixture
async def room(platform: Instance) -> dict[str, Any]:
    core = platform.core
    host = await core.ensure_account("web", "host", "Host")
    fan = await core.ensure_account("web", "fan", "Fan")
    space = await core.create_space(Actor(account_id=host.id, is_community_admin=True), "Fuzzed")
    return {"space_id": space.id, "token": platform.tokens.issue(space.id, fan.id, "listener", core.now())}


class Socket:
    def __init__(self) -> None:
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.n = 0

    async def open(self, platform: Instance, room: dict[str, Any]) -> aiohttp.ClientWebSocketResponse:
        if self.ws is None:
            self.http = aiohttp.ClientSession()
            self.ws = await self.http.ws_connect(f"{platform.url}/ws/{room['space_id']}")
            await self.ws.send_json({"type": "hello", "token": room["token"]})
            assert (await self.ws.receive_json(timeout=TIMEOUT_S))["type"] == "welcome"
        return self.ws

    async def round_trip(self, frame: str) -> list[dict[str, Any]]:
        """Send ``frame``, then a ping; everything that came back before its pong (the socket must stay)."""
        assert self.ws is not None
        self.n += 1
        mark = f"mark-{self.n}"
        await self.ws.send_str(frame)
        await self.ws.send_json({"type": "ping", "id": mark})
        got: list[dict[str, Any]] = []
        while True:
            msg = await self.ws.receive(timeout=TIMEOUT_S)
            assert msg.type == aiohttp.WSMsgType.TEXT, f"the socket ended after {frame[:200]!r}: {msg}"
            data = json.loads(msg.data)  # strict JSON: NaN/Infinity would not parse in a browser either
            if data == {"type": "pong", "id": mark}:
                return got
            got.append(data)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.http is not None:
            await self.http.close()


def _check_error(e: dict[str, Any]) -> None:
    assert isinstance(e.get("code"), str) and isinstance(e.get("message"), str), e
    text = json.dumps(e)
    assert "Traceback" not in text and "Error(" not in text and 'File "' not in text, e


@pytest.mark.parametrize("kind", ["typed", "commands", "hostile"])
async def test_no_frame_drops_the_socket_or_changes_anything_when_refused(
        platform: Instance, room: dict[str, Any], caplog: pytest.LogCaptureFixture, kind: str) -> None:
    caplog.set_level(logging.INFO)
    names = sorted({*COMMANDS, *platform.plugins.commands})
    strategy = {"typed": typed, "commands": _commands(names), "hostile": hostile_text}[kind]
    sock = Socket()

    loop = asyncio.get_running_loop()

    async def one(frame: str) -> None:
        await sock.open(platform, room)
        before = (await platform.core.view(room["space_id"])).as_dict()
        replies = await sock.round_trip(frame)
        errors = [r for r in replies if r.get("type") == "error"]
        for e in errors:
            _check_error(e)
            assert e["code"] != "server.error", (frame[:200], e)
        if errors and not any(r.get("type") == "ok" for r in replies):
            assert (await platform.core.view(room["space_id"])).as_dict() == before, frame[:200]

    # Hypothesis drives from a thread (it runs only plain functions); each frame runs on the server's loop
    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(frame=strategy)
    def fuzz(frame: str) -> None:
        asyncio.run_coroutine_threadsafe(one(frame), loop).result(timeout=2 * TIMEOUT_S)

    try:
        await asyncio.to_thread(fuzz)
    finally:
        await sock.close()
    loud = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not loud, [f"{r.name}: {r.getMessage()}" for r in loud]


async def test_the_named_cases(platform: Instance, room: dict[str, Any]) -> None:
    sock = Socket()
    await sock.open(platform, room)
    try:
        (deep,) = await sock.round_trip("[" * 5000 + "]" * 5000)
        assert deep["code"] == "protocol.too_deep"
        (nan,) = await sock.round_trip('{"type": "ping", "x": NaN}')
        assert nan["code"] == "protocol.bad_json"
        (big,) = await sock.round_trip('{"type": "ping", "x": 1e999}')
        assert big["code"] == "protocol.bad_number"
        (bad,) = await sock.round_trip(json.dumps({"type": "command", "id": "r1", "name": "remove",
                                                   "args": {"account_id": "x", "block": "yes", "reason": 5}}))
        assert bad["code"] == "protocol.bad_argument" and bad["id"] == "r1"
        assert bad["data"]["argument"] == "block" and "block" in bad["message"]
        (sdp,) = await sock.round_trip(json.dumps({"type": "offer", "sdp": "v=0\r\nm=audio notaport UDP 1\r\n"}))
        assert sdp["code"] == "sdp.invalid"
        assert sdp["data"]["detail"] == "the offer could not be read as a WebRTC audio offer"
    finally:
        await sock.close()
