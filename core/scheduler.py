"""The job runner: claims due jobs with a lease, runs their handlers, retries with backoff.

Several runners (threads of one process or many processes) may share a PostgreSQL job table:
claims use ``FOR UPDATE SKIP LOCKED`` so two never take the same job. On SQLite the engine begins
every transaction with ``BEGIN IMMEDIATE``, which serialises claims the same way for one process.

Delivery is at-least-once: a runner killed mid-batch leaves its jobs leased, and they come back
when the lease expires. Each job is marked done as soon as its handler returns (group-committed with
the jobs that finished alongside it, see ``_Marks``), so a crash repeats only what was done but not
yet marked, never the claimed batch. Deliveries (``notify.deliver.*``: a DM cannot be taken back)
run one after another per runner, each marked before the next is sent: a crash repeats at most one
DM per runner. Their pace is the platform's rate limit anyway (the notifier's limiter books the
interval from the previous send, so the commit in between costs nothing while a send and a commit
take less than the interval; otherwise run more job workers). The dedupe key travels with each job
so receivers that can drop a repeat do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, cast

from core.clock import Clock
from core.errors import Unavailable
from core.ports import Delivery, Job, JobStore, Notifier, Retried

if TYPE_CHECKING:
    from core.storage.engine import Sessions

__all__ = ["Handler", "Job", "JobRunner", "Retry", "Unreachable", "deliver_kind", "make_deliver_handler",
           "make_deliver_handlers"]

log = logging.getLogger(__name__)


class Retry(Exception):
    """Run the job again later (a platform said "slow down", a service is away)."""

    def __init__(self, after_s: float | None = None, reason: str = "") -> None:
        super().__init__(reason or f"retry after {after_s}s")
        self.after_s = after_s


class Unreachable(Exception):
    """The recipient can never be reached (blocked the bot, left): done, not retried."""


Handler = Callable[[Job], Awaitable[None]]
Later = tuple[Job, float | None, str]
Finish = Callable[[list[int], list[Job], list[Later]], Awaitable[None]]


class _Marks:
    """Group-commits a batch's outcomes while the batch runs: each job is marked done (or due again)
    right after its handler returns, in one statement with whatever finished alongside it.

    ``add`` returns a future that resolves once that outcome is committed (or given up on: a failed
    commit leaves those jobs leased, and they come back after the lease, as after a crash).
    """

    def __init__(self, finish: Finish, worker_id: str) -> None:
        self._finish, self._worker_id = finish, worker_id
        self._done: list[int] = []
        self._missed: list[Job] = []
        self._later: list[Later] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, *, done: int | None = None, missed: list[Job] | None = None,
            later: Later | None = None) -> asyncio.Future[None]:
        if done is not None:
            self._done.append(done)
        if missed:
            self._missed.extend(missed)
        if later is not None:
            self._later.append(later)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush(), name=f"jobs:{self._worker_id}:marks")
        return waiter

    async def _flush(self) -> None:
        while self._waiters:
            done, missed, later, waiters = self._done, self._missed, self._later, self._waiters
            self._done, self._missed, self._later, self._waiters = [], [], [], []
            try:
                await self._finish(done, missed, later)
            except Unavailable:  # the database is away (storage says so, once): they run again after their lease
                pass
            except Exception:
                log.exception("job runner %s: could not mark %d jobs; they run again after their lease",
                              self._worker_id, len(done) + len(missed) + len(later))
            finally:
                for w in waiters:
                    if not w.done():
                        w.set_result(None)

    async def close(self) -> None:
        """Wait until every outcome added so far is committed (or given up on)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)


