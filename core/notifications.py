"""Go-live alerts, reminders and notices: durable fan-out jobs that become one delivery per Identity.

A ``space.fanout`` job expands its audience page by page into ``notify.deliver`` jobs whose dedupe
keys are derived from the fan-out's own key, so a fan-out that is retried or re-run after a crash
adds nobody twice. Deliveries go through each platform's ``Notifier``, which owns its rate limits.

Super Follows: the host's paying subscribers (a subscription that opens a tier now) hear first. Their
deliveries are queued before everyone else's and due ``SUBSCRIBERS_LEAD`` earlier, so workers, which
claim by due time, send them first; the rest of the audience keeps its usual time. A go-live alert
reaches every paying subscriber, following or not; a reminder or notice only those who asked for it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from core.errors import NotFound
from core.model.space import SpaceState
from core.ports import Delivery, DeliveryResult, NewJob, Notifier, UnitOfWork
from core.scheduler import Job

log = logging.getLogger(__name__)

PAGE = 1000
REMINDER_TEMPLATES = ("space.reminder", "space.host_reminder")
SUBSCRIBERS_LEAD = timedelta(seconds=1)


class FanoutHandler:
    """Handles ``space.fanout`` jobs for the platforms that have a notifier configured."""

    def __init__(self, core: Any, platforms: Iterable[str], page: int = PAGE) -> None:
        self.core = core
        self.platforms = set(platforms)
        self.page = page

    async def __call__(self, job: Job) -> None:
        p = job.payload
        template = p["template"]
        try:
            view = await self.core.view(p["space_id"])
        except NotFound:
            return
        space = view.space
        if template in REMINDER_TEMPLATES and (
            space.state != SpaceState.SCHEDULED
            or (space.scheduled_for.isoformat() if space.scheduled_for else None) != p.get("scheduled_for")
        ):
            return  # started, cancelled or moved since: the reminder no longer applies
        if template == "space.live" and space.state != SpaceState.LIVE:
            return
        if not self.platforms:
            return
        data = {
            "space_id": space.id, "title": space.title, "host_id": space.host_id, "host_name": view.host_name,
            "scheduled_for": p.get("scheduled_for"), "minutes": p.get("minutes", 0),
            "community_id": space.community_id,
        }
        first = await self._paying(p["audience"], space.id, space.host_id)
        for i in range(0, len(first), self.page):
            await self._enqueue(job, template, data, first[i:i + self.page], lead=SUBSCRIBERS_LEAD)
        async for accounts in self._audience(p["audience"], space.id, space.host_id):
            await self._enqueue(job, template, data, accounts)  # a subscriber already queued is skipped
        self.core.wake_jobs()

    async def _paying(self, audience: str, space_id: str, host_id: str) -> list[str]:
        """The host's paying subscribers in this audience (followers' alerts: all of them)."""
        if "followers" not in audience and "subscribers" not in audience:
            return []
        async with self.core.ctx.uow() as uow:
            now = self.core.now()
            paying = sorted({s.account_id for s in await uow.subscriptions.of_creator(host_id) if s.grants(now)})
            if "followers" not in audience:  # a reminder or notice: only those who asked for this Space's
                paying = [a for a in paying if await uow.spaces.has_reminder(space_id, a)]
        return paying

    async def _audience(self, audience: str, space_id: str, host_id: str) -> AsyncIterator[list[str]]:
        """Recipients page by page (keyset pagination, one short transaction each)."""
        if audience == "host":
            yield [host_id]
            return
        sources: list[Callable[[UnitOfWork, str], Awaitable[list[str]]]] = []
        if "followers" in audience:
            sources.append(lambda uow, after: uow.accounts.followers(host_id, after, self.page))
        if audience == "ticket_holders":
            sources.append(lambda uow, after: uow.tickets.holders(space_id, after, self.page))
        if "subscribers" in audience:
            sources.append(lambda uow, after: uow.spaces.reminder_accounts(space_id, after, self.page))
        for fetch in sources:
            after = ""
            while True:
                async with self.core.ctx.uow() as uow:
                    page = await fetch(uow, after)
                if not page:
                    break
                yield page
                after = page[-1]

    async def _enqueue(self, job: Job, template: str, data: dict[str, Any], accounts: list[str],
                       lead: timedelta = timedelta(0)) -> None:
        async with self.core.ctx.uow() as uow:
            idents = await uow.accounts.identities_for(accounts)
            rows = []
            now = self.core.now() - lead
            for i in idents:
                if i.platform not in self.platforms or not i.dm_opt_in or not i.reachable:
                    continue
                key = f"{job.dedupe_key}:{i.platform}:{i.external_id}"
                d = Delivery(platform=i.platform, external_id=i.external_id, template=template,
                             data={**data, "account_id": i.account_id}, dedupe_key=key)
                rows.append(NewJob(kind=f"notify.deliver.{i.platform}", payload=asdict(d), due_at=now,
                                        dedupe_key=key, group_key=f"{data['space_id']}:notices"))
            if rows:
                await uow.jobs.enqueue_many(rows)
            await uow.commit()


class TrackingNotifier:
    """Wraps a platform notifier: a recipient the platform says is gone is marked unreachable."""

    def __init__(self, inner: Notifier, core: Any) -> None:
        self.inner = inner
        self.core = core
        self.platform = inner.platform

    async def deliver(self, delivery: Delivery) -> DeliveryResult:
        result = await self.inner.deliver(delivery)
        if result.status == "unreachable":
            await self.core.set_reachable(delivery.platform, delivery.external_id, False)
        return result


GRACE = {"space.fanout": timedelta(minutes=15), "notify.deliver": timedelta(minutes=30),
         **{f"notify.deliver.{p}": timedelta(minutes=30) for p in ("telegram", "discord", "web")}}
