"""Half-sent requests are cut off by the server, and a client that leaves early is not an error."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from adapters.webrtc.internal import INTERNAL_HEADER
from core.model.accounts import Actor
from spacebridge.app import Instance, build, start, stop
from spacebridge.config import load_settings
from spacebridge.http_edges import HttpLimits

DEADLINE_S = 30.0  # generous: the server's own limits below are 1 s


@pytest.fixture
async def edgy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Instance]:
    monkeypatch.setenv("SPACEBRIDGE_DATA_DIR", str(tmp_path))
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'p.sqlite3'}", job_workers=0)
    p = await build(settings)
    await start(p, "127.0.0.1", 0, http=HttpLimits(header_s=1.0, body_s=1.0))
    yield p
    await stop(p)


def _port(p: Instance) -> int:
    return int(p.bound_url.rsplit(":", 1)[1])


async def _read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    got = b""
    async with asyncio.timeout(DEADLINE_S):
        try:
            while chunk := await reader.read(65536):
                got += chunk
        except ConnectionResetError:
            pass
    return got


async def test_headers_never_finished_are_cut_off(edgy: Instance) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(edgy))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")  # and never the rest
    await writer.drain()
    assert await _read_until_closed(reader) == b""  # closed by the server, nothing answered
    writer.close()


async def test_headers_trickled_forever_are_cut_off(edgy: Instance) -> None:
    """Bytes arriving now and then do not keep a request that never completes alive."""
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(edgy))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
    closed = asyncio.ensure_future(_read_until_closed(reader))
    async with asyncio.timeout(DEADLINE_S):
        while not closed.done():
            with contextlib.suppress(ConnectionError):
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()
            await asyncio.wait({closed}, timeout=0.2)  # paces the trickle; the close is what is awaited
    assert closed.result() == b""


async def test_a_body_that_never_arrives_gets_408_and_the_connection_closes(edgy: Instance) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(edgy))
    head = (f"POST /internal/media/s1/offer HTTP/1.1\r\nHost: localhost\r\n"
            f"{INTERNAL_HEADER}: {edgy.rooms._internal_token()}\r\n"
            "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n")
    writer.write(head.encode() + b'{"pid": ')  # 8 of the 5000 bytes announced
    await writer.drain()
    answer = await _read_until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    writer.close()


async def test_clients_that_leave_early_leave_no_traceback(edgy: Instance, caplog: pytest.LogCaptureFixture) -> None:
    core = edgy.core
    host = await core.ensure_account("web", "host", "Host")
    space = await core.create_space(Actor(account_id=host.id, is_community_admin=True), "Early leavers")
    token = edgy.tokens.issue(space.id, host.id, "speaker", core.now())
    caplog.set_level(logging.INFO)
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{edgy.url}/ws/{space.id}")  # gone before its hello
        await ws.close()
        ws = await http.ws_connect(f"{edgy.url}/ws/{space.id}")  # gone right after it
        await ws.send_json({"type": "hello", "token": token})
        await ws.close()
    for path in ("/api/spaces", "/healthz", f"/s/{space.id}", "/"):  # reset while the answer is made
        _, writer = await asyncio.open_connection("127.0.0.1", _port(edgy))
        writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        await writer.drain()
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
    # the server still answers, and has nothing to complain about
    async with aiohttp.ClientSession() as http, http.get(f"{edgy.url}/api/spaces") as r:
        assert r.status == 200
    async with aiohttp.ClientSession() as http:  # a full hello round trip: the early ones are behind us
        ws = await http.ws_connect(f"{edgy.url}/ws/{space.id}")
        await ws.send_json({"type": "hello", "token": token})
        assert (await ws.receive_json(timeout=DEADLINE_S))["type"] == "welcome"
        await ws.close()
    loud = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not loud, [f"{r.name}: {r.getMessage()}" for r in loud]
