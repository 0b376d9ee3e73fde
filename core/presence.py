"""Per-person presence that outlives connections: heartbeat, sweep and grace expiry.

A person may have several connections (tabs, a reload racing its old socket, processes). Leaving
is an explicit act (``Core.leave``); a connection that goes away is only ``Core.disconnect``, and
only the person's last one counts. Each process refreshes all its connections in one UPDATE per
heartbeat; connections no process refreshed for ``presence_stale_s`` belonged to a process that
died (SIGKILL, crash, power) and are swept here as disconnects, so counts keep no ghosts. A seat kept
for a grace period is given up by the durable ``presence.expire`` job, which re-checks first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from core.scheduler import Handler, Job
from core.services import EXPIRE_JOB, Core

log = logging.getLogger(__name__)

__all__ = ["EXPIRE_JOB", "PresenceKeeper", "make_expire_handler"]


class PresenceKeeper:
    """This process's side of presence: keep its connections fresh, sweep dead processes' ones."""

    def __init__(self, core: Core, *, heartbeat_s: float = 10.0) -> None:
        self.core = core
        self.heartbeat_s = heartbeat_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="presence")

    async def stop(self) -> None:
        """Stop refreshing. The rows stay: a restart is not a disconnect; if nobody comes back they go
        stale and the next sweep (here after the restart, or in another process) handles them."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def beat(self) -> int:
        """Refresh every connection of this process (one statement); returns how many."""
        async with self.core.ctx.uow() as uow:
            n = await uow.presence.heartbeat(self.core.node_id, self.core.now(),
                                             but=list(self.core.owed_disconnects))
            await uow.commit()
        return n

    async def sweep(self) -> int:
        """Treat connections nobody refreshed as disconnects; returns how many people were affected."""
        async with self.core.ctx.uow() as uow:
            pairs = await uow.presence.sweep(self.core.now() - self.core.presence_stale)
            await uow.commit()
        if pairs:
            log.info("presence: %d connection(s) of stopped processes swept", len(pairs))
            await self.core.forget_connections(pairs)
        return len(pairs)

    async def _loop(self) -> None:
        while True:
            try:
                await self.beat()
                await self.core.retry_disconnects()
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the database is away: try again next beat, say so once per beat
                log.warning("presence heartbeat failed (%s); retrying", e)
            await asyncio.sleep(self.heartbeat_s)


def make_expire_handler(core: Core) -> Handler:
    """``presence.expire``: a kept seat's grace period ran out (idempotent: keyed by the away id)."""

    async def expire(job: Job) -> None:
        away_id = job.payload.get("away_id")
        if isinstance(away_id, str) and away_id:
            await core.expire_away(away_id)

    return expire
