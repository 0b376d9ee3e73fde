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

DEFAULT_HOLD = timedelta(minutes=15)


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

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Ledger:
    def __init__(self, core: Core, hold: timedelta = DEFAULT_HOLD, fee_bps: int = 0) -> None:
        if not 0 <= fee_bps <= 10_000:
            raise Invalid("billing.bad_fee", fee_bps=fee_bps)
        self.core = core
        self.hold_for = hold
        self.fee_bps = fee_bps
        self._holds: GroupCommit[tuple[str, str, Provider], Held] = GroupCommit(self._hold_batch, max_batch=200)
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
            (TicketRow.status == "paid") | ((TicketRow.status == "held") & (TicketRow.hold_expires_at > now)))
        return int((await uow.session.execute(q)).scalar_one())

    async def _active_among(self, uow: UnitOfWork, space_id: str, account_ids: list[str],
                            now: datetime) -> dict[str, Ticket]:
        """Each account's ticket that holds a seat now (paid, or held and unexpired)."""
        q = select(TicketRow).where(TicketRow.space_id == space_id, TicketRow.account_id.in_(account_ids),
                                    TicketRow.status.in_(("held", "paid")))
        found: dict[str, Ticket] = {}
        for r in (await uow.session.scalars(q)).all():
            t = _ticket(r)
            if t.holds_seat(now) and (t.account_id not in found or t.status == TicketStatus.PAID):
                found[t.account_id] = t
        return found

    async def hold(self, actor: Actor, space_id: str, provider: str) -> Ticket:
        """Keep a seat for ``actor`` while they pay; the same call again returns the same hold.

        Holds that arrive together (a ticket rush) are taken in one transaction under the Space's
        lock, in arrival order, so a rush costs one lock and one commit per batch, not per buyer."""
        return (await self.hold_to_pay(actor, space_id, provider)).ticket

    async def hold_to_pay(self, actor: Actor, space_id: str, provider: str) -> Held:
        """``hold``, plus the host's Connect account to pay (read in the same batch, not per buyer)."""
        try:
            prov = Provider(provider)
        except ValueError:
            raise Invalid("ticket.bad_provider", provider=provider, allowed=[p.value for p in Provider]) from None
        return await self._holds.submit((actor.account_id, space_id, prov))

    async def _hold_batch(self, batch: list[tuple[str, str, Provider]]) -> list[Held | DomainError]:
        out: list[Held | DomainError | None] = [None] * len(batch)
        by_space: dict[str, list[int]] = {}
        for i, (_, space_id, _) in enumerate(batch):
            by_space.setdefault(space_id, []).append(i)
        async with self.core.uow() as uow:
            now = self.core.now()
            for space_id, idx in by_space.items():
                try:
                    await self._hold_in(uow, space_id, [(i, batch[i][0], batch[i][2]) for i in idx], now, out)
                except DomainError as e:  # the Space itself refuses: everyone in it hears why
                    for i in idx:
                        out[i] = e
            await uow.commit()
        if uow.events:
            await self.core.bus.publish(uow.events)
        return [r for r in out if r is not None]

    async def _hold_in(self, uow: UnitOfWork, space_id: str, wants: list[tuple[int, str, Provider]],
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
        accounts = sorted({a for _, a, _ in wants})
        payout = (await uow.session.execute(select(AccountRow.stripe_account)
                                            .where(AccountRow.id == space.host_id))).scalar_one_or_none()
        blocked = await uow.spaces.blocked_among(space.host_id, accounts)
        active = await self._active_among(uow, space_id, accounts, now)
        taken = await self._seats_taken(uow, space_id, now) if t.capacity is not None else 0
        rows: list[dict[str, Any]] = []
        for i, account, prov in wants:
            if space.role_of(account) is not None:
                out[i] = Conflict("ticket.on_stage", space_id=space_id)
            elif account in blocked:
                out[i] = Forbidden("space.blocked", space_id=space_id)
            elif (existing := active.get(account)) is not None:
                out[i] = (Conflict("ticket.already_paid", space_id=space_id, ticket_id=existing.id)
                          if existing.status == TicketStatus.PAID else Held(existing, payout))
            elif t.capacity is not None and taken >= t.capacity:
                out[i] = Conflict("ticket.sold_out", space_id=space_id, capacity=t.capacity)
            else:
                ticket = Ticket(id=new_id(), space_id=space_id, account_id=account, status=TicketStatus.HELD,
                                provider=prov, amount_minor=t.price_minor, currency=t.currency,
                                hold_expires_at=now + self.hold_for, provider_ref=None, created_at=now,
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
                        taken: dict[str, int] | None = None) -> Ticket:
        """``settle`` in the caller's transaction (a webhook records its event id in the same one).
        ``taken`` carries each Space's seat count from one settlement to the next in a batch, so a
        batch counts a Space's seats once."""
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
        if t.status in (TicketStatus.PAID, TicketStatus.REFUNDED) or (t.status == TicketStatus.VOID and not paid):
            return t  # a repeat, or news that arrives after the fact
        new_status = TicketStatus.VOID
        had_seat = t.holds_seat(now)
        if paid:
            space = await uow.spaces.get(t.space_id)
            cap = space.ticketing.capacity if space.ticketing else None
            fits = True
            if cap is not None:
                seats = taken.get(t.space_id) if taken is not None else None
                if seats is None:
                    seats = await self._seats_taken(uow, t.space_id, now)
                    if taken is not None:
                        taken[t.space_id] = seats
                fits = seats - had_seat < cap
            if t.status == TicketStatus.HELD and fits and space.is_open:
                new_status = TicketStatus.PAID
            else:  # money arrived for a seat we could not keep: give it back
                await jobs.enqueue(uow.session, "ticket.refund", {"ticket_id": t.id, "reason": "seat_unavailable"},
                                   due_at=now, dedupe_key=f"refund:{t.id}", group_key=f"{t.space_id}:refunds")
        if taken is not None and t.space_id in taken:
            taken[t.space_id] += (new_status == TicketStatus.PAID) - had_seat
        row.status, row.updated_at = new_status.value, now
        if provider_ref:
            row.provider_ref = provider_ref
        uow.emit(ev.TicketChanged(space_id=t.space_id, ticket_id=t.id, account_id=t.account_id,
                                  status=new_status.value, provider=t.provider.value, at=now))
        t.status = new_status
        return t

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
        if taken is not None and t.space_id in taken:
            taken[t.space_id] -= t.holds_seat(now)
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
        row = (await uow.session.scalars(select(TicketRow).where(TicketRow.provider_ref == provider_ref))).first()
        return None if row is None else _ticket(row)

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
