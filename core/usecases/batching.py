"""Helpers the use cases share for speed: group commit of calls that arrive together, and the
per-process cache of who may send hot-path commands to which live Space."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from core import events as ev
from core.errors import DomainError

In = TypeVar("In")
Out = TypeVar("Out")


class GroupCommit(Generic[In, Out]):
    """Collects calls that arrive together and runs them as one batch; one batch in flight at a time.

    On SQLite every statement costs a thread hop and every commit takes the write lock, so a burst
    of 200 listeners joining (or buyers holding seats) costs one transaction instead of 200. ``run``
    returns one result or ``DomainError`` per item, in order; each caller gets its own.
    """

    def __init__(self, run: Callable[[list[In]], Awaitable[Sequence[Out | DomainError]]], max_batch: int = 500) -> None:
        self._run = run
        self.max_batch = max_batch
        self._pending: list[tuple[In, asyncio.Future[Out]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: In) -> Out:
        fut: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
            try:
                results = await self._run([item for item, _ in batch])
            except Exception as e:  # the whole transaction failed: every caller hears why
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (_, fut), result in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(result, DomainError):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)


class AccessCache:
    """Who may send hot-path commands (reactions) to which live Space, remembered per process.

    Filled when a join or a slow-path check succeeds; emptied by the events that take access away
    (here or, through the bus, in another process), and by a TTL as a backstop.
    """

    # bus.gap: another process's events were lost (Redis was away too long), revocations maybe among them
    REVOKING = ("participant.left", "account.blocked", "space.ended", "ticket.changed", "subscription.changed",
                "bus.gap")

    def __init__(self, ttl_s: float = 60.0, max_entries: int = 200_000) -> None:
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._until: dict[tuple[str, str], float] = {}

    def allowed(self, space_id: str, account_id: str, now: float) -> bool:
        until = self._until.get((space_id, account_id))
        if until is None or until < now:
            return False
        self._until[(space_id, account_id)] = now + self.ttl_s
        return True

    def grant(self, space_id: str, account_id: str, now: float | None = None) -> None:
        if len(self._until) >= self.max_entries:
            self._until.clear()
        self._until[(space_id, account_id)] = (time.monotonic() if now is None else now) + self.ttl_s

    def revoke(self, space_id: str, account_id: str) -> None:
        self._until.pop((space_id, account_id), None)

    def revoke_space(self, space_id: str) -> None:
        for key in [k for k in self._until if k[0] == space_id]:
            del self._until[key]

    def on_event(self, event: ev.Event) -> None:
        if event.name == "bus.gap":
            self._until.clear()  # every grant is read again from the database on next use
        elif isinstance(event, ev.SpaceEnded):
            self.revoke_space(event.space_id)
        elif isinstance(event, ev.ParticipantLeft | ev.AccountBlocked):
            self.revoke(event.space_id, event.account_id)
        elif isinstance(event, ev.TicketChanged) and event.status != "paid":
            self.revoke(event.space_id, event.account_id)
        elif isinstance(event, ev.SubscriptionChanged):
            self.revoke(event.space_id, event.account_id)

