"""Big rooms across processes (issue 20): two `spacebridge serve --role web,media,jobs` processes on
PostgreSQL and Redis, two listeners per process and room (SPACEBRIDGE_ROOM_LISTENERS_PER_PROCESS=2).

The owner answers the first two listeners; the next two are served by the other process's relay
room, fed by one subscription to the owner's encoded packets. Everyone hears the speaker; a relay
listener brought on stage is heard by listeners on both processes; the relay's upstream is cut
(a proxy in front of the owner's internal address) and then the owner is killed, and the relay's
listener hears the room again on the connection it had all along. Where each person's media is
comes from the processes' own status endpoint, never from timing."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiortc import RTCSessionDescription

from adapters.webrtc.internal import INTERNAL_HEADER, InternalLink
from adapters.webrtc.room import restrict_candidates
from core.bus import RedisBus
from core.clock import SystemClock
from core.model.accounts import Actor
from core.services import Core
from core.storage.engine import make_engine, make_sessionmaker
from core.tokens import JoinTokens
from tests.e2e.test_multiprocess import SECRET, Serve, shared  # noqa: F401 (the fixture)
from tests.integration.webrtc.test_room_media import Client, has, until_heard
from tests.support.faultproxy import FaultProxy
from tests.support.loopback import LOOPBACK
from tests.support.services import REDIS_URL

pytestmark = pytest.mark.slow
DEADLINE_S = 60.0  # only ends a test that would hang; a busy machine is slower, never wrong


class Tab:
    """A room page minus the browser: its socket (every frame kept in ``inbox``) and its aiortc peer."""

    def __init__(self, http: aiohttp.ClientSession, url: str, space_id: str, token: str) -> None:
        self.http, self.url, self.space_id, self.token = http, url, space_id, token
        self.inbox: list[dict[str, Any]] = []
        self.client: Client | None = None
        self.offers = 0
        self._news = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self.closed: int | None = None  # the close code once the socket ended

    async def open(self) -> Tab:
        self.ws = await self.http.ws_connect(f"{self.url}/ws/{self.space_id}")
        await self.ws.send_json({"type": "hello", "token": self.token})
        self._reader = asyncio.create_task(self._read())
        await self.wait("welcome")
        return self

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.inbox.append(json.loads(msg.data))
                self._news.set()
        self.closed = self.ws.close_code or 1006
        self._news.set()

    async def wait(self, kind: str, ok: Callable[[dict[str, Any]], bool] = lambda m: True) -> dict[str, Any]:
        """The first frame of ``kind`` for which ``ok`` holds (taken out of the inbox), waiting for it."""
        deadline = time.monotonic() + DEADLINE_S
        while True:
            for m in self.inbox:
                if m.get("type") == kind and ok(m):
                    self.inbox.remove(m)
                    return m
            assert self.closed is None, f"socket closed ({self.closed}) before a {kind}"
            left = deadline - time.monotonic()
            assert left > 0, f"no such {kind}; got {self.inbox[-5:]}"
            self._news.clear()
            await asyncio.wait_for(self._news.wait(), left)

    async def until_closed(self) -> int:
        deadline = time.monotonic() + DEADLINE_S
        while self.closed is None:
            self._news.clear()
            await asyncio.wait_for(self._news.wait(), max(0.1, deadline - time.monotonic()))
        return self.closed

    def saw(self, kind: str) -> bool:
        return any(m.get("type") == kind for m in self.inbox)

    async def offer(self, hz: float | None) -> dict[str, Any]:
        """A new connection's offer, made again (as the page does) while the media is moving."""
        deadline = time.monotonic() + DEADLINE_S
        while True:
            if self.client is not None:
                await self.client.pc.close()
            self.client = Client(hz)
            self.offers += 1
            cid = f"m{self.offers}"
            pc = self.client.pc
            await pc.setLocalDescription(await pc.createOffer())
            await self.ws.send_json({"type": "offer", "id": cid,
                                     "sdp": restrict_candidates(pc.localDescription.sdp, {LOOPBACK})})
            while True:
                reply = next((m for m in self.inbox if m.get("id") == cid), None)
                if reply is not None:
                    self.inbox.remove(reply)
                    break
                self._news.clear()
                await asyncio.wait_for(self._news.wait(), max(0.1, deadline - time.monotonic()))
            if reply["type"] == "answer":
                await pc.setRemoteDescription(RTCSessionDescription(sdp=reply["sdp"], type="answer"))
                return reply
            assert reply.get("code") == "media.unavailable" and time.monotonic() < deadline, reply
            await asyncio.sleep(0.5)  # the page's retry pause

    async def close(self) -> None:
        if self.client is not None:
            await self.client.pc.close()
        await self.ws.close()
        if self._reader is not None:
            await self._reader


