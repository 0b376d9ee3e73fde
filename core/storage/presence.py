"""Connections and "away" seats: the storage side of per-person presence (``core/presence.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.storage.base import dialect_name
from core.storage.tables import AwayRow, ConnectionRow


class PresenceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # ---- connections -------------------------------------------------------------------------------
    async def connect_many(self, rows: Sequence[tuple[str, str, str]], node: str, now: datetime) -> None:
        """Record connections ``(conn id, space, account)`` of this process in one statement.

        A connection id already recorded is taken over (a stable id such as a Discord member's voice on a
        Stage, registered again by a restarted process before its old row went stale)."""
        if not rows:
            return
        values = list({c: {"id": c, "space_id": s, "account_id": a, "node": node, "seen_at": now}
                       for c, s, a in rows}.values())
        ins = pg_insert(ConnectionRow) if dialect_name(self.session) == "postgresql" else sqlite_insert(ConnectionRow)
        stmt = ins.values(values)
        await self.session.execute(stmt.on_conflict_do_update(index_elements=[ConnectionRow.id], set_={
            "space_id": stmt.excluded.space_id, "account_id": stmt.excluded.account_id, "node": stmt.excluded.node,
            "seen_at": stmt.excluded.seen_at}))

    async def drop(self, conn_id: str) -> tuple[str, str] | None:
        """Forget one connection; its (space, account), or None if it was gone (swept) already."""
        row = (await self.session.execute(
            delete(ConnectionRow).where(ConnectionRow.id == conn_id)
            .returning(ConnectionRow.space_id, ConnectionRow.account_id))).first()
        return (row.space_id, row.account_id) if row else None

    async def live_count(self, space_id: str, account_id: str, fresh_since: datetime) -> int:
        return int(await self.session.scalar(select(func.count()).select_from(ConnectionRow).where(
            ConnectionRow.space_id == space_id, ConnectionRow.account_id == account_id,
            ConnectionRow.seen_at >= fresh_since)) or 0)

    async def heartbeat(self, node: str, now: datetime, but: Sequence[str] = ()) -> int:
        """One UPDATE for every connection this process holds, however many (``but`` those whose
        end could not be recorded yet: they must go stale, not live on)."""
        stmt = update(ConnectionRow).where(ConnectionRow.node == node)
        if but:
            stmt = stmt.where(ConnectionRow.id.not_in(list(but)))
        res = await self.session.execute(stmt.values(seen_at=now))
        return int(res.rowcount or 0)  # type: ignore[attr-defined]

    async def sweep(self, stale_before: datetime, limit: int = 1000) -> list[tuple[str, str]]:
        """Delete connections nobody refreshed (their process died); whose they were, once each.

        Several processes may sweep at once: each stale row is deleted (and reported) by one of them."""
        ids = select(ConnectionRow.id).where(ConnectionRow.seen_at < stale_before).limit(limit)
        rows = (await self.session.execute(
            delete(ConnectionRow).where(ConnectionRow.id.in_(ids))
            .returning(ConnectionRow.space_id, ConnectionRow.account_id))).all()
        return sorted({(r.space_id, r.account_id) for r in rows})

    async def drop_node(self, node: str) -> int:
        res = await self.session.execute(delete(ConnectionRow).where(ConnectionRow.node == node))
        return int(res.rowcount or 0)  # type: ignore[attr-defined]

    # ---- away --------------------------------------------------------------------------------------
    async def set_away(self, space_id: str, account_id: str, away_id: str, since: datetime,
                       until: datetime) -> bool:
        """Record that someone is away; False (and nothing changes) when they already were."""
        values = {"space_id": space_id, "account_id": account_id, "away_id": away_id, "since": since, "until": until}
        ins = pg_insert(AwayRow) if dialect_name(self.session) == "postgresql" else sqlite_insert(AwayRow)
        res = await self.session.execute(ins.values(values).on_conflict_do_nothing(
            index_elements=["space_id", "account_id"]))
        return bool(res.rowcount)  # type: ignore[attr-defined]

    async def back(self, space_id: str, account_ids: Sequence[str]) -> list[str]:
        """Those of ``account_ids`` who were away, no longer recorded as away."""
        if not account_ids:
            return []
        rows = (await self.session.execute(
            delete(AwayRow).where(AwayRow.space_id == space_id, AwayRow.account_id.in_(list(account_ids)))
            .returning(AwayRow.account_id))).scalars().all()
        return sorted(rows)

    async def take_away(self, away_id: str) -> AwayRow | None:
        """Claim an away record by its id (deleting it); None when they came back meanwhile."""
        row = (await self.session.execute(
            delete(AwayRow).where(AwayRow.away_id == away_id)
            .returning(AwayRow.space_id, AwayRow.account_id, AwayRow.away_id, AwayRow.since, AwayRow.until))).first()
        if row is None:
            return None
        return AwayRow(space_id=row.space_id, account_id=row.account_id, away_id=row.away_id, since=row.since,
                       until=row.until)

    async def away(self, space_id: str) -> list[AwayRow]:
        return list((await self.session.scalars(select(AwayRow).where(AwayRow.space_id == space_id))).all())
