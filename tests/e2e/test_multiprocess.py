"""Two `spacebridge serve` processes sharing PostgreSQL and Redis, as docs/deploy.md runs them: a
command on one is seen by a client of the other, a job is delivered once, and killing the process
that serves a Space's media moves the Space to the other one, where a listener hears it again."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from core.bus import RedisBus
from core.clock import SystemClock
from core.model.accounts import Actor
from core.services import Core
from core.storage.engine import make_engine, make_sessionmaker
from core.tokens import JoinTokens
from tests.e2e.test_cli import ROOT, _env
from tests.integration.webrtc.test_room_media import Client, has
from tests.integration.webrtc.test_signaling import Peer
from tests.support.loopback import LOOPBACK, ensure_loopback_alias
from tests.support.services import REDIS_URL, create_pg_database, drop_pg_database, require
from tests.support.telegram_fake import FakeBotAPI

pytestmark = pytest.mark.slow
SECRET = "multiprocess-test-secret-key-0123456789"
LEASE_S = 2.0


class Serve:
    """One `spacebridge serve` process and the address it listens on."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        self.proc, self.url = proc, url

    @staticmethod
    async def start(env: dict[str, str], log: Path, *roles: str) -> Serve:
        with log.open("w") as err:  # the child keeps its own copy of the descriptor
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "spacebridge", "serve", "--port", "0", "--role", ",".join(roles),
                cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        m = re.search(r"serving at (http://127\.0\.0\.1:\d+)", line)
        assert m, line
        return Serve(proc, m.group(1))

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@pytest.fixture
async def shared(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    require("postgresql")
    require("redis")
    ensure_loopback_alias()
    db = await asyncio.to_thread(create_pg_database)
    fake = await FakeBotAPI().start()
    env = _env(tmp_path, SPACEBRIDGE_DATABASE_URL=db, SPACEBRIDGE_REDIS_URL=REDIS_URL, SPACEBRIDGE_SECRET_KEY=SECRET,
               SPACEBRIDGE_ICE_ANNOUNCE=f'["{LOOPBACK}"]', SPACEBRIDGE_MEDIA_LEASE_S=str(LEASE_S),
               TELEGRAM_BOT_TOKEN=fake.token, SPACEBRIDGE_TELEGRAM_API_BASE=fake.base_url,
               SPACEBRIDGE_TELEGRAM_MODE="webhook", SPACEBRIDGE_TELEGRAM_WEBHOOK_SECRET="hook-secret",
               SPACEBRIDGE_PUBLIC_URL="https://spaces.example", SPACEBRIDGE_JOB_WORKERS="2")
    up = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "spacebridge", "db", "upgrade"],
                                 cwd=ROOT, env=env, capture_output=True, text=True)
    assert up.returncode == 0, up.stderr
    engine = make_engine(db)
    bus = RedisBus(REDIS_URL)
    await bus.start()
    core = Core(make_sessionmaker(engine), bus, SystemClock())
    servers: list[Serve] = []
    try:
        yield {"env": env, "core": core, "fake": fake, "servers": servers, "logs": tmp_path}
    finally:
        for s in servers:
            await s.stop()
        await bus.close()
        await engine.dispose()
        await fake.stop()
        await asyncio.to_thread(drop_pg_database, db)


async def hello(http: aiohttp.ClientSession, url: str, space_id: str, token: str, client: Client) -> Peer:
    peer = Peer(http, await http.ws_connect(f"{url}/ws/{space_id}"), client)
    await peer.ws.send_json({"type": "hello", "token": token})
    await peer.recv("welcome", timeout=15)
    return peer


