"""Use cases: one method per command. Each runs in a unit of work, checks the caller's role,
changes the aggregate, commits, then publishes the events it caused.

Adapters call these with an ``Actor`` they vouch for; nothing here knows which platform asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import eligibility
from core import events as ev
from core.bus import EventBus
from core.clock import Clock
from core.errors import Conflict, DomainError, Forbidden, Invalid, NotFound
from core.ids import new_code, new_id
from core.kv import KeyValueStore
from core.model.accounts import LINK_CODE_TTL_S, Account, Actor, Identity, LinkCode, Tier, check_platform
from core.model.community import WEB_COMMUNITY_EXTERNAL_ID, Community, CommunitySettings
from core.model.space import MAX_SCHEDULED_PER_HOST, Role, Space, SpaceState, Ticketing, Visibility
from core.reactions import ReactionBook, validate_emoji
from core.storage import jobs
from core.storage.repositories import StaleAggregate
from core.storage.uow import UnitOfWork

T = TypeVar("T")
In = TypeVar("In")
Out = TypeVar("Out")

HOST_REMINDER_MIN = 30
EXPIRE_JOB = "presence.expire"  # a kept seat's grace period ran out (core/presence.py runs it)
CARD_CAPTION_LINES = 3
MAX_COMMENT = 300

# Hooks plugins add through their context (plugins/api.py); the core calls them, never imports them.
Guard = Callable[[Actor, str, str], Awaitable[None]]  # (actor, space_id, action) -> raise to refuse
TextFilter = Callable[[str, str, str], Awaitable[str]]  # (kind: caption|pin|notice|comment, space_id, text)
MAX_COMMAND_RETRIES = 8


@dataclass(frozen=True)
class SpaceView:
    """What every adapter renders: the Space, how many listen, tallies, recent captions."""

    space: Space
    host_name: str
    listener_count: int
    reactions: dict[str, int]
    names: dict[str, str] = field(default_factory=dict)
    badges: dict[str, str] = field(default_factory=dict)  # source -> text ("recording": "🔴 Recording")
    captions: list[dict[str, Any]] = field(default_factory=list)  # the last few lines while captions are on

    def as_dict(self) -> dict[str, Any]:
        s = self.space
        return {
            "id": s.id, "title": s.title, "state": s.state.value, "host_id": s.host_id, "host_name": self.host_name,
            "community_id": s.community_id, "visibility": s.visibility.value, "topics": s.topics,
            "scheduled_for": s.scheduled_for.isoformat() if s.scheduled_for else None,
            "started_at": s.started_at.isoformat() if s.started_at else None,
            "ended_at": s.ended_at.isoformat() if s.ended_at else None,
            "cohosts": s.cohosts, "speakers": s.speakers, "muted": sorted(s.muted),
            "queue": [h.account_id for h in s.hands],
            "pins": [{"id": p.id, "title": p.title, "url": p.url, "message_ref": p.message_ref} for p in s.pins],
            "captions_enabled": s.captions_enabled, "listener_count": self.listener_count,
            "reactions": self.reactions, "names": self.names, "badges": self.badges,
            "ticketing": None if s.ticketing is None else {
                "price_minor": s.ticketing.price_minor, "currency": s.ticketing.currency,
                "capacity": s.ticketing.capacity},
        }


@dataclass(frozen=True)
class JoinResult:
    space_id: str
    account_id: str
    role: Role
    listener_count: int


@dataclass(frozen=True)
class SharePayload:
    space_id: str
    title: str
    host_name: str
    state: str
    starts_at: datetime | None
    links: dict[str, str]

    def text(self) -> str:
        when = f" starting {self.starts_at:%Y-%m-%d %H:%M} UTC" if self.starts_at and self.state == "scheduled" else ""
        status = "live now" if self.state == "live" else self.state
        lines = [f"🎙 {self.title} — hosted by {self.host_name} ({status}{when})"]
        lines += [f"{p}: {u}" for p, u in sorted(self.links.items())]
        return "\n".join(lines)


def _access_error(space: Space, account_id: str, blocked: bool, paid: bool) -> DomainError | None:
    """Why ``account_id`` may not enter ``space`` now, or None: the one rule every entry point uses."""
    if space.state != SpaceState.LIVE:
        code = "space.ended" if space.state in (SpaceState.ENDED, SpaceState.CANCELLED) else "space.not_live"
        return Conflict(code, space_id=space.id, state=space.state.value)
    if account_id != space.host_id and blocked:
        return Forbidden("space.blocked", space_id=space.id)
    if space.ticketing is not None and space.role_of(account_id) is None and not paid:
        return Forbidden("ticket.required", space_id=space.id, price_minor=space.ticketing.price_minor,
                         currency=space.ticketing.currency)
    return None


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
    REVOKING = ("participant.left", "account.blocked", "space.ended", "ticket.changed", "bus.gap")

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


class Core:
    """The platform-neutral Spaces core, one per process."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], bus: EventBus, clock: Clock,
                 *, reaction_rate_per_s: float = 5.0, reaction_burst: int = 10,
                 wake_jobs: Callable[[], None] | None = None, host_grace_s: float = 180.0,
                 speaker_grace_s: float = 60.0, presence_stale_s: float = 30.0) -> None:
        self.sessionmaker = sessionmaker
        # presence (core/presence.py): this process's connections carry node_id; a dropped last
        # connection keeps a seat for a grace period; connections not refreshed for stale_s are dead
        self.node_id = new_id()
        self.host_grace = timedelta(seconds=host_grace_s)
        self.speaker_grace = timedelta(seconds=speaker_grace_s)
        self.presence_stale = timedelta(seconds=presence_stale_s)
        self.owed_disconnects: dict[str, tuple[str, str]] = {}  # connection -> (space, account)
        self.bus = bus
        self.clock = clock
        self.reactions = ReactionBook(reaction_rate_per_s, reaction_burst)
        self.wake_jobs = wake_jobs or (lambda: None)
        self._access = AccessCache()
        self._joins: GroupCommit[tuple[str, str, str | None], JoinResult] = GroupCommit(self._join_batch)
        bus.subscribe(self._on_event, names=AccessCache.REVOKING)
        self._live: dict[str, float] = {}
        self.guards: list[Guard] = []
        self.text_filters: list[TextFilter] = []
        self._platform_kv = KeyValueStore(sessionmaker, clock, "spacebridge")

    async def _guard(self, actor: Actor, space_id: str, action: str) -> None:
        for g in list(self.guards):
            await g(actor, space_id, action)

    async def filter_text(self, kind: str, space_id: str, text: str) -> str:
        for f in list(self.text_filters):
            text = await f(kind, space_id, text)
        return text

    # ---- plumbing --------------------------------------------------------------------------
    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.sessionmaker)

    async def run(self, fn: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        """Run a command in a fresh unit of work, retrying when another writer won a race."""
        for _ in range(MAX_COMMAND_RETRIES):
            try:
                async with self.uow() as uow:
                    result = await fn(uow)
                    await uow.commit()
            except StaleAggregate:
                continue
            if uow.events:
                await self.bus.publish(uow.events)
            return result
        raise Conflict("space.busy", hint="too many simultaneous changes; try again")

    def now(self) -> datetime:
        return self.clock.now()

    async def _on_event(self, event: ev.Event) -> None:
        self._access.on_event(event)

    # ---- accounts and identities -----------------------------------------------------------
    async def ensure_account(self, platform: str, external_id: str, display_name: str) -> Account:
        """The Account behind a platform user, created on first sight."""
        check_platform(platform)
        if not external_id or len(external_id) > 64:
            raise Invalid("identity.bad_id", platform=platform)
        display_name = (display_name or external_id).strip()[:200]

        async def op(uow: UnitOfWork) -> Account:
            ident = await uow.accounts.identity(platform, external_id)
            if ident is not None:
                return await uow.accounts.get(ident.account_id)
            now = self.now()
            account = Account(id=new_id(), display_name=display_name, created_at=now)
            await uow.accounts.add(account)
            await uow.session.flush()
            await uow.accounts.add_identity(Identity(platform=platform, external_id=external_id,
                                                     account_id=account.id, display_name=display_name,
                                                     created_at=now))
            return account

        try:
            return await self.run(op)
        except IntegrityError:  # two first messages from the same new user at once: the other won
            return await self.run(op)

    async def create_account(self, display_name: str) -> Account:
        name = display_name.strip()
        if not 1 <= len(name) <= 200:
            raise Invalid("account.name_length", max=200)
        return await self.ensure_account("web", new_id(), name)

    async def account(self, account_id: str) -> Account:
        async with self.uow() as uow:
            return await uow.accounts.get(account_id)

    async def identities(self, account_id: str) -> list[Identity]:
        async with self.uow() as uow:
            await uow.accounts.get(account_id)
            return await uow.accounts.identities(account_id)

    async def set_tier(self, actor: Actor, account_id: str, tier: Tier) -> None:
        if not actor.is_operator:
            raise Forbidden("account.operator_required")

        async def op(uow: UnitOfWork) -> None:
            await uow.accounts.get(account_id)
            await uow.accounts.set_tier(account_id, tier)

        await self.run(op)

    async def set_reachable(self, platform: str, external_id: str, reachable: bool) -> None:
        """Adapters report a user who blocked the bot (or came back)."""
        async def op(uow: UnitOfWork) -> None:
            await uow.accounts.update_identity(platform, external_id, reachable=reachable)

        await self.run(op)

    async def set_dm_opt_in(self, actor: Actor, platform: str, external_id: str, on: bool) -> None:
        async def op(uow: UnitOfWork) -> None:
            ident = await uow.accounts.identity(platform, external_id)
            if ident is None or ident.account_id != actor.account_id:
                raise Forbidden("identity.not_yours", platform=platform)
            await uow.accounts.update_identity(platform, external_id, dm_opt_in=on)

        await self.run(op)

    async def issue_link_code(self, actor: Actor) -> LinkCode:
        async def op(uow: UnitOfWork) -> LinkCode:
            await uow.accounts.get(actor.account_id)
            code = LinkCode(code=new_code(), account_id=actor.account_id, issued_on=actor.platform,
                            expires_at=self.now() + timedelta(seconds=LINK_CODE_TTL_S))
            await uow.accounts.add_link_code(code)
            return code

        return await self.run(op)

    async def redeem_link_code(self, actor: Actor, code: str) -> Account:
        """Join the caller's account to the account that issued ``code`` (single use, 10 minutes).

        The issuer's account survives; the caller's is merged into it (``AccountMerge``: everything
        moves, nothing the person had is lost) and its id stops existing.
        """
        if not isinstance(code, str):
            raise Invalid("link.bad_code")
        code = code.strip().upper()
        if not code.isascii() or not code.isalnum() or len(code) > 16:
            raise Invalid("link.bad_code")

        async def op(uow: UnitOfWork) -> Account:
            used = await uow.accounts.use_link_code(code, self.now())
            if used is None:
                raise Invalid("link.code_invalid", hint="codes work once and expire after 10 minutes")
            if used.issued_on == actor.platform:
                raise Invalid("link.same_platform", platform=actor.platform)
            if used.account_id == actor.account_id:
                raise Conflict("link.already_linked")
            target = await uow.accounts.get(used.account_id)
            mine = await uow.accounts.identities(actor.account_id)
            await uow.accounts.merge_into(actor.account_id, target.id)  # logs what it moved
            target = await uow.accounts.get(target.id)
            for i in mine:
                uow.emit(ev.IdentityLinked(account_id=target.id, platform=i.platform, external_id=i.external_id,
                                           at=self.now()))
            return target

        return await self.run(op)

    async def follow(self, actor: Actor, host_id: str, on: bool = True) -> int:
        if host_id == actor.account_id:
            raise Invalid("follow.self")

        async def op(uow: UnitOfWork) -> int:
            await uow.accounts.get(host_id)
            changed = (await uow.accounts.follow(actor.account_id, host_id, self.now()) if on
                       else await uow.accounts.unfollow(actor.account_id, host_id))
            count = await uow.accounts.follower_count(host_id)
            if changed:
                uow.emit(ev.Followed(follower_id=actor.account_id, host_id=host_id, following=on, followers=count,
                                     at=self.now()))
            return count

        return await self.run(op)

    async def follower_count(self, account_id: str) -> int:
        async with self.uow() as uow:
            await uow.accounts.get(account_id)
            return await uow.accounts.follower_count(account_id)

    # ---- communities -----------------------------------------------------------------------
    async def ensure_community(self, platform: str, external_id: str, name: str) -> Community:
        check_platform(platform)

        async def op(uow: UnitOfWork) -> Community:
            c = await uow.communities.by_external(platform, external_id)
            if c is None:
                c = Community(id=new_id(), platform=platform, external_id=external_id, name=name[:200],
                              created_at=self.now())
                await uow.communities.add(c)
            return c

        return await self.run(op)

    async def web_community(self) -> Community:
        return await self.ensure_community("web", WEB_COMMUNITY_EXTERNAL_ID, "This instance")

    async def community(self, community_id: str) -> Community:
        async with self.uow() as uow:
            return await uow.communities.get(community_id)

    async def communities(self) -> list[Community]:
        async with self.uow() as uow:
            return await uow.communities.all()

    async def update_community(self, actor: Actor, community_id: str, changes: dict[str, Any]) -> Community:
        """Community admins change settings; the result is validated whole before it is saved."""
        if not actor.is_admin:
            raise Forbidden("community.admin_required", community_id=community_id)

        async def op(uow: UnitOfWork) -> Community:
            c = await uow.communities.get(community_id)
            merged = {**c.settings.model_dump(mode="json"), **changes}
            try:
                c.settings = CommunitySettings.model_validate(merged)
            except ValueError as e:
                raise Invalid("community.bad_settings", detail=str(e)) from None
            await uow.communities.save_settings(c)
            return c

        return await self.run(op)

    async def _facts(self, uow: UnitOfWork, actor: Actor, community: Community | None) -> eligibility.HostFacts:
        account = await uow.accounts.get(actor.account_id)
        is_mod = bool(community and (actor.account_id in community.settings.moderator_identities
                                     or actor.platform_roles & set(community.settings.moderator_roles)))
        return eligibility.HostFacts(
            account_id=actor.account_id,
            followers=await uow.accounts.follower_count(actor.account_id),
            platform_roles=actor.platform_roles,
            paid=account.tier == Tier.PAID,
            attended=await uow.spaces.attended(actor.account_id),
            is_admin=actor.is_admin or is_mod,
        )

    async def check_host_eligibility(self, actor: Actor, community_id: str | None = None) -> list[eligibility.Failure]:
        async with self.uow() as uow:
            community = await self._community_or_web(uow, community_id)
            facts = await self._facts(uow, actor, community)
            return eligibility.check(community.settings.host_rule, facts, community.settings.admin_override)

    async def _community_or_web(self, uow: UnitOfWork, community_id: str | None) -> Community:
        if community_id:
            return await uow.communities.get(community_id)
        c = await uow.communities.by_external("web", WEB_COMMUNITY_EXTERNAL_ID)
        return c or Community(id="", platform="web", external_id=WEB_COMMUNITY_EXTERNAL_ID, name="This instance",
                              created_at=self.now())

    # ---- lifecycle -------------------------------------------------------------------------
    async def create_space(self, actor: Actor, title: str, *, start_at: datetime | None = None,
                           topics: Sequence[str] = (), visibility: str = "public",
                           community_id: str | None = None) -> Space:
        """Start now (``start_at`` None) or schedule up to 30 days ahead."""
        try:
            vis = Visibility(visibility)
        except ValueError:
            raise Invalid("space.bad_visibility", given=visibility, allowed=[v.value for v in Visibility]) from None

        async def op(uow: UnitOfWork) -> Space:
            community = await self._community_or_web(uow, community_id)
            failures = eligibility.check(community.settings.host_rule, await self._facts(uow, actor, community),
                                         community.settings.admin_override)
            if failures:
                raise Forbidden("eligibility.failed", failures=[f.as_dict() for f in failures])
            now = self.now()
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

        space = await self.run(op)
        self.wake_jobs()
        return space

    async def start_space(self, actor: Actor, space_id: str) -> Space:
        async def op(uow: UnitOfWork) -> Space:
            space = await uow.spaces.get(space_id)
            space.start(actor.account_id, self.now(), override=actor.is_operator)
            await uow.spaces.save(space)
            await uow.spaces.set_present(space.id, space.host_id, self.now())
            await jobs.cancel_group(uow.session, space.id)
            await self._enqueue_go_live(uow, space)
            return space

        space = await self.run(op)
        self.wake_jobs()
        return space

    async def end_space(self, actor: Actor, space_id: str) -> Space:
        async def op(uow: UnitOfWork) -> Space:
            space = await uow.spaces.get(space_id)
            space.end(actor.account_id, self.now(), override=actor.is_operator,
                      reason="operator" if actor.is_operator and actor.account_id != space.host_id else "host_ended")
            await uow.spaces.save(space)
            await uow.spaces.clear_presence(space.id, self.now())
            return space

        space = await self.run(op)
        self.reactions.forget(space_id)
        self._access.revoke_space(space_id)
        return space

    async def cancel_space(self, actor: Actor, space_id: str) -> Space:
        async def op(uow: UnitOfWork) -> Space:
            space = await uow.spaces.get(space_id)
            space.cancel(actor.account_id, self.now(), override=actor.is_operator)
            await uow.spaces.save(space)
            await jobs.cancel_group(uow.session, space.id)
            if space.ticketing is not None:  # refunds are durable jobs, queued with the cancel itself
                paid = await uow.tickets.paid_ids(space.id)
                await jobs.enqueue_many(uow.session, [
                    jobs.NewJob("ticket.refund", {"ticket_id": t, "reason": "space_cancelled"}, self.now(),
                                f"refund:{t}", f"{space.id}:refunds") for t in paid])
            await self._enqueue_fanout(uow, space, "space.cancelled", "subscribers", key="cancelled")
            return space

        space = await self.run(op)
        self.wake_jobs()
        return space

    async def reschedule_space(self, actor: Actor, space_id: str, when: datetime) -> Space:
        async def op(uow: UnitOfWork) -> Space:
            space = await uow.spaces.get(space_id)
            space.reschedule(actor.account_id, when, self.now(), override=actor.is_operator)
            await uow.spaces.save(space)
            community = await self._community_or_web(uow, space.community_id)
            await jobs.cancel_group(uow.session, space.id)
            await self._enqueue_reminders(uow, space, community)
            await self._enqueue_fanout(uow, space, "space.rescheduled", "subscribers",
                                       key=f"rescheduled:{when.isoformat()}")
            if space.ticketing is not None:  # holders are told, and may now ask for their money back
                await uow.tickets.mark_refundable(space.id)
                await self._enqueue_fanout(uow, space, "ticket.rescheduled", "ticket_holders",
                                           key=f"rescheduled-tickets:{when.isoformat()}")
            return space

        space = await self.run(op)
        self.wake_jobs()
        return space

    async def edit_space(self, actor: Actor, space_id: str, title: str | None = None,
                         topics: list[str] | None = None) -> Space:
        return await self._mutate(space_id, lambda s: s.edit(actor.account_id, self.now(), title, topics,
                                                             override=actor.is_operator))

    async def _mutate(self, space_id: str, change: Callable[[Space], object]) -> Space:
        async def op(uow: UnitOfWork) -> Space:
            space = await uow.spaces.get(space_id)
            change(space)
            await uow.spaces.save(space)
            return space

        return await self.run(op)

    # ---- reminders and alerts (durable jobs) -----------------------------------------------
    async def _enqueue_reminders(self, uow: UnitOfWork, space: Space, community: Community) -> None:
        assert space.scheduled_for is not None
        at = space.scheduled_for
        stamp = at.isoformat()
        now = self.now()
        host_at = at - timedelta(minutes=HOST_REMINDER_MIN)
        if host_at > now:
            await jobs.enqueue(uow.session, "space.fanout", {
                "space_id": space.id, "template": "space.host_reminder", "audience": "host",
                "scheduled_for": stamp, "minutes": HOST_REMINDER_MIN,
            }, due_at=host_at, dedupe_key=f"remind:{space.id}:{stamp}:host", group_key=space.id)
        for minutes in [*community.settings.reminder_offsets_min, 0]:
            due = at - timedelta(minutes=minutes)
            if due <= now and minutes:
                continue
            await jobs.enqueue(uow.session, "space.fanout", {
                "space_id": space.id, "template": "space.reminder", "audience": "subscribers",
                "scheduled_for": stamp, "minutes": minutes,
            }, due_at=due, dedupe_key=f"remind:{space.id}:{stamp}:{minutes}", group_key=space.id)

    async def _enqueue_go_live(self, uow: UnitOfWork, space: Space) -> None:
        await self._enqueue_fanout(uow, space, "space.live", "followers+subscribers", key="live")

    async def _enqueue_fanout(self, uow: UnitOfWork, space: Space, template: str, audience: str, key: str) -> None:
        await jobs.enqueue(uow.session, "space.fanout", {
            "space_id": space.id, "template": template, "audience": audience,
            "scheduled_for": space.scheduled_for.isoformat() if space.scheduled_for else None, "minutes": 0,
        }, due_at=self.now(), dedupe_key=f"fanout:{space.id}:{key}", group_key=f"{space.id}:notices")

    async def set_reminder(self, actor: Actor, space_id: str, on: bool = True) -> bool:
        async def op(uow: UnitOfWork) -> bool:
            space = await uow.spaces.get(space_id)
            if space.state != SpaceState.SCHEDULED:
                raise Conflict("reminder.not_scheduled", space_id=space_id, state=space.state.value)
            if await uow.spaces.is_blocked(space.host_id, actor.account_id):
                raise Forbidden("space.blocked", space_id=space_id)
            changed = await uow.spaces.set_reminder(space_id, actor.account_id, on, self.now())
            if changed:
                uow.emit(ev.ReminderSet(space_id=space_id, account_id=actor.account_id, on=on, at=self.now()))
            return changed

        return await self.run(op)

    # ---- presence ----------------------------------------------------------------------------
    async def join(self, actor: Actor, space_id: str, *, connection: str | None = None) -> JoinResult:
        """Enter a live Space. Joins arriving together share one transaction (group commit), and
        each returns only once its own presence is committed.

        ``connection`` (a new id per socket) records a live connection of this process: presence
        then lasts while any of the person's connections does (``disconnect``). Someone who was
        away (their seat kept) is back."""
        return await self._joins.submit((actor.account_id, space_id, connection))

    async def _join_batch(self, batch: list[tuple[str, str, str | None]]) -> list[JoinResult | DomainError]:
        out: list[JoinResult | DomainError | None] = [None] * len(batch)
        by_space: dict[str, list[int]] = {}
        for i, (_, space_id, _conn) in enumerate(batch):
            by_space.setdefault(space_id, []).append(i)
        async with self.uow() as uow:
            now = self.now()
            for space_id, idx in by_space.items():
                try:
                    space = await uow.spaces.get(space_id)
                except DomainError as e:
                    for i in idx:
                        out[i] = e
                    continue
                accounts = list({batch[i][0] for i in idx})
                blocked = await uow.spaces.blocked_among(space.host_id, accounts)
                paid = await uow.tickets.paid_among(space.id, accounts) if space.ticketing else set()
                admitted: list[str] = []
                for i in idx:
                    account = batch[i][0]
                    err = _access_error(space, account, account in blocked, account in paid)
                    if err is None:
                        admitted.append(account)
                    else:
                        out[i] = err
                new = await uow.spaces.set_present_many(space_id, sorted(set(admitted)), now)
                await uow.presence.connect_many([(c, space_id, batch[i][0]) for i in idx
                                                 if out[i] is None and (c := batch[i][2]) is not None],
                                                self.node_id, now)
                back = await uow.presence.back(space_id, sorted(set(admitted)))
                count = await uow.spaces.present_count(space_id) if admitted else 0
                for i in idx:
                    if out[i] is None:
                        account = batch[i][0]
                        role = space.role_of(account) or Role.LISTENER
                        out[i] = JoinResult(space_id, account, role, count)
                        if account in new:
                            new.discard(account)
                            uow.emit(ev.ParticipantJoined(space_id=space_id, account_id=account, role=role.value,
                                                          listener_count=count, at=now))
                        if account in back:
                            back.remove(account)
                            uow.emit(ev.ParticipantBack(space_id=space_id, account_id=account, role=role.value,
                                                        at=now))
            await uow.commit()
        for r in out:
            if isinstance(r, JoinResult):
                self._access.grant(r.space_id, r.account_id)
        if uow.events:
            await self.bus.publish(uow.events)
        return [r for r in out if r is not None]

    async def _check_access(self, uow: UnitOfWork, space: Space, account_id: str) -> None:
        blocked = account_id != space.host_id and await uow.spaces.is_blocked(space.host_id, account_id)
        paid = (space.ticketing is not None and space.role_of(account_id) is None
                and await uow.tickets.has_paid(space.id, account_id))
        err = _access_error(space, account_id, blocked, paid)
        if err is not None:
            raise err

    async def may_join(self, account_id: str, space_id: str) -> None:
        """Raises the same refusal ``join`` would (for adapters that check before connecting)."""
        async with self.uow() as uow:
            await self._check_access(uow, await uow.spaces.get(space_id), account_id)

    async def leave(self, actor: Actor, space_id: str) -> Space:
        async def op(uow: UnitOfWork) -> Space:
            space = await uow.spaces.get(space_id)
            now = self.now()
            before = copy.deepcopy(space)
            space.leave(actor.account_id, now)
            if space != before:  # a listener leaving changes only presence: no write to the Space row,
                await uow.spaces.save(space)  # so a crowd leaving does not queue on its version
            if await uow.spaces.set_absent(space_id, actor.account_id, now):
                await uow.session.flush()
                uow.emit(ev.ParticipantLeft(space_id=space_id, account_id=actor.account_id, reason="left",
                                            listener_count=await uow.spaces.present_count(space_id), at=now))
            if space.state == SpaceState.ENDED:
                await uow.spaces.clear_presence(space_id, now)
            return space

        space = await self.run(op)
        self._access.revoke(space_id, actor.account_id)
        return space

    async def disconnect(self, space_id: str, account_id: str, connection: str) -> None:
        """A connection went away without a ``leave`` (network, reload, crash, a closed tab). Only the
        person's last connection counts: then they are no longer present, and a seat they hold is
        kept for a grace period (``presence.expire`` applies the leave if they are not back)."""
        async def op(uow: UnitOfWork) -> None:
            await uow.presence.drop(connection)
            await self._gone_if_unconnected(uow, space_id, account_id)

        try:
            await self.run(op)
        except Exception:  # the database is away: owed, retried by the presence keeper, never kept fresh
            self.owed_disconnects[connection] = (space_id, account_id)
            raise
        self.owed_disconnects.pop(connection, None)
        self.wake_jobs()

    async def retry_disconnects(self) -> int:
        """Record the disconnects the database missed; returns how many are still owed."""
        for connection, (space_id, account_id) in list(self.owed_disconnects.items()):
            with contextlib.suppress(Exception):
                await self.disconnect(space_id, account_id, connection)
        return len(self.owed_disconnects)

    async def forget_connections(self, pairs: Sequence[tuple[str, str]]) -> None:
        """People whose connections were swept (their process died): each counts as a disconnect."""
        for space_id, account_id in pairs:
            async def op(uow: UnitOfWork, space_id: str = space_id, account_id: str = account_id) -> None:
                await self._gone_if_unconnected(uow, space_id, account_id)

            with contextlib.suppress(NotFound):
                await self.run(op)
        if pairs:
            self.wake_jobs()

    async def _gone_if_unconnected(self, uow: UnitOfWork, space_id: str, account_id: str) -> None:
        now = self.now()
        if await uow.presence.live_count(space_id, account_id, now - self.presence_stale):
            return  # another tab, or the reloaded page, is still (or already again) connected
        try:
            space = await uow.spaces.get(space_id)
        except NotFound:
            return
        if await uow.spaces.set_absent(space_id, account_id, now):
            await uow.session.flush()
            uow.emit(ev.ParticipantLeft(space_id=space_id, account_id=account_id, reason="disconnected",
                                        listener_count=await uow.spaces.present_count(space_id), at=now))
        if space.state != SpaceState.LIVE or not space.holds_seat(account_id):
            return
        role = space.role_of(account_id) or Role.LISTENER
        until = now + (self.host_grace if role == Role.HOST else self.speaker_grace)
        away_id = new_id()
        if await uow.presence.set_away(space_id, account_id, away_id, now, until):
            await jobs.enqueue(uow.session, EXPIRE_JOB, {"space_id": space_id, "account_id": account_id,
                                                         "away_id": away_id},
                               due_at=until, dedupe_key=f"{EXPIRE_JOB}:{away_id}", group_key=f"{space_id}:presence")
            uow.emit(ev.ParticipantAway(space_id=space_id, account_id=account_id, role=role.value, until=until,
                                        at=now))

    async def expire_away(self, away_id: str) -> bool:
        """A grace period ran out: if they are still away, the leave they did not ask for applies now
        (a host hands over to a connected co-host, or the Space ends "host_disconnected"). True if so."""
        async def op(uow: UnitOfWork) -> bool:
            away = await uow.presence.take_away(away_id)
            if away is None:
                return False  # back (or the Space ended) meanwhile
            now = self.now()
            space = await uow.spaces.get(away.space_id)
            if await uow.spaces.is_present(away.space_id, away.account_id):
                # back by a way that did not clear the record (a join racing the disconnect)
                role = space.role_of(away.account_id) or Role.LISTENER
                uow.emit(ev.ParticipantBack(space_id=space.id, account_id=away.account_id, role=role.value, at=now))
                return False
            present = set(await uow.spaces.present_accounts(space.id))
            before = copy.deepcopy(space)
            space.leave(away.account_id, now, reason="host_disconnected", prefer=present)
            if space != before:
                await uow.spaces.save(space)
            if space.state == SpaceState.ENDED:
                await uow.spaces.clear_presence(space.id, now)
            return True

        expired = await self.run(op)
        return expired

    # ---- stage and queue ---------------------------------------------------------------------
    async def raise_hand(self, actor: Actor, space_id: str) -> int:
        await self._guard(actor, space_id, "hand")
        async def op(uow: UnitOfWork) -> int:
            space = await uow.spaces.get(space_id)
            await self._check_access(uow, space, actor.account_id)
            pos = space.raise_hand(actor.account_id, self.now())
            await uow.spaces.save(space)
            await uow.spaces.set_present(space_id, actor.account_id, self.now())
            return pos

        return await self.run(op)

    async def lower_hand(self, actor: Actor, space_id: str) -> Space:
        return await self._mutate(space_id, lambda s: s.lower_hand(actor.account_id, self.now()))

    async def approve(self, actor: Actor, space_id: str, account_id: str) -> Space:
        return await self._mutate(space_id, lambda s: s.approve(actor.account_id, account_id, self.now(),
                                                                override=actor.is_operator))

    async def deny(self, actor: Actor, space_id: str, account_id: str) -> Space:
        return await self._mutate(space_id, lambda s: s.deny(actor.account_id, account_id, self.now(),
                                                             override=actor.is_operator))

    async def clear_queue(self, actor: Actor, space_id: str) -> Space:
        return await self._mutate(space_id, lambda s: s.clear_queue(actor.account_id, self.now(),
                                                                    override=actor.is_operator))

    async def invite(self, actor: Actor, space_id: str, account_id: str) -> Space:
        async def op(uow: UnitOfWork) -> Space:
            space = await uow.spaces.get(space_id)
            await uow.accounts.get(account_id)
            await self._check_access(uow, space, account_id)
            space.invite(actor.account_id, account_id, self.now(), override=actor.is_operator)
            await uow.spaces.save(space)
            return space

        return await self.run(op)

    async def accept_invite(self, actor: Actor, space_id: str) -> Space:
        return await self._mutate(space_id, lambda s: s.accept_invite(actor.account_id, self.now()))

    async def promote(self, actor: Actor, space_id: str, account_id: str, role: str) -> Space:
        try:
            r = Role(role)
        except ValueError:
            raise Invalid("role.bad_target", role=role, allowed=["cohost", "speaker"]) from None

        async def op(uow: UnitOfWork) -> Space:
            space = await uow.spaces.get(space_id)
            await uow.accounts.get(account_id)
            await self._check_access(uow, space, account_id)
            space.promote(actor.account_id, account_id, r, self.now(), override=actor.is_operator)
            await uow.spaces.save(space)
            await uow.spaces.set_present(space_id, account_id, self.now())
            return space

        return await self.run(op)

    async def demote(self, actor: Actor, space_id: str, account_id: str) -> Space:
        return await self._mutate(space_id, lambda s: s.demote(actor.account_id, account_id, self.now(),
                                                               override=actor.is_operator))

    async def mute(self, actor: Actor, space_id: str, account_id: str, muted: bool = True) -> Space:
        if muted:
            return await self._mutate(space_id, lambda s: s.mute(actor.account_id, account_id, self.now(),
                                                                 override=actor.is_operator))
        return await self._mutate(space_id, lambda s: s.unmute(actor.account_id, account_id, self.now(),
                                                               override=actor.is_operator))

    async def mute_all(self, actor: Actor, space_id: str) -> Space:
        return await self._mutate(space_id, lambda s: s.mute_all(actor.account_id, self.now(),
                                                                 override=actor.is_operator))

    async def remove(self, actor: Actor, space_id: str, account_id: str, *, block: bool = False,
                     reason: str = "") -> Space:
        """Remove someone from the Space; with ``block`` they cannot rejoin this host's Spaces."""
        reason = reason.strip()[:500]

        async def op(uow: UnitOfWork) -> Space:
            space = await uow.spaces.get(space_id)
            await uow.accounts.get(account_id)
            now = self.now()
            space.remove(actor.account_id, account_id, now, override=actor.is_operator)
            await uow.spaces.save(space)
            if block:
                await uow.spaces.block(space.host_id, account_id, actor.account_id, reason, now)
                uow.emit(ev.AccountBlocked(space_id=space_id, host_id=space.host_id, account_id=account_id,
                                           by=actor.account_id, reason=reason, at=now))
            if await uow.spaces.set_absent(space_id, account_id, now) or block:
                await uow.session.flush()
                uow.emit(ev.ParticipantLeft(space_id=space_id, account_id=account_id,
                                            reason="blocked" if block else "removed",
                                            listener_count=await uow.spaces.present_count(space_id), at=now,
                                            by=actor.account_id, why=reason))
            return space

        space = await self.run(op)
        self._access.revoke(space_id, account_id)
        return space

    async def unblock(self, actor: Actor, host_id: str, account_id: str) -> bool:
        if actor.account_id != host_id and not actor.is_operator:
            raise Forbidden("role.host_required")

        async def op(uow: UnitOfWork) -> bool:
            return await uow.spaces.unblock(host_id, account_id)

        return await self.run(op)

    # ---- reactions (in memory) ---------------------------------------------------------------
    async def react(self, actor: Actor, space_id: str, emoji: str) -> dict[str, int]:
        """Validate, rate-limit, tally and broadcast; no database write per reaction."""
        emoji = validate_emoji(emoji)
        await self._guard(actor, space_id, "react")
        now = time.monotonic()
        if not self._access.allowed(space_id, actor.account_id, now):
            async with self.uow() as uow:
                await self._check_access(uow, await uow.spaces.get(space_id), actor.account_id)
            self._access.grant(space_id, actor.account_id, now)
        self.reactions.record(space_id, actor.account_id, emoji, now)
        await self.bus.publish([ev.ReactionSent(space_id=space_id, account_id=actor.account_id, emoji=emoji,
                                                at=self.now())])
        return self.reactions.tallies(space_id, 60, now)

    # ---- pins and captions ---------------------------------------------------------------------
    async def pin(self, actor: Actor, space_id: str, title: str, url: str | None = None,
                  message_ref: str | None = None) -> Space:
        title = await self.filter_text("pin", space_id, title)
        return await self._mutate(space_id, lambda s: s.pin(actor.account_id, self.now(), title, url, message_ref,
                                                            override=actor.is_operator))

    async def unpin(self, actor: Actor, space_id: str, pin_id: str) -> Space:
        return await self._mutate(space_id, lambda s: s.unpin(actor.account_id, pin_id, self.now(),
                                                              override=actor.is_operator))

    async def set_captions(self, actor: Actor, space_id: str, enabled: bool) -> Space:
        return await self._mutate(space_id, lambda s: s.set_captions(actor.account_id, enabled, self.now(),
                                                                     override=actor.is_operator))

    async def add_caption(self, space_id: str, speaker_id: str, text: str, start_s: float, end_s: float) -> bool:
        """From the captions plugin: kept for late joiners and broadcast; dropped if captions are off."""
        text = await self.filter_text("caption", space_id, " ".join(text.split())[:1000])
        if not text:
            return False

        async def op(uow: UnitOfWork) -> bool:
            space = await uow.spaces.get(space_id)
            if space.state != SpaceState.LIVE or not space.captions_enabled:
                return False
            await uow.spaces.add_caption(space_id, speaker_id, text, start_s, end_s, self.now())
            uow.emit(ev.CaptionLine(space_id=space_id, speaker_id=speaker_id, text=text, start_s=start_s,
                                    end_s=end_s, at=self.now()))
            return True

        return await self.run(op)

    # ---- comments (text chat in the web room) ---------------------------------------------------
    async def comment(self, actor: Actor, space_id: str, text: str) -> dict[str, Any]:
        """Anyone in a live Space may write; guards (spam limits) and text filters apply first."""
        text = " ".join(str(text).split())
        if not 1 <= len(text) <= MAX_COMMENT:
            raise Invalid("comment.length", length=len(text), max=MAX_COMMENT)
        async with self.uow() as uow:
            space = await uow.spaces.get(space_id)
            if space.state != SpaceState.LIVE:
                raise Conflict("space.not_live", space_id=space_id, state=space.state.value)
            await self._check_access(uow, space, actor.account_id)
            who = (await uow.accounts.get(actor.account_id)).display_name
        await self._guard(actor, space_id, "comment")
        text = await self.filter_text("comment", space_id, text)
        now = self.now()
        line = {"account_id": actor.account_id, "display_name": who, "text": text, "at": now.isoformat()}
        await self._platform_kv.put(f"comment:{space_id}:{int(now.timestamp() * 1_000_000):017d}:"
                                    f"{actor.account_id}", line)
        await self.bus.publish([ev.CommentPosted(space_id=space_id, account_id=actor.account_id, text=text,
                                                 display_name=who, at=now)])
        return line

    async def recent_comments(self, space_id: str, limit: int = 30) -> list[dict[str, Any]]:
        """The last comments, oldest first, for people who join late."""
        rows = await self._platform_kv.scan(f"comment:{space_id}:", limit=limit, newest_first=True)
        return [e.value for e in reversed(rows)]

    async def recent_captions(self, space_id: str, limit: int = 20) -> list[dict[str, Any]]:
        async with self.uow() as uow:
            rows = await uow.spaces.recent_captions(space_id, limit)
            return [{"speaker_id": r.speaker_id, "text": r.text, "start_s": r.start_s, "end_s": r.end_s,
                     "at": r.at.isoformat()} for r in rows]

    # ---- badges and notices (set by plugins, shown by every adapter) -----------------------------
    async def set_badge(self, space_id: str, source: str, text: str | None) -> None:
        """Show (or with None, remove) a status next to the Space everywhere, late joiners included."""
        key = f"badge:{space_id}:{source}"
        if text is None:
            await self._platform_kv.delete(key)
        else:
            await self._platform_kv.put(key, {"text": text[:64]})
        await self.bus.publish([ev.SpaceBadge(space_id=space_id, source=source, text=text, at=self.now())])

    async def badges(self, space_id: str) -> dict[str, str]:
        prefix = f"badge:{space_id}:"
        return {e.key[len(prefix):]: str(e.value.get("text", "")) for e in await self._platform_kv.scan(prefix)}

    async def notice(self, space_id: str, source: str, text: str, *, account_id: str | None = None,
                     kind: str = "info") -> None:
        text = await self.filter_text("notice", space_id, " ".join(text.split())[:500])
        await self.bus.publish([ev.SpaceNotice(space_id=space_id, source=source, text=text, account_id=account_id,
                                               kind=kind, at=self.now())])

    # ---- queries ---------------------------------------------------------------------------------
    async def view(self, space_id: str) -> SpaceView:
        async with self.uow() as uow:
            space = await uow.spaces.get(space_id)
            ids = list({*space.stage, *(h.account_id for h in space.hands)})
            names: dict[str, str] = {}
            for a in ids:
                try:
                    names[a] = (await uow.accounts.get(a)).display_name
                except NotFound:
                    names[a] = a
            count = await uow.spaces.present_count(space_id)
            captions: list[dict[str, Any]] = []
            if space.captions_enabled and space.state == SpaceState.LIVE:
                rows = await uow.spaces.recent_captions(space_id, CARD_CAPTION_LINES)
                captions = [{"speaker_id": r.speaker_id, "text": r.text} for r in rows]
                for r in rows:
                    if r.speaker_id not in names:
                        try:
                            names[r.speaker_id] = (await uow.accounts.get(r.speaker_id)).display_name
                        except NotFound:
                            names[r.speaker_id] = r.speaker_id
        badges = await self.badges(space_id) if space.state == SpaceState.LIVE else {}
        return SpaceView(space=space, host_name=names.get(space.host_id, space.host_id), listener_count=count,
                         reactions=self.reactions.tallies(space_id, 60), names=names, badges=badges,
                         captions=captions)

    async def list_spaces(self, *, states: Sequence[str] = ("live", "scheduled"), host_id: str | None = None,
                          community_id: str | None = None, include_unlisted: bool = True,
                          limit: int = 100) -> list[Space]:
        for s in states:
            if s not in {x.value for x in SpaceState}:
                raise Invalid("space.bad_state", given=s, allowed=[x.value for x in SpaceState])
        async with self.uow() as uow:
            return await uow.spaces.find(states=states, host_id=host_id, community_id=community_id,
                                         include_unlisted=include_unlisted, limit=limit)

    async def share(self, space_id: str, links: dict[str, str]) -> SharePayload:
        view = await self.view(space_id)
        s = view.space
        if s.state in (SpaceState.ENDED, SpaceState.CANCELLED):
            raise Conflict("space.closed", space_id=space_id, state=s.state.value)
        return SharePayload(space_id=s.id, title=s.title, host_name=view.host_name, state=s.state.value,
                            starts_at=s.scheduled_for or s.started_at, links=dict(links))

    async def set_ticketing(self, actor: Actor, space_id: str, ticketing: Ticketing | None) -> Space:
        async def op(uow: UnitOfWork) -> Space:
            space = await uow.spaces.get(space_id)
            if ticketing is not None:
                community = await self._community_or_web(uow, space.community_id)
                if not community.settings.ticketing_allowed and not actor.is_operator:
                    raise Forbidden("ticket.not_allowed_here", community_id=community.id)
                failures = eligibility.check(community.settings.ticketing_rule,
                                             await self._facts(uow, actor, community),
                                             community.settings.admin_override)
                if failures:
                    raise Forbidden("eligibility.failed", failures=[f.as_dict() for f in failures])
            space.set_ticketing(actor.account_id, ticketing, self.now(), override=actor.is_operator)
            await uow.spaces.save(space)
            return space

        return await self.run(op)
