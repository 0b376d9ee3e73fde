"""The SQL side of the small key-value store per plugin, in the one database (so it survives restarts and is shared by
every process): JSON values under string keys, listed by prefix in key order.

Keys are the plugin's own design; put fixed-width numbers in them (``audit:SPACE:00001732...``)
so key order is time order on every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.clock import Clock
from core.errors import Invalid
from core.ports import KeyValueEntry as Entry
from core.storage.base import dialect_name
from core.storage.tables import PluginDataRow

MAX_KEY = 255
MAX_VALUE_BYTES = 64 * 1024


class KeyValueStore:
    """One namespace (a plugin's name) of the ``plugin_data`` table."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], clock: Clock, namespace: str) -> None:
        self.sessionmaker, self.clock, self.namespace = sessionmaker, clock, namespace

    @staticmethod
    def _check(key: str, value: dict[str, Any] | None = None) -> None:
        if not key or len(key) > MAX_KEY:
            raise Invalid("store.bad_key", max=MAX_KEY)
        if value is not None and len(repr(value)) > MAX_VALUE_BYTES:
            raise Invalid("store.value_too_big", max=MAX_VALUE_BYTES)

    async def get(self, key: str) -> dict[str, Any] | None:
        async with self.sessionmaker() as session:
            row = await session.get(PluginDataRow, (self.namespace, key))
            return None if row is None else dict(row.value)

    async def put(self, key: str, value: dict[str, Any]) -> None:
        self._check(key, value)
        await self.put_many([(key, value)])

    async def put_many(self, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Upsert several keys in one transaction."""
        for k, v in items:
            self._check(k, v)
        now = self.clock.now()
        async with self.sessionmaker() as session, session.begin():
            rows = [{"plugin": self.namespace, "key": k, "value": v, "updated_at": now} for k, v in items]
            if dialect_name(session) == "postgresql":
                from sqlalchemy.dialects.postgresql import insert as pg_insert
                stmt = pg_insert(PluginDataRow).values(rows)
                await session.execute(stmt.on_conflict_do_update(
                    index_elements=["plugin", "key"],
                    set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at}))
            else:
                from sqlalchemy.dialects.sqlite import insert as sqlite_insert
                lite = sqlite_insert(PluginDataRow).values(rows)
                await session.execute(lite.on_conflict_do_update(
                    index_elements=["plugin", "key"],
                    set_={"value": lite.excluded.value, "updated_at": lite.excluded.updated_at}))

    async def delete(self, key: str) -> bool:
        async with self.sessionmaker() as session, session.begin():
            result = await session.execute(delete(PluginDataRow).where(
                PluginDataRow.plugin == self.namespace, PluginDataRow.key == key))
            return bool(getattr(result, "rowcount", 0))

    async def scan(self, prefix: str = "", *, limit: int = 100, newest_first: bool = False) -> list[Entry]:
        """Entries whose key starts with ``prefix``, in key order (reversed with ``newest_first``)."""
        async with self.sessionmaker() as session:
            q = select(PluginDataRow).where(PluginDataRow.plugin == self.namespace)
            if prefix:
                q = q.where(PluginDataRow.key.startswith(prefix, autoescape=True))
            order = PluginDataRow.key.desc() if newest_first else PluginDataRow.key.asc()
            rows = await session.scalars(q.order_by(order).limit(max(1, min(limit, 10_000))))
            return [Entry(r.key, dict(r.value), r.updated_at) for r in rows]