async def offer_until_answered(peer: Peer, seconds: float = 20) -> dict[str, Any]:
    """As the web page does: an offer refused while the Space's media is moving is made again."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await peer.media()
        except AssertionError:
            refused = [m for m in peer.inbox if m.get("type") == "error" and m.get("code") == "media.unavailable"]
            if not refused or time.monotonic() > deadline:
                raise
            for m in refused:
                peer.inbox.remove(m)
            await asyncio.sleep(0.5)


async def hears(client: Client, hz: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        recent = [t for t, _ in client.heard if t > time.monotonic() - 1.0]
        if len(recent) > 20 and has(client.spectrum_peaks(time.monotonic() - 1.0), hz):
            return True
    return False


async def test_two_processes_share_events_jobs_and_media(shared: dict[str, Any]) -> None:
    env, core, fake = shared["env"], shared["core"], shared["fake"]
    roles = ("web", "jobs", "media", "telegram")
    a = await Serve.start(env, shared["logs"] / "a.log", *roles)
    shared["servers"].append(a)
    b = await Serve.start(env, shared["logs"] / "b.log", *roles)
    shared["servers"].append(b)

    hana = await core.ensure_account("web", "hana", "Hana")
    fans = [await core.ensure_account("telegram", str(5000 + i), f"Fan {i}") for i in range(20)]
    for f in fans:
        await core.follow(Actor(account_id=f.id, platform="telegram"), hana.id)
    host = Actor(account_id=hana.id, is_community_admin=True)
    space = await core.create_space(host, "Across processes")  # live now: its followers are alerted

    # the go-live alert is one job per follower, claimed by whichever process is free: each fan gets one DM
    mark = time.monotonic()
    for f in range(20):
        await fake.wait_for(lambda c, f=f: c.method == "sendMessage" and c.params.get("chat_id") == 5000 + f,
                            timeout=30)
    await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - mark)))  # room for a second delivery, if any
    dms = [c.params["chat_id"] for c in fake.sent("sendMessage") if 5000 <= c.params.get("chat_id", 0) < 5020]
    assert sorted(dms) == [5000 + i for i in range(20)], dms

    # both processes run the Telegram bot (webhook mode): the group's card, and a notice under it, are
    # posted once, not once per process
    group = await core.ensure_community("telegram", "-100777", "Fans group")
    in_group = await core.create_space(host, "In the group", community_id=group.id)
    await fake.wait_for(lambda c: c.method == "sendMessage" and c.params.get("chat_id") == -100777, timeout=15)
    await core.notice(in_group.id, "test", "The host will start in a minute")
    await fake.wait_for(lambda c: c.method == "sendMessage" and "in a minute" in str(c.params.get("text")), timeout=15)
    await asyncio.sleep(2.0)
    assert len(fake.sent("sendMessage", chat_id=-100777)) == 2, [c.params for c in fake.sent(chat_id=-100777)]

    tokens, now = JoinTokens(SECRET.encode()), core.now()
    finn = await core.ensure_account("web", "finn", "Finn")
    async with aiohttp.ClientSession() as http:
        speaker = await hello(http, a.url, space.id, tokens.issue(space.id, hana.id, "speaker", now), Client(440))
        listener = await hello(http, b.url, space.id, tokens.issue(space.id, finn.id, "listener", now), Client(None))
        # a command on one process is seen by a client of the other
        assert (await listener.command("raise_hand"))["type"] == "ok"
        await speaker.recv("event", timeout=10, event__type="hand.raised", event__account_id=finn.id)
        assert (await speaker.command("pin", title="Agenda", url="https://example.org/agenda"))["type"] == "ok"
        await listener.recv("event", timeout=10, event__type="pin.added")

        # media: the speaker's offer lands on A, which takes the Space; B sends the listener's there
        await offer_until_answered(speaker)
        await offer_until_answered(listener)
        assert await hears(listener.client, 440, 10), "the listener on B does not hear the speaker on A"
        owner = await aioredis.from_url(REDIS_URL).get(f"spacebridge:media:space:{space.id}")
        assert owner is not None and a.url.encode() in owner

        # A dies without a word: B takes the Space over once A's lease runs out, tells its sockets to
        # reconnect their media, and the speaker's page comes back through B
        a.proc.kill()
        await a.proc.wait()
        killed = time.monotonic()
        await listener.recv("reconnect_media", timeout=LEASE_S + 5)
        await listener.client.pc.close()
        listener.client = Client(None)
        speaker_again = await hello(http, b.url, space.id, tokens.issue(space.id, hana.id, "speaker", core.now()),
                                    Client(440))
        await offer_until_answered(speaker_again)
        await offer_until_answered(listener)
        assert await hears(listener.client, 440, 15), "no audio after the media process died"
        moved_after = time.monotonic() - killed
        owner = await aioredis.from_url(REDIS_URL).get(f"spacebridge:media:space:{space.id}")
        assert owner is not None and b.url.encode() in owner
        assert moved_after < LEASE_S + 15
        for p in (speaker, listener, speaker_again):
            await p.client.pc.close()
            await p.ws.close()
