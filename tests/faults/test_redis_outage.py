"""A Redis outage is survived: Redis (real) sits behind the tests' fault proxy, which cuts, stalls and
resets it. Events published meanwhile reach the other processes afterwards, in order and once, or the
loss is reported; the bus, the relay listener, leases and duties come back on their own; two
deployments on one Redis never see each other's events. The last test does it to two `serve`
processes mid-Space: the Space stays live, nobody's socket drops, the listener keeps hearing."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from adapters.webrtc.placement import Duty, Node, RedisPlacement
from adapters.webrtc.room import MediaError
from core.bus import BusGap, RedisBus
from core.events import Event, ReactionSent
from spacebridge.config import ConfigError, load_settings
from tests.support import services
from tests.support.faultproxy import FaultProxy

REDIS_URL = services.REDIS_URL
FAULTS = ("cut", "stall", "reset")


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    services.require("redis")
    with FaultProxy.for_url(REDIS_URL) as p:
        yield p


def unique_prefix() -> str:
    return f"sbtest-{uuid.uuid4().hex[:10]}:"


def fault(proxy: FaultProxy, kind: str) -> None:
    {"cut": proxy.cut, "stall": proxy.stall, "reset": proxy.reset}[kind]()


async def eventually(check: Callable[[], bool | Awaitable[bool]], within: float = 30.0, what: str = "") -> None:
    """Poll until ``check`` holds (a generous deadline, not a timing assertion)."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"never happened: {what or check}"
        await asyncio.sleep(0.05)


