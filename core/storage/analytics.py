"""What a Space's analytics are computed from: listening spans and counted tallies
(``core/model/analytics.py``, ``core.ports.Analytics``).

Presence rows (``participants``) keep one row per person per Space, so a person who leaves and
comes back twice looks like one long visit; reactions live in memory and hands only while raised.
These two tables keep what the host's console reports: each stretch of listening (joined to left,
away or end) and per-Space counters (reactions, hands raised, comments).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from core.model.analytics import Sale, Span
from core.storage.base import Base, dialect_name
from core.storage.tables import TicketRow

__all__ = ["AnalyticsRepository", "ListeningSpanRow", "Sale", "SpaceTallyRow", "Span"]


class ListeningSpanRow(Base):
    """One stretch of one person listening to one Space; ``ended_at`` empty while it lasts."""

    __tablename__ = "listening_spans"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    space_id: Mapped[str] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"))
    account_id: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    __table_args__ = (Index("ix_listening_spans_space", "space_id", "account_id"),)


class SpaceTallyRow(Base):
    """A counter of one Space (``reactions``, ``hands``, ``comments``)."""

    __tablename__ = "space_tallies"
    space_id: Mapped[str] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class AnalyticsRepository:
    """``uow.analytics`` (``core.ports.Analytics``)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def open_span(self, space_id: str, account_id: str, at: datetime) -> bool:
        """Start a stretch unless one is already open for them (a second tab is not a second listener)."""
        open_now = await self.session.scalar(select(func.count()).select_from(ListeningSpanRow).where(
            ListeningSpanRow.space_id == space_id, ListeningSpanRow.account_id == account_id,
            ListeningSpanRow.ended_at.is_(None)))
        if open_now:
            return False
        self.session.add(ListeningSpanRow(space_id=space_id, account_id=account_id, started_at=at, ended_at=None))
        return True

    async def close_spans(self, space_id: str, at: datetime, account_id: str | None = None) -> int:
        """End the open stretch of one person (or of everyone, when the Space ends)."""
        stmt = update(ListeningSpanRow).where(ListeningSpanRow.space_id == space_id,
                                              ListeningSpanRow.ended_at.is_(None))
        if account_id is not None:
            stmt = stmt.where(ListeningSpanRow.account_id == account_id)
        res = await self.session.execute(stmt.values(ended_at=at))
        return int(res.rowcount or 0)  # type: ignore[attr-defined]

    async def bump(self, space_id: str, name: str, by: int = 1) -> None:
        """Add ``by`` to a counter in one upsert."""
        ins = pg_insert(SpaceTallyRow) if dialect_name(self.session) == "postgresql" else sqlite_insert(SpaceTallyRow)
        stmt = ins.values(space_id=space_id, name=name, value=by)
        await self.session.execute(stmt.on_conflict_do_update(
            index_elements=[SpaceTallyRow.space_id, SpaceTallyRow.name],
            set_={"value": SpaceTallyRow.value + stmt.excluded.value}))

    async def spans(self, space_id: str, limit: int = 100_000) -> list[Span]:
        rows = (await self.session.scalars(select(ListeningSpanRow).where(ListeningSpanRow.space_id == space_id)
                                           .order_by(ListeningSpanRow.started_at).limit(limit))).all()
        return [Span(r.account_id, r.started_at, r.ended_at) for r in rows]

    async def tallies(self, space_id: str) -> dict[str, int]:
        rows = (await self.session.execute(select(SpaceTallyRow.name, SpaceTallyRow.value)
                                           .where(SpaceTallyRow.space_id == space_id))).all()
        return {r.name: int(r.value) for r in rows}

    async def sales(self, space_id: str, limit: int = 1000) -> list[Sale]:
        """The Space's sold seats, newest first (a returned payment has no hold, and is not one)."""
        rows = (await self.session.scalars(select(TicketRow).where(
            TicketRow.space_id == space_id, TicketRow.status.in_(("paid", "refunded")),
            TicketRow.hold_expires_at.is_not(None)).order_by(TicketRow.updated_at.desc()).limit(limit))).all()
        return [Sale(r.id, r.account_id, r.status, int(r.amount_minor), r.currency, r.provider, r.updated_at)
                for r in rows]
