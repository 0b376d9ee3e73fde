"""Durable reminder delivery: W worker processes drain N jobs that fall due at a steady rate.

    python -m bench.reminders --jobs N --workers W [--rate R] [--database URL] --json

Each job becomes due at ``start + i / R``; a worker records (key, time) for each delivery the
way a notifier would. Lateness is delivery time minus due time. Jobs use the ``bench:`` dedupe
prefix and are deleted afterwards, so a shared database is left as it was.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete

from core.clock import SystemClock
from core.scheduler import Job, JobRunner
from core.storage import jobs, migrate
from core.storage.engine import make_engine, make_sessionmaker, normalize_url

KIND = "bench.remind"


async def _enqueue(url: str, n: int, start: datetime, rate: float) -> None:
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.execute(delete(jobs.JobRow).where(jobs.JobRow.dedupe_key.startswith("bench:")))
    if engine.dialect.name == "postgresql":
        import asyncpg

        raw = await asyncpg.connect(normalize_url(url).replace("postgresql+asyncpg", "postgresql"))
        try:
            created = datetime.now(UTC)
            records = [(KIND, '{}', start + timedelta(seconds=i / rate), f"bench:{i}", "bench", "pending", 0, 3,
                        created) for i in range(n)]
            await raw.copy_records_to_table("jobs", records=records, columns=[
                "kind", "payload", "due_at", "dedupe_key", "group_key", "status", "attempts", "max_attempts",
                "created_at"])
            await raw.execute("ANALYZE jobs")
        finally:
            await raw.close()
    else:
        sm = make_sessionmaker(engine)
        for lo in range(0, n, 20_000):
            async with sm() as s, s.begin():
                await jobs.enqueue_many(s, [jobs.NewJob(KIND, {}, start + timedelta(seconds=i / rate), f"bench:{i}",
                                                        "bench", 3) for i in range(lo, min(n, lo + 20_000))])
    await engine.dispose()


async def _worker(url: str, wid: str, out: str, stop_file: str) -> None:
    engine = make_engine(url, pool_size=4) if "postgres" in url else make_engine(url)
    f = open(out, "w", buffering=1 << 20)

    async def deliver(job: Job) -> None:
        f.write(f"{job.dedupe_key} {time.time():.6f}\n")

    runner = JobRunner(make_sessionmaker(engine), {KIND: deliver}, SystemClock(), worker_id=wid, batch_size=500,
                       concurrency=500, poll_interval_s=0.02, lease_s=60)
    await runner.start()
    while not os.path.exists(stop_file):
        await asyncio.sleep(0.2)
    await runner.stop()
    f.close()
    await engine.dispose()


async def _wait_done(url: str, n: int, deadline: float) -> int:
    engine = make_engine(url)
    sm = make_sessionmaker(engine)
    done = 0
    while time.monotonic() < deadline:
        async with sm() as s:
            st = await jobs.job_stats(s, group_key="bench")
        done = st["done"] + st["failed"] + st["missed"]
        if done >= n:
            break
        await asyncio.sleep(0.5)
    await engine.dispose()
    return done


async def _cleanup(url: str) -> None:
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.execute(delete(jobs.JobRow).where(jobs.JobRow.dedupe_key.startswith("bench:")))
    await engine.dispose()


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def run(url: str, n: int, workers: int, rate: float, lead_s: float) -> dict[str, object]:
    migrate.upgrade(url)
    start = datetime.now(UTC) + timedelta(seconds=lead_s)
    t0 = time.monotonic()
    asyncio.run(_enqueue(url, n, start, rate))
    enqueue_s = time.monotonic() - t0
    if datetime.now(UTC) > start:
        raise SystemExit(f"enqueueing took {enqueue_s:.0f}s, longer than the lead of {lead_s}s: raise --lead")
    with tempfile.TemporaryDirectory() as d:
        stop = str(Path(d) / "stop")
        outs = [str(Path(d) / f"w{i}.txt") for i in range(workers)]
        import subprocess

        procs = [subprocess.Popen([sys.executable, "-m", "bench.reminders", "--_worker", url, f"w{i}", outs[i],
                                   stop]) for i in range(workers)]
        window = n / rate
        done = asyncio.run(_wait_done(url, n, time.monotonic() + lead_s + window * 3 + 120))
        Path(stop).touch()
        for p in procs:
            p.wait(timeout=120)
        seen: dict[str, float] = {}
        delivered = duplicates = 0
        for o in outs:
            for line in Path(o).read_text().splitlines():
                key, ts = line.split()
                delivered += 1
                if key in seen:
                    duplicates += 1
                else:
                    seen[key] = float(ts)
    asyncio.run(_cleanup(url))
    base = start.timestamp()
    lateness = [ts - (base + int(k.split(":")[1]) / rate) for k, ts in seen.items()]
    first_due, last = base, max(seen.values()) if seen else base
    return {
        "jobs": n, "delivered": delivered, "duplicates": duplicates, "lost": n - len(seen),
        "deliveries_per_s": round(len(seen) / max(1e-9, last - first_due), 1),
        "lateness_p50_s": round(_pct(lateness, 50), 3), "lateness_p99_s": round(_pct(lateness, 99), 3),
        "workers": workers, "due_rate_per_s": rate, "backend": url.split(":")[0], "finished": done,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_worker":
        asyncio.run(_worker(*sys.argv[2:6]))
        return
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rate", type=float, default=6000.0, help="jobs falling due per second")
    ap.add_argument("--lead", type=float, default=5.0, help="seconds between enqueueing and the first due time")
    ap.add_argument("--database", default="")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        url = a.database or f"sqlite:///{Path(d) / 'bench.sqlite3'}"
        workers = a.workers if "postgres" in url else 1
        out = run(url, a.jobs, workers, a.rate, a.lead)
    print(json.dumps(out) if a.json else "\n".join(f"{k}: {v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
