"""A client that stops reading costs the others nothing: it is closed with 1013, they keep their events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.webrtc.outbox import OUTBOX, TOO_SLOW
from core.model.accounts import Actor
from spacebridge.app import Instance, build, start, stop
from spacebridge.config import load_settings

DEADLINE_S = 120.0
REACTORS = 8


@pytest.fixture
async def busy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Instance]:
    """An instance whose reaction limits (the core's and the moderation plugin's) let clients send flat out."""
    monkeypatch.setenv("SPACEBRIDGE_DATA_DIR", str(tmp_path))
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'p.sqlite3'}", job_workers=0,
                             reaction_rate_per_s=100_000, plugins_disabled=["moderation"])
    p = await build(settings)
    await start(p, "127.0.0.1", 0)
    yield p
    await stop(p)


class Reactor:
    """A well-behaved client: reads everything, reacts as fast as its answers come back."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events = 0
        self.closed: aiohttp.WSMessage | None = None
        self._answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if data["type"] == "event":
                self.events += 1
            elif data["type"] in ("ok", "error"):
                self._answers.put_nowait(data)
        self.closed = msg  # the loop ended: the socket closed

    async def react(self, stop_: asyncio.Event) -> None:
        n = 0
        while not stop_.is_set():
            n += 1
            await self.ws.send_json({"type": "command", "id": n, "name": "react", "args": {"emoji": "👏"}})
            answer = await self._answers.get()
            assert answer["type"] == "ok", answer


def _masked_text(payload: bytes) -> bytes:
    """A client text frame (clients must mask)."""
    mask = os.urandom(4)
    head = bytes([0x81]) + (bytes([0x80 | len(payload)]) if len(payload) < 126
                            else bytes([0x80 | 126]) + struct.pack("!H", len(payload)))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = await loop.sock_recv(sock, n - len(out))
        if not chunk:
            raise EOFError(f"connection closed after {len(out)} of {n} bytes")
        out += chunk
    return out


async def _next_frame(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> tuple[int, bytes]:
    b0, b1 = await _recv_exactly(loop, sock, 2)
    size = b1 & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", await _recv_exactly(loop, sock, 2))
    elif size == 127:
        (size,) = struct.unpack("!Q", await _recv_exactly(loop, sock, 8))
    return b0 & 0x0F, await _recv_exactly(loop, sock, size)


async def _stalled_client(p: Instance, space_id: str, token: str) -> socket.socket:
    """A raw TCP WebSocket client with a tiny receive buffer that says hello, takes its welcome and then
    never reads again."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    host, port = p.bound_url.removeprefix("http://").rsplit(":", 1)
    await loop.sock_connect(sock, (host, int(port)))
    await loop.sock_sendall(sock, (
        f"GET /ws/{space_id} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += await _recv_exactly(loop, sock, 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    await loop.sock_sendall(sock, _masked_text(json.dumps({"type": "hello", "token": token}).encode()))
    opcode, payload = await _next_frame(loop, sock)
    assert opcode == 1 and json.loads(payload)["type"] == "welcome"
    return sock


async def _until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        await asyncio.sleep(0.05)


async def test_a_client_that_stops_reading_is_closed_and_nobody_else_notices(busy: Instance) -> None:
    core, rooms = busy.core, busy.rooms
    host = await core.ensure_account("web", "host", "Host")
    space = await core.create_space(Actor(account_id=host.id, is_community_admin=True), "Flat out")
    now = core.now()
    slow_acc = await core.ensure_account("web", "slow", "Slow")
    stop_ = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession() as http:
        reactors = []
        for i in range(REACTORS):
            acc = await core.ensure_account("web", f"fan{i}", f"Fan {i}")
            ws = await http.ws_connect(f"{busy.url}/ws/{space.id}")
            await ws.send_json({"type": "hello", "token": busy.tokens.issue(space.id, acc.id, "listener", now)})
            assert (await ws.receive_json(timeout=DEADLINE_S))["type"] == "welcome"
            reactors.append(Reactor(ws))
        slow = await _stalled_client(busy, space.id, busy.tokens.issue(space.id, slow_acc.id, "listener", now))
        await _until(lambda: slow_acc.id in rooms.sockets.get(space.id, {}), "the stalled client's socket")
        slow_ws = rooms.sockets[space.id][slow_acc.id]
        try:
            tasks = [asyncio.create_task(r.read()) for r in reactors]
            tasks += [asyncio.create_task(r.react(stop_)) for r in reactors]

            # the stalled client falls behind until its outbox is full, and is closed
            await _until(lambda: slow_ws.get(OUTBOX) is not None and slow_ws[OUTBOX].overflowed,
                         "the stalled client's outbox to overflow")
            box = slow_ws[OUTBOX]
            assert box.peak_bytes <= rooms.outbox_limits.bytes  # what it cost the server is bounded
            await _until(lambda: slow_acc.id not in rooms.sockets.get(space.id, {}), "the stalled socket to go")

            # everyone else keeps receiving events, on open sockets
            seen = [r.events for r in reactors]
            await _until(lambda: all(r.events > s + 50 for r, s in zip(reactors, seen, strict=True)),
                         "every other client to keep getting events")
            assert all(r.closed is None and not r.ws.closed for r in reactors)
        finally:
            stop_.set()
            for t in tasks[REACTORS:]:
                t.cancel()
            await asyncio.gather(*tasks[REACTORS:], return_exceptions=True)

        # reading at last, the stalled client finds what it was sent and then the close: 1013, and why
        loop = asyncio.get_running_loop()
        code = None
        async with asyncio.timeout(DEADLINE_S):
            with contextlib.suppress(EOFError, ConnectionError):
                while code is None:
                    opcode, payload = await _next_frame(loop, slow)
                    if opcode == 8:
                        code, reason = struct.unpack("!H", payload[:2])[0], payload[2:].decode()
        slow.close()
        assert code == TOO_SLOW, code
        assert "too slow" in reason
        for r in reactors:
            await r.ws.close()
        await asyncio.gather(*tasks[:REACTORS], return_exceptions=True)
