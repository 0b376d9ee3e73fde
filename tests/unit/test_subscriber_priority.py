"""Subscriber priority in the raise-hand queue (issue 19): the Queue's order on the aggregate, and the
use cases on the in-memory store (tests/support/fake_uow.py), as every surface reads them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from core import events as ev
from core.bus import InProcessBus
from core.clock import FrozenClock
from core.commands import dispatch
from core.errors import Conflict, DomainError, Forbidden
from core.model.accounts import Actor
from core.model.space import Role, Space
from core.model.subscription import Subscription, SubscriptionProvider, SubscriptionStatus, Tier
from core.services import Core
from tests.support.fake_uow import FakeStore

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


# ---- the aggregate -----------------------------------------------------------------------------------
def _live() -> Space:
    space = Space.create(host_id="host", title="Queue", now=T0)
    space.start("host", T0)
    space.promote("host", "co", Role.COHOST, T0)
    return space


def _queue(space: Space) -> list[str]:
    return [h.account_id for h in space.hands]


def test_subscribers_go_first_in_raise_order_and_positions_follow() -> None:
    space = _live()
    space.set_subscriber_priority("co", True, T0, has_tiers=True)
    at = [T0 + timedelta(seconds=i) for i in range(5)]
    assert space.raise_hand("a", at[0]) == 1
    assert space.raise_hand("s1", at[1], subscriber=True) == 1  # ahead of a
    assert space.raise_hand("b", at[2]) == 3
    assert space.raise_hand("s2", at[3], subscriber=True) == 2  # behind s1, ahead of a and b
    assert _queue(space) == ["s1", "s2", "a", "b"]
    assert [space.queue_position(x) for x in ("s1", "s2", "a", "b")] == [1, 2, 3, 4]
    raised = [e for e in space.pending_events if isinstance(e, ev.HandRaised)]
    assert [(e.account_id, e.position) for e in raised] == [("a", 1), ("s1", 1), ("b", 3), ("s2", 2)]


def test_off_a_subscriber_waits_in_raise_order_and_turning_it_on_and_off_reorders() -> None:
    space = _live()
    space.raise_hand("a", T0)
    space.raise_hand("s1", T0 + timedelta(seconds=1), subscriber=True)  # off: the flag changes nothing
    space.raise_hand("b", T0 + timedelta(seconds=2))
    space.raise_hand("s2", T0 + timedelta(seconds=3))
    assert _queue(space) == ["a", "s1", "b", "s2"]
    # on: who is a subscriber is what the use case read now (s1 and s2), each group in raise order
    assert space.set_subscriber_priority("co", True, T0, has_tiers=True, subscribers={"s1", "s2"})
    assert _queue(space) == ["s1", "s2", "a", "b"]
    assert [h.subscriber for h in space.hands] == [True, True, False, False]
    assert not space.set_subscriber_priority("host", True, T0, has_tiers=True)  # already on: nothing moves
    assert space.set_subscriber_priority("host", False, T0, has_tiers=True)  # back to raise order
    assert _queue(space) == ["a", "s1", "b", "s2"]
    toggles = [e for e in space.pending_events if isinstance(e, ev.SubscriberPriorityToggled)]
    assert [(e.enabled, e.by) for e in toggles] == [(True, "co"), (False, "host")]


def test_refusals_change_nothing() -> None:
    space = _live()
    space.raise_hand("a", T0)
    before = (_queue(space), space.subscriber_priority, len(space.pending_events))
    with pytest.raises(Forbidden) as role:
        space.set_subscriber_priority("a", True, T0, has_tiers=True)  # a listener
    assert role.value.code == "role.moderator_required"
    with pytest.raises(Conflict) as tiers:
        space.set_subscriber_priority("host", True, T0, has_tiers=False)
    assert tiers.value.code == "queue.no_tiers"
    assert (_queue(space), space.subscriber_priority, len(space.pending_events)) == before
    space.end("host", T0)
    with pytest.raises(Conflict) as closed:
        space.set_subscriber_priority("host", True, T0, has_tiers=True)
    assert closed.value.code == "space.closed" and not space.subscriber_priority


# ---- the use cases on the fake store ------------------------------------------------------------------
World = tuple[Core, FrozenClock, list[ev.Event]]


@pytest.fixture
async def world() -> AsyncIterator[World]:
    store, clock, bus = FakeStore(), FrozenClock(), InProcessBus()
    seen: list[ev.Event] = []

    async def record(e: ev.Event) -> None:
        seen.append(e)

    bus.subscribe(record)
    await bus.start()
    yield Core(store, bus, clock), clock, seen
    await bus.close()


async def _person(core: Core, name: str) -> Actor:
    return Actor(account_id=(await core.ensure_account("web", name, name)).id)


async def subscribe(core: Core, tier: Tier, who: Actor, status: SubscriptionStatus = SubscriptionStatus.ACTIVE,
                    days: int = 20) -> None:
    now = core.now()
    async with core.uow() as uow:
        await uow.subscriptions.add(Subscription(
            id=f"S{who.account_id}", account_id=who.account_id, creator_id=tier.creator_id, tier_id=tier.id,
            provider=SubscriptionProvider.STRIPE, provider_ref=f"sub_{who.account_id}", status=status,
            current_period_end=now + timedelta(days=days), cancel_at_period_end=False, created_at=now,
            updated_at=now, ended_at=now if status == SubscriptionStatus.ENDED else None))
        await uow.commit()


async def _room(core: Core) -> tuple[Actor, Actor, str, dict[str, Actor]]:
    host = await _person(core, "host")
    space = await core.create_space(Actor(account_id=host.account_id, is_community_admin=True), "Priority")
    co = await _person(core, "co")
    await core.join(co, space.id)
    await core.promote(host, space.id, co.account_id, "cohost")
    people = {n: await _person(core, n) for n in ("ann", "sub", "bob", "gold", "lapsed", "elsewhere")}
    for p in people.values():
        await core.join(p, space.id)
    return host, co, space.id, people


async def test_raised_hands_of_paying_subscribers_go_first_on_every_reading(world: World) -> None:
    core, clock, seen = world
    host, co, space_id, p = await _room(core)
    basic = await core.memberships.create_tier(host, "Basic", 300, "eur")
    gold = await core.memberships.create_tier(host, "Gold", 1500, "eur")
    other = await core.memberships.create_tier(p["elsewhere"], "Theirs", 900, "eur")
    await subscribe(core, basic, p["sub"])
    await subscribe(core, gold, p["gold"], SubscriptionStatus.PAST_DUE)  # within its grace: still opens Gold
    await subscribe(core, gold, p["lapsed"], SubscriptionStatus.ENDED)
    await subscribe(core, other, p["bob"])  # pays someone else
    await core.memberships.archive_tier(host, basic.id)  # off sale: its subscribers still count

    outcome = await dispatch(core, co, "subscriber_priority", space_id, {"on": True})
    assert (outcome.code, outcome.result) == ("queue.subscriber_priority_on", {"enabled": True})
    positions = {}
    for name in ("ann", "sub", "lapsed", "bob", "gold"):
        clock.advance(seconds=1)
        positions[name] = (await dispatch(core, p[name], "hand", space_id, {})).result
    assert positions == {"ann": 1, "sub": 1, "lapsed": 3, "bob": 4, "gold": 2}
    view = await core.view(space_id)
    order = [p[n].account_id for n in ("sub", "gold", "ann", "lapsed", "bob")]
    assert view.as_dict()["queue"] == order and view.as_dict()["subscriber_priority"] is True
    # "#1" names the first subscriber on every surface
    await dispatch(core, co, "approve", space_id, {"person": "#1"})
    assert p["sub"].account_id in (await core.view(space_id)).space.speakers
    await core.bus.drain()  # type: ignore[attr-defined]
    assert any(isinstance(e, ev.SubscriberPriorityToggled) and e.enabled for e in seen)


async def test_turning_it_on_reads_the_hands_already_up_and_toggling_restores_raise_order(world: World) -> None:
    core, clock, _ = world
    host, co, space_id, p = await _room(core)
    tier = await core.memberships.create_tier(host, "Basic", 300, "eur")
    await subscribe(core, tier, p["gold"])
    for name in ("ann", "bob", "gold"):
        clock.advance(seconds=1)
        await core.raise_hand(p[name], space_id)
    raise_order = [p[n].account_id for n in ("ann", "bob", "gold")]
    assert [h.account_id for h in (await core.view(space_id)).space.hands] == raise_order
    await dispatch(core, host, "subscriber_priority", space_id, {})  # left out: toggles on
    assert [h.account_id for h in (await core.view(space_id)).space.hands] == [raise_order[2], *raise_order[:2]]
    off = await dispatch(core, co, "subscriber_priority", space_id, {})  # and off
    assert off.code == "queue.subscriber_priority_off"
    assert [h.account_id for h in (await core.view(space_id)).space.hands] == raise_order


async def test_a_subscription_that_ends_later_keeps_its_place_until_read_again(world: World) -> None:
    """Documented: the fact is read when the hand goes up (and when priority is turned on)."""
    core, clock, _ = world
    host, co, space_id, p = await _room(core)
    tier = await core.memberships.create_tier(host, "Basic", 300, "eur")
    await subscribe(core, tier, p["sub"], days=1)
    await core.set_subscriber_priority(co, space_id, True)
    await core.raise_hand(p["ann"], space_id)
    await core.raise_hand(p["sub"], space_id)
    clock.advance(days=10)  # past the period and its grace: no longer a subscriber
    await core.raise_hand(p["bob"], space_id)
    assert [h.account_id for h in (await core.view(space_id)).space.hands] == [
        p["sub"].account_id, p["ann"].account_id, p["bob"].account_id]
    await core.set_subscriber_priority(co, space_id, False)
    await core.set_subscriber_priority(co, space_id, True)  # read afresh: sub is no longer first
    assert [h.account_id for h in (await core.view(space_id)).space.hands] == [
        p["ann"].account_id, p["sub"].account_id, p["bob"].account_id]


async def test_no_tiers_a_listener_and_bad_input_are_refused_and_change_nothing(world: World) -> None:
    core, _, seen = world
    host, co, space_id, p = await _room(core)
    await core.raise_hand(p["ann"], space_id)
    before = (await core.view(space_id)).as_dict()
    await core.bus.drain()  # type: ignore[attr-defined]
    events = len(seen)
    for who, args, code in ((co, {"on": True}, "queue.no_tiers"),  # the host sells no tier
                            (p["bob"], {"on": True}, "role.moderator_required"),
                            (co, {"on": "maybe"}, "protocol.bad_argument"),
                            (co, {"on": True, "extra": 1}, "protocol.bad_argument")):
        with pytest.raises(DomainError) as refused:
            await dispatch(core, who, "subscriber_priority", space_id, args)
        assert refused.value.code == code, (args, refused.value.code)
    await core.bus.drain()  # type: ignore[attr-defined]
    assert (await core.view(space_id)).as_dict() == before and len(seen) == events
    # the same refusals straight through the core (a surface that skipped dispatch)
    with pytest.raises(Forbidden):
        await core.set_subscriber_priority(p["bob"], space_id, True)
    with pytest.raises(Conflict):
        await core.set_subscriber_priority(host, space_id, True)
    # turning it off needs no tier
    assert (await dispatch(core, co, "subscriber_priority", space_id, {"on": False})).code == \
        "queue.subscriber_priority_off"
