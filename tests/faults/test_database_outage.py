"""PostgreSQL goes away mid-Space (cut) or stops answering (a partition): people are told in words.

A real instance talks to PostgreSQL through the tests' fault proxy. While the database is away a
command on the room's socket is answered with a ``service.unavailable`` error frame (the socket
stays open), /readyz answers 503 naming the database, /healthz still answers; once it is back the
same socket's commands work again, without a restart.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from core.model.accounts import Actor
from spacebridge.app import Instance, build, start, stop
from spacebridge.config import load_settings
from tests.support.faultproxy import FaultProxy

DEADLINE_S = 60.0  # generous: a deadline for polling, never a timing assertion


@pytest.fixture
def proxy(pg_url: str) -> Iterator[FaultProxy]:
    with FaultProxy.for_url(pg_url) as p:
        yield p


@pytest.fixture
async def instance(pg_url: str, proxy: FaultProxy, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Instance]:
    from tests.conftest import _truncate

    await _truncate(pg_url)
    monkeypatch.setenv("SPACEBRIDGE_DATA_DIR", str(tmp_path))
    settings = load_settings(database_url=proxy.url(pg_url), job_workers=0, min_free_disk_mb=0,
                             database_connect_timeout_s=1.0, database_statement_timeout_s=1.0)
    p = await build(settings)
    await start(p, "127.0.0.1", 0)
    yield p
    proxy.restore()
    await stop(p)


class Socket:
    """The room's signaling socket as a page uses it (no media needed for commands)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.n = 0

    async def frame(self, **match: Any) -> dict[str, Any]:
        while True:
            msg = await self.ws.receive(timeout=DEADLINE_S)
            assert msg.type == aiohttp.WSMsgType.TEXT, f"the socket ended: {msg}"
            data: dict[str, Any] = json.loads(msg.data)
            if all(data.get(k) == v for k, v in match.items()):
                return data

    async def command(self, name: str, **args: Any) -> dict[str, Any]:
        self.n += 1
        cid = f"c{self.n}"
        await self.ws.send_json({"type": "command", "id": cid, "name": name, "args": args})
        return await self.frame(id=cid)


async def _join(p: Instance, http: aiohttp.ClientSession) -> tuple[Socket, str]:
    core = p.core
    host = await core.ensure_account("web", "host", "Host")
    fan = await core.ensure_account("web", "fan", "Fan")
    space = await core.create_space(Actor(account_id=host.id, is_community_admin=True), "Through the proxy")
    ws = await http.ws_connect(f"{p.url}/ws/{space.id}")
    await ws.send_json({"type": "hello", "token": p.tokens.issue(space.id, fan.id, "listener", core.now())})
    sock = Socket(ws)
    await sock.frame(type="welcome")
    return sock, space.id


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=DEADLINE_S)) as r:
        return r.status, await r.json()


async def _until_ok(sock: Socket, name: str) -> dict[str, Any]:
    """Retry as a page would (after retry_after_s; here at once) until the command goes through."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        reply = await sock.command(name)
        if reply.get("type") != "error" or time.monotonic() > deadline:
            return reply
        assert reply["code"] == "service.unavailable", reply
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("fault", ["cut", "stall"])
async def test_commands_are_answered_in_words_while_the_database_is_away(
        instance: Instance, proxy: FaultProxy, fault: str) -> None:
    async with aiohttp.ClientSession() as http:
        sock, space_id = await _join(instance, http)
        assert (await sock.command("raise_hand"))["type"] != "error"
        status, ready = await _get(http, f"{instance.url}/readyz")
        assert status == 200 and ready["ok"] is True

        getattr(proxy, fault)()
        reply = await sock.command("lower_hand")
        assert reply["type"] == "error" and reply["code"] == "service.unavailable", reply
        assert reply["retry_after_s"] > 0 and "database" in reply["message"]
        assert "Traceback" not in reply["message"] and "asyncpg" not in json.dumps(reply)
        status, ready = await _get(http, f"{instance.url}/readyz")
        checks = {c["name"]: c for c in ready["checks"]}
        assert status == 503 and ready["ok"] is False and checks["database"]["ok"] is False
        assert checks["data dir"]["ok"] is True  # it names what is wrong, not everything
        status, health = await _get(http, f"{instance.url}/healthz")
        assert status == 200 and health["ok"] is True  # the process is alive: no restart wanted

        proxy.restore()
        reply = await _until_ok(sock, "lower_hand")
        assert reply["type"] != "error", reply  # the same socket, the same process: back without a restart
        assert (await instance.core.view(space_id)).as_dict()["queue"] == []
        status, ready = await _get(http, f"{instance.url}/readyz")
        assert status == 200 and ready["ok"] is True
        await sock.ws.close()


async def test_cli_commands_say_the_database_is_down(pg_url: str, proxy: FaultProxy, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Every CLI command, with PostgreSQL down: one sentence naming the database, exit 2, no traceback."""
    from typer.testing import CliRunner

    from spacebridge.cli import app

    monkeypatch.setenv("SPACEBRIDGE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SPACEBRIDGE_DATABASE_URL", proxy.url(pg_url))
    monkeypatch.setenv("SPACEBRIDGE_DATABASE_CONNECT_TIMEOUT_S", "1")
    proxy.cut()
    runner = CliRunner()
    for args in (["space", "list"], ["account", "create", "Ada"], ["community", "list"], ["audit", "x"],
                 ["space", "list", "--json"]):
        result = await asyncio.to_thread(runner.invoke, app, args)
        out = result.output + (result.stderr if result.stderr_bytes is not None else "")
        assert result.exit_code == 2, (args, out, result.exception)
        assert "cannot reach PostgreSQL" in out and "SPACEBRIDGE_DATABASE_URL" in out, (args, out)
        assert "Traceback" not in out and isinstance(result.exception, SystemExit), (args, result.exception)
