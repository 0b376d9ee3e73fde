"""Two `spacebridge serve` processes sharing PostgreSQL and Redis, as docs/deploy.md runs them: a
command on one is seen by a client of the other, a job is delivered once, and killing the process
that serves a Space's media moves the Space to the other one, where a listener hears it again."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
import redis.asyncio as aioredis

from core.bus import RedisBus, redis_prefix
from core.clock import SystemClock
from core.model.accounts import Actor
from core.services import Core
from core.storage.engine import make_engine, make_sessionmaker
from core.tokens import JoinTokens
from tests.e2e.test_cli import ROOT, _env
from tests.integration.webrtc.test_hls import peak_hz
from tests.integration.webrtc.test_room_media import Client, has
from tests.integration.webrtc.test_signaling import Peer
from tests.support.loopback import LOOPBACK, ensure_loopback_alias
from tests.support.nginx import hls_location, require_nginx, start_nginx, stop_nginx
from tests.support.services import REDIS_URL, create_pg_database, drop_pg_database, require
from tests.support.stripe_fake import free_port
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

    # Telegram pushes updates to the load balancer, which hands each to either process: both answer
    async with aiohttp.ClientSession() as http:
        for n, server in enumerate((a, b)):
            chat = 7100 + n
            update = {"update_id": 900 + n, "message": {
                "message_id": 1, "date": int(time.time()), "chat": fake.chat(chat), "from": fake.user(chat),
                "text": "/start", "entities": [{"type": "bot_command", "offset": 0, "length": 6}]}}
            async with http.post(f"{server.url}/telegram/webhook", json=update,
                                 headers={"X-Telegram-Bot-Api-Secret-Token": "hook-secret"}) as r:
                assert r.status == 200
            reply = await fake.wait_for(lambda c, chat=chat: c.method == "sendMessage"
                                        and c.params.get("chat_id") == chat, timeout=15)
            assert "Welcome" in reply.params["text"]

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
        owner = await aioredis.from_url(REDIS_URL).get(redis_prefix(REDIS_URL) + f"media:space:{space.id}")
        assert owner is not None and a.url.encode() in owner

        # the host starts recording from a page served by B: B's recorder reads A's room over the
        # internal audio stream, and the file has the speaker in it; the host stops it from A
        desk = await hello(http, b.url, space.id, tokens.issue(space.id, hana.id, "speaker", now), Client(None))
        started = await desk.command("record", action="start")
        assert started["type"] == "ok", started
        rec_url = re.search(r"/p/recording/r/[\w-]+", started["result"]["text"] + str(started["result"]["url"]))
        assert rec_url, started
        await asyncio.sleep(4.0)
        # commands about it may reach any process: a clip there is refused in words, a stop is passed on
        clip = await speaker.command("clip")
        assert clip["type"] == "error" and clip["code"] == "recording.elsewhere", clip
        assert (await speaker.command("record", action="stop"))["type"] == "ok"
        deadline = time.monotonic() + 10
        while True:  # B's recorder sees the stop within its heartbeat and saves the replay
            async with http.get(f"{b.url}{rec_url.group(0)}/timeline.json") as r:
                if r.status == 200:
                    break
            assert time.monotonic() < deadline, "the recording was not saved after a stop made on A"
            await asyncio.sleep(0.5)
        async with http.get(f"{a.url}{rec_url.group(0)}/audio.ogg") as r:  # shared data directory
            assert r.status == 200
            (shared["logs"] / "rec.ogg").write_bytes(await r.read())
        with av.open(str(shared["logs"] / "rec.ogg")) as f:
            pcm = np.concatenate([fr.to_ndarray().reshape(-1) for fr in f.decode(audio=0)]).astype(np.float64)
        assert pcm.size > 2 * 48_000 and abs(peak_hz(pcm[-48_000:]) - 440) < 10

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
        owner = await aioredis.from_url(REDIS_URL).get(redis_prefix(REDIS_URL) + f"media:space:{space.id}")
        assert owner is not None and b.url.encode() in owner
        assert moved_after < LEASE_S + 15
        for p in (speaker, listener, speaker_again, desk):
            await p.client.pc.close()
            await p.ws.close()


FRONT = """
    location /internal/ {{ return 404; }}
    {hls}
    location / {{
      proxy_pass http://spacebridge;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $host;
      proxy_read_timeout 1h;
      proxy_connect_timeout 2s;
    }}
