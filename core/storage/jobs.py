"""The durable job table: enqueue inside the caller's transaction (an outbox), cancel, count.

Claiming and running jobs is ``core.scheduler.JobRunner``'s business.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from core.ports import NewJob
from core.storage.base import Base, dialect_name

__all__ = ["JobQueue", "JobRow", "NewJob", "cancel_group", "enqueue", "enqueue_many", "job_stats"]

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
