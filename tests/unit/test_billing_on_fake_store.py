"""Billing's ledger, the host's console figures and the web's sign-in records on the in-memory store
(tests/support/fake_uow.py): the same code as on the database, through the ports' unit of work.

What is asserted is what people see: a buyer's ticket (held, paid, refunded), who may join, the
refund a cancel owes and the provider call that pays it, the creator's report and console figures,
a sign-in challenge answered once, and "sign out everywhere".
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest

from billing.ledger import Ledger
from billing.refunds import make_refund_handler
from core.bus import InProcessBus
from core.clock import FrozenClock
from core.errors import Conflict, Forbidden, Invalid
from core.model.accounts import MAX_PASSKEYS, Actor, Passkey
from core.model.space import Role, Space, Ticketing
from core.model.subscription import GRACE, SubscriberAccess, Subscription, SubscriptionProvider, SubscriptionStatus
from core.model.ticket import TicketStatus
from core.ports import Job, Store
from core.services import Core
from spacebridge.studio_stats import ActivityRecorder, space_stats
from tests.support.fake_uow import FakeStore


@dataclass
class World:
    core: Core
    ledger: Ledger
    store: FakeStore
    clock: FrozenClock
    bus: InProcessBus


@pytest.fixture
async def world() -> AsyncIterator[World]:
    store, clock, bus = FakeStore(), FrozenClock(), InProcessBus()
    typed: Store = store  # the fake is a ``core.ports.Store`` (mypy checks this line)
    await bus.start()
    core = Core(typed, bus, clock)
    yield World(core, Ledger(core), store, clock, bus)
    await bus.close()


async def person(core: Core, name: str, *, operator: bool = False) -> Actor:
    return Actor(account_id=(await core.ensure_account("web", name, name)).id, is_operator=operator)


async def ticketed(w: World, capacity: int | None = 1, *,
                   start_in: timedelta = timedelta(days=1)) -> tuple[Actor, Space]:
    """A scheduled Space selling tickets at 12.50 EUR."""
    host = await person(w.core, "host", operator=True)
    space = await w.core.create_space(host, "Paid talk", start_at=w.clock.now() + start_in)
    space = await w.core.set_ticketing(host, space.id, Ticketing(price_minor=1250, currency="eur", capacity=capacity))
    return host, space


class RecordingGateway:
    """``core.ports.PaymentGateway`` for Stripe that remembers each refund it was asked for."""

    provider = "stripe"

    def __init__(self) -> None:
        self.refunds: list[tuple[str, int, str, str]] = []

    async def refund(self, provider_ref: str, amount_minor: int, idempotency_key: str, reason: str) -> str:
        if any(key == idempotency_key for _, _, key, _ in self.refunds):
            return f"re_{idempotency_key}"  # Stripe answers a repeated key with the first refund
        self.refunds.append((provider_ref, amount_minor, idempotency_key, reason))
        return f"re_{idempotency_key}"


def refund_jobs(store: FakeStore) -> list[Job]:
    """The queued ``ticket.refund`` jobs, as the job runner would hand them to their handler."""
    return [Job(id=n, kind=j.kind, payload=j.payload, attempts=0, due_at=j.due_at, dedupe_key=j.dedupe_key,
                group_key=j.group_key)
            for n, j in enumerate(store.state.jobs.values()) if j.kind == "ticket.refund"]


async def test_a_sale_holds_the_last_seat_then_the_payment_lets_the_buyer_in(world: World) -> None:
    w = world
    host, space = await ticketed(w, capacity=1)
    ann, bob = await person(w.core, "ann"), await person(w.core, "bob")

    held = await w.ledger.hold(ann, space.id, "stripe")
    assert held.status == TicketStatus.HELD and held.amount_minor == 1250
    assert (await w.ledger.hold(ann, space.id, "stripe")).id == held.id  # asking again keeps the one seat
    with pytest.raises(Conflict) as sold_out:
        await w.ledger.hold(bob, space.id, "stripe")
    assert sold_out.value.code == "ticket.sold_out"

    await w.ledger.attach_ref(held.id, "pi_ann")
    paid = await w.ledger.settle(held.id, paid=True, provider_ref="pi_ann", amount_minor=1250, currency="EUR")
    assert paid.status == TicketStatus.PAID
    assert (await w.ledger.settle(held.id, paid=True, provider_ref="pi_ann")).status == TicketStatus.PAID  # replayed

    await w.core.start_space(host, space.id)
    assert (await w.core.join(ann, space.id)).role == Role.LISTENER
    with pytest.raises(Forbidden) as refused:
        await w.core.join(bob, space.id)
    assert refused.value.code == "ticket.required"
    report = await w.ledger.report(space.id)
    assert (report.sold, report.gross_minor, report.held, report.returned) == (1, 1250, 0, 0)


async def test_a_hold_not_paid_in_time_frees_the_seat(world: World) -> None:
    w = world
    _, space = await ticketed(w, capacity=1)
    ann, bob = await person(w.core, "ann"), await person(w.core, "bob")
    first = await w.ledger.hold(ann, space.id, "stripe")
    await w.ledger.attach_ref(first.id, "pi_ann")
    w.clock.advance(minutes=16)  # the hold lasts 15 minutes
    second = await w.ledger.hold(bob, space.id, "stripe")
    assert second.status == TicketStatus.HELD and second.id != first.id
    late = await w.ledger.settle(first.id, paid=True, provider_ref="pi_ann", amount_minor=1250, currency="eur")
    assert late.status == TicketStatus.VOID  # the money came for a seat that was gone: it is given back
    report = await w.ledger.report(space.id)
    assert (report.sold, report.returned, report.refunds_pending) == (0, 1, 1)
    assert [j.payload["reason"] for j in refund_jobs(w.store)] == ["seat_unavailable"]


async def test_a_wrong_amount_is_refused_and_changes_nothing(world: World) -> None:
    w = world
    _, space = await ticketed(w)
    ann = await person(w.core, "ann")
    held = await w.ledger.hold(ann, space.id, "stripe")
    with pytest.raises(Invalid) as wrong:
        await w.ledger.settle(held.id, paid=True, provider_ref="pi_x", amount_minor=1, currency="eur")
    assert wrong.value.code == "ticket.amount_mismatch"
    assert (await w.ledger.get(held.id)).status == TicketStatus.HELD
    assert (await w.ledger.report(space.id)).sold == 0


async def test_the_same_seat_paid_twice_is_one_seat_and_one_refund(world: World) -> None:
    w = world
    _, space = await ticketed(w, capacity=5)
    ann = await person(w.core, "ann")
    held = await w.ledger.hold(ann, space.id, "stripe")
    await w.ledger.settle(held.id, paid=True, provider_ref="pi_card", amount_minor=1250, currency="eur")
    again = await w.ledger.settle(held.id, paid=True, provider_ref="pi_link", amount_minor=1250, currency="eur")
    assert again.status == TicketStatus.PAID and again.provider_ref == "pi_card"
    report = await w.ledger.report(space.id)
    assert (report.sold, report.returned, report.refunds_pending, report.gross_minor) == (1, 1, 1, 2500)
    returned = await w.ledger.by_ref("pi_link")
    assert returned is not None and returned.id != held.id

    gateway = RecordingGateway()
    refund = make_refund_handler(w.ledger, {"stripe": gateway})
    for job in refund_jobs(w.store):
        await refund(job)
    assert [(ref, amount) for ref, amount, _, _ in gateway.refunds] == [("pi_link", 1250)]
    assert (await w.ledger.get(held.id)).status == TicketStatus.PAID  # the seat stays the buyer's
    report = await w.ledger.report(space.id)
    assert (report.sold, report.refunds_pending, report.refunded_minor) == (1, 0, 1250)


async def test_cancelling_owes_each_buyer_a_refund_paid_once(world: World) -> None:
    w = world
    host, space = await ticketed(w, capacity=None)
    buyers = [await person(w.core, n) for n in ("ann", "bob")]
    tickets = []
    for i, b in enumerate(buyers):
        t = await w.ledger.hold(b, space.id, "stripe")
        tickets.append(await w.ledger.settle(t.id, paid=True, provider_ref=f"pi_{i}", amount_minor=1250,
                                             currency="eur"))

    await w.core.cancel_space(host, space.id)
    assert sorted(j.payload["ticket_id"] for j in refund_jobs(w.store)) == sorted(t.id for t in tickets)
    assert await w.ledger.refund_all(space.id) == 0  # the cancel queued them already: none twice

    gateway = RecordingGateway()
    refund = make_refund_handler(w.ledger, {"stripe": gateway})
    for job in refund_jobs(w.store) * 2:  # a job run again after a crash refunds nothing more
        await refund(job)
    assert sorted((ref, key) for ref, _, key, _ in gateway.refunds) == [
        ("pi_0", f"refund:{tickets[0].id}"), ("pi_1", f"refund:{tickets[1].id}")]
    assert {(await w.ledger.get(t.id)).status for t in tickets} == {TicketStatus.REFUNDED}
    report = await w.ledger.report(space.id)
    assert (report.sold, report.refunded, report.refunded_minor, report.net_minor) == (2, 2, 2500, 0)


async def test_a_buyer_may_ask_for_a_refund_only_once_the_host_moved_the_space(world: World) -> None:
    w = world
    host, space = await ticketed(w)
    ann = await person(w.core, "ann")
    t = await w.ledger.hold(ann, space.id, "stripe")
    await w.ledger.settle(t.id, paid=True, provider_ref="pi_ann", amount_minor=1250, currency="eur")
    with pytest.raises(Forbidden) as early:
        await w.ledger.request_refund(ann, space.id)
    assert early.value.code == "ticket.not_refundable"
    assert refund_jobs(w.store) == []

    await w.core.reschedule_space(host, space.id, w.clock.now() + timedelta(days=3))
    assert (await w.ledger.request_refund(ann, space.id)).id == t.id
    assert [j.payload for j in refund_jobs(w.store)] == [{"ticket_id": t.id, "reason": "requested_by_customer"}]


async def test_the_console_shows_listeners_reactions_and_revenue(world: World) -> None:
    w = world
    host, space = await ticketed(w, capacity=None, start_in=timedelta(minutes=5))
    recorder = ActivityRecorder(w.core)
    recorder.attach(w.bus)
    ann, bob = await person(w.core, "ann"), await person(w.core, "bob")
    for i, b in enumerate((ann, bob)):
        t = await w.ledger.hold(b, space.id, "stripe")
        await w.ledger.settle(t.id, paid=True, provider_ref=f"pi_{i}", amount_minor=1250, currency="eur")
    await w.ledger.set_payout_account(host.account_id, "acct_host")
    assert await w.ledger.payout_account(host.account_id) == "acct_host"

    await w.core.start_space(host, space.id)
    await w.core.join(ann, space.id)
    await w.core.join(ann, space.id)  # a second tab is not a second listener
    await w.core.join(bob, space.id)
    await w.core.react(ann, space.id, "👏")
    w.clock.advance(minutes=10)
    await w.core.leave(bob, space.id)
    w.clock.advance(minutes=5)
    ended = await w.core.end_space(host, space.id)
    await w.bus.drain()

    stats = await space_stats(w.core, w.ledger, ended)
    assert (stats.peak_listeners, stats.total_listeners, stats.listening_minutes) == (2, 2, 25.0)
    assert (stats.reactions, stats.sold, stats.gross_minor, stats.currency) == (1, 2, 2500, "EUR")
    async with w.core.uow() as uow:
        sales = await uow.analytics.sales(space.id)
    assert sorted(s.account_id for s in sales) == sorted([ann.account_id, bob.account_id])


async def test_a_sign_in_challenge_is_answered_once_unless_its_transaction_failed(world: World) -> None:
    core = world.core
    async with core.uow() as uow:  # the sign-in failed after spending it: nothing was committed
        assert await uow.passkeys.spend("passkey:abc", core.now(), 300)
    async with core.uow() as uow:
        assert await uow.passkeys.spend("passkey:abc", core.now(), 300)
        await uow.commit()
    async with core.uow() as uow:  # a copy of the old cookie answers the same challenge again
        assert not await uow.passkeys.spend("passkey:abc", core.now(), 300)
    world.clock.advance(seconds=301)
    async with core.uow() as uow:  # long expired (the cookie refuses it first): the record is pruned
        assert await uow.passkeys.spend("passkey:abc", core.now(), 300)


async def test_passkeys_and_sign_out_everywhere(world: World) -> None:
    core = world.core
    ann = await person(core, "ann")
    async with core.uow() as uow:
        for i in range(MAX_PASSKEYS + 1):
            await uow.passkeys.add(Passkey(credential_id=f"cred{i}", account_id=ann.account_id, public_key=b"cose",
                                           sign_count=0, transports=("internal",),
                                           created_at=core.now() + timedelta(seconds=i), last_used_at=None))
        cookie_epoch = await uow.passkeys.epoch(ann.account_id)
        await uow.commit()
    world.clock.advance(minutes=1)
    async with core.uow() as uow:
        await uow.passkeys.used("cred0", 7, core.now())
        await uow.commit()
    async with core.uow() as uow:
        keys = await uow.passkeys.for_account(ann.account_id)
        used = await uow.passkeys.get("cred0")
        assert await uow.passkeys.get("nope") is None
    assert len(keys) == MAX_PASSKEYS and keys[0].credential_id == "cred0"
    assert used is not None and (used.sign_count, used.last_used_at) == (7, core.now())

    async with core.uow() as uow:  # "sign out everywhere"
        new_epoch = await uow.passkeys.bump_epoch(ann.account_id)
        await uow.commit()
    async with core.uow() as uow:
        assert await uow.passkeys.epoch(ann.account_id) == new_epoch != cookie_epoch  # old cookies stop matching


async def test_a_subscribers_only_space_on_the_fake_store(world: World) -> None:
    """Super Follows' access rule through the ports' unit of work: the subscriber joins, a follower
    who never subscribed is told to subscribe, and the subscriber's access ends with the paid period
    (plus the grace a late renewal gets)."""
    w = world
    host = await person(w.core, "host", operator=True)
    fan, other = await person(w.core, "fan"), await person(w.core, "other")
    tier = await w.core.memberships.create_tier(host, "Inner circle", 500, "eur", "Monthly AMA")
    now = w.clock.now()
    async with w.core.uow() as uow:
        await uow.subscriptions.add(Subscription(
            id="sub1", account_id=fan.account_id, creator_id=host.account_id, tier_id=tier.id,
            provider=SubscriptionProvider.STRIPE, provider_ref="sub_1", status=SubscriptionStatus.ACTIVE,
            current_period_end=now + timedelta(days=30), cancel_at_period_end=False, created_at=now, updated_at=now))
        await uow.commit()
    space = await w.core.create_space(host, "For subscribers", start_at=now + timedelta(hours=1))
    await w.core.memberships.set_subscriber_access(host, space.id, SubscriberAccess(tier_id=tier.id))
    await w.core.start_space(host, space.id)

    assert (await w.core.join(fan, space.id)).role == Role.LISTENER
    with pytest.raises(Forbidden) as refused:
        await w.core.join(other, space.id)
    assert refused.value.code == "subscription.required"

    await w.core.leave(fan, space.id)
    w.clock.advance(days=30 + GRACE.days, minutes=1)  # the period ended and no renewal came
    with pytest.raises(Forbidden) as lapsed:
        await w.core.join(fan, space.id)
    assert lapsed.value.code == "subscription.required"