class Seen:
    """A subscriber that keeps what it was handed."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def __call__(self, event: Event) -> None:
        self.events.append(event)

    def ids(self, but: str = "from-b") -> list[str]:
        """Reactors' ids, in the order handed over, leaving out B's own (B's subscriber gets them too)."""
        return [e.account_id for e in self.events if isinstance(e, ReactionSent) and not e.account_id.startswith(but)]

    def from_b(self) -> list[str]:
        return [i for i in self.ids(but="-") if i.startswith("from-b")]

    def gaps(self) -> list[BusGap]:
        return [e for e in self.events if isinstance(e, BusGap)]


def reaction(who: str) -> ReactionSent:
    return ReactionSent(space_id="s", account_id=who, emoji="👍")


@pytest.fixture
async def buses(proxy: FaultProxy) -> AsyncIterator[tuple[RedisBus, Seen, RedisBus, Seen]]:
    """Process A reaches Redis through the proxy, process B directly; one deployment (one prefix)."""
    prefix = unique_prefix()
    a, b = RedisBus(proxy.url(REDIS_URL), prefix=prefix), RedisBus(REDIS_URL, prefix=prefix)
    seen_a, seen_b = Seen(), Seen()
    a.subscribe(seen_a)
    b.subscribe(seen_b)
    await a.start()
    await b.start()
    try:
        yield a, seen_a, b, seen_b
    finally:
        proxy.restore()
        await a.close()
        await b.close()


@pytest.mark.parametrize("kind", FAULTS)
async def test_events_published_during_an_outage_arrive_afterwards_in_order_and_once(
        proxy: FaultProxy, buses: tuple[RedisBus, Seen, RedisBus, Seen], kind: str) -> None:
    a, seen_a, b, seen_b = buses
    await a.publish([reaction("before")])
    await eventually(lambda: seen_b.ids() == ["before"], what="the bus works before the fault")

    fault(proxy, kind)
    for i in range(30):  # a command's publish neither raises nor waits while Redis is away
        await a.publish([reaction(f"a{i}")])
    await eventually(lambda: seen_a.ids()[-30:] == [f"a{i}" for i in range(30)],
                     what="local subscribers get events meanwhile")
    for i in range(5):
        await b.publish([reaction(f"from-b{i}")])
    if kind != "reset":
        await eventually(lambda: a.write_outage.down and a.read_outage.down, what="A notices it lost Redis")
        assert not seen_a.from_b(), "nothing crosses while Redis is away"
        proxy.restore()

    expected_at_b = ["before", *(f"a{i}" for i in range(30))]
    await eventually(lambda: seen_b.ids() == expected_at_b, what="A's events reach B after the outage")
    await eventually(lambda: seen_a.from_b() == [f"from-b{i}" for i in range(5)],
                     what="A's reader resumes where it left off and gets what B published meanwhile")
    await eventually(lambda: a.healthy and a.pending == 0, what="A reconnected on its own")
    await b.publish([reaction("from-b-after")])
    await a.publish([reaction("after-a")])
    await eventually(lambda: seen_a.from_b()[-1] == "from-b-after" and seen_b.ids()[-1] == "after-a")
    assert seen_b.ids() == [*expected_at_b, "after-a"], "each event once, in order"
    assert not seen_b.gaps() and not seen_a.gaps()


async def test_an_outage_longer_than_the_outbox_is_reported_not_silent(
        proxy: FaultProxy, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    prefix = unique_prefix()
    a, b = RedisBus(proxy.url(REDIS_URL), prefix=prefix, buffer=5), RedisBus(REDIS_URL, prefix=prefix)
    seen_b = Seen()
    b.subscribe(seen_b)
    await a.start()
    await b.start()
    try:
        await a.publish([reaction("first")])
        await eventually(lambda: seen_b.ids() == ["first"])
        proxy.cut()
        for i in range(20):
            await a.publish([reaction(str(i))])
        proxy.restore()
        await eventually(lambda: seen_b.ids() == ["first", *(str(i) for i in range(15, 20))],
                         what="the newest events that fitted the outbox arrive")
        gaps = seen_b.gaps()
        assert [(g.origin, g.lost) for g in gaps] == [(a.origin, 15)], "B is told how many it missed, and from whom"
        assert seen_b.events.index(gaps[0]) == 1, "the gap is reported where it happened"
        await eventually(lambda: any("15 event batches published while Redis was away were lost" in r.getMessage()
                                     for r in caplog.records), what="A says in words what it lost")
    finally:
        proxy.restore()
        await a.close()
        await b.close()


async def test_two_deployments_on_one_redis_do_not_see_each_others_events() -> None:
    services.require("redis")
    one, two = unique_prefix(), unique_prefix()
    a, a2, b = RedisBus(REDIS_URL, prefix=one), RedisBus(REDIS_URL, prefix=one), RedisBus(REDIS_URL, prefix=two)
    seen_a2, seen_b = Seen(), Seen()
    a2.subscribe(seen_a2)
    b.subscribe(seen_b)
    for bus in (a, a2, b):
        await bus.start()
    try:
        await a.publish([reaction("deployment one")])
        await b.publish([reaction("deployment two")])
        await eventually(lambda: seen_a2.ids() == ["deployment one"])
        await a.publish([reaction("again")])
        await eventually(lambda: seen_a2.ids() == ["deployment one", "again"])
        assert seen_b.ids() == ["deployment two"] and seen_a2.ids() == ["deployment one", "again"]
    finally:
        for bus in (a, a2, b):
            await bus.close()
    # by default the prefix follows the Redis database index, so /0 and /1 are apart too
    base = REDIS_URL.rsplit("/", 1)[0]
    assert RedisBus(f"{base}/0").channel != RedisBus(f"{base}/1").channel


def test_a_bad_prefix_is_refused_in_words(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPACEBRIDGE_REDIS_PREFIX", "two words")
    with pytest.raises(ConfigError, match="redis_prefix"):
        load_settings()


# ---- media placement ---------------------------------------------------------------------------------
async def owner_id(placement: RedisPlacement, space_id: str) -> str | None:
    node = await placement.owner(space_id)
    return node.id if node else None


@pytest.mark.parametrize("kind", ["cut", "stall"])
async def test_a_media_owner_keeps_its_rooms_through_an_outage_and_takes_its_leases_back(
        proxy: FaultProxy, kind: str) -> None:
    prefix = unique_prefix()
    a = RedisPlacement(proxy.url(REDIS_URL), Node("a", "http://127.0.0.1:9"), media=True, ttl_s=1.0, prefix=prefix)
    seen = RedisPlacement(REDIS_URL, Node("web", ""), media=False, ttl_s=1.0, prefix=prefix)
    lost: list[str] = []

    async def on_lost(space_id: str) -> None:
        lost.append(space_id)

    a.on_lost = on_lost
    await a.start()
    await seen.start()
    try:
        assert (await a.claim("s1")).id == "a"
        fault(proxy, kind)
        await eventually(lambda: _is_none(owner_id(seen, "s1")), what="the lease runs out in Redis")
        assert a.owns("s1") and await owner_id(a, "s1") == "a", "the room keeps serving where it is"
        with pytest.raises(MediaError) as refused:  # a Space it never saw: refused in words, retried by clients
            await a.claim("s2")
        assert refused.value.code == "media.unavailable"
        proxy.restore()
        await eventually(lambda: _is(owner_id(seen, "s1"), "a"), what="the lease is taken back")
        await eventually(lambda: a.healthy)
        assert lost == [] and a.owns("s1")
    finally:
        proxy.restore()
        await a.close()
        await seen.close()


async def _is_none(value: Awaitable[object]) -> bool:
    return await value is None


async def _is(value: Awaitable[str | None], expected: str) -> bool:
    return await value == expected


async def test_a_space_taken_over_during_the_outage_stays_with_the_new_owner(proxy: FaultProxy) -> None:
    prefix = unique_prefix()
    a = RedisPlacement(proxy.url(REDIS_URL), Node("a", "http://127.0.0.1:9"), media=True, ttl_s=1.0, prefix=prefix)
    b = RedisPlacement(REDIS_URL, Node("b", "http://127.0.0.1:10"), media=True, ttl_s=1.0, prefix=prefix)
    lost: list[str] = []

    async def on_lost(space_id: str) -> None:
        lost.append(space_id)

    a.on_lost = on_lost
    await a.start()
    await b.start()
    try:
        assert (await a.claim("s1")).id == "a"
        proxy.cut()  # only A is cut off: B, which still reaches Redis, takes the Space once A's lease runs out
        await eventually(lambda: _is_none(owner_id(b, "s1")))
        assert (await b.claim("s1")).id == "b"
        proxy.restore()
        await eventually(lambda: lost == ["s1"], what="A gives the Space up to the holder in Redis")
        assert not a.owns("s1") and await owner_id(a, "s1") == "b" and b.owns("s1")
    finally:
        proxy.restore()
        await a.close()
        await b.close()


@pytest.mark.parametrize("kind", FAULTS)
async def test_the_relay_listener_comes_back_on_its_own(proxy: FaultProxy, kind: str) -> None:
    prefix = unique_prefix()
    a = RedisPlacement(proxy.url(REDIS_URL), Node("a", ""), media=False, ttl_s=1.0, prefix=prefix)
    b = RedisPlacement(REDIS_URL, Node("b", ""), media=False, ttl_s=1.0, prefix=prefix)
    heard: list[dict[str, Any]] = []

    async def on_relay(space_id: str, message: dict[str, Any]) -> None:
        heard.append(message)

    a.on_relay = on_relay
    await a.start()
    await b.start()
    try:
        fault(proxy, kind)
        await eventually(lambda: a.listener_outage.down, what="the listener notices")
        proxy.restore()
        n = 0

        async def relayed() -> bool:
            nonlocal n
            n += 1
            await b.relay("s1", {"type": "levels", "n": n})
            await asyncio.sleep(0.1)
            return bool(heard)

        await eventually(relayed, what="relay messages reach A again")
        assert not a.listener_outage.down
    finally:
        proxy.restore()
        await a.close()
        await b.close()


async def test_a_duty_is_given_up_when_its_lease_runs_out_and_taken_back_later(proxy: FaultProxy) -> None:
    prefix = unique_prefix()
    holder = Duty(proxy.url(REDIS_URL), "cards", "holder", ttl_s=1.0, prefix=prefix)
    other = Duty(REDIS_URL, "cards", "other", ttl_s=1.0, prefix=prefix)
    gained: list[str] = []

    async def on_gain() -> None:
        gained.append("holder")

    holder.on_gain = on_gain
    await holder.start()
    try:
        assert holder.held and len(gained) == 1
        proxy.cut()
        await eventually(lambda: not holder.held, what="the holder stops once its lease would have run out")
        await other.start()
        assert other.held, "another process takes the duty meanwhile"
        proxy.restore()
        await other.close()  # hands it over
        await eventually(lambda: holder.held and len(gained) == 2, what="the holder takes it again (and catches up)")
    finally:
        proxy.restore()
        await other.close()
        await holder.close()


# ---- two serve processes mid-Space ---------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kind", FAULTS)
async def test_a_live_space_survives_a_redis_outage_across_two_processes(tmp_path: Path, kind: str) -> None:
    from core.clock import SystemClock
    from core.model.accounts import Actor
    from core.model.space import SpaceState
    from core.services import Core
    from core.storage.engine import make_engine, make_sessionmaker
    from core.tokens import JoinTokens
    from tests.e2e.test_cli import ROOT, _env
    from tests.e2e.test_multiprocess import SECRET, Serve, hears, hello, offer_until_answered
    from tests.integration.webrtc.test_room_media import Client
    from tests.support.loopback import LOOPBACK, ensure_loopback_alias

    services.require("postgresql")
    services.require("redis")
    ensure_loopback_alias()
    prefix = unique_prefix()
    db = await asyncio.to_thread(services.create_pg_database)
    proxy = FaultProxy.for_url(REDIS_URL)
    env = _env(tmp_path, SPACEBRIDGE_DATABASE_URL=db, SPACEBRIDGE_REDIS_URL=proxy.url(REDIS_URL),
               SPACEBRIDGE_REDIS_PREFIX=prefix, SPACEBRIDGE_SECRET_KEY=SECRET,
               SPACEBRIDGE_ICE_ANNOUNCE=f'["{LOOPBACK}"]', SPACEBRIDGE_ICE_ALLOWED_NETWORKS="127.0.0.0/8",
               SPACEBRIDGE_MEDIA_LEASE_S="2")
    up = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "spacebridge", "db", "upgrade"],
                                 cwd=ROOT, env=env, capture_output=True, text=True)
    assert up.returncode == 0, up.stderr
    engine = make_engine(db)
    bus = RedisBus(REDIS_URL, prefix=prefix)  # the test's own process reaches Redis directly
    await bus.start()
    core = Core(make_sessionmaker(engine), bus, SystemClock())
    direct = aioredis.from_url(REDIS_URL)
    servers: list[Serve] = []
    try:
        a = await Serve.start(env, tmp_path / "a.log", "web", "jobs", "media")
        servers.append(a)
        b = await Serve.start(env, tmp_path / "b.log", "web", "media")
        servers.append(b)
        hana = await core.ensure_account("web", "hana", "Hana")
        finn = await core.ensure_account("web", "finn", "Finn")
        space = await core.create_space(Actor(account_id=hana.id, is_community_admin=True), "Through the outage")
        tokens, now = JoinTokens(SECRET.encode()), core.now()
        lease_key = f"{prefix}media:space:{space.id}"
        async with aiohttp.ClientSession() as http:
            host = await hello(http, a.url, space.id, tokens.issue(space.id, hana.id, "speaker", now), Client(440))
            listener = await hello(http, b.url, space.id, tokens.issue(space.id, finn.id, "listener", now),
                                   Client(None))
            await offer_until_answered(host)
            await offer_until_answered(listener)
            assert await hears(listener.client, 440, 15), "the listener on B hears the host on A"
            assert a.url.encode() in (await direct.get(lease_key) or b"")

            fault(proxy, kind)
            if kind != "reset":
                await eventually(lambda: _is_none(direct.get(lease_key)), what="the media lease runs out in Redis")
            # commands keep working while Redis is away; their events wait for it
            assert (await listener.command("raise_hand"))["type"] == "ok"
            assert (await host.command("pin", title="Agenda", url="https://example.org/agenda"))["type"] == "ok"
            assert await hears(listener.client, 440, 15), "media does not need Redis"
            proxy.restore()

            await host.recv("event", timeout=30, event__type="hand.raised", event__account_id=finn.id)
            await listener.recv("event", timeout=30, event__type="pin.added")
            await eventually(lambda: _contains(direct.get(lease_key), a.url), what="A takes its lease back")
            assert await hears(listener.client, 440, 15)
            assert not host.ws.closed and not listener.ws.closed, "nobody's socket was dropped"
            assert not [m for p in (host, listener) for m in p.inbox if m.get("type") == "reconnect_media"]
            assert (await core.view(space.id)).space.state == SpaceState.LIVE
            for p in (host, listener):
                await p.client.pc.close()
                await p.ws.close()
        logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
        assert "Redis is back" in logs and "Traceback" not in logs, logs[-3000:]
    finally:
        for s in servers:
            await s.stop()
        proxy.close()
        await direct.aclose()
        await bus.close()
        await engine.dispose()
        await asyncio.to_thread(services.drop_pg_database, db)


async def _contains(value: Awaitable[bytes | str | None], text: str) -> bool:
    raw = await value
    return raw is not None and text.encode() in (raw.encode() if isinstance(raw, str) else raw)
