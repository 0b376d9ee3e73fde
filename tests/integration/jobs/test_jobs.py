"""The durable job runner on SQLite and PostgreSQL, including workers killed with SIGKILL."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from core.clock import FrozenClock
from core.scheduler import Job, JobRunner, Retry, Unreachable
from core.storage import jobs
from core.storage.engine import make_engine, make_sessionmaker

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
async def sm(database_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def add(sm, *new: jobs.NewJob) -> int:  # type: ignore[no-untyped-def]
    async with sm() as s, s.begin():
        return await jobs.enqueue_many(s, list(new))


async def stats(sm, **kw: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    async with sm() as s:
        return await jobs.job_stats(s, **kw)


async def test_dedupe_and_cancel(sm, clock: FrozenClock) -> None:  # type: ignore[no-untyped-def]
    now = clock.now()
    async with sm() as s, s.begin():
        assert await jobs.enqueue(s, "k", {}, due_at=now, dedupe_key="a", group_key="g")
        assert not await jobs.enqueue(s, "k", {}, due_at=now, dedupe_key="a", group_key="g")
        assert await jobs.enqueue(s, "k", {}, due_at=now, dedupe_key="b", group_key="g")
        assert await jobs.enqueue(s, "k", {}, due_at=now, dedupe_key="c", group_key="other")
    async with sm() as s, s.begin():
        assert await jobs.cancel_group(s, "g") == 2
    ran: list[str] = []

    async def h(job: Job) -> None:
        ran.append(job.dedupe_key)

    assert await JobRunner(sm, {"k": h}, clock, worker_id="w").run_until_idle() == 1
    assert ran == ["c"]
    assert (await stats(sm))["cancelled"] == 2


async def test_not_before_due_then_retry_backoff_then_failed(sm, clock: FrozenClock) -> None:  # type: ignore[no-untyped-def]
    await add(sm, jobs.NewJob("k", {"n": 1}, clock.now() + timedelta(minutes=5), "later", max_attempts=3))
    calls: list[int] = []

    async def flaky(job: Job) -> None:
        calls.append(job.attempts)
        raise RuntimeError("service away")

    runner = JobRunner(sm, {"k": flaky}, clock, worker_id="w", backoff_base_s=10)
    assert await runner.run_until_idle() == 0
    clock.advance(minutes=5)
    assert await runner.run_until_idle() == 1
    assert await runner.run_until_idle() == 0  # backing off
    clock.advance(seconds=13)  # base 10 s, jitter up to +20 %
    assert await runner.run_until_idle() == 1
    clock.advance(seconds=25)
    assert await runner.run_until_idle() == 1
    assert calls == [1, 2, 3]
    st = await stats(sm)
    assert st["failed"] == 1 and st["pending"] == 0
    async with sm() as s:
        row = await s.get(jobs.JobRow, 1)
        assert row is not None and "service away" in (row.last_error or "")


async def test_retry_after_and_unreachable(sm, clock: FrozenClock) -> None:  # type: ignore[no-untyped-def]
    await add(sm, jobs.NewJob("slow", {}, clock.now(), "s"), jobs.NewJob("gone", {}, clock.now(), "g"))
    seen: list[str] = []

    async def slow(job: Job) -> None:
        seen.append(f"slow{job.attempts}")
        if job.attempts == 1:
            raise Retry(30)

    async def gone(job: Job) -> None:
        raise Unreachable("blocked the bot")

    runner = JobRunner(sm, {"slow": slow, "gone": gone}, clock, worker_id="w")
    await runner.run_until_idle()
    clock.advance(seconds=29)
    await runner.run_until_idle()
    assert seen == ["slow1"]
    clock.advance(seconds=2)
    await runner.run_until_idle()
    assert seen == ["slow1", "slow2"]
    assert (await stats(sm))["done"] == 2


async def test_missed_when_past_grace(sm, clock: FrozenClock) -> None:  # type: ignore[no-untyped-def]
    await add(sm, jobs.NewJob("r", {}, clock.now(), "old"), jobs.NewJob("r", {}, clock.now() + timedelta(minutes=20),
                                                                       "fresh"))
    clock.advance(minutes=21)
    ran: list[str] = []

    async def h(job: Job) -> None:
        ran.append(job.dedupe_key)

    await JobRunner(sm, {"r": h}, clock, worker_id="w", grace={"r": timedelta(minutes=15)}).run_until_idle()
    assert ran == ["fresh"]
    assert (await stats(sm))["missed"] == 1


async def test_expired_lease_returns_and_old_owner_cannot_finish(sm, clock: FrozenClock) -> None:  # type: ignore[no-untyped-def]
    await add(sm, jobs.NewJob("k", {}, clock.now(), "x"))
    async def noop(job: Job) -> None:
        return None

    a = JobRunner(sm, {"k": noop}, clock, worker_id="a", lease_s=30)
    claimed = await a.claim()
    assert [j.dedupe_key for j in claimed] == ["x"]
    b = JobRunner(sm, {"k": noop}, clock, worker_id="b", lease_s=30)
    assert await b.claim() == []  # still leased
    clock.advance(seconds=31)
    again = await b.claim()
    assert [j.attempts for j in again] == [2]
    await a._finish([claimed[0].id], [], [])  # the old owner wakes up late
    assert (await stats(sm))["running"] == 1
    await b._finish([again[0].id], [], [])
    assert (await stats(sm))["done"] == 1


async def test_a_process_claims_only_jobs_it_can_run(sm, clock: FrozenClock) -> None:  # type: ignore[no-untyped-def]
    """Processes differ in roles: one without Discord must leave Discord deliveries to one with it,
    not take them and drop or delay them."""
    ran: list[tuple[str, str]] = []

    def handler(who: str) -> Any:
        async def h(job: Job) -> None:
            ran.append((who, job.dedupe_key))
        return h

    await add(sm, jobs.NewJob("notify.deliver.discord", {}, clock.now(), "dm-1"))
    await add(sm, jobs.NewJob("notify.deliver.telegram", {}, clock.now(), "dm-2"))
    telegram_only = JobRunner(sm, {"notify.deliver.telegram": handler("tg")}, clock, worker_id="tg")
    assert await telegram_only.run_until_idle() == 1
    assert ran == [("tg", "dm-2")] and (await stats(sm))["pending"] == 1
    with_discord = JobRunner(sm, {"notify.deliver.discord": handler("dc")}, clock, worker_id="dc")
    await with_discord.run_until_idle()
    assert ran == [("tg", "dm-2"), ("dc", "dm-1")] and (await stats(sm))["done"] == 2


def _spawn(url: str, wid: str, out: Path, batch: int = 50, lease: float = 2.0,
           delay: float = 0.002) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tests.integration.jobs.worker_proc", url, wid, str(out),
                             str(batch), str(lease), str(delay)], cwd=ROOT)


def _lines(*files: Path) -> list[str]:
    out: list[str] = []
    for f in files:
        if f.exists():
            out += f.read_text().split()
    return out


async def _wait_all_done(sm, n: int, timeout: float) -> dict[str, int]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = await stats(sm)
        if st["done"] == n:
            return st
        await asyncio.sleep(0.2)
    return await stats(sm)


@pytest.mark.slow
async def test_worker_killed_mid_batch_loses_nothing(database_url: str, sm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from core.clock import SystemClock

    n, batch = 1500, 50
    now = SystemClock().now()
    await add(sm, *[jobs.NewJob("test.remind", {"i": i}, now, f"r{i:05d}") for i in range(n)])
    a_out, b_out = tmp_path / "a.txt", tmp_path / "b.txt"
    a = _spawn(database_url, "A", a_out, batch=batch)
    deadline = time.monotonic() + 60
    while len(_lines(a_out)) < 300 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    os.kill(a.pid, signal.SIGKILL)
    a.wait()
    assert 300 <= len(_lines(a_out)) < n, "worker A was not killed mid-way"
    b = _spawn(database_url, "B", b_out, batch=batch)
    try:
        st = await _wait_all_done(sm, n, 90)
    finally:
        b.terminate()
        b.wait()
    delivered = _lines(a_out, b_out)
    counts = collections.Counter(delivered)
    assert st["done"] == n
    assert set(counts) == {f"r{i:05d}" for i in range(n)}, "a due reminder was lost"
    dupes = sum(c - 1 for c in counts.values())
    assert dupes <= batch, f"{dupes} duplicates: more than the one batch in flight"


@pytest.mark.slow
async def test_two_workers_share_the_table_without_double_delivery(pg_url: str, tmp_path: Path) -> None:
    from core.clock import SystemClock
    from tests.conftest import _truncate

    await _truncate(pg_url)
    engine = make_engine(pg_url)
    sm = make_sessionmaker(engine)
    n = 3000
    now = SystemClock().now()
    await add(sm, *[jobs.NewJob("test.remind", {}, now, f"c{i:05d}") for i in range(n)])
    outs = [tmp_path / "w1.txt", tmp_path / "w2.txt"]
    procs = [_spawn(pg_url, f"W{i}", out, batch=100, lease=30, delay=0.001) for i, out in enumerate(outs)]
    try:
        st = await _wait_all_done(sm, n, 90)
    finally:
        for p in procs:
            p.terminate()
            p.wait()
    await engine.dispose()
    counts = collections.Counter(_lines(*outs))
    assert st["done"] == n and len(counts) == n
    assert max(counts.values()) == 1, "a job was delivered twice"
    assert all(len(_lines(o)) > 0 for o in outs), "one worker did all the work: claims did not interleave"
