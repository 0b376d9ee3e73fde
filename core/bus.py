"""The event bus: domain events from committed commands to adapters and plugins.

In-process by default. ``RedisBus`` keeps the same interface and also carries events between
processes (Redis pub/sub: at-most-once, which is right for UI updates; durable work goes through
jobs, never through the bus).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.events import Event, event_from_dict

log = logging.getLogger(__name__)

Handler = Callable[[Event], Awaitable[None]]


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


class RedisBus(InProcessBus):
    """Publishes every event to a Redis channel and delivers other processes' events locally."""

    def __init__(self, url: str, channel: str = "spacebridge:events") -> None:
        super().__init__()
        self.url, self.channel = url, channel
        self.origin = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._redis: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.from_url(self.url)
        await self._redis.ping()
        self._reader = asyncio.create_task(self._read())
        await asyncio.wait_for(self._ready.wait(), 10)
        await super().start()

    async def _read(self) -> None:
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(self.channel)
        self._ready.set()
        try:
            async for msg in pubsub.listen():
                if msg.get("type") != "message":
                    continue
                try:
                    data = json.loads(msg["data"])
                    if data.get("origin") == self.origin:
                        continue
                    self.deliver_local([event_from_dict(e) for e in data["events"]], remote=True)
                except Exception:
                    log.exception("bad event on %s", self.channel)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        self.deliver_local(events)
        payload = json.dumps({"origin": self.origin, "events": [e.to_dict() for e in events]})
        await self._redis.publish(self.channel, payload)

    async def close(self) -> None:
        if self._reader:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._redis is not None:
            await self._redis.aclose()
        await super().close()
