"""The durable job table: enqueue inside the caller's transaction (an outbox), cancel, count, and the
runner's claims, lease renewals and outcomes (``SqlJobStore``; running jobs is ``core.scheduler``'s).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text, and_, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from core.ports import Finished, Job, NewJob, Retried
from core.storage.base import Base, dialect_name

__all__ = ["JobQueue", "JobRow", "NewJob", "SqlJobStore", "cancel_group", "enqueue", "enqueue_many", "job_stats"]

STATUSES = ("pending", "running", "done", "failed", "missed", "cancelled")
DEFAULT_MAX_ATTEMPTS = 8


class JobRow(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]
    due_at: Mapped[datetime]
    dedupe_key: Mapped[str] = mapped_column(String(255), unique=True)
    group_key: Mapped[str | None] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=DEFAULT_MAX_ATTEMPTS)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    __table_args__ = (
        Index("ix_jobs_claim", "status", "due_at"),
        Index("ix_jobs_lease", "status", "lease_expires_at"),
    )


def _insert(session: AsyncSession) -> Any:
    name = dialect_name(session)
    if name == "postgresql":
        return pg_insert(JobRow)
    if name == "sqlite":
        return sqlite_insert(JobRow)
    raise NotImplementedError(name)


def _values(j: NewJob) -> dict[str, Any]:
    if not j.dedupe_key or len(j.dedupe_key) > 255:
        raise ValueError("a job needs a dedupe key of 1 to 255 characters")
    return {"kind": j.kind, "payload": j.payload, "due_at": j.due_at, "dedupe_key": j.dedupe_key,
            "group_key": j.group_key, "status": "pending", "attempts": 0, "max_attempts": j.max_attempts,
            "created_at": j.created_at}


async def enqueue(session: AsyncSession, kind: str, payload: dict[str, Any], *, due_at: datetime,
                  dedupe_key: str, group_key: str | None = None,
                  max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> bool:
    """Add a job in the caller's transaction; False when its dedupe key was already used."""
    return await enqueue_many(session, [NewJob(kind, payload, due_at, dedupe_key, group_key, max_attempts)]) == 1


async def enqueue_many(session: AsyncSession, jobs: Sequence[NewJob], chunk: int = 1000) -> int:
    """Bulk add (fan-outs of thousands); rows whose dedupe key exists are skipped. Returns rows added."""
    added = 0
    for i in range(0, len(jobs), chunk):
        rows = [_values(j) for j in jobs[i:i + chunk]]
        stmt = _insert(session).values(rows).on_conflict_do_nothing(index_elements=["dedupe_key"])
        res = await session.execute(stmt)
        added += max(res.rowcount or 0, 0)  # type: ignore[attr-defined]
    return added


async def cancel_group(session: AsyncSession, group_key: str, kinds: Sequence[str] | None = None) -> int:
    """Cancel a group's pending jobs (a Space cancelled or moved); running ones finish."""
    stmt = update(JobRow).where(JobRow.group_key == group_key, JobRow.status == "pending")
    if kinds:
        stmt = stmt.where(JobRow.kind.in_(kinds))
    res = await session.execute(stmt.values(status="cancelled", finished_at=datetime.now(UTC)))
    return int(res.rowcount or 0)  # type: ignore[attr-defined]


async def job_stats(session: AsyncSession, group_key: str | None = None, kind: str | None = None,
                    group_prefix: str | None = None) -> dict[str, int]:
    """Counts per status: the visible progress of a fan-out or a refund run."""
    q = select(JobRow.status, func.count()).group_by(JobRow.status)
    if group_key is not None:
        q = q.where(JobRow.group_key == group_key)
    if group_prefix is not None:
        q = q.where(JobRow.group_key.startswith(group_prefix, autoescape=True))
    if kind is not None:
        q = q.where(JobRow.kind == kind)
    out = dict.fromkeys(STATUSES, 0)
    for status, n in (await session.execute(q)).all():
        out[status] = int(n)
    return out


