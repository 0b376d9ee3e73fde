"""A job worker in its own process, for crash and concurrency tests.

    python -m tests.integration.jobs.worker_proc DATABASE_URL WORKER_ID OUTFILE [BATCH] [LEASE_S] [DELAY_S]

Each delivery appends its dedupe key to OUTFILE with one write(2): the side effect the world sees.
"""

from __future__ import annotations

import asyncio
import os
import sys

from core.clock import SystemClock
from core.scheduler import Job, JobRunner
from core.storage.engine import make_engine, make_sessionmaker


async def main(url: str, worker_id: str, out: str, batch: int, lease_s: float, delay_s: float) -> None:
    engine = make_engine(url)
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def remind(job: Job) -> None:
        if delay_s:
            await asyncio.sleep(delay_s)
        os.write(fd, f"{job.dedupe_key}\n".encode())

    runner = JobRunner(make_sessionmaker(engine), {"test.remind": remind}, SystemClock(), worker_id=worker_id,
                       batch_size=batch, lease_s=lease_s, poll_interval_s=0.05, concurrency=8)
    await runner.start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    url, wid, out = sys.argv[1:4]
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 50
    lease = float(sys.argv[5]) if len(sys.argv) > 5 else 2.0
    delay = float(sys.argv[6]) if len(sys.argv) > 6 else 0.002
    asyncio.run(main(url, wid, out, batch, lease, delay))