class JobRunner:
    def __init__(self, store: JobStore | Sessions, handlers: Mapping[str, Handler],
                 clock: Clock, *, worker_id: str, batch_size: int = 200, lease_s: float = 60.0,
                 grace: Mapping[str, timedelta] | None = None, default_grace: timedelta = timedelta(minutes=15),
                 poll_interval_s: float = 0.5, concurrency: int = 64, backoff_base_s: float = 2.0,
                 backoff_max_s: float = 900.0, one_at_a_time: Collection[str] = ("notify.deliver",)) -> None:
        if not hasattr(store, "claim"):  # a SQLAlchemy sessionmaker: the job table on that database
            from core.storage.jobs import SqlJobStore
            store = SqlJobStore(store)
        self.store = cast(JobStore, store)
        self.handlers = dict(handlers)
        self.clock = clock
        self.worker_id = worker_id
        self.batch_size = batch_size
        self.lease = timedelta(seconds=lease_s)
        self.grace = dict(grace or {})
        self.default_grace = default_grace
        self.poll_interval_s = poll_interval_s
        self.concurrency = concurrency
        # Kinds (and their ``kind.*`` sub-kinds) whose effect no receiver can drop as a repeat (a DM):
        # run one after another, each marked before the next starts, so a crash repeats at most one.
        self.one_at_a_time = tuple(one_at_a_time)
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.stats = {"done": 0, "retried": 0, "failed": 0, "missed": 0, "unreachable": 0}

    # ---- life --------------------------------------------------------------------------------
    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name=f"jobs:{self.worker_id}")

    async def stop(self) -> None:
        """Finish the batch in hand, then stop (its jobs are marked, none left leased)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                n = await self.run_once()
            except Unavailable:  # the database is away: storage has said so once; no traceback per poll
                n = 0
                await asyncio.sleep(1.0)
            except Exception:
                log.exception("job runner %s: claim failed; retrying", self.worker_id)
                n = 0
                await asyncio.sleep(1.0)
            if n == 0 and not self._stopping:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval_s)

    async def run_until_idle(self, max_rounds: int = 10_000) -> int:
        """Run every job due now (tests, CLI); returns how many ran."""
        total = 0
        for _ in range(max_rounds):
            n = await self.run_once()
            if n == 0:
                break
            total += n
        return total

    # ---- one batch ---------------------------------------------------------------------------
    async def claim(self) -> list[Job]:
        now = self.clock.now()  # only kinds this process can run (processes differ in roles)
        return await self.store.claim(list(self.handlers), self.worker_id, now, now + self.lease, self.batch_size)

    def _one_at_a_time(self, kind: str) -> bool:
        return any(kind == k or kind.startswith(k + ".") for k in self.one_at_a_time)

    async def run_once(self) -> int:
        jobs = await self.claim()
        if not jobs:
            return 0
        jobs.sort(key=lambda j: j.due_at)  # started in due order (a claim's rows come back in any order)
        now = self.clock.now()
        missed = [j for j in jobs if now - j.due_at > self.grace.get(j.kind, self.default_grace)]
        runnable = [j for j in jobs if j not in missed]
        sem = asyncio.Semaphore(self.concurrency)
        serial = asyncio.Lock()
        marks = _Marks(self._finish, self.worker_id)
        if missed:
            marks.add(missed=missed)

        async def run(job: Job) -> asyncio.Future[None]:
            handler = self.handlers.get(job.kind)
            try:
                if handler is None:
                    raise Retry(60.0, f"no handler for {job.kind!r} in this process")
                await handler(job)
                return marks.add(done=job.id)
            except Unreachable:
                self.stats["unreachable"] += 1
                return marks.add(done=job.id)
            except Retry as r:
                return marks.add(later=(job, r.after_s, str(r)))
            except Exception as e:
                log.warning("job %s (%s) failed: %r", job.id, job.kind, e)
                return marks.add(later=(job, None, f"{type(e).__name__}: {e}"[:2000]))

        renewed = [now]

        async def one(job: Job) -> None:
            if self.clock.now() - renewed[0] > self.lease / 2:  # a long batch keeps its lease
                renewed[0] = self.clock.now()
                await self._renew()
            if self._one_at_a_time(job.kind):
                async with serial:  # the next one starts only once this one's outcome is committed
                    await (await run(job))
                return
            async with sem:
                await run(job)

        await asyncio.gather(*(one(j) for j in runnable))
        await marks.close()
        return len(jobs)

    async def _renew(self) -> None:
        """Extend the lease of every job this runner still holds (a batch of DMs paced by the
        platform may outlast one lease; another runner must not take them meanwhile)."""
        try:
            await self.store.renew(self.worker_id, self.clock.now() + self.lease)
        except Unavailable:
            pass
        except Exception:
            log.exception("job runner %s: could not renew its leases", self.worker_id)

    async def _finish(self, done: list[int], missed: list[Job], later: list[Later]) -> None:
        now = self.clock.now()
        retried = []
        for job, after_s, error in later:
            delay = after_s if after_s is not None else min(
                self.backoff_max_s, self.backoff_base_s * 2 ** (job.attempts - 1)) * random.uniform(0.8, 1.2)
            retried.append(Retried(job, now + timedelta(seconds=delay), error))
        outcome = await self.store.finish(self.worker_id, now, done, [j.id for j in missed], retried)
        self.stats["done"] += len(done)
        self.stats["missed"] += len(missed)
        self.stats["failed"] += outcome.failed
        self.stats["retried"] += outcome.retried


def deliver_kind(platform: str) -> str:
    """A delivery's job kind names its platform, so with several processes only one that runs
    that platform's notifier claims it (``JobRunner`` claims only kinds it has handlers for)."""
    return f"notify.deliver.{platform}"


def make_deliver_handlers(notifiers: Mapping[str, Notifier]) -> dict[str, Handler]:
    """One handler per platform this process can deliver to, plus ``notify.deliver`` (jobs queued
    before deliveries named their platform)."""
    handler = make_deliver_handler(notifiers)
    return {"notify.deliver": handler, **{deliver_kind(p): handler for p in notifiers}}


def make_deliver_handler(notifiers: Mapping[str, Notifier]) -> Handler:
    """``notify.deliver.<platform>``: one message to one Identity through its platform's Notifier."""

    async def deliver(job: Job) -> None:
        p = job.payload
        notifier = notifiers.get(p["platform"])
        if notifier is None:
            log.info("no notifier for %s; dropping %s", p["platform"], job.dedupe_key)
            return
        d = Delivery(platform=p["platform"], external_id=p["external_id"], template=p["template"],
                     data=p.get("data") or {}, dedupe_key=p.get("dedupe_key") or job.dedupe_key)
        result = await notifier.deliver(d)
        if result.status == "retry":
            raise Retry(result.retry_after_s, result.detail or "platform asked to retry")
        if result.status == "unreachable":
            raise Unreachable(result.detail)

    return deliver
