"""Engines for SQLite (default, one file) and PostgreSQL, tuned for the project's access pattern.

Every engine has connect and statement timeouts, so a network partition turns into an error
within seconds instead of a request that hangs for as long as the partition lasts, and PostgreSQL
connections are pinged before use, so everything comes back without a restart. ``unavailable``
is the one place that decides which driver errors mean "the database is not answering".
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from core.errors import Unavailable

log = logging.getLogger("spacebridge.storage")

RETRY_AFTER_S = 5
# SQLite errors that are about the file or the machine, not the statement (a full disk, a read-only
# mount, a lock held longer than the busy timeout). Anything else ("no such table") is a bug.
_SQLITE_OUTAGE = ("disk is full", "readonly", "read-only", "disk i/o error", "unable to open database",
                  "database is locked", "out of memory")
# PostgreSQL SQLSTATE classes that mean the server or the link is in trouble: 08 connection exception,
# 53 insufficient resources (disk full, too many connections), 57 operator intervention (statement
# timeout, shutdown, cannot connect now), 58 system error; 25006 is a read-only (standby) server.
_PG_OUTAGE_CLASSES = ("08", "53", "57", "58")
_PG_OUTAGE_STATES = ("25006",)
_DRIVER_MODULES = ("sqlalchemy.", "asyncpg", "aiosqlite", "sqlite3")


class DatabaseURLError(ValueError):
    """A database URL that cannot work, with a sentence saying how to write it."""


def normalize_url(url: str) -> str:
    """Accept the URLs people paste (``postgresql://``, ``sqlite:///``) and pick the async driver."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"):
        u = u.set(drivername="postgresql+asyncpg")
    elif u.drivername == "sqlite":
        u = u.set(drivername="sqlite+aiosqlite")
    return u.render_as_string(hide_password=False)


def check_url(url: str) -> None:
    """Refuse, in words, a database URL that would only fail later with a traceback."""
    try:
        u = make_url(url)
        port = u.port  # a non-numeric port raises here
    except (ArgumentError, ValueError):
        raise DatabaseURLError("is not a database URL: write sqlite:////absolute/path.sqlite3 or "
                               "postgresql://user:password@host:5432/database") from None
    backend = u.get_backend_name()
    if backend == "sqlite":
        if u.host:
            raise DatabaseURLError(f"puts {u.host!r} where a host goes; a SQLite URL is sqlite:/// followed by "
                                   f"an absolute path: sqlite:////absolute/path/{u.host}")
        db = u.database or ""
        if db and db != ":memory:" and not Path(db).expanduser().is_absolute():
            raise DatabaseURLError(f"the SQLite path {db!r} is relative (to whatever directory serve starts in); "
                                   f"give an absolute one: sqlite:///{Path(db).expanduser().absolute()}")
        if not db:
            raise DatabaseURLError("names no SQLite file: write sqlite:////absolute/path.sqlite3")
    elif backend == "postgresql":
        if port is not None and not 0 < port < 65536:
            raise DatabaseURLError(f"has port {port}; a port is 1-65535 (PostgreSQL's is usually 5432)")
        if not u.database:
            raise DatabaseURLError("names no database: postgresql://user@host:5432/DATABASE")
    else:
        raise DatabaseURLError("must be a sqlite:/// or postgresql:// URL")


def make_engine(url: str, *, connect_timeout_s: float = 10.0, statement_timeout_s: float | None = None,
                **kwargs: Any) -> AsyncEngine:
    """An engine whose connects give up after ``connect_timeout_s`` and, when ``statement_timeout_s``
    is set, whose statements do too (PostgreSQL cancels them server-side; the client gives up a little
    later, for when the server cannot even be told). SQLite waits that long for its lock."""
    url = normalize_url(url)
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        busy_s = statement_timeout_s or 30.0
        kwargs.setdefault("connect_args", {"timeout": busy_s})
        # One connection: SQLite has one writer anyway, and transactions queued on the pool are
        # served in order, where several connections would fight for the lock and sleep in
        # SQLite's busy handler.
        kwargs.setdefault("pool_size", 1)
        kwargs.setdefault("max_overflow", 0)
        kwargs.setdefault("pool_timeout", max(60.0, 2 * busy_s))
        engine = create_async_engine(url, **kwargs)
        busy_ms = int(busy_s * 1000)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            cur.close()
            # We issue BEGIN ourselves (below) so writers queue on the lock instead of failing
            # with SQLITE_BUSY when a read transaction is upgraded.
            dbapi_conn.isolation_level = None

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    connect_args: dict[str, Any] = {"timeout": connect_timeout_s}
    if statement_timeout_s is not None:
        connect_args["command_timeout"] = statement_timeout_s + 2.0
        connect_args["server_settings"] = {"statement_timeout": str(int(statement_timeout_s * 1000)),
                                           "idle_in_transaction_session_timeout": str(
                                               int(max(60.0, 4 * statement_timeout_s) * 1000))}
    connect_args.update(kwargs.pop("connect_args", {}))
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_recycle", 1800)
    kwargs.setdefault("pool_timeout", connect_timeout_s + (statement_timeout_s or 30.0))
    return create_async_engine(url, connect_args=connect_args, **kwargs)


Sessions = async_sessionmaker[AsyncSession]
"""What the SQL store is built on (outside core/storage, name this, not SQLAlchemy's types)."""


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, class_=Session)


