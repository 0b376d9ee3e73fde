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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from core import events as ev
from core.errors import Conflict, DomainError, Forbidden, Invalid, NotFound
from core.ids import new_id
from core.model.accounts import Actor
from core.model.space import SpaceState
from core.model.ticket import Provider, Ticket, TicketStatus
from core.services import Core, GroupCommit
from core.storage import jobs
from core.storage.base import dialect_name
from core.storage.tables import AccountRow, ProcessedEventRow, SpaceRow, TicketRow
from core.storage.uow import UnitOfWork

log = logging.getLogger(__name__)

DEFAULT_HOLD = timedelta(minutes=15)
# Stripe Checkout refuses a session that expires sooner than 30 minutes after its creation; the
# seat is held a minute longer than the session lives, so the session can be made a moment later.
CHECKOUT_HOLD = timedelta(minutes=31)
REF_GRACE = timedelta(minutes=2)


def _returned(r: Any) -> bool:
    """A payment that never became a seat (see the module docstring)."""
    return r.hold_expires_at is None and r.status in ("void", "refunded")


def _counts(t: Ticket, now: datetime) -> bool:
    """Does ``t`` keep a seat now? A Stripe hold whose reference was never saved lets it go early."""
    if not t.holds_seat(now):
        return False
    return (t.status == TicketStatus.PAID or t.provider != Provider.STRIPE or t.provider_ref is not None
            or t.created_at > now - REF_GRACE)


