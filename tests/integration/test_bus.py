"""Events reach subscribers in this process and, through Redis, in other processes."""

from __future__ import annotations

import asyncio

import pytest

from core.bus import InProcessBus, RedisBus
from core.events import Event, ReactionSent, SpaceStarted, event_from_dict
from tests.support import services


def test_events_round_trip_through_json() -> None:
    e = SpaceStarted(space_id="s", host_id="h", title="T", community_id=None)
    back = event_from_dict(e.to_dict())
    assert back == e and back.at.tzinfo is not None


async def test_slow_subscriber_does_not_block_or_grow() -> None:
    bus = InProcessBus()
    got: list[Event] = []
    gate = asyncio.Event()

    async def slow(e: Event) -> None:
        await gate.wait()
        got.append(e)

    fast: list[Event] = []

    async def quick(e: Event) -> None:
        fast.append(e)

    sub = bus.subscribe(slow, max_queue=10)
    bus.subscribe(quick, names=["reaction.sent"])
    await bus.start()
    for i in range(100):
        await bus.publish([ReactionSent(space_id="s", account_id=str(i), emoji="👍")])
    for _ in range(600):  # the quick subscriber gets all 100 while the slow one is stuck (polled, 30 s at most)
        if len(fast) == 100:
            break
        await asyncio.sleep(0.05)
    assert len(fast) == 100 and sub.queue.qsize() <= 10 and sub.dropped >= 89
    gate.set()
    await bus.drain()
    assert [e.account_id for e in got][-1] == "99"  # type: ignore[attr-defined]
    await bus.close()


async def test_redis_bus_crosses_processes() -> None:
    services.require("redis")
    channel = f"sb-test-{id(object())}"
    a, b = RedisBus(services.REDIS_URL, channel), RedisBus(services.REDIS_URL, channel)
    seen_a: list[Event] = []
    seen_b: list[Event] = []

    async def on_a(e: Event) -> None:
        seen_a.append(e)

    async def on_b(e: Event) -> None:
        seen_b.append(e)

    a.subscribe(on_a)
    b.subscribe(on_b)
    await a.start()
    await b.start()
    try:
        e = SpaceStarted(space_id="s1", host_id="h", title="Cross", community_id=None)
        await a.publish([e])
        for _ in range(100):
            if seen_b:
                break
            await asyncio.sleep(0.02)
        assert seen_b == [e], "the other process did not see the event"
        await asyncio.sleep(0.1)
        assert seen_a == [e], "the publishing process saw its own event twice or not at all"
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0"])
async def test_redis_bus_unreachable_fails_clearly(url: str) -> None:
    bus = RedisBus(url)
    with pytest.raises(Exception, match="(?i)connect"):
        await bus.start()
    await bus.close()
