"""The schema check every process runs at start, kept light so CLI commands start fast.

Many ``spacebridge`` processes may start at once (a ticket rush of CLI buyers). On SQLite every
engine transaction begins with ``BEGIN IMMEDIATE`` (the write lock), so the revision is read
without the engine, on a read-only connection that never takes the lock; only a database that is
behind is upgraded, which waits for the lock under SQLite's busy timeout.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from core.storage import migrate
from core.storage.engine import backend_name, normalize_url
from spacebridge.config import ConfigError, Settings


def _sqlite_revision(database: str, busy_s: float) -> str | None:
    """The Alembic revision of a SQLite file, read without a write transaction."""
    path = Path(database).expanduser()
    if not path.exists():
        return None
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=busy_s)
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='alembic_version'").fetchone() is None:
            return None
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    finally:
        conn.close()
    return str(rows[0][0]) if len(rows) == 1 else None


async def current_revision(settings: Settings, engine: AsyncEngine) -> str | None:
    url = make_url(normalize_url(settings.resolved_database_url()))
    if backend_name(engine) == "sqlite" and url.database and url.database != ":memory:":
        busy_s = settings.database_statement_timeout_s or 30.0
        return await asyncio.to_thread(_sqlite_revision, url.database, busy_s)
    return await migrate.current_revision(engine)


async def ensure_schema(settings: Settings, engine: AsyncEngine) -> None:
    """SQLite databases are upgraded in place; PostgreSQL must be upgraded on purpose (db upgrade).

    A database that cannot be reached or opened is a ``ConfigError`` in words (never a traceback),
    and the wait for it is bounded by the configured timeouts. A current schema is never written to.
    """
    from spacebridge.doctor import database_problem

    head = migrate.head_revision()
    limit = settings.database_connect_timeout_s + settings.database_statement_timeout_s
    try:
        current = await asyncio.wait_for(current_revision(settings, engine), limit)
        if current == head:
            return
        if backend_name(engine) == "sqlite":
            await asyncio.to_thread(migrate.upgrade, settings.resolved_database_url())
            return
    except Exception as e:
        raise ConfigError(database_problem(settings, e)) from None
    raise ConfigError(f"the database is at revision {current or 'empty'}, the code needs {head}: "
                      "run `spacebridge db upgrade` first")