def backend_name(engine: AsyncEngine) -> str:
    return engine.dialect.name


class Session(AsyncSession):
    """An AsyncSession whose ``async with`` block turns database outages into ``Unavailable``."""

    async def __aexit__(self, type_: type[BaseException] | None, value: BaseException | None,
                        traceback: TracebackType | None) -> None:
        try:
            await super().__aexit__(type_, value, traceback)
        except Exception as e:  # closing on a dead connection
            if value is None:
                raise_unavailable(e)
                raise
        if value is not None:
            raise_unavailable(value)


def unavailable(error: BaseException) -> Unavailable | None:
    """``Unavailable`` if ``error`` means the database is unreachable, full, read-only or too slow."""
    if isinstance(error, Unavailable):
        return error
    if is_outage(error):
        _note(error)
        return Unavailable("service.unavailable", what="database", retry_after_s=RETRY_AFTER_S)
    return None


def raise_unavailable(error: BaseException) -> None:
    """Raise ``Unavailable`` (chained to ``error``) if ``error`` is an outage; else return."""
    u = unavailable(error)
    if u is not None and u is not error:
        raise u from error


def is_outage(error: BaseException) -> bool:
    """Whether ``error`` means the database is unreachable, full, read-only or too slow (not a bug)."""
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated:
            return True
        return _is_outage_cause(error.orig, error.orig.__cause__ if error.orig is not None else None)
    if isinstance(error, exc.TimeoutError):  # no pooled connection came free in time
        return True
    if isinstance(error, exc.SQLAlchemyError):
        return False
    return _is_outage_cause(error, error.__cause__)


def _is_outage_cause(error: BaseException | None, cause: BaseException | None) -> bool:
    if error is None:
        return False
    if isinstance(error, sqlite3.Error) or type(error).__module__.startswith("sqlalchemy.dialects.sqlite"):
        text = str(error).lower()
        return any(s in text for s in _SQLITE_OUTAGE)
    for e in (error, cause):
        state = getattr(e, "sqlstate", None)
        if isinstance(state, str):
            return state[:2] in _PG_OUTAGE_CLASSES or state in _PG_OUTAGE_STATES
    names = {t.__name__ for t in type(error).__mro__}
    if "InterfaceError" in names and type(error).__module__.startswith(("asyncpg", "sqlalchemy")):
        return True  # "connection is closed", "cannot perform operation: another operation is in progress"
    if isinstance(error, OSError):  # refused, reset, timed out: only when the driver raised it
        return _raised_by_driver(error)
    return False


def _raised_by_driver(error: BaseException) -> bool:
    tb = error.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith(_DRIVER_MODULES):
            return True
        tb = tb.tb_next
    return False


_last_note = 0.0


def _note(error: BaseException) -> None:
    """One line (no traceback) at most every 10 s: an outage is news once, not per request."""
    global _last_note
    now = time.monotonic()
    if now - _last_note >= 10.0:
        _last_note = now
        log.warning("database unavailable: %s", f"{type(error).__name__}: {error}".splitlines()[0][:300])
