"""The tickets repository: core's reads (who paid) and the ledger's holds, payments and refunds.

Billing keeps the rules (billing/ledger.py); this module keeps the SQL. Tickets handed out are the
transaction's own: one id gives one ``Ticket`` object for the whole unit of work, and ``save``
writes it back, so a settlement earlier in a webhook batch is seen by the later ones without a
second read. Writes to loaded rows go out together when the session flushes (SQLAlchemy's
executemany); holds are inserted with one statement per batch.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.model.ticket import PaidTicket, Provider, Ticket, TicketStatus
from core.storage.base import dialect_name
from core.storage.tables import ProcessedEventRow, SpaceRow, TicketRow

__all__ = ["PaidTicket", "TicketRepository"]

_LIVE = ("held", "paid")


class TicketRepository:
    """``uow.tickets`` (``core.ports.TicketLedger``)."""

    def __init__(self, session: AsyncSession) -> None:
        self.s = session
        self._rows: dict[str, TicketRow] = {}  # ORM rows behind the tickets handed out
        self._tickets: dict[str, Ticket] = {}

    def _own(self, r: TicketRow) -> Ticket:
        """The unit of work's Ticket for row ``r``, brought up to date with it."""
        self._rows[r.id] = r
        t = self._tickets.get(r.id)
        if t is None:
            t = self._tickets[r.id] = Ticket(
                id=r.id, space_id=r.space_id, account_id=r.account_id, status=TicketStatus(r.status),
                provider=Provider(r.provider), amount_minor=r.amount_minor, currency=r.currency,
                hold_expires_at=r.hold_expires_at, provider_ref=r.provider_ref, created_at=r.created_at,
                updated_at=r.updated_at, fee_minor=r.fee_minor)
        else:
            t.status, t.hold_expires_at, t.provider_ref = TicketStatus(r.status), r.hold_expires_at, r.provider_ref
            t.updated_at, t.fee_minor = r.updated_at, r.fee_minor
        return t

    # ---- core's reads ------------------------------------------------------------------------------
    async def has_paid(self, space_id: str, account_id: str) -> bool:
        q = select(func.count()).select_from(TicketRow).where(
            TicketRow.space_id == space_id, TicketRow.account_id == account_id, TicketRow.status == "paid")
        return int((await self.s.execute(q)).scalar_one()) > 0

    async def mark_refundable(self, space_id: str) -> None:
        await self.s.execute(update(TicketRow).where(TicketRow.space_id == space_id, TicketRow.status == "paid")
                             .values(refundable=True))

    async def holders(self, space_id: str, after: str = "", limit: int = 1000) -> list[str]:
        q = (select(TicketRow.account_id).where(TicketRow.space_id == space_id, TicketRow.status == "paid",
                                                TicketRow.account_id > after)
             .order_by(TicketRow.account_id).limit(limit))
        return list((await self.s.scalars(q)).all())

    async def paid_ids(self, space_id: str) -> list[str]:
        q = select(TicketRow.id).where(TicketRow.space_id == space_id, TicketRow.status == "paid")
        return list((await self.s.scalars(q)).all())

    async def paid_among(self, space_id: str, account_ids: Sequence[str]) -> set[str]:
        q = select(TicketRow.account_id).where(TicketRow.space_id == space_id, TicketRow.status == "paid",
                                               TicketRow.account_id.in_(account_ids))
        return set((await self.s.scalars(q)).all())

    # ---- the ledger's side -------------------------------------------------------------------------
    async def lock_space(self, space_id: str) -> bool:
        """Take the Space's ticket lock (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's transaction
        began with the write lock). True if tickets read before it may be stale: reload them."""
        if dialect_name(self.s) != "postgresql":
            return False
        await self.s.execute(select(SpaceRow.id).where(SpaceRow.id == space_id).with_for_update())
        return True

    async def get(self, ticket_id: str, *, reload: bool = False) -> Ticket | None:
        """``reload``: read the row again (after ``lock_space`` said it may be stale)."""
        row = self._rows.get(ticket_id)
        if row is None:
            row = await self.s.get(TicketRow, ticket_id)
        elif reload:
            await self.s.flush()  # this transaction's own changes first: a refresh would drop them
            await self.s.refresh(row)
        return None if row is None else self._own(row)

    async def seats_taken(self, space_id: str, now: datetime, unreferenced_after: datetime) -> int:
        """Paid tickets and unexpired holds; a Stripe hold without a payment reference counts only if
        it was made after ``unreferenced_after`` (see billing/ledger.py ``REF_GRACE``)."""
        q = select(func.count()).select_from(TicketRow).where(
            TicketRow.space_id == space_id,
            (TicketRow.status == "paid") | ((TicketRow.status == "held") & (TicketRow.hold_expires_at > now)
                                            & ((TicketRow.provider != Provider.STRIPE.value)
                                               | TicketRow.provider_ref.is_not(None)
                                               | (TicketRow.created_at > unreferenced_after))))
        return int((await self.s.execute(q)).scalar_one())

    async def live_of(self, space_ids: Collection[str], account_ids: Collection[str], *,
                      reload: bool = False) -> list[Ticket]:
        """Held and paid tickets of these accounts in these Spaces, in one query."""
        q = select(TicketRow).where(TicketRow.space_id.in_(space_ids), TicketRow.account_id.in_(account_ids),
                                    TicketRow.status.in_(_LIVE))
        if reload:
            q = q.execution_options(populate_existing=True)
        return [self._own(r) for r in (await self.s.scalars(q)).all()]

    async def get_many(self, ticket_ids: Collection[str]) -> list[Ticket]:
        missing = [i for i in ticket_ids if i not in self._rows]
        if missing:
            for r in (await self.s.scalars(select(TicketRow).where(TicketRow.id.in_(missing)))).all():
                self._own(r)
        return [self._tickets[i] for i in ticket_ids if i in self._tickets]

    async def in_space(self, space_id: str) -> list[Ticket]:
        return [self._own(r) for r in (await self.s.scalars(select(TicketRow)
                                                            .where(TicketRow.space_id == space_id))).all()]

    async def by_ref(self, provider_ref: str) -> list[Ticket]:
        q = select(TicketRow).where(TicketRow.provider_ref == provider_ref)
        return [self._own(r) for r in (await self.s.scalars(q)).all()]

    async def ref_recorded(self, provider_ref: str) -> bool:
        """Has this payment already become a seat (paid, refunded) or a returned-payment row?"""
        q = select(TicketRow.id).where(TicketRow.provider_ref == provider_ref,
                                       TicketRow.status.in_(("paid", "refunded")) | TicketRow.hold_expires_at.is_(None))
        return (await self.s.scalars(q)).first() is not None

    async def paid_of(self, space_id: str, account_id: str) -> PaidTicket | None:
        q = select(TicketRow).where(TicketRow.space_id == space_id, TicketRow.account_id == account_id,
                                    TicketRow.status == "paid")
        row = (await self.s.scalars(q)).first()
        return None if row is None else PaidTicket(self._own(row), row.refundable)

    async def add_many(self, tickets: Sequence[Ticket]) -> None:
        """Insert new tickets in one statement; they become this unit of work's own."""
        if not tickets:
            return
        await self.s.execute(insert(TicketRow), [dict(
            id=t.id, space_id=t.space_id, account_id=t.account_id, status=t.status.value, provider=t.provider.value,
            amount_minor=t.amount_minor, currency=t.currency, hold_expires_at=t.hold_expires_at,
            provider_ref=t.provider_ref, fee_minor=t.fee_minor, created_at=t.created_at, updated_at=t.updated_at)
            for t in tickets])
        for t in tickets:
            self._tickets[t.id] = t

    async def save(self, t: Ticket) -> None:
        """Write back what the ledger changes (status, hold end, payment reference). A loaded row is
        updated in the session (sent with the next flush); a row inserted by ``add_many``, by id."""
        t.status = TicketStatus(t.status)
        row = self._rows.get(t.id)
        if row is not None:
            row.status, row.hold_expires_at, row.provider_ref = t.status.value, t.hold_expires_at, t.provider_ref
            row.updated_at = t.updated_at
            return
        await self.s.execute(update(TicketRow).where(TicketRow.id == t.id).values(
            status=t.status.value, hold_expires_at=t.hold_expires_at, provider_ref=t.provider_ref,
            updated_at=t.updated_at))

    async def attach_refs(self, refs: Iterable[tuple[str, str]], now: datetime) -> None:
        """Save (ticket id, provider reference) pairs with one executemany statement."""
        tickets = TicketRow.__table__
        await self.s.execute(
            update(tickets).where(tickets.c.id == bindparam("tid"))  # type: ignore[arg-type]
            .values(provider_ref=bindparam("ref"), updated_at=now),
            [{"tid": t, "ref": r} for t, r in refs])

    async def first_times(self, provider: str, events: Iterable[tuple[str, str]], now: datetime) -> set[str]:
        """Record provider event ids (with their kinds) in one statement; returns those not seen before."""
        rows: dict[str, dict[str, Any]] = {}
        for event_id, kind in events:
            rows.setdefault(event_id, {"provider": provider, "event_id": event_id, "kind": kind, "received_at": now})
        if not rows:
            return set()
        ins = (pg_insert if dialect_name(self.s) == "postgresql" else sqlite_insert)(ProcessedEventRow)
        res = await self.s.execute(ins.values(list(rows.values())).on_conflict_do_nothing(
            index_elements=["provider", "event_id"]).returning(ProcessedEventRow.event_id))
        return set(res.scalars().all())
