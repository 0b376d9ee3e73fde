"""The ticket ledger: holds, payments, refunds and the creator's report, for every provider.

Stripe and Telegram Stars both settle here, so a seat is counted once whichever way it was paid.
Capacity is never oversold: a hold is taken under a per-Space lock (``SELECT ... FOR UPDATE`` on
PostgreSQL; SQLite serialises writers with ``BEGIN IMMEDIATE``), and expired holds stop counting
at their expiry time without any sweeper having to run first. A Stripe hold whose payment
reference was never saved (the process died between Stripe's answer and our write) stops counting
after ``REF_GRACE``; if it is paid after all, the payment settles like any late payment.

One payable ticket per buyer per Space: a buyer's second hold returns the first, a Checkout link
lengthens a card hold to Checkout's 30-minute minimum, and the first payment to arrive wins.
Every other payment (the same seat paid twice, a second ticket paid, a payment for a seat that is
gone) gets a row of its own with no hold (``hold_expires_at`` empty), a refund job, and a line in
the report (``returned``), so the report always equals what the provider holds.

The rules live here; the reads and writes go through the unit of work's tickets repository
(core/storage/tickets.py), and refunds are queued on its job outbox in the same transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from core import events as ev
from core.errors import Conflict, DomainError, Forbidden, Invalid, NotFound
from core.ids import new_id
from core.model.accounts import Actor
from core.model.space import Space, SpaceState
from core.model.ticket import Provider, Ticket, TicketStatus
from core.ports import NewJob, UnitOfWork
from core.services import Core, GroupCommit

log = logging.getLogger(__name__)

DEFAULT_HOLD = timedelta(minutes=15)
# Stripe Checkout refuses a session that expires sooner than 30 minutes after its creation; the
# seat is held a minute longer than the session lives, so the session can be made a moment later.
CHECKOUT_HOLD = timedelta(minutes=31)
REF_GRACE = timedelta(minutes=2)


def _returned(t: Ticket) -> bool:
    """A payment that never became a seat (see the module docstring)."""
    return t.hold_expires_at is None and t.status in (TicketStatus.VOID, TicketStatus.REFUNDED)


def _counts(t: Ticket, now: datetime) -> bool:
    """Does ``t`` keep a seat now? A Stripe hold whose reference was never saved lets it go early."""
    if not t.holds_seat(now):
        return False
    return (t.status == TicketStatus.PAID or t.provider != Provider.STRIPE or t.provider_ref is not None
            or t.created_at > now - REF_GRACE)


def _refund_job(ticket_id: str, space_id: str, reason: str, now: datetime, **extra: str) -> NewJob:
    """The durable ``ticket.refund`` job (billing/refunds.py), once per ticket row."""
    return NewJob("ticket.refund", {"ticket_id": ticket_id, "reason": reason, **extra}, now, f"refund:{ticket_id}",
                  f"{space_id}:refunds")


@dataclass
class Batch:
    """What settlements applied together in one transaction read once, not per payment: each
    Space's seat count (kept right as tickets move) and rules, and each buyer's held and paid
    tickets (``Ledger.buyers_of``)."""

    taken: dict[str, int] = field(default_factory=dict)
    spaces: dict[str, Space] = field(default_factory=dict)
    buyers: dict[tuple[str, str], list[Ticket]] | None = None


@dataclass(frozen=True)
class Held:
    ticket: Ticket
    payout_account: str | None  # the host's Stripe Connect account, if onboarded


@dataclass(frozen=True)
class Report:
    space_id: str
    currency: str
    sold: int
    refunded: int
    gross_minor: int
    refunded_minor: int
    fees_minor: int
    net_minor: int
    held: int
    capacity: int | None
    returned: int = 0  # payments that never became a seat (duplicates, late): refunded automatically
    returned_minor: int = 0
    refunds_pending: int = 0  # of the payments above and the refunded tickets, refunds not yet confirmed

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Ledger:
    def __init__(self, core: Core, hold: timedelta = DEFAULT_HOLD, fee_bps: int = 0) -> None:
        if not 0 <= fee_bps <= 10_000:
            raise Invalid("billing.bad_fee", fee_bps=fee_bps)
        self.core = core
        self.hold_for = hold
        self.fee_bps = fee_bps
        self.checkout_hold_for = max(hold, CHECKOUT_HOLD)
        self._holds: GroupCommit[tuple[str, str, Provider, timedelta], Held] = GroupCommit(self._hold_batch,
                                                                                           max_batch=200)
        self._refs: GroupCommit[tuple[str, str], None] = GroupCommit(self._attach_batch, max_batch=200)

    def fee_for(self, amount_minor: int) -> int:
        """Platform fee in minor units, rounded half up (a 1,000-cent ticket at 5 % pays 50)."""
        return (amount_minor * self.fee_bps + 5_000) // 10_000

    async def _seats_taken(self, uow: UnitOfWork, space_id: str, now: datetime) -> int:
        return await uow.tickets.seats_taken(space_id, now, now - REF_GRACE)

    async def _active_among(self, uow: UnitOfWork, space_id: str, account_ids: list[str],
                            now: datetime) -> dict[str, Ticket]:
        """Each account's ticket that holds a seat now (paid, or held and unexpired)."""
        found: dict[str, Ticket] = {}
        for t in await uow.tickets.live_of([space_id], account_ids):
            if _counts(t, now) and (t.account_id not in found or t.status == TicketStatus.PAID):
                found[t.account_id] = t
        return found

    async def hold(self, actor: Actor, space_id: str, provider: str) -> Ticket:
        """Keep a seat for ``actor`` while they pay; the same call again returns the same hold.

        Holds that arrive together (a ticket rush) are taken in one transaction under the Space's
        lock, in arrival order, so a rush costs one lock and one commit per batch, not per buyer."""
        return (await self.hold_to_pay(actor, space_id, provider)).ticket

    async def hold_to_pay(self, actor: Actor, space_id: str, provider: str, *, checkout: bool = False) -> Held:
        """``hold``, plus the host's Connect account to pay (read in the same batch, not per buyer).
        ``checkout``: the hold lasts as long as a Stripe Checkout Session must (an existing hold of
        the same buyer is lengthened to match)."""
        try:
            prov = Provider(provider)
        except ValueError:
            raise Invalid("ticket.bad_provider", provider=provider, allowed=[p.value for p in Provider]) from None
        return await self._holds.submit((actor.account_id, space_id, prov,
                                         self.checkout_hold_for if checkout else self.hold_for))

    async def _hold_batch(self, batch: list[tuple[str, str, Provider, timedelta]]) -> list[Held | DomainError]:
        out: list[Held | DomainError | None] = [None] * len(batch)
        by_space: dict[str, list[int]] = {}
        for i, (_, space_id, _, _) in enumerate(batch):
            by_space.setdefault(space_id, []).append(i)
        async with self.core.uow() as uow:
            now = self.core.now()
            for space_id, idx in by_space.items():
                try:
                    await self._hold_in(uow, space_id, [(i, batch[i][0], batch[i][2], batch[i][3]) for i in idx],
                                        now, out)
                except DomainError as e:  # the Space itself refuses: everyone in it hears why
                    for i in idx:
                        out[i] = e
            await uow.commit()
        if uow.events:
            await self.core.bus.publish(uow.events)
        return [r for r in out if r is not None]

    async def _hold_in(self, uow: UnitOfWork, space_id: str, wants: list[tuple[int, str, Provider, timedelta]],
                       now: datetime, out: list[Held | DomainError | None]) -> None:
        await uow.tickets.lock_space(space_id)
        space = await uow.spaces.get(space_id)
        t = space.ticketing
        if t is None:
            raise Conflict("ticket.not_ticketed", space_id=space_id)
        if space.state not in (SpaceState.SCHEDULED, SpaceState.LIVE):
            raise Conflict("space.closed", space_id=space_id, state=space.state.value)
        if (t.sales_start and now < t.sales_start) or (t.sales_end and now > t.sales_end):
            raise Conflict("ticket.sales_closed", space_id=space_id)
        accounts = sorted({a for _, a, _, _ in wants})
        payout = await uow.accounts.payout_account(space.host_id)
        blocked = await uow.spaces.blocked_among(space.host_id, accounts)
        active = await self._active_among(uow, space_id, accounts, now)
        taken = await self._seats_taken(uow, space_id, now) if t.capacity is not None else 0
        prices = await self._prices(uow, space, accounts, now)
        new: dict[str, Ticket] = {}
        for i, account, prov, hold_for in wants:
            price = prices.get(account, t.price_minor)
            stale = active.get(account)
            if (stale is not None and stale.status == TicketStatus.HELD and stale.amount_minor != price
                    and stale.id not in new and space.role_of(account) is None and account not in blocked):
                # the subscription changed since this hold was priced: its seat goes to a hold priced now
                # (should the old payment still arrive, it is returned like any payment for a lost seat)
                await self._set(uow, stale, TicketStatus.VOID, now, None)
                taken -= t.capacity is not None
                del active[account]
            if space.role_of(account) is not None:
                out[i] = Conflict("ticket.on_stage", space_id=space_id)
            elif account in blocked:
                out[i] = Forbidden("space.blocked", space_id=space_id)
            elif (existing := active.get(account)) is not None:
                if existing.status == TicketStatus.PAID:
                    out[i] = Conflict("ticket.already_paid", space_id=space_id, ticket_id=existing.id)
                    continue
                if existing.hold_expires_at is not None and existing.hold_expires_at < now + hold_for:
                    existing.hold_expires_at = now + hold_for  # the same seat, held as long as this way needs
                    if existing.id not in new:  # a new one is inserted below as it is now
                        existing.updated_at = now
                        await uow.tickets.save(existing)
                out[i] = Held(existing, payout)
            elif t.capacity is not None and taken >= t.capacity:
                out[i] = Conflict("ticket.sold_out", space_id=space_id, capacity=t.capacity)
            else:
                ticket = Ticket(id=new_id(), space_id=space_id, account_id=account, status=TicketStatus.HELD,
                                provider=prov, amount_minor=price, currency=t.currency,
                                hold_expires_at=now + hold_for, provider_ref=None, created_at=now,
                                updated_at=now, fee_minor=self.fee_for(price) if prov == Provider.STRIPE else 0)
                active[account] = new[ticket.id] = ticket  # the same buyer twice in one batch gets the one hold
                taken += 1
                out[i] = Held(ticket, payout)
                uow.emit(ev.TicketChanged(space_id=space_id, ticket_id=ticket.id, account_id=account,
                                          status=ticket.status.value, provider=prov.value, at=now))
        await uow.tickets.add_many(list(new.values()))

    async def _prices(self, uow: UnitOfWork, space: Space, accounts: list[str], now: datetime) -> dict[str, int]:
        """The subscriber price for those of ``accounts`` whose subscription to the host reaches the
        terms' discount tier now (the join token's own rule); everyone else pays the full price."""
        t = space.ticketing
        price = t.subscriber_price() if t is not None else None
        if t is None or price is None or t.discount_tier_id is None:
            return {}
        reaching = await uow.subscriptions.reaching(space.host_id, t.discount_tier_id, accounts, now)
        return {a: price for a in reaching}

    async def get(self, ticket_id: str) -> Ticket:
        async with self.core.uow() as uow:
            return await self._get(uow, ticket_id)

    async def _get(self, uow: UnitOfWork, ticket_id: str, *, reload: bool = False) -> Ticket:
        t = await uow.tickets.get(ticket_id, reload=reload)
        if t is None:
            raise NotFound("ticket.not_found", ticket_id=ticket_id)
        return t

    async def attach_ref(self, ticket_id: str, provider_ref: str) -> None:
        """Remember the provider's payment id (PaymentIntent, Checkout Session, Stars charge); those
        that arrive together are written in one transaction."""
        await self._refs.submit((ticket_id, provider_ref))

    async def _attach_batch(self, batch: list[tuple[str, str]]) -> list[None]:
        async with self.core.uow() as uow:
            await uow.tickets.attach_refs(batch, self.core.now())  # one statement for the batch
            await uow.commit()
        return [None] * len(batch)

    async def settle(self, ticket_id: str, *, paid: bool, provider_ref: str | None = None,
                     amount_minor: int | None = None, currency: str | None = None) -> Ticket:
        """A payment succeeded (``paid``) or failed. Idempotent; a success for a ticket that is no
        longer held (seat gone, or already refunded) voids it and queues a refund instead."""
        result = await self.core.run(lambda uow: self.settle_in(uow, ticket_id, paid=paid, provider_ref=provider_ref,
                                                                amount_minor=amount_minor, currency=currency))
        self.core.wake_jobs()
        return result

    async def _space(self, uow: UnitOfWork, space_id: str, batch: Batch | None) -> Space:
        """The Space (under its lock), read once per batch."""
        space = batch.spaces.get(space_id) if batch is not None else None
        if space is None:
            space = await uow.spaces.get(space_id)
            if batch is not None:
                batch.spaces[space_id] = space
        return space

    async def settle_in(self, uow: UnitOfWork, ticket_id: str, *, paid: bool, provider_ref: str | None = None,
                        amount_minor: int | None = None, currency: str | None = None,
                        batch: Batch | None = None) -> Ticket:
        """``settle`` in the caller's transaction (a webhook records its event id in the same one).
        ``batch`` carries what settlements applied together read once (see ``Batch``).

        A payment becomes the seat only if the ticket is still held, the seat still fits, and the
        buyer has no other paid ticket here; any other payment is returned (see the module
        docstring). A failure voids only a hold that cannot be paid any more: a declined card
        leaves the hold in place, since the buyer may retry the same PaymentIntent."""
        t = await self._get(uow, ticket_id)
        if await uow.tickets.lock_space(t.space_id):
            t = await self._get(uow, ticket_id, reload=True)
        now = self.core.now()
        if amount_minor is not None and (amount_minor != t.amount_minor
                                         or (currency or "").upper() != t.currency.upper()):
            raise Invalid("ticket.amount_mismatch", expected=t.amount_minor, got=amount_minor)
        taken = batch.taken if batch is not None else None
        if not paid:
            if t.status != TicketStatus.HELD:
                return t  # news that arrives after the fact
            return await self._set(uow, t, TicketStatus.VOID, now, taken)
        ref = provider_ref or t.provider_ref
        if t.status != TicketStatus.HELD:
            if ref is None or (ref == t.provider_ref and t.status in (TicketStatus.PAID, TicketStatus.REFUNDED)):
                return t  # a repeat
            if _returned(t) or await uow.tickets.ref_recorded(ref):
                return t  # this payment is already recorded (as the seat, or as returned)
            await self._return_payment(uow, t, ref, "duplicate" if t.status != TicketStatus.VOID
                                       else "seat_unavailable", now)
            return t
        mine = batch.buyers.get((t.space_id, t.account_id)) if batch is not None and batch.buyers is not None else None
        if mine is None:
            mine = await uow.tickets.live_of([t.space_id], [t.account_id])
        other_paid = next((o.id for o in mine if o.id != t.id and o.status == TicketStatus.PAID), None)
        space = await self._space(uow, t.space_id, batch)
        fits = True
        cap = space.ticketing.capacity if space.ticketing else None
        if cap is not None:
            seats = taken.get(t.space_id) if taken is not None else None
            if seats is None:
                seats = await self._seats_taken(uow, t.space_id, now)
                if taken is not None:
                    taken[t.space_id] = seats
            fits = seats - _counts(t, now) < cap
        if other_paid is None and fits and space.is_open:
            had_seat = _counts(t, now)  # before the reference: an unreferenced old hold had let its seat go
            if ref:
                t.provider_ref = ref
            await self._set(uow, t, TicketStatus.PAID, now, taken, had_seat=had_seat)
            for o in [o for o in mine if o.id != t.id and o.status == TicketStatus.HELD]:
                await self._set(uow, o, TicketStatus.VOID, now, taken)  # the buyer's other holds free their seats
            return t
        await self._set(uow, t, TicketStatus.VOID, now, taken)  # money arrived for a seat we could not keep
        await self._return_payment(uow, t, ref, "duplicate" if other_paid else "seat_unavailable", now)
        return t

    async def buyers_of(self, uow: UnitOfWork, ticket_ids: list[str]) -> dict[tuple[str, str], list[Ticket]]:
        """Each buyer's held and paid tickets in the Spaces of ``ticket_ids``, read in one query for
        a batch of settlements (after the Spaces' locks, so PostgreSQL rows are current). The
        tickets are the unit of work's own, so a settlement earlier in the batch is seen by later ones."""
        pairs = {(t.space_id, t.account_id) for t in await uow.tickets.get_many(ticket_ids)}
        if not pairs:
            return {}
        stale = False
        for space_id in sorted({sp for sp, _ in pairs}):  # one order everywhere: no deadlock
            stale = await uow.tickets.lock_space(space_id) or stale
        out: dict[tuple[str, str], list[Ticket]] = {pair: [] for pair in pairs}
        for t in await uow.tickets.live_of({sp for sp, _ in pairs}, {a for _, a in pairs}, reload=stale):
            if (t.space_id, t.account_id) in out:
                out[(t.space_id, t.account_id)].append(t)
        return out

    async def _set(self, uow: UnitOfWork, t: Ticket, status: TicketStatus, now: datetime,
                   taken: dict[str, int] | None, had_seat: bool | None = None) -> Ticket:
        """Move a ticket to ``status``, keep the batch's seat count right and tell everyone."""
        had = _counts(t, now) if had_seat is None else had_seat
        if taken is not None and t.space_id in taken:
            taken[t.space_id] += (status == TicketStatus.PAID) - had
        t.status, t.updated_at = status, now
        await uow.tickets.save(t)
        uow.emit(ev.TicketChanged(space_id=t.space_id, ticket_id=t.id, account_id=t.account_id,
                                  status=status.value, provider=t.provider.value, at=now))
        return t

    async def _return_payment(self, uow: UnitOfWork, t: Ticket, ref: str | None, reason: str, now: datetime) -> None:
        """Record a payment that cannot be a seat as its own row and queue its refund."""
        if ref is None:
            log.warning("a payment for ticket %s arrived without a reference; nothing to give back", t.id)
            return
        rid = new_id()
        await uow.tickets.add_many([Ticket(
            id=rid, space_id=t.space_id, account_id=t.account_id, status=TicketStatus.VOID, provider=t.provider,
            amount_minor=t.amount_minor, currency=t.currency, hold_expires_at=None, provider_ref=ref,
            created_at=now, updated_at=now, fee_minor=t.fee_minor)])
        await uow.jobs.enqueue(_refund_job(rid, t.space_id, reason, now, for_ticket=t.id))

    async def mark_refunded(self, ticket_id: str) -> Ticket:
        """The provider confirmed a refund: access is revoked at once."""
        return await self.core.run(lambda uow: self.mark_refunded_in(uow, ticket_id))

    async def mark_refunded_in(self, uow: UnitOfWork, ticket_id: str, batch: Batch | None = None) -> Ticket:
        t = await self._get(uow, ticket_id)
        if t.status == TicketStatus.REFUNDED:
            return t
        now = self.core.now()
        if _returned(t):  # a returned payment: the buyer's own ticket, if any, is untouched
            t.status, t.updated_at = TicketStatus.REFUNDED, now
            await uow.tickets.save(t)
            return t
        if batch is not None and t.space_id in batch.taken:
            batch.taken[t.space_id] -= _counts(t, now)
        t.status, t.updated_at = TicketStatus.REFUNDED, now
        await uow.tickets.save(t)
        await uow.spaces.set_absent(t.space_id, t.account_id, now)
        uow.emit(ev.TicketChanged(space_id=t.space_id, ticket_id=t.id, account_id=t.account_id,
                                  status="refunded", provider=t.provider.value, at=now))
        return t

    async def by_ref(self, provider_ref: str) -> Ticket | None:
        async with self.core.uow() as uow:
            return await self.by_ref_in(uow, provider_ref)

    async def by_ref_in(self, uow: UnitOfWork, provider_ref: str) -> Ticket | None:
        """The row a payment belongs to: its returned-payment row if it was returned, else the ticket."""
        found = await uow.tickets.by_ref(provider_ref)
        if not found:
            return None
        return min(found, key=lambda t: (not _returned(t), t.status not in (TicketStatus.PAID, TicketStatus.REFUNDED)))

    async def first_times(self, uow: UnitOfWork, provider: str, events: list[tuple[str, str]]) -> set[str]:
        """Record provider event ids (with their kinds) in the caller's transaction, in one statement;
        returns those not seen before."""
        return await uow.tickets.first_times(provider, events, self.core.now())

    async def request_refund(self, actor: Actor, space_id: str) -> Ticket:
        """A holder asks for their money back; allowed once the host has moved the Space."""
        async def op(uow: UnitOfWork) -> Ticket:
            paid = await uow.tickets.paid_of(space_id, actor.account_id)
            if paid is None:
                raise NotFound("ticket.none_paid", space_id=space_id)
            if not paid.refundable:
                raise Forbidden("ticket.not_refundable", space_id=space_id)
            await uow.jobs.enqueue(_refund_job(paid.ticket.id, space_id, "requested_by_customer", self.core.now()))
            return paid.ticket

        t = await self.core.run(op)
        self.core.wake_jobs()
        return t

    async def refund_all(self, space_id: str) -> int:
        """Queue a durable refund job for every paid ticket (on cancel); safe to call again."""
        async def op(uow: UnitOfWork) -> int:
            now = self.core.now()
            return await uow.jobs.enqueue_many([_refund_job(i, space_id, "space_cancelled", now)
                                                for i in await uow.tickets.paid_ids(space_id)])

        n = await self.core.run(op)
        self.core.wake_jobs()
        return n

    async def payout_account(self, account_id: str) -> str | None:
        async with self.core.uow() as uow:
            return await uow.accounts.payout_account(account_id)

    async def set_payout_account(self, account_id: str, stripe_account: str) -> None:
        await self.core.run(lambda uow: uow.accounts.set_payout_account(account_id, stripe_account))

    async def report(self, space_id: str) -> Report:
        """What was sold, returned and refunded, in the provider's terms: ``gross_minor`` is every
        payment taken (Stripe's charges), ``refunded_minor`` every refund confirmed, ``fees_minor``
        the platform's fees still kept and ``net_minor`` what the creator keeps (for destination
        charges: transfers less reversals)."""
        async with self.core.uow() as uow:
            space = await uow.spaces.get(space_id)
            every = await uow.tickets.in_space(space_id)
        returned = [t for t in every if _returned(t)]
        tickets = [t for t in every if not _returned(t)]
        now = self.core.now()
        paid = [t for t in tickets if t.status == TicketStatus.PAID]
        refunded = [t for t in tickets if t.status == TicketStatus.REFUNDED]
        pending = [t for t in returned if t.status == TicketStatus.VOID]
        gross = sum(t.amount_minor for t in paid + refunded + returned)
        refunded_minor = sum(t.amount_minor for t in refunded) + sum(
            t.amount_minor for t in returned if t.status == TicketStatus.REFUNDED)
        fees = sum(t.fee_minor for t in paid + pending)
        return Report(space_id=space_id, currency=space.ticketing.currency if space.ticketing else "",
                      sold=len(paid) + len(refunded), refunded=len(refunded), gross_minor=gross,
                      refunded_minor=refunded_minor, fees_minor=fees, net_minor=gross - refunded_minor - fees,
                      held=sum(1 for t in tickets if t.status == TicketStatus.HELD and _counts(t, now)),
                      capacity=space.ticketing.capacity if space.ticketing else None,
                      returned=len(returned), returned_minor=sum(t.amount_minor for t in returned),
                      refunds_pending=len(pending))