"""  # docs/deploy.md's server block


class PageLike:
    """What the web page does, for a test: joins through the front door, answers `reconnect_media`
    with a fresh offer, and when its socket drops, connects again (through the front door) and
    joins again, as room.js does."""

    def __init__(self, http: aiohttp.ClientSession, front: str, space_id: str, token: str, hz: float | None) -> None:
        self.http, self.front, self.space_id, self.token, self.hz = http, front, space_id, token, hz
        self.client = Client(hz)
        self.heard: list[tuple[float, Any]] = []
        self.reconnects = self.offers = 0
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def _offer(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        from adapters.webrtc.room import restrict_candidates

        self.heard += self.client.heard  # keep what the old connection heard
        await self.client.pc.close()
        self.client = Client(self.hz)
        self.offers += 1
        pc = self.client.pc
        await pc.setLocalDescription(await pc.createOffer())
        await ws.send_json({"type": "offer", "id": f"m{self.offers}",
                            "sdp": restrict_candidates(pc.localDescription.sdp, {LOOPBACK})})

    async def _run(self) -> None:
        from aiortc import RTCSessionDescription

        while True:
            try:
                async with self.http.ws_connect(f"{self.front}/ws/{self.space_id}") as ws:
                    await ws.send_json({"type": "hello", "token": self.token})
                    async for msg in ws:
                        data = msg.json()
                        latest = data.get("id") == f"m{self.offers}"
                        if data["type"] in ("welcome", "reconnect_media"):
                            await self._offer(ws)
                        elif data["type"] == "answer" and latest:
                            await self.client.pc.setRemoteDescription(
                                RTCSessionDescription(sdp=data["sdp"], type="answer"))
                        elif data["type"] == "error" and data.get("code") == "media.unavailable" and latest:
                            await asyncio.sleep(0.5)
                            await self._offer(ws)
            except aiohttp.ClientError:
                pass
            if self.http.closed:
                return
            self.reconnects += 1
            await asyncio.sleep(0.5)

    def hears(self, hz: int) -> bool:
        recent = [(t, p) for t, p in self.client.heard if t > time.monotonic() - 1.0]
        return len(recent) > 20 and has(self.client.spectrum_peaks(time.monotonic() - 1.0), hz)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.client.pc.close()


async def test_the_reference_deployment_survives_losing_a_media_process(shared: dict[str, Any],
                                                                        tmp_path: Path) -> None:
    """docs/deploy.md's set-up: nginx in front of two processes (web and media each) sharing
    PostgreSQL and Redis. People join through nginx; the process serving the Space's media is
    killed; both the speaker and the listener come back on their own and the listener hears the
    speaker again; the Space's HLS is served by nginx throughout."""
    require_nginx()
    env, core = shared["env"], shared["core"]
    hls_dir = tmp_path / "hls"
    env = {**env, "SPACEBRIDGE_HLS_DIR": str(hls_dir)}
    a = await Serve.start(env, tmp_path / "a.log", "web", "media", "jobs")
    shared["servers"].append(a)
    b = await Serve.start(env, tmp_path / "b.log", "web", "media", "jobs")
    shared["servers"].append(b)
    port = free_port()
    upstream = (f"upstream spacebridge {{ server {a.url.removeprefix('http://')}; "
                f"server {b.url.removeprefix('http://')}; }}\n"
                "  map $http_upgrade $connection_upgrade { default upgrade; '' close; }")
    nginx = await asyncio.to_thread(start_nginx, tmp_path / "nginx", port, FRONT.format(hls=hls_location(hls_dir)),
                                    http=upstream)
    front = f"http://127.0.0.1:{port}"
    try:
        hana = await core.ensure_account("web", "hana", "Hana")
        finn = await core.ensure_account("web", "finn", "Finn")
        space = await core.create_space(Actor(account_id=hana.id, is_community_admin=True), "Behind nginx")
        tokens, now = JoinTokens(SECRET.encode()), core.now()
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{front}/internal/media/{space.id}/offer", json={}) as r:
                assert r.status == 404  # the front door does not expose process-to-process calls
            speaker = PageLike(http, front, space.id, tokens.issue(space.id, hana.id, "speaker", now), 440)
            listener = PageLike(http, front, space.id, tokens.issue(space.id, finn.id, "listener", now), None)
            speaker.start()
            listener.start()
            try:
                await until(lambda: listener.hears(440), 20, "the listener never heard the speaker")
                raw = await aioredis.from_url(REDIS_URL).get(redis_prefix(REDIS_URL) + f"media:space:{space.id}")
                assert raw is not None
                owner = a if a.url.encode() in raw else b
                other = b if owner is a else a
                # HLS of the same audio, through nginx, without asking either process
                hls = [p for p in hls_dir.iterdir() if p.name.startswith(space.id)]
                assert len(hls) == 1
                deadline = time.monotonic() + 10
                while True:  # the playlist appears once the first segment is complete
                    async with http.get(f"{front}/hls/{hls[0].name}/index.m3u8") as r:
                        if r.status == 200 and "#EXT-X-MAP" in await r.text():
                            break
                    assert time.monotonic() < deadline, "nginx never served the Space's playlist"
                    await asyncio.sleep(0.3)

                owner.proc.kill()
                await owner.proc.wait()
                await until(lambda: not listener.hears(440), 10, "audio did not stop with its process")
                await until(lambda: listener.hears(440), LEASE_S + 20, "no audio after losing the media process")
                raw = await aioredis.from_url(REDIS_URL).get(redis_prefix(REDIS_URL) + f"media:space:{space.id}")
                assert raw is not None and other.url.encode() in raw
            finally:
                await speaker.stop()
                await listener.stop()
    finally:
        stop_nginx(nginx)


async def until(check: Any, seconds: float, why: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, why
        await asyncio.sleep(0.25)
