"""Restarts are invisible: SIGTERM (close 1012 to every socket) or SIGKILL of a real `spacebridge serve`
mid-Space on SQLite; the host and a listener reconnect to the restarted server and the tone is back."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from core.bus import InProcessBus
from core.clock import SystemClock
from core.model.accounts import Actor
from core.services import Core
from core.storage.engine import make_engine, make_sessionmaker
from core.tokens import JoinTokens
from tests.e2e.test_cli import ROOT, _env
from tests.e2e.test_multiprocess import hears, offer_until_answered
from tests.integration.webrtc.test_room_media import Client
from tests.integration.webrtc.test_signaling import Peer
from tests.support.loopback import LOOPBACK, ensure_loopback_alias
from tests.support.stripe_fake import free_port

pytestmark = pytest.mark.slow
SECRET = "restart-test-secret-key-0123456789abcdef"


async def serve(env: dict[str, str], port: int, log: Path) -> asyncio.subprocess.Process:
    with log.open("a") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "spacebridge", "serve", "--port", str(port), cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=err)
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    assert re.search(r"serving at http://127\.0\.0\.1:\d+", line), line
    return proc


async def join(http: aiohttp.ClientSession, url: str, space_id: str, token: str, hz: float | None) -> Peer:
    peer = Peer(http, await http.ws_connect(f"{url}/ws/{space_id}"), Client(hz))
    await peer.ws.send_json({"type": "hello", "token": token})
    await peer.recv("welcome", timeout=15)
    await offer_until_answered(peer)
    return peer


async def closed_with(peer: Peer, within: float) -> int | None:
    """Read the socket until it ends; the close code the server sent (None: dropped without one)."""
    while True:
        msg = await peer.ws.receive(timeout=within)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.ERROR):
            return peer.ws.close_code


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
async def test_a_restart_mid_space_keeps_it_live_and_everyone_hears_the_host_again(tmp_path: Path, sqlite_url: str,
                                                                                  how: str) -> None:
    ensure_loopback_alias()
    db = sqlite_url
    env = _env(tmp_path, SPACEBRIDGE_DATABASE_URL=db, SPACEBRIDGE_SECRET_KEY=SECRET, SPACEBRIDGE_JOB_WORKERS="1",
               SPACEBRIDGE_ICE_ANNOUNCE=f'["{LOOPBACK}"]', SPACEBRIDGE_ICE_ALLOWED_NETWORKS="127.0.0.0/8",
               SPACEBRIDGE_PRESENCE_HEARTBEAT_S="0.5", SPACEBRIDGE_PRESENCE_STALE_S="2",
               SPACEBRIDGE_HOST_GRACE_S="180")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    engine = make_engine(db)
    core = Core(make_sessionmaker(engine), InProcessBus(), SystemClock())
    log = tmp_path / "serve.log"
    proc = await serve(env, port, log)
    peers: list[Peer] = []
    try:
        hana = await core.ensure_account("web", "hana", "Hana")
        finn = await core.ensure_account("web", "finn", "Finn")
        space = await core.create_space(Actor(account_id=hana.id, is_community_admin=True), "Through a restart")
        tokens = JoinTokens(SECRET.encode())
        async with aiohttp.ClientSession() as http:
            def token(account_id: str, role: str) -> str:
                return tokens.issue(space.id, account_id, role, core.now())

            host = await join(http, url, space.id, token(hana.id, "speaker"), 440)
            fan = await join(http, url, space.id, token(finn.id, "listener"), None)
            peers += [host, fan]
            assert await hears(fan.client, 440, 15), "no tone before the restart"

            if how == "SIGTERM":
                proc.send_signal(signal.SIGTERM)
                assert await closed_with(host, 15) == 1012  # service restart: the page comes back on its own
                assert await closed_with(fan, 15) == 1012
                assert await asyncio.wait_for(proc.wait(), 30) == 0
            else:
                proc.kill()
                await proc.wait()
                assert await closed_with(host, 15) in (None, 1006)
            for p in (host, fan):
                await p.client.pc.close()

            proc = await serve(env, port, log)  # the same address and database: a deploy
            host = await join(http, url, space.id, token(hana.id, "speaker"), 440)
            fan = await join(http, url, space.id, token(finn.id, "listener"), None)
            peers += [host, fan]
            assert await hears(fan.client, 440, 15), f"no tone after {how}"
            # the old process's connections went stale and were swept: the host is connected again,
            # so nothing ended
            view = await core.view(space.id)
            assert view.space.state.value == "live" and view.space.host_id == hana.id
            await host.ws.send_json({"type": "leave"})  # an explicit leave ends it at once
            await fan.recv("event", timeout=15, event__type="space.ended", event__reason="host_left")
            assert await closed_with(host, 15) == 1000
    finally:
        for p in peers:
            await p.client.pc.close()
            await p.ws.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
        await engine.dispose()