def _ticket(r: Any) -> Ticket:
    return Ticket(id=r.id, space_id=r.space_id, account_id=r.account_id, status=TicketStatus(r.status),
                  provider=Provider(r.provider), amount_minor=r.amount_minor, currency=r.currency,
                  hold_expires_at=r.hold_expires_at, provider_ref=r.provider_ref, created_at=r.created_at,
                  updated_at=r.updated_at, fee_minor=r.fee_minor)


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

    async def _lock_space(self, uow: UnitOfWork, space_id: str) -> bool:
        """Take the Space's ticket lock; True if rows read before it may be stale (PostgreSQL; on
        SQLite the transaction began with the write lock)."""
        if dialect_name(uow.session) == "postgresql":
            await uow.session.execute(select(SpaceRow.id).where(SpaceRow.id == space_id).with_for_update())
            return True
        return False

    async def _seats_taken(self, uow: UnitOfWork, space_id: str, now: datetime) -> int:
        q = select(func.count()).select_from(TicketRow).where(
            TicketRow.space_id == space_id,
            (TicketRow.status == "paid") | ((TicketRow.status == "held") & (TicketRow.hold_expires_at > now)
                                            & ((TicketRow.provider != Provider.STRIPE.value)
                                               | TicketRow.provider_ref.is_not(None)
                                               | (TicketRow.created_at > now - REF_GRACE))))
        return int((await uow.session.execute(q)).scalar_one())

    async def _active_among(self, uow: UnitOfWork, space_id: str, account_ids: list[str],
                            now: datetime) -> dict[str, Ticket]:
        """Each account's ticket that holds a seat now (paid, or held and unexpired)."""
        q = select(TicketRow).where(TicketRow.space_id == space_id, TicketRow.account_id.in_(account_ids),
                                    TicketRow.status.in_(("held", "paid")))
        found: dict[str, Ticket] = {}
        for r in (await uow.session.scalars(q)).all():
            t = _ticket(r)
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
        await self._lock_space(uow, space_id)
        space = await uow.spaces.get(space_id)
        t = space.ticketing
        if t is None:
            raise Conflict("ticket.not_ticketed", space_id=space_id)
        if space.state not in (SpaceState.SCHEDULED, SpaceState.LIVE):
            raise Conflict("space.closed", space_id=space_id, state=space.state.value)
        if (t.sales_start and now < t.sales_start) or (t.sales_end and now > t.sales_end):
            raise Conflict("ticket.sales_closed", space_id=space_id)
        accounts = sorted({a for _, a, _, _ in wants})
        payout = (await uow.session.execute(select(AccountRow.stripe_account)
                                            .where(AccountRow.id == space.host_id))).scalar_one_or_none()
        blocked = await uow.spaces.blocked_among(space.host_id, accounts)
        active = await self._active_among(uow, space_id, accounts, now)
        taken = await self._seats_taken(uow, space_id, now) if t.capacity is not None else 0
        rows: list[dict[str, Any]] = []
        for i, account, prov, hold_for in wants:
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
                    if existing.id not in {r["id"] for r in rows}:
                        await uow.session.execute(update(TicketRow).where(TicketRow.id == existing.id)
                                                  .values(hold_expires_at=existing.hold_expires_at, updated_at=now))
                    else:
                        next(r for r in rows if r["id"] == existing.id)["hold_expires_at"] = existing.hold_expires_at
                out[i] = Held(existing, payout)
            elif t.capacity is not None and taken >= t.capacity:
                out[i] = Conflict("ticket.sold_out", space_id=space_id, capacity=t.capacity)
            else:
                ticket = Ticket(id=new_id(), space_id=space_id, account_id=account, status=TicketStatus.HELD,
                                provider=prov, amount_minor=t.price_minor, currency=t.currency,
                                hold_expires_at=now + hold_for, provider_ref=None, created_at=now,
                                updated_at=now, fee_minor=self.fee_for(t.price_minor) if prov == Provider.STRIPE else 0)
                active[account] = ticket  # the same buyer twice in one batch gets the one hold
                taken += 1
                out[i] = Held(ticket, payout)
                rows.append(dict(id=ticket.id, space_id=space_id, account_id=account, status=ticket.status.value,
                                 provider=prov.value, amount_minor=ticket.amount_minor, currency=ticket.currency,
                                 hold_expires_at=ticket.hold_expires_at, provider_ref=None,
                                 fee_minor=ticket.fee_minor, created_at=now, updated_at=now))
                uow.emit(ev.TicketChanged(space_id=space_id, ticket_id=ticket.id, account_id=account,
                                          status=ticket.status.value, provider=prov.value, at=now))
        if rows:
            await uow.session.execute(insert(TicketRow), rows)

    async def get(self, ticket_id: str) -> Ticket:
        async with self.core.uow() as uow:
            row = await uow.session.get(TicketRow, ticket_id)
            if row is None:
                raise NotFound("ticket.not_found", ticket_id=ticket_id)
            return _ticket(row)

    async def attach_ref(self, ticket_id: str, provider_ref: str) -> None:
        """Remember the provider's payment id (PaymentIntent, Checkout Session, Stars charge); those
        that arrive together are written in one transaction."""
        await self._refs.submit((ticket_id, provider_ref))

    async def _attach_batch(self, batch: list[tuple[str, str]]) -> list[None]:
        async with self.core.uow() as uow:
            now = self.core.now()
            tickets = TicketRow.__table__
            await uow.session.execute(  # executemany on the table: one statement for the batch
                update(tickets).where(tickets.c.id == bindparam("tid"))  # type: ignore[arg-type]
                .values(provider_ref=bindparam("ref"), updated_at=now),
                [{"tid": t, "ref": r} for t, r in batch])
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

    async def settle_in(self, uow: UnitOfWork, ticket_id: str, *, paid: bool, provider_ref: str | None = None,
                        amount_minor: int | None = None, currency: str | None = None,
                        taken: dict[str, int] | None = None,
                        buyers: dict[tuple[str, str], list[TicketRow]] | None = None) -> Ticket:
        """``settle`` in the caller's transaction (a webhook records its event id in the same one).
        ``taken`` carries each Space's seat count from one settlement to the next in a batch, so a
        batch counts a Space's seats once; ``buyers`` (from ``buyers_of``) carries each buyer's
        held and paid tickets, read once per batch instead of twice per settlement.

        A payment becomes the seat only if the ticket is still held, the seat still fits, and the
        buyer has no other paid ticket here; any other payment is returned (see the module
        docstring). A failure voids only a hold that cannot be paid any more: a declined card
        leaves the hold in place, since the buyer may retry the same PaymentIntent."""
        row = await uow.session.get(TicketRow, ticket_id)
        if row is None:
            raise NotFound("ticket.not_found", ticket_id=ticket_id)
        if await self._lock_space(uow, row.space_id):
            await uow.session.refresh(row)
        now = self.core.now()
        t = _ticket(row)
        if amount_minor is not None and (amount_minor != t.amount_minor
                                         or (currency or "").upper() != t.currency.upper()):
            raise Invalid("ticket.amount_mismatch", expected=t.amount_minor, got=amount_minor)
        if not paid:
            if t.status != TicketStatus.HELD:
                return t  # news that arrives after the fact
            return self._set(uow, row, TicketStatus.VOID, now, taken)
        ref = provider_ref or t.provider_ref
        if t.status != TicketStatus.HELD:
            if ref is None or (ref == t.provider_ref and t.status in (TicketStatus.PAID, TicketStatus.REFUNDED)):
                return t  # a repeat
            if _returned(row) or await self._recorded(uow, ref):
                return t  # this payment is already recorded (as the seat, or as returned)
            await self._return_payment(uow, t, ref, "duplicate" if t.status != TicketStatus.VOID
                                       else "seat_unavailable", now)
            return t
        mine = buyers.get((t.space_id, t.account_id)) if buyers is not None else None
        if mine is not None:
            other_paid = next((o.id for o in mine if o.id != t.id and o.status == "paid"), None)
        else:
            other_paid = (await uow.session.scalars(select(TicketRow.id).where(
                TicketRow.space_id == t.space_id, TicketRow.account_id == t.account_id, TicketRow.id != t.id,
                TicketRow.status == "paid"))).first()
        space = await uow.spaces.get(t.space_id)
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
            if ref:
                row.provider_ref = ref
            t = self._set(uow, row, TicketStatus.PAID, now, taken, had_seat=_counts(t, now))
            if mine is not None:  # the buyer's other holds free their seats
                others = [o for o in mine if o.id != t.id and o.status == "held"]
            else:
                others = list((await uow.session.scalars(select(TicketRow).where(
                    TicketRow.space_id == t.space_id, TicketRow.account_id == t.account_id, TicketRow.id != t.id,
                    TicketRow.status == "held"))).all())
            for o in others:
                self._set(uow, o, TicketStatus.VOID, now, taken)
            return t
        self._set(uow, row, TicketStatus.VOID, now, taken)  # money arrived for a seat we could not keep
        await self._return_payment(uow, t, ref, "duplicate" if other_paid else "seat_unavailable", now)
        t.status = TicketStatus.VOID
        return t

    async def buyers_of(self, uow: UnitOfWork, ticket_ids: list[str]) -> dict[tuple[str, str], list[TicketRow]]:
        """Each buyer's held and paid tickets in the Spaces of ``ticket_ids``, read in one query for
        a batch of settlements (after the Spaces' locks, so PostgreSQL rows are current). The rows
        are the session's own, so a settlement earlier in the batch is seen by later ones."""
        rows = (await uow.session.scalars(select(TicketRow).where(TicketRow.id.in_(ticket_ids)))).all()
        pairs = {(r.space_id, r.account_id) for r in rows}
        if not pairs:
            return {}
        stale = False
        for space_id in sorted({sp for sp, _ in pairs}):  # one order everywhere: no deadlock
            stale = await self._lock_space(uow, space_id) or stale
        q = select(TicketRow).where(TicketRow.space_id.in_({sp for sp, _ in pairs}),
                                    TicketRow.account_id.in_({a for _, a in pairs}),
                                    TicketRow.status.in_(("held", "paid")))
        if stale:
            q = q.execution_options(populate_existing=True)
        out: dict[tuple[str, str], list[TicketRow]] = {pair: [] for pair in pairs}
        for r in (await uow.session.scalars(q)).all():
            if (r.space_id, r.account_id) in out:
                out[(r.space_id, r.account_id)].append(r)
        return out

    def _set(self, uow: UnitOfWork, row: TicketRow, status: TicketStatus, now: datetime,
             taken: dict[str, int] | None, had_seat: bool | None = None) -> Ticket:
        """Move a ticket to ``status``, keep the batch's seat count right and tell everyone."""
        before = _ticket(row)
        had = _counts(before, now) if had_seat is None else had_seat
        if taken is not None and row.space_id in taken:
            taken[row.space_id] += (status == TicketStatus.PAID) - had
        row.status, row.updated_at = status.value, now
        uow.emit(ev.TicketChanged(space_id=row.space_id, ticket_id=row.id, account_id=row.account_id,
                                  status=status.value, provider=row.provider, at=now))
        return _ticket(row)

    async def _return_payment(self, uow: UnitOfWork, t: Ticket, ref: str | None, reason: str, now: datetime) -> None:
        """Record a payment that cannot be a seat as its own row and queue its refund."""
        if ref is None:
            log.warning("a payment for ticket %s arrived without a reference; nothing to give back", t.id)
            return
        rid = new_id()
        await uow.session.execute(insert(TicketRow), [dict(
            id=rid, space_id=t.space_id, account_id=t.account_id, status=TicketStatus.VOID.value,
            provider=t.provider.value, amount_minor=t.amount_minor, currency=t.currency, hold_expires_at=None,
            provider_ref=ref, fee_minor=t.fee_minor, created_at=now, updated_at=now)])
        await jobs.enqueue(uow.session, "ticket.refund", {"ticket_id": rid, "reason": reason, "for_ticket": t.id},
                           due_at=now, dedupe_key=f"refund:{rid}", group_key=f"{t.space_id}:refunds")

    async def mark_refunded(self, ticket_id: str) -> Ticket:
        """The provider confirmed a refund: access is revoked at once."""
        return await self.core.run(lambda uow: self.mark_refunded_in(uow, ticket_id))

    async def mark_refunded_in(self, uow: UnitOfWork, ticket_id: str, taken: dict[str, int] | None = None) -> Ticket:
        row = await uow.session.get(TicketRow, ticket_id)
        if row is None:
            raise NotFound("ticket.not_found", ticket_id=ticket_id)
        t = _ticket(row)
        if t.status == TicketStatus.REFUNDED:
            return t
        now = self.core.now()
        if _returned(row):  # a returned payment: the buyer's own ticket, if any, is untouched
            row.status, row.updated_at = TicketStatus.REFUNDED.value, now
            t.status = TicketStatus.REFUNDED
            return t
        if taken is not None and t.space_id in taken:
            taken[t.space_id] -= _counts(t, now)
        row.status, row.updated_at = TicketStatus.REFUNDED.value, now
        await uow.spaces.set_absent(t.space_id, t.account_id, now)
        uow.emit(ev.TicketChanged(space_id=t.space_id, ticket_id=t.id, account_id=t.account_id,
                                  status="refunded", provider=t.provider.value, at=now))
        t.status = TicketStatus.REFUNDED
        return t

    async def by_ref(self, provider_ref: str) -> Ticket | None:
        async with self.core.uow() as uow:
            return await self.by_ref_in(uow, provider_ref)

    async def by_ref_in(self, uow: UnitOfWork, provider_ref: str) -> Ticket | None:
        """The row a payment belongs to: its returned-payment row if it was returned, else the ticket."""
        rows = (await uow.session.scalars(select(TicketRow).where(TicketRow.provider_ref == provider_ref))).all()
        if not rows:
            return None
        return _ticket(min(rows, key=lambda r: (not _returned(r), r.status not in ("paid", "refunded"))))

    async def _recorded(self, uow: UnitOfWork, ref: str) -> bool:
        """Has this payment already been taken as a seat or returned?"""
        q = select(TicketRow.id).where(TicketRow.provider_ref == ref, TicketRow.status.in_(("paid", "refunded"))
                                       | TicketRow.hold_expires_at.is_(None))
        return (await uow.session.scalars(q)).first() is not None

    async def first_times(self, uow: UnitOfWork, provider: str, events: list[tuple[str, str]]) -> set[str]:
        """Record provider event ids (with their kinds) in the caller's transaction, in one statement;
        returns those not seen before."""
        rows, seen = [], set()
        now = self.core.now()
        for event_id, kind in events:
            if event_id not in seen:
                seen.add(event_id)
                rows.append({"provider": provider, "event_id": event_id, "kind": kind, "received_at": now})
        if not rows:
            return set()
        ins = (pg_insert if dialect_name(uow.session) == "postgresql" else sqlite_insert)(ProcessedEventRow)
        res = await uow.session.execute(ins.values(rows).on_conflict_do_nothing(
            index_elements=["provider", "event_id"]).returning(ProcessedEventRow.event_id))
        return set(res.scalars().all())

    async def request_refund(self, actor: Actor, space_id: str) -> Ticket:
        """A holder asks for their money back; allowed once the host has moved the Space."""
        async def op(uow: UnitOfWork) -> Ticket:
            q = select(TicketRow).where(TicketRow.space_id == space_id, TicketRow.account_id == actor.account_id,
                                        TicketRow.status == "paid")
            row = (await uow.session.scalars(q)).first()
            if row is None:
                raise NotFound("ticket.none_paid", space_id=space_id)
            if not row.refundable:
                raise Forbidden("ticket.not_refundable", space_id=space_id)
            await jobs.enqueue(uow.session, "ticket.refund", {"ticket_id": row.id, "reason": "requested_by_customer"},
                               due_at=self.core.now(), dedupe_key=f"refund:{row.id}", group_key=f"{space_id}:refunds")
            return _ticket(row)

        t = await self.core.run(op)
        self.core.wake_jobs()
        return t

    async def refund_all(self, space_id: str) -> int:
        """Queue a durable refund job for every paid ticket (on cancel); safe to call again."""
        async def op(uow: UnitOfWork) -> int:
            q = select(TicketRow.id).where(TicketRow.space_id == space_id, TicketRow.status == "paid")
            ids = list((await uow.session.scalars(q)).all())
            now = self.core.now()
            return await jobs.enqueue_many(uow.session, [
                jobs.NewJob("ticket.refund", {"ticket_id": i, "reason": "space_cancelled"}, now, f"refund:{i}",
                            f"{space_id}:refunds") for i in ids])

        n = await self.core.run(op)
        self.core.wake_jobs()
        return n

    async def payout_account(self, account_id: str) -> str | None:
        async with self.core.uow() as uow:
            row = await uow.session.get(AccountRow, account_id)
            if row is None:
                raise NotFound("account.not_found", account_id=account_id)
            return row.stripe_account

    async def set_payout_account(self, account_id: str, stripe_account: str) -> None:
        async def op(uow: UnitOfWork) -> None:
            row = await uow.session.get(AccountRow, account_id)
            if row is None:
                raise NotFound("account.not_found", account_id=account_id)
            row.stripe_account = stripe_account

        await self.core.run(op)

    async def report(self, space_id: str) -> Report:
        """What was sold, returned and refunded, in the provider's terms: ``gross_minor`` is every
        payment taken (Stripe's charges), ``refunded_minor`` every refund confirmed, ``fees_minor``
        the platform's fees still kept and ``net_minor`` what the creator keeps (for destination
        charges: transfers less reversals)."""
        async with self.core.uow() as uow:
            space = await uow.spaces.get(space_id)
            rows = (await uow.session.scalars(select(TicketRow).where(TicketRow.space_id == space_id))).all()
            returned = [_ticket(r) for r in rows if _returned(r)]
            tickets = [_ticket(r) for r in rows if not _returned(r)]
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
