"""The ticket ledger: holds, payments, refunds and the creator's report, for every provider.

Stripe and Telegram Stars both settle here, so a seat is counted once whichever way it was paid.
Capacity is never oversold: a hold is taken under a per-Space lock (``SELECT ... FOR UPDATE`` on
PostgreSQL; SQLite serialises writers with ``BEGIN IMMEDIATE``), and expired holds stop counting
at their expiry time without any sweeper having to run first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from core import events as ev
from core.errors import Conflict, Forbidden, Invalid, NotFound
from core.ids import new_id
from core.model.accounts import Actor
from core.model.space import SpaceState
from core.model.ticket import Provider, Ticket, TicketStatus
from core.services import Core
from core.storage import jobs
from core.storage.base import dialect_name
from core.storage.tables import AccountRow, ProcessedEventRow, SpaceRow, TicketRow
from core.storage.uow import UnitOfWork

DEFAULT_HOLD = timedelta(minutes=15)


def _ticket(r: Any) -> Ticket:
    return Ticket(id=r.id, space_id=r.space_id, account_id=r.account_id, status=TicketStatus(r.status),
                  provider=Provider(r.provider), amount_minor=r.amount_minor, currency=r.currency,
                  hold_expires_at=r.hold_expires_at, provider_ref=r.provider_ref, created_at=r.created_at,
                  updated_at=r.updated_at, fee_minor=r.fee_minor)


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

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Ledger:
    def __init__(self, core: Core, hold: timedelta = DEFAULT_HOLD, fee_bps: int = 0) -> None:
        if not 0 <= fee_bps <= 10_000:
            raise Invalid("billing.bad_fee", fee_bps=fee_bps)
        self.core = core
        self.hold_for = hold
        self.fee_bps = fee_bps

    def fee_for(self, amount_minor: int) -> int:
        """Platform fee in minor units, rounded half up (a 1,000-cent ticket at 5 % pays 50)."""
        return (amount_minor * self.fee_bps + 5_000) // 10_000

    async def _lock_space(self, uow: UnitOfWork, space_id: str) -> None:
        if dialect_name(uow.session) == "postgresql":
            await uow.session.execute(select(SpaceRow.id).where(SpaceRow.id == space_id).with_for_update())

    async def _seats_taken(self, uow: UnitOfWork, space_id: str, now: datetime) -> int:
        q = select(func.count()).select_from(TicketRow).where(
            TicketRow.space_id == space_id,
            (TicketRow.status == "paid") | ((TicketRow.status == "held") & (TicketRow.hold_expires_at > now)))
        return int((await uow.session.execute(q)).scalar_one())

    async def _active(self, uow: UnitOfWork, space_id: str, account_id: str, now: datetime) -> Ticket | None:
        q = select(TicketRow).where(TicketRow.space_id == space_id, TicketRow.account_id == account_id,
                                    TicketRow.status.in_(("held", "paid")))
        for r in (await uow.session.scalars(q)).all():
            t = _ticket(r)
            if t.holds_seat(now):
                return t
        return None

    async def hold(self, actor: Actor, space_id: str, provider: str) -> Ticket:
        """Keep a seat for ``actor`` while they pay; the same call again returns the same hold."""
        try:
            prov = Provider(provider)
        except ValueError:
            raise Invalid("ticket.bad_provider", provider=provider, allowed=[p.value for p in Provider]) from None

        async def op(uow: UnitOfWork) -> Ticket:
            await self._lock_space(uow, space_id)
            space = await uow.spaces.get(space_id)
            now = self.core.now()
            t = space.ticketing
            if t is None:
                raise Conflict("ticket.not_ticketed", space_id=space_id)
            if space.state not in (SpaceState.SCHEDULED, SpaceState.LIVE):
                raise Conflict("space.closed", space_id=space_id, state=space.state.value)
            if (t.sales_start and now < t.sales_start) or (t.sales_end and now > t.sales_end):
                raise Conflict("ticket.sales_closed", space_id=space_id)
            if space.role_of(actor.account_id) is not None:
                raise Conflict("ticket.on_stage", space_id=space_id)
            if await uow.spaces.is_blocked(space.host_id, actor.account_id):
                raise Forbidden("space.blocked", space_id=space_id)
            existing = await self._active(uow, space_id, actor.account_id, now)
            if existing is not None:
                if existing.status == TicketStatus.PAID:
                    raise Conflict("ticket.already_paid", space_id=space_id, ticket_id=existing.id)
                return existing
            if t.capacity is not None and await self._seats_taken(uow, space_id, now) >= t.capacity:
                raise Conflict("ticket.sold_out", space_id=space_id, capacity=t.capacity)
            ticket = Ticket(id=new_id(), space_id=space_id, account_id=actor.account_id, status=TicketStatus.HELD,
                            provider=prov, amount_minor=t.price_minor, currency=t.currency,
                            hold_expires_at=now + self.hold_for, provider_ref=None, created_at=now, updated_at=now,
                            fee_minor=self.fee_for(t.price_minor) if prov == Provider.STRIPE else 0)
            await uow.session.execute(insert(TicketRow).values(
                id=ticket.id, space_id=space_id, account_id=ticket.account_id, status=ticket.status.value,
                provider=prov.value, amount_minor=ticket.amount_minor, currency=ticket.currency,
                hold_expires_at=ticket.hold_expires_at, provider_ref=None, fee_minor=ticket.fee_minor,
                created_at=now, updated_at=now))
            uow.emit(ev.TicketChanged(space_id=space_id, ticket_id=ticket.id, account_id=ticket.account_id,
                                      status=ticket.status.value, provider=prov.value, at=now))
            return ticket

        return await self.core.run(op)

    async def get(self, ticket_id: str) -> Ticket:
        async with self.core.uow() as uow:
            row = await uow.session.get(TicketRow, ticket_id)
            if row is None:
                raise NotFound("ticket.not_found", ticket_id=ticket_id)
            return _ticket(row)

    async def attach_ref(self, ticket_id: str, provider_ref: str) -> None:
        """Remember the provider's payment id (PaymentIntent, Checkout Session, Stars charge)."""
        async def op(uow: UnitOfWork) -> None:
            await uow.session.execute(update(TicketRow).where(TicketRow.id == ticket_id)
                                      .values(provider_ref=provider_ref, updated_at=self.core.now()))

        await self.core.run(op)

    async def settle(self, ticket_id: str, *, paid: bool, provider_ref: str | None = None,
                     amount_minor: int | None = None, currency: str | None = None) -> Ticket:
        """A payment succeeded (``paid``) or failed. Idempotent; a success for a ticket that is no
        longer held (seat gone, or already refunded) voids it and queues a refund instead."""
        async def op(uow: UnitOfWork) -> Ticket:
            row = await uow.session.get(TicketRow, ticket_id)
            if row is None:
                raise NotFound("ticket.not_found", ticket_id=ticket_id)
            await self._lock_space(uow, row.space_id)
            await uow.session.refresh(row)
            now = self.core.now()
            t = _ticket(row)
            if amount_minor is not None and (amount_minor != t.amount_minor
                                             or (currency or "").upper() != t.currency.upper()):
                raise Invalid("ticket.amount_mismatch", expected=t.amount_minor, got=amount_minor)
            if t.status in (TicketStatus.PAID, TicketStatus.REFUNDED) or (t.status == TicketStatus.VOID and not paid):
                return t  # a repeat, or news that arrives after the fact
            new_status = TicketStatus.VOID
            if paid:
                space = await uow.spaces.get(t.space_id)
                cap = space.ticketing.capacity if space.ticketing else None
                others = await self._seats_taken(uow, t.space_id, now) - (1 if t.holds_seat(now) else 0)
                if t.status == TicketStatus.HELD and (cap is None or others < cap) and space.is_open:
                    new_status = TicketStatus.PAID
                else:  # money arrived for a seat we could not keep: give it back
                    await jobs.enqueue(uow.session, "ticket.refund", {"ticket_id": t.id, "reason": "seat_unavailable"},
                                       due_at=now, dedupe_key=f"refund:{t.id}", group_key=f"{t.space_id}:refunds")
            row.status, row.updated_at = new_status.value, now
            if provider_ref:
                row.provider_ref = provider_ref
            uow.emit(ev.TicketChanged(space_id=t.space_id, ticket_id=t.id, account_id=t.account_id,
                                      status=new_status.value, provider=t.provider.value, at=now))
            t.status = new_status
            return t

        result = await self.core.run(op)
        self.core.wake_jobs()
        return result

    async def mark_refunded(self, ticket_id: str) -> Ticket:
        """The provider confirmed a refund: access is revoked at once."""
        async def op(uow: UnitOfWork) -> Ticket:
            row = await uow.session.get(TicketRow, ticket_id)
            if row is None:
                raise NotFound("ticket.not_found", ticket_id=ticket_id)
            t = _ticket(row)
            if t.status == TicketStatus.REFUNDED:
                return t
            now = self.core.now()
            row.status, row.updated_at = TicketStatus.REFUNDED.value, now
            await uow.spaces.set_absent(t.space_id, t.account_id, now)
            uow.emit(ev.TicketChanged(space_id=t.space_id, ticket_id=t.id, account_id=t.account_id,
                                      status="refunded", provider=t.provider.value, at=now))
            t.status = TicketStatus.REFUNDED
            return t

        return await self.core.run(op)

    async def by_ref(self, provider_ref: str) -> Ticket | None:
        async with self.core.uow() as uow:
            row = (await uow.session.scalars(select(TicketRow).where(TicketRow.provider_ref == provider_ref))).first()
            return None if row is None else _ticket(row)

    async def first_time(self, uow: UnitOfWork, provider: str, event_id: str, kind: str) -> bool:
        """Record a provider event id in the caller's transaction; False if it was seen before."""
        ins = (pg_insert if dialect_name(uow.session) == "postgresql" else sqlite_insert)(ProcessedEventRow)
        res = await uow.session.execute(ins.values(provider=provider, event_id=event_id, kind=kind,
                                                   received_at=self.core.now())
                                        .on_conflict_do_nothing(index_elements=["provider", "event_id"]))
        return bool(res.rowcount)  # type: ignore[attr-defined]

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

    async def host_payout_account(self, space_id: str) -> str | None:
        async with self.core.uow() as uow:
            q = (select(AccountRow.stripe_account).join(SpaceRow, SpaceRow.host_id == AccountRow.id)
                 .where(SpaceRow.id == space_id))
            return (await uow.session.execute(q)).scalar_one_or_none()

    async def set_payout_account(self, account_id: str, stripe_account: str) -> None:
        async def op(uow: UnitOfWork) -> None:
            row = await uow.session.get(AccountRow, account_id)
            if row is None:
                raise NotFound("account.not_found", account_id=account_id)
            row.stripe_account = stripe_account

        await self.core.run(op)

    async def report(self, space_id: str) -> Report:
        async with self.core.uow() as uow:
            space = await uow.spaces.get(space_id)
            rows = (await uow.session.scalars(select(TicketRow).where(TicketRow.space_id == space_id))).all()
            tickets = [_ticket(r) for r in rows]
        now = self.core.now()
        paid = [t for t in tickets if t.status == TicketStatus.PAID]
        refunded = [t for t in tickets if t.status == TicketStatus.REFUNDED]
        gross = sum(t.amount_minor for t in paid) + sum(t.amount_minor for t in refunded)
        refunded_minor = sum(t.amount_minor for t in refunded)
        fees = sum(t.fee_minor for t in paid)
        return Report(space_id=space_id, currency=space.ticketing.currency if space.ticketing else "",
                      sold=len(paid) + len(refunded), refunded=len(refunded), gross_minor=gross,
                      refunded_minor=refunded_minor, fees_minor=fees, net_minor=gross - refunded_minor - fees,
                      held=sum(1 for t in tickets if t.status == TicketStatus.HELD and t.holds_seat(now)),
                      capacity=space.ticketing.capacity if space.ticketing else None)
