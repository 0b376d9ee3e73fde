"""A Space's life: create, start, end, cancel, reschedule, edit; reminders and fan-out as durable jobs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from core import eligibility
from core import events as ev
from core.errors import Conflict, Forbidden, Invalid
from core.model.accounts import Actor
from core.model.community import Community
from core.model.space import MAX_SCHEDULED_PER_HOST, Space, SpaceState, Visibility
from core.ports import NewJob, UnitOfWork
from core.usecases.context import Context

HOST_REMINDER_MIN = 30


class Lifecycle:
    """Use cases that move a Space between scheduled, live, ended and cancelled."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def create_space(self, actor: Actor, title: str, *, start_at: datetime | None = None,
                           topics: Sequence[str] = (), visibility: str = "public",
                           community_id: str | None = None) -> Space:
        """Start now (``start_at`` None) or schedule up to 30 days ahead."""
        try:
            vis = Visibility(visibility)
        except ValueError:
            raise Invalid("space.bad_visibility", given=visibility, allowed=[v.value for v in Visibility]) from None

        async def op(uow: UnitOfWork) -> Space:
            community = await self.ctx.community_or_web(uow, community_id)
            failures = eligibility.check(community.settings.host_rule, await self.ctx.facts(uow, actor, community),
                                         community.settings.admin_override)
            if failures:
                raise Forbidden("eligibility.failed", failures=[f.as_dict() for f in failures])
            now = self.ctx.now()
            space = Space.create(host_id=actor.account_id, title=title, now=now, start_at=start_at,
                                 topics=list(topics), visibility=vis, community_id=community.id or None)
            if start_at is not None and await uow.spaces.count_scheduled(actor.account_id) >= MAX_SCHEDULED_PER_HOST:
                raise Conflict("space.too_many_scheduled", max=MAX_SCHEDULED_PER_HOST)
            if start_at is None:
                space.start(actor.account_id, now)
            await uow.spaces.add(space)
            await uow.spaces.set_present(space.id, actor.account_id, now)
            if start_at is None:
                await self._enqueue_go_live(uow, space)
            else:
                await self._enqueue_reminders(uow, space, community)
            return space

        space = await self.ctx.run(op)
        self.ctx.wake_jobs()
        return space

    async def start_space(self, actor: Actor, space_id: str) -> Space:
        async def op(uow: UnitOfWork) -> Space:
            space = await uow.spaces.get(space_id)
            space.start(actor.account_id, self.ctx.now(), override=actor.is_operator)
            await uow.spaces.save(space)
            await uow.spaces.set_present(space.id, space.host_id, self.ctx.now())
            await uow.jobs.cancel_group(space.id)
            await self._enqueue_go_live(uow, space)
            return space

        space = await self.ctx.run(op)
        self.ctx.wake_jobs()
        return space

    async def end_space(self, actor: Actor, space_id: str) -> Space:
        async def op(uow: UnitOfWork) -> Space:
            space = await uow.spaces.get(space_id)
            space.end(actor.account_id, self.ctx.now(), override=actor.is_operator,
                      reason="operator" if actor.is_operator and actor.account_id != space.host_id else "host_ended")
            await uow.spaces.save(space)
            await uow.spaces.clear_presence(space.id, self.ctx.now())
            return space

        space = await self.ctx.run(op)
        self.ctx.reactions.forget(space_id)
        self.ctx.access.revoke_space(space_id)
        return space

    async def cancel_space(self, actor: Actor, space_id: str) -> Space:
        async def op(uow: UnitOfWork) -> Space:
            space = await uow.spaces.get(space_id)
            space.cancel(actor.account_id, self.ctx.now(), override=actor.is_operator)
            await uow.spaces.save(space)
            await uow.jobs.cancel_group(space.id)
            if space.ticketing is not None:  # refunds are durable jobs, queued with the cancel itself
                paid = await uow.tickets.paid_ids(space.id)
                await uow.jobs.enqueue_many([
                    NewJob("ticket.refund", {"ticket_id": t, "reason": "space_cancelled"}, self.ctx.now(),
                                f"refund:{t}", f"{space.id}:refunds") for t in paid])
            await self._enqueue_fanout(uow, space, "space.cancelled", "subscribers", key="cancelled")
            return space

        space = await self.ctx.run(op)
        self.ctx.wake_jobs()
        return space

    async def reschedule_space(self, actor: Actor, space_id: str, when: datetime) -> Space:
        async def op(uow: UnitOfWork) -> Space:
            space = await uow.spaces.get(space_id)
            space.reschedule(actor.account_id, when, self.ctx.now(), override=actor.is_operator)
            await uow.spaces.save(space)
            community = await self.ctx.community_or_web(uow, space.community_id)
            await uow.jobs.cancel_group(space.id)
            await self._enqueue_reminders(uow, space, community)
            await self._enqueue_fanout(uow, space, "space.rescheduled", "subscribers",
                                       key=f"rescheduled:{when.isoformat()}")
            if space.ticketing is not None:  # holders are told, and may now ask for their money back
                await uow.tickets.mark_refundable(space.id)
                await self._enqueue_fanout(uow, space, "ticket.rescheduled", "ticket_holders",
                                           key=f"rescheduled-tickets:{when.isoformat()}")
            return space

        space = await self.ctx.run(op)
        self.ctx.wake_jobs()
        return space

    async def edit_space(self, actor: Actor, space_id: str, title: str | None = None,
                         topics: list[str] | None = None) -> Space:
        return await self.ctx.mutate(space_id, lambda s: s.edit(actor.account_id, self.ctx.now(), title, topics,
                                                             override=actor.is_operator))

    async def _enqueue_reminders(self, uow: UnitOfWork, space: Space, community: Community) -> None:
        assert space.scheduled_for is not None
        at = space.scheduled_for
        stamp = at.isoformat()
        now = self.ctx.now()
        host_at = at - timedelta(minutes=HOST_REMINDER_MIN)
        if host_at > now:
            await uow.jobs.enqueue(NewJob("space.fanout", {
                "space_id": space.id, "template": "space.host_reminder", "audience": "host",
                "scheduled_for": stamp, "minutes": HOST_REMINDER_MIN,
            }, due_at=host_at, dedupe_key=f"remind:{space.id}:{stamp}:host", group_key=space.id))
        for minutes in [*community.settings.reminder_offsets_min, 0]:
            due = at - timedelta(minutes=minutes)
            if due <= now and minutes:
                continue
            await uow.jobs.enqueue(NewJob("space.fanout", {
                "space_id": space.id, "template": "space.reminder", "audience": "subscribers",
                "scheduled_for": stamp, "minutes": minutes,
            }, due_at=due, dedupe_key=f"remind:{space.id}:{stamp}:{minutes}", group_key=space.id))

    async def _enqueue_go_live(self, uow: UnitOfWork, space: Space) -> None:
        await self._enqueue_fanout(uow, space, "space.live", "followers+subscribers", key="live")

    async def _enqueue_fanout(self, uow: UnitOfWork, space: Space, template: str, audience: str, key: str) -> None:
        await uow.jobs.enqueue(NewJob("space.fanout", {
            "space_id": space.id, "template": template, "audience": audience,
            "scheduled_for": space.scheduled_for.isoformat() if space.scheduled_for else None, "minutes": 0,
        }, due_at=self.ctx.now(), dedupe_key=f"fanout:{space.id}:{key}", group_key=f"{space.id}:notices"))

    async def set_reminder(self, actor: Actor, space_id: str, on: bool = True) -> bool:
        async def op(uow: UnitOfWork) -> bool:
            space = await uow.spaces.get(space_id)
            if space.state != SpaceState.SCHEDULED:
                raise Conflict("reminder.not_scheduled", space_id=space_id, state=space.state.value)
            if await uow.spaces.is_blocked(space.host_id, actor.account_id):
                raise Forbidden("space.blocked", space_id=space_id)
            changed = await uow.spaces.set_reminder(space_id, actor.account_id, on, self.ctx.now())
            if changed:
                uow.emit(ev.ReminderSet(space_id=space_id, account_id=actor.account_id, on=on, at=self.ctx.now()))
            return changed

        return await self.ctx.run(op)
