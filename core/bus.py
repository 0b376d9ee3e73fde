"""The event bus: domain events from committed commands to adapters and plugins.

In-process by default. ``RedisBus`` keeps the same interface and also carries events between
processes through a Redis stream. It is for UI updates and caches, not durable work (that goes
through jobs): a Redis outage delays events to other processes, and if it outlasts the outbox the
loss is reported (``bus.gap``) rather than silent. Nothing a command does waits on Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from core.events import Event, event_from_dict
from core.redis_support import (
    REDIS_TIMEOUT_S,
    Backoff,
    Outage,
    describe_error,
    redis_client,
    redis_prefix,
    stop_task,
)

__all__ = ["REDIS_TIMEOUT_S", "Backoff", "BusGap", "EventBus", "Handler", "InProcessBus", "Outage", "RedisBus",
           "Subscription", "describe_error", "redis_client", "redis_prefix"]

log = logging.getLogger(__name__)

Handler = Callable[[Event], Awaitable[None]]

READ_BLOCK_MS = 2000  # well under REDIS_TIMEOUT_S: an idle stream is not a dead one
READ_COUNT = 500
WRITE_BATCH = 200


class EventBus(Protocol):
    async def publish(self, events: Sequence[Event]) -> None: ...

    def subscribe(self, handler: Handler, names: Iterable[str] | None = None,
                  max_queue: int = 10_000, *, local_only: bool = False) -> Subscription: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


@dataclass
class Subscription:
    """One subscriber's own queue and worker: a slow adapter never holds up a command."""

    handler: Handler
    names: frozenset[str] | None
    queue: asyncio.Queue[Event]
    # Only events committed in this process: for durable side effects (an audit entry, a job) that must
    # happen once however many processes share the bus. Screens and rooms want every event.
    local_only: bool = False
    dropped: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def wants(self, event: Event) -> bool:
        return self.names is None or event.name in self.names

    def offer(self, event: Event) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.queue.task_done()  # the dropped event counts as handled, or drain() would wait forever
            self.dropped += 1
            if self.dropped in (1, 100) or self.dropped % 10_000 == 0:
                log.warning("event subscriber %r is behind; %d events dropped", self.handler, self.dropped)
        self.queue.put_nowait(event)

    async def run(self) -> None:
        while True:
            event = await self.queue.get()
            try:
                await self.handler(event)
            except Exception:
                log.exception("event handler %r failed on %s", self.handler, event.name)
            finally:
                self.queue.task_done()


class InProcessBus:
    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._started = False

    def subscribe(self, handler: Handler, names: Iterable[str] | None = None,
                  max_queue: int = 10_000, *, local_only: bool = False) -> Subscription:
        sub = Subscription(handler, frozenset(names) if names is not None else None, asyncio.Queue(max_queue),
                           local_only)
        self._subs.append(sub)
        if self._started:
            sub.task = asyncio.create_task(sub.run())
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
        if sub.task:
            sub.task.cancel()

    async def start(self) -> None:
        self._started = True
        for s in self._subs:
            if s.task is None:
                s.task = asyncio.create_task(s.run())

    def deliver_local(self, events: Sequence[Event], *, remote: bool = False) -> None:
        for e in events:
            for s in self._subs:
                if s.wants(e) and not (remote and s.local_only):
                    s.offer(e)

    async def publish(self, events: Sequence[Event]) -> None:
        self.deliver_local(events)

    async def drain(self) -> None:
        """Wait until every subscriber has handled what was published (tests, shutdown)."""
        for s in list(self._subs):
            await s.queue.join()

    async def close(self) -> None:
        for s in self._subs:
            if s.task:
                s.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await s.task
            s.task = None
        self._started = False


@dataclass(frozen=True, kw_only=True)
class BusGap(Event):
    """Events another process committed that never reached this one (lost while Redis was away).

    Delivered locally to every subscriber that takes all events (or names ``bus.gap``): whoever keeps
    a view built from events (a web page, a cache) should read the state afresh."""

    name: ClassVar[str] = "bus.gap"
    origin: str
    lost: int