class JobQueue:
    """The ``Jobs`` port of a unit of work: the functions above on its session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def enqueue(self, job: NewJob) -> bool:
        return await enqueue_many(self.session, [job]) == 1

    async def enqueue_many(self, jobs: Sequence[NewJob]) -> int:
        return await enqueue_many(self.session, jobs)

    async def cancel_group(self, group_key: str) -> int:
        return await cancel_group(self.session, group_key)


class SqlJobStore:
    """The ``JobStore`` port on SQL. On PostgreSQL claims use ``FOR UPDATE SKIP LOCKED`` so two runners
    never take the same job; on SQLite ``BEGIN IMMEDIATE`` (see engine.py) serialises them."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sm = sessionmaker

    async def claim(self, kinds: Sequence[str], worker_id: str, now: datetime, lease_until: datetime,
                    limit: int) -> list[Job]:
        async with self.sm() as s, s.begin():
            skip_locked = dialect_name(s) == "postgresql"
            # Two index range scans, not one OR (which plans as a scan of the whole table).
            due_q = (select(JobRow.id).where(JobRow.status == "pending", JobRow.due_at <= now,
                                             JobRow.kind.in_(kinds))
                     .order_by(JobRow.due_at).limit(limit))
            if skip_locked:
                due_q = due_q.with_for_update(skip_locked=True)
            ids = list((await s.scalars(due_q)).all())
            if len(ids) < limit:
                lost_q = (select(JobRow.id).where(JobRow.status == "running", JobRow.lease_expires_at < now,
                                                  JobRow.kind.in_(kinds))
                          .order_by(JobRow.lease_expires_at).limit(limit - len(ids)))
                if skip_locked:
                    lost_q = lost_q.with_for_update(skip_locked=True)
                ids += (await s.scalars(lost_q)).all()
            if not ids:
                return []
            rows = (await s.execute(
                update(JobRow).where(JobRow.id.in_(ids))
                .values(status="running", lease_owner=worker_id, lease_expires_at=lease_until,
                        attempts=JobRow.attempts + 1)
                .returning(JobRow.id, JobRow.kind, JobRow.payload, JobRow.attempts, JobRow.due_at,
                           JobRow.dedupe_key, JobRow.group_key)
            )).all()
        return [Job(r.id, r.kind, r.payload, r.attempts, r.due_at, r.dedupe_key, r.group_key) for r in rows]

    async def renew(self, worker_id: str, lease_until: datetime) -> None:
        async with self.sm() as s, s.begin():
            await s.execute(update(JobRow).where(JobRow.lease_owner == worker_id, JobRow.status == "running")
                            .values(lease_expires_at=lease_until))

    async def finish(self, worker_id: str, now: datetime, done: Sequence[int], missed: Sequence[int],
                     retried: Sequence[Retried]) -> Finished:
        mine = and_(JobRow.lease_owner == worker_id, JobRow.status == "running")
        failed = again = 0
        async with self.sm() as s, s.begin():
            if done:
                await s.execute(update(JobRow).where(JobRow.id.in_(done), mine)
                                .values(status="done", finished_at=now, lease_owner=None, lease_expires_at=None))
            if missed:
                await s.execute(update(JobRow).where(JobRow.id.in_(missed), mine)
                                .values(status="missed", finished_at=now, lease_owner=None, lease_expires_at=None,
                                        last_error="past its grace window when claimed"))
            for r in retried:
                row = await s.get(JobRow, r.job.id)
                if row is None or row.lease_owner != worker_id:
                    continue
                if r.job.attempts >= row.max_attempts:
                    row.status, row.finished_at = "failed", now
                    failed += 1
                else:
                    row.status, row.due_at = "pending", r.due_at
                    again += 1
                row.last_error, row.lease_owner, row.lease_expires_at = r.error, None, None
        return Finished(failed=failed, retried=again)
