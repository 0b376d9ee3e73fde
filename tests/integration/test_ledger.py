"""The ticket ledger on SQLite and PostgreSQL: holds never oversell, payments settle once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from billing.ledger import Ledger
from core.clock import FrozenClock
from core.errors import Conflict, DomainError, Forbidden
from core.messages import describe
from core.model.accounts import Account, Actor
from core.model.space import Ticketing
from core.model.ticket import TicketStatus
from core.services import Core
from core.storage import jobs


async def ticketed(core: Core, capacity: int, price: int = 1000) -> tuple[Actor, str]:
    acc = await core.ensure_account("web", "creator", "Creator")
    host = Actor(account_id=acc.id, is_operator=True)
    space = await core.create_space(host, "Paid AMA", start_at=core.now() + timedelta(days=1))
    await core.set_ticketing(host, space.id, Ticketing(price_minor=price, currency="eur", capacity=capacity))
    return host, space.id


async def buyers(core: Core, n: int) -> list[Actor]:
    async with core.uow() as uow:
        for i in range(n):
            await uow.accounts.add(Account(id=f"buyer{i:04d}", display_name=f"Buyer {i}", created_at=core.now()))
        await uow.commit()
    return [Actor(account_id=f"buyer{i:04d}") for i in range(n)]


async def test_200_buyers_50_seats(core: Core) -> None:
    ledger = Ledger(core, fee_bps=500)
    _, space_id = await ticketed(core, capacity=50)
    people = await buyers(core, 200)
    results = await asyncio.gather(*(ledger.hold(p, space_id, "stripe") for p in people), return_exceptions=True)
    holds = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(holds) == 50
    assert all(isinstance(e, Conflict) and e.code == "ticket.sold_out" for e in refused)
    assert describe(refused[0]) == "Sold out: all 50 seats are taken."  # type: ignore[arg-type]
    await asyncio.gather(*(ledger.settle(t.id, paid=True) for t in holds))
    report = await ledger.report(space_id)
    assert (report.sold, report.gross_minor, report.fees_minor, report.net_minor) == (50, 50_000, 2_500, 47_500)
    with pytest.raises(Conflict, match="ticket.sold_out"):
        await ledger.hold(people[-1], space_id, "stripe")


async def test_hold_expires_and_late_payment_is_refunded(core: Core, clock: FrozenClock) -> None:
    ledger = Ledger(core, hold=timedelta(minutes=15))
    _, space_id = await ticketed(core, capacity=1)
    slow, fast = await buyers(core, 2)
    first = await ledger.hold(slow, space_id, "stripe")
    assert await ledger.hold(slow, space_id, "stripe") == first  # same hold again, not a second seat
    with pytest.raises(Conflict, match="ticket.sold_out"):
        await ledger.hold(fast, space_id, "stripe")
    clock.advance(minutes=16)
    second = await ledger.hold(fast, space_id, "stripe")
    late = await ledger.settle(first.id, paid=True, provider_ref="pi_late")
    assert late.status == TicketStatus.VOID
    async with core.uow() as uow:
        st = await jobs.job_stats(uow.session, kind="ticket.refund")
    assert st["pending"] == 1, "the late payer's money was not queued for refund"
    assert (await ledger.settle(second.id, paid=True)).status == TicketStatus.PAID


async def test_replayed_and_failed_payments(core: Core) -> None:
    ledger = Ledger(core)
    _, space_id = await ticketed(core, capacity=10)
    a, b = await buyers(core, 2)
    t = await ledger.hold(a, space_id, "stripe")
    for _ in range(5):
        await ledger.settle(t.id, paid=True)
    await core.bus.drain()  # type: ignore[attr-defined]
    paid_events = [e for e in core.recorder.events  # type: ignore[attr-defined]
                   if e.name == "ticket.changed" and e.status == "paid"]
    assert len(paid_events) == 1
    u = await ledger.hold(b, space_id, "stripe")
    assert (await ledger.settle(u.id, paid=False)).status == TicketStatus.VOID
    assert (await ledger.report(space_id)).sold == 1
    with pytest.raises(DomainError, match="ticket.amount_mismatch"):
        v = await ledger.hold(b, space_id, "stripe")
        await ledger.settle(v.id, paid=True, amount_minor=1, currency="eur")


async def test_refund_revokes_the_seat(core: Core) -> None:
    ledger = Ledger(core)
    host, space_id = await ticketed(core, capacity=10)
    (fan,) = await buyers(core, 1)
    t = await ledger.hold(fan, space_id, "telegram_stars")
    await ledger.settle(t.id, paid=True)
    await core.start_space(host, space_id)
    await core.join(fan, space_id)
    await ledger.mark_refunded(t.id)
    assert (await core.view(space_id)).listener_count == 1
    with pytest.raises(Forbidden, match="ticket.required"):
        await core.join(fan, space_id)
    report = await ledger.report(space_id)
    assert (report.sold, report.refunded, report.net_minor) == (1, 1, 0)


async def test_cancel_refunds_everyone_once_even_after_a_crash(core: Core, clock: FrozenClock) -> None:
    from billing.refunds import make_refund_handler
    from core.scheduler import JobRunner
    from tests.support.fakes import RecordingGateway

    ledger = Ledger(core)
    host, space_id = await ticketed(core, capacity=30)
    people = await buyers(core, 20)
    for i, p in enumerate(people):
        t = await ledger.hold(p, space_id, "stripe")
        await ledger.attach_ref(t.id, f"pi_{i}")
        await ledger.settle(t.id, paid=True)
    gateway = RecordingGateway(fail_after_call=7)  # the 7th call's answer is lost on the way back
    handlers = {"ticket.refund": make_refund_handler(ledger, {"stripe": gateway})}
    await core.cancel_space(host, space_id)
    crashed = JobRunner(core.sessionmaker, handlers, clock, worker_id="crashed", batch_size=5, lease_s=30)
    assert len(await crashed.claim()) == 5  # then the process dies: 5 jobs stay leased
    survivor = JobRunner(core.sessionmaker, handlers, clock, worker_id="survivor", batch_size=5, lease_s=30,
                         backoff_base_s=1)
    await survivor.run_until_idle()
    async with core.uow() as uow:
        progress = await jobs.job_stats(uow.session, group_key=f"{space_id}:refunds")
    assert progress["done"] == 14 and progress["running"] == 5 and progress["pending"] == 1
    clock.advance(seconds=31)
    await survivor.run_until_idle()
    async with core.uow() as uow:
        progress = await jobs.job_stats(uow.session, group_key=f"{space_id}:refunds")
    assert progress["done"] == 20
    assert len(gateway.refunds) == 20 and {ref for ref, _ in gateway.refunds.values()} == {f"pi_{i}" for i in range(20)}
    report = await ledger.report(space_id)
    assert (report.refunded, report.net_minor) == (20, 0)


async def test_reschedule_tells_holders_and_opens_refunds(core: Core, clock: FrozenClock) -> None:
    from core.notifications import FanoutHandler, TrackingNotifier
    from core.scheduler import JobRunner, make_deliver_handlers
    from tests.support.fakes import RecordingNotifier

    ledger = Ledger(core)
    host, space_id = await ticketed(core, capacity=10)
    holder_acc = await core.ensure_account("telegram", "777", "Holder")
    holder = Actor(account_id=holder_acc.id, platform="telegram")
    t = await ledger.hold(holder, space_id, "telegram_stars")
    await ledger.settle(t.id, paid=True)
    with pytest.raises(Forbidden, match="ticket.not_refundable"):
        await ledger.request_refund(holder, space_id)
    await core.reschedule_space(host, space_id, clock.now() + timedelta(days=3))
    tg = RecordingNotifier("telegram")
    notifiers = {"telegram": TrackingNotifier(tg, core)}
    runner = JobRunner(core.sessionmaker, {"space.fanout": FanoutHandler(core, notifiers),
                                           **make_deliver_handlers(notifiers)},
                       clock, worker_id="t")
    await runner.run_until_idle()
    assert tg.to("ticket.rescheduled") == ["777"]
    await ledger.request_refund(holder, space_id)
    async with core.uow() as uow:
        assert (await jobs.job_stats(uow.session, kind="ticket.refund"))["pending"] == 1
    (stranger,) = await buyers(core, 1)
    with pytest.raises(DomainError, match="ticket.none_paid"):
        await ledger.request_refund(stranger, space_id)


async def test_a_hold_whose_payment_reference_was_never_saved_lets_the_seat_go(core: Core, clock: FrozenClock) -> None:
    from billing.ledger import REF_GRACE

    ledger = Ledger(core)
    _, space_id = await ticketed(core, capacity=1)
    crashed, next_in_line = await buyers(core, 2)
    orphan = await ledger.hold(crashed, space_id, "stripe")  # Stripe answered, then the process died
    with pytest.raises(Conflict, match="ticket.sold_out"):
        await ledger.hold(next_in_line, space_id, "stripe")
    clock.advance(seconds=REF_GRACE.total_seconds() + 1)
    seat = await ledger.hold(next_in_line, space_id, "stripe")
    await ledger.attach_ref(seat.id, "pi_next")
    assert (await ledger.report(space_id)).held == 1
    # the orphan's payment arrives after all (its metadata names the ticket): the seat is gone, so it is returned
    assert (await ledger.settle(orphan.id, paid=True, provider_ref="pi_orphan")).status == TicketStatus.VOID
    report = await ledger.report(space_id)
    assert (report.returned, report.refunds_pending, report.gross_minor) == (1, 1, 1000)


async def test_one_paid_ticket_per_buyer_whatever_the_path(core: Core, clock: FrozenClock) -> None:
    ledger = Ledger(core)
    _, space_id = await ticketed(core, capacity=5)
    (fan,) = await buyers(core, 1)
    card = await ledger.hold(fan, space_id, "stripe")
    via_link = (await ledger.hold_to_pay(fan, space_id, "stripe", checkout=True)).ticket
    assert via_link.id == card.id and via_link.hold_expires_at == clock.now() + timedelta(minutes=31)
    assert (await ledger.settle(card.id, paid=True, provider_ref="pi_card")).status == TicketStatus.PAID
    for _ in range(2):  # the link's payment, told twice (payment_intent.succeeded and checkout.session.completed)
        await ledger.settle(card.id, paid=True, provider_ref="pi_link")
    with pytest.raises(Conflict, match="ticket.already_paid"):
        await ledger.hold(fan, space_id, "stripe")
    report = await ledger.report(space_id)
    assert (report.sold, report.returned, report.refunds_pending, report.gross_minor) == (1, 1, 1, 2000)
    async with core.uow() as uow:
        assert (await jobs.job_stats(uow.session, kind="ticket.refund"))["pending"] == 1
