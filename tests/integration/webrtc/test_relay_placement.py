"""How an owner picks the media process for a listener it has no room for (placement.py), on a real
Redis: the heartbeats media processes publish carry their listeners per Space, rewritten at once
when they change; the pick is the least loaded process under the limit for that Space, never the
asking process, never one that refused; a process that stopped is no longer alive or picked."""

from __future__ import annotations

import uuid

from adapters.webrtc.placement import LocalPlacement, Node, RedisPlacement
from tests.support import services


async def picked(placement: RedisPlacement, space_id: str, limit: int, exclude: set[str]) -> str | None:
    node = await placement.pick_relay(space_id, limit, exclude)
    return node.id if node is not None else None


async def test_relays_are_picked_by_their_share_of_the_space_and_their_load() -> None:
    services.require("redis")
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    counts = {"a": {"big": 5}, "b": {"big": 2, "other": 1}, "c": {"big": 1, "other": 40}}
    nodes: dict[str, RedisPlacement] = {}
    for name in counts:
        p = RedisPlacement(services.REDIS_URL, Node(name, f"http://127.0.0.1:{9000 + len(nodes)}"), media=True,
                           ttl_s=30.0, prefix=prefix)  # renewals every 10 s: writes seen here are publish_load's
        p.load = lambda name=name: dict(counts[name])
        await p.start()
        nodes[name] = p
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    try:
        # under 2 of "big": only c (b holds 2); never the owner itself, whatever it holds
        assert await picked(a, "big", 2, set()) == "c"
        assert await picked(a, "big", 2, {"c"}) is None  # c refused: nobody else has room
        # under 3: b and c both have room for "big"; b holds fewer listeners in all (3 against 41)
        assert await picked(a, "big", 3, set()) == "b"
        # b's listeners change: its heartbeat says so at once, not at the next renewal
        counts["b"] = {"big": 2, "other": 90}
        await b.publish_load()
        assert await picked(a, "big", 3, set()) == "c"
        assert await picked(c, "new", 1, set()) == "a"  # 5 in all, b 92
        assert await a.alive({"a", "b", "c", "zz"}) == {"a", "b", "c"}
        await c.close()  # a process that stops takes its heartbeat with it
        assert await a.alive({"b", "c"}) == {"b"}
        assert await picked(a, "big", 3, set()) == "b"
    finally:
        for p in nodes.values():
            await p.close()


async def test_one_process_has_no_relay_to_pick() -> None:
    local = LocalPlacement()
    assert await local.pick_relay("s", 0, set()) is None
    assert await local.alive({"x"}) == {"x"}