class RedisBus(InProcessBus):
    """Also carries events between processes, through a Redis stream.

    A stream rather than pub/sub so that a reader that lost Redis for a while resumes where it left
    off. Publishing never waits on Redis: events go to local subscribers at once and into a bounded
    outbox that one task writes to the stream in order; while Redis is away the outbox keeps the
    newest ``buffer`` batches and the rest are reported as lost (a log line here, and a ``bus.gap``
    event in the other processes, which notice the hole in this process's sequence numbers).
    """

    def __init__(self, url: str, channel: str | None = None, *, prefix: str | None = None,
                 buffer: int = 10_000, keep: int = 100_000) -> None:
        super().__init__()
        self.url = url
        self.prefix = redis_prefix(url) if prefix is None else prefix
        self.channel = channel or f"{self.prefix}events"
        self.buffer, self.keep = buffer, keep
        self.origin = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.read_outage, self.write_outage = Outage("event bus (reading)"), Outage("event bus (publishing)")
        self.overflowed = 0  # batches dropped from a full outbox since it last reached Redis
        self._seq = 0
        self._outbox: deque[tuple[int, str]] = deque()
        self._wake = asyncio.Event()
        self._seen: dict[str, int] = {}  # origin -> the last sequence number read from it
        self._redis: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None

    @property
    def healthy(self) -> bool:
        """Whether events cross to the other processes right now (for /readyz)."""
        return self._redis is not None and not (self.read_outage.down or self.write_outage.down)

    @property
    def pending(self) -> int:
        """Batches waiting in the outbox for Redis."""
        return len(self._outbox)

    async def start(self) -> None:
        self._redis = redis_client(self.url)
        await self._redis.ping()  # a Redis that is not there at start is a configuration error
        newest = await self._redis.xrevrange(self.channel, count=1)
        last = newest[0][0] if newest else b"0-0"
        self._reader = asyncio.create_task(self._read(last))
        self._writer = asyncio.create_task(self._write())
        await super().start()

    async def _read(self, last: bytes | str) -> None:
        backoff = Backoff()
        while True:
            try:
                got = await self._redis.xread({self.channel: last}, count=READ_COUNT, block=READ_BLOCK_MS)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # redis errors, OSError, timeouts: all mean "try again later"
                self.read_outage.lost(e)
                await backoff.wait()
                continue
            self.read_outage.back()
            backoff.reset()
            for _stream, entries in got or ():
                for entry_id, fields in entries:
                    last = entry_id
                    self._receive(fields.get(b"d") or fields.get("d"))

    def _receive(self, raw: bytes | str | None) -> None:
        try:
            data = json.loads(raw or "")
            origin, seq = str(data["origin"]), int(data.get("seq", 0))
            if origin == self.origin:
                return
            before = self._seen.get(origin)
            if before is not None and seq <= before:
                return  # written twice (a pipeline cut half-way was written again): seen already
            self._seen[origin] = seq
            if before is not None and seq > before + 1:
                lost = seq - before - 1
                log.warning("%d event batches from process %s were lost while Redis was away; "
                            "subscribers are told to read the state afresh (bus.gap)", lost, origin)
                self.deliver_local([BusGap(origin=origin, lost=lost)], remote=True)
            self.deliver_local([event_from_dict(e) for e in data["events"]], remote=True)
        except Exception:
            log.exception("bad event on %s", self.channel)

    async def publish(self, events: Sequence[Event]) -> None:
        """Never raises and never waits on Redis: the command that made these events has committed."""
        if not events:
            return
        self.deliver_local(events)
        if self._redis is None:
            return
        self._seq += 1
        self._outbox.append((self._seq, json.dumps(
            {"origin": self.origin, "seq": self._seq, "events": [e.to_dict() for e in events]})))
        if len(self._outbox) > self.buffer:
            self._outbox.popleft()  # the oldest goes: the others notice the hole in the sequence
            self.overflowed += 1
            if self.overflowed == 1:
                log.warning("event bus: Redis is away and %d event batches are waiting; older ones are "
                            "being dropped", self.buffer)
        self._wake.set()

    async def _write(self) -> None:
        backoff = Backoff()
        while True:
            if not self._outbox:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = list(itertools.islice(self._outbox, WRITE_BATCH))
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for _seq, payload in batch:
                        pipe.xadd(self.channel, {"d": payload}, maxlen=self.keep, approximate=True)
                    await pipe.execute()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.write_outage.lost(e)
                await backoff.wait()
                continue
            backoff.reset()
            while self._outbox and self._outbox[0][0] <= batch[-1][0]:
                self._outbox.popleft()
            if self.write_outage.down:
                self.write_outage.back()
            if self.overflowed and not self._outbox:
                log.warning("event bus: %d event batches published while Redis was away were lost "
                            "(the outbox holds %d); the other processes were told (bus.gap)",
                            self.overflowed, self.buffer)
                self.overflowed = 0

    async def flush(self, timeout_s: float = 2.0) -> bool:
        """Wait (a little) until the outbox reached Redis; False if it did not in time."""
        deadline = time.monotonic() + timeout_s
        while self._outbox and self._writer is not None and not self._writer.done():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return not self._outbox

    async def close(self) -> None:
        if self._writer is not None and self._outbox:
            left = await self.flush()
            if not left:
                log.warning("event bus: %d event batches never reached Redis before shutdown", len(self._outbox))
        for task in (self._reader, self._writer):
            await stop_task(task)
        self._reader = self._writer = None
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
            self._redis = None
        await super().close()