def heard(tab: Tab, *tones: int, since: float | None = None) -> Awaitable[set[int]]:
    assert tab.client is not None
    return until_heard(tab.client, lambda peaks: all(has(peaks, hz) for hz in tones), since=since,
                       deadline_s=DEADLINE_S)


async def status(http: aiohttp.ClientSession, server: Serve) -> dict[str, Any]:
    async with http.get(f"{server.url}/internal/media/status",
                        headers={INTERNAL_HEADER: InternalLink(SECRET).token()}) as r:
        assert r.status == 200
        data: dict[str, Any] = await r.json()
        return data


async def until_status(http: aiohttp.ClientSession, server: Serve, what: str,
                       ok: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        data = await status(http, server)
        if ok(data):
            return data
        assert time.monotonic() < deadline, f"{what}: {data}"
        await asyncio.sleep(0.2)


async def test_listeners_spread_over_two_media_processes(shared: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    # a namespace of its own: an owner picks relays among every media process it sees in Redis, and
    # another test's processes running at the same time must not be among them (docs/deploy.md)
    prefix = f"sbtest-{uuid.uuid4().hex[:10]}:"
    env = {**shared["env"], "SPACEBRIDGE_ROOM_LISTENERS_PER_PROCESS": "2", "SPACEBRIDGE_REDIS_PREFIX": prefix}
    bus = RedisBus(REDIS_URL, prefix=prefix)
    await bus.start()
    engine = make_engine(env["SPACEBRIDGE_DATABASE_URL"])
    core = Core(make_sessionmaker(engine), bus, SystemClock())
    proxy = FaultProxy("127.0.0.1", 9)  # in front of A's internal address: its target is set once A listens
    proxy.start()
    try:
        roles = ("web", "media", "jobs")
        a = await Serve.start({**env, "SPACEBRIDGE_INTERNAL_URL": f"http://127.0.0.1:{proxy.port}"},
                              tmp_path / "a.log", *roles)
        shared["servers"].append(a)
        proxy.target = ("127.0.0.1", int(a.url.rsplit(":", 1)[1]))
        b = await Serve.start(env, tmp_path / "b.log", *roles)
        shared["servers"].append(b)
        await _journey(core, a, b, proxy, prefix)
    finally:
        proxy.close()
        await bus.close()
        await engine.dispose()


async def _journey(core: Core, a: Serve, b: Serve, proxy: FaultProxy, prefix: str) -> None:
    names = ("hana", "finn", "gus", "ivy", "jo", "kim")
    people = {n: await core.ensure_account("web", n, n.title()) for n in names}
    host = Actor(account_id=people["hana"].id, is_community_admin=True)
    space = await core.create_space(host, "Big room")
    tokens = JoinTokens(SECRET.encode())
    ids = {n: p.id for n, p in people.items()}

    def token(n: str) -> str:
        return tokens.issue(space.id, ids[n], "speaker" if n == "hana" else "listener", core.now())

    async with aiohttp.ClientSession() as http:
        # the speaker's offer lands on A, which takes the Space; A answers the first two listeners
        # (one socket on each process), then sends the next two to B's relay (one socket on each)
        hana = await Tab(http, a.url, space.id, token("hana")).open()
        assert (await hana.offer(440))["publish"] is True
        finn = await Tab(http, a.url, space.id, token("finn")).open()
        gus = await Tab(http, b.url, space.id, token("gus")).open()
        ivy = await Tab(http, b.url, space.id, token("ivy")).open()
        jo = await Tab(http, a.url, space.id, token("jo")).open()
        for tab in (finn, gus):
            assert (await tab.offer(None))["publish"] is False
        # A is full: a listener's unreadable offer goes to B's relay, which refuses it in words and
        # keeps no relay (nor upstream) for nobody
        kim = await Tab(http, a.url, space.id, token("kim")).open()
        await kim.ws.send_json({"type": "offer", "id": "bad", "sdp": "v=0\r\nnot an offer"})
        assert (await kim.wait("error", lambda m: m.get("id") == "bad"))["code"].startswith("sdp.")
        assert (await status(http, b))["relays"] == {}
        await kim.close()
        for tab in (ivy, jo):
            assert (await tab.offer(None))["publish"] is False
        at_a, at_b = await status(http, a), await status(http, b)
        assert at_a["owned"] == [space.id] and at_b["owned"] == []
        assert at_a["rooms"][space.id]["listeners"] == sorted([ids["finn"], ids["gus"]])
        assert at_a["rooms"][space.id]["speakers"] == [ids["hana"]]
        assert at_b["relays"][space.id]["listeners"] == sorted([ids["ivy"], ids["jo"]])
        assert at_b["rooms"] == {} and at_a["relays"] == {}
        # the heartbeat B publishes in Redis says so too (what owners pick relays by)
        redis = aioredis.from_url(REDIS_URL)
        key = f"{prefix}media:node:{at_b['node']}"
        deadline = time.monotonic() + DEADLINE_S
        while (raw := await redis.get(key)) is None or json.loads(raw)["spaces"] != {space.id: 2}:
            assert time.monotonic() < deadline, raw
            await asyncio.sleep(0.2)
        await redis.aclose()
        for tab in (finn, gus, ivy, jo):
            await heard(tab, 440)
        await until_status(http, a, "the relay takes one copy of the owner's packets",
                           lambda s: s["rooms"][space.id]["packet_subscribers"] == 1)

        # jo, a relay listener, is brought on stage: his page offers again, the offer goes to the owner,
        # and his connection on the relay is closed; listeners on both processes hear him
        await core.raise_hand(Actor(account_id=ids["jo"], platform="web"), space.id)
        await core.approve(host, space.id, ids["jo"])
        assert (await jo.wait("renegotiate"))["publish"] is True
        assert (await jo.offer(660))["publish"] is True
        await until_status(http, a, "jo speaks at the owner",
                           lambda s: s["rooms"][space.id]["speakers"] == sorted([ids["hana"], ids["jo"]]))
        await until_status(http, b, "jo's relay connection closed",
                           lambda s: s["relays"][space.id]["listeners"] == [ids["ivy"]])
        await heard(finn, 440, 660)
        await heard(ivy, 440, 660)
        # speaking levels reach a relay listener's page as anyone's: they ride the sockets, not the media
        await ivy.wait("levels", lambda m: m["levels"].get(ids["jo"], -100.0) > -45)

        # the relay's upstream is cut: it reconnects to the owner and ivy hears the room again on the
        # connection she had all along (a dropped upstream is not a leave, and no reconnect_media)
        assert ivy.client is not None
        ivy_pc = ivy.client.pc
        before = (await status(http, b))["relays"][space.id]["connections"]
        proxy.reset()
        cut = time.monotonic()
        await until_status(http, b, "the relay reconnects upstream",
                           lambda s: s["relays"][space.id]["connections"] > before
                           and s["relays"][space.id]["connected"])
        await heard(ivy, 440, 660, since=cut)
        assert ivy.client.pc is ivy_pc and ivy_pc.connectionState == "connected"

        # the owner dies: B takes the Space over when A's lease runs out; gus (whose media was at A) is
        # told to reconnect, ivy (on B's relay) is not; jo's page comes back through B and ivy hears him
        a.proc.send_signal(signal.SIGKILL)
        await a.proc.wait()
        killed = time.monotonic()
        await gus.wait("reconnect_media")
        jo_again = await Tab(http, b.url, space.id, token("jo")).open()
        assert (await jo_again.offer(660))["publish"] is True
        await until_status(http, b, "B owns the Space and feeds its relay from its own room",
                           lambda s: s["owned"] == [space.id] and s["relays"][space.id]["connected"])
        await heard(ivy, 660, since=killed)
        assert ivy.client.pc is ivy_pc and ivy_pc.connectionState == "connected"
        assert not ivy.saw("reconnect_media")

        # ivy closes her page: the relay has no listeners left and stops taking the room's packets
        await ivy.close()
        await until_status(http, b, "an empty relay unsubscribes",
                           lambda s: s["relays"] == {} and s["rooms"][space.id]["packet_subscribers"] == 0)
        await gus.offer(None)  # gus follows the Space to B; the owner has room for him there

        # when the Space ends, the process closes its room and the sockets (4000)
        await core.end_space(host, space.id)
        for tab in (gus, jo_again):
            assert await tab.until_closed() == 4000
        await until_status(http, b, "the room closed with the Space", lambda s: s["rooms"] == {} and s["relays"] == {})
        for tab in (hana, finn, jo, gus, jo_again):
            if tab.client is not None:
                await tab.client.pc.close()
