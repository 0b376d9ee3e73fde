"""The platform-neutral Spaces core as one object: a thin facade over the use cases in
``core/usecases/`` (accounts, communities, lifecycle, presence, stage, engagement, queries).

Adapters, plugins and billing call ``Core``'s methods with an ``Actor`` they vouch for; nothing here
knows which platform asked. The store (units of work, key-value namespaces), the bus and the clock
are injected: ``Core.on_database`` for the SQL store, a fake store in the unit tests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

from core import events as ev
from core.bus import EventBus
from core.clock import Clock
from core.model.accounts import Actor
from core.ports import Store, UnitOfWork
from core.reactions import ReactionBook, validate_emoji
from core.usecases.accounts import Accounts
from core.usecases.batching import AccessCache, GroupCommit
from core.usecases.communities import Communities
from core.usecases.context import MAX_COMMAND_RETRIES, Context, Guard, TextFilter, access_error
from core.usecases.engagement import MAX_COMMENT, Engagement
from core.usecases.lifecycle import HOST_REMINDER_MIN, Lifecycle
from core.usecases.memberships import Memberships
from core.usecases.presence import EXPIRE_JOB, JoinResult, Presence
from core.usecases.queries import CARD_CAPTION_LINES, Queries, SharePayload, SpaceView
from core.usecases.stage import Stage

if TYPE_CHECKING:
    from core.storage.engine import Sessions

__all__ = [
    "CARD_CAPTION_LINES", "EXPIRE_JOB", "HOST_REMINDER_MIN", "MAX_COMMAND_RETRIES", "MAX_COMMENT", "AccessCache",
    "Core", "GroupCommit", "Guard", "JoinResult", "SharePayload", "SpaceView", "TextFilter", "access_error",
]

T = TypeVar("T")


class Core:
    """One per process. Every public method is a use case's; see ``core/usecases/`` for the rules."""

    def __init__(self, store: Store | Sessions, bus: EventBus, clock: Clock,
                 *, reaction_rate_per_s: float = 5.0, reaction_burst: int = 10,
                 wake_jobs: Callable[[], None] | None = None, host_grace_s: float = 180.0,
                 speaker_grace_s: float = 60.0, presence_stale_s: float = 30.0) -> None:
        if not hasattr(store, "unit_of_work"):  # a SQLAlchemy sessionmaker (the older way to build one)
            from core.storage.uow import Database
            store = Database(store, clock)
        self.store = cast(Store, store)
        self.ctx = Context(self.store, bus, clock, reaction_rate_per_s=reaction_rate_per_s,
                           reaction_burst=reaction_burst, wake_jobs=wake_jobs, host_grace_s=host_grace_s,
                           speaker_grace_s=speaker_grace_s, presence_stale_s=presence_stale_s)
        bus.subscribe(self._on_event, names=AccessCache.REVOKING)
        # reactions this process tallied itself, until the bus hands them back (see ``react``)
        self._own_reactions: Counter[tuple[str, str, str]] = Counter()
        bus.subscribe(self._on_reaction, names=(ev.ReactionSent.name,))
        c = self.ctx
        self.accounts = a = Accounts(c)
        self.ensure_account, self.create_account, self.account = a.ensure_account, a.create_account, a.account
        self.identities, self.set_tier, self.set_reachable = a.identities, a.set_tier, a.set_reachable
        self.set_dm_opt_in, self.issue_link_code = a.set_dm_opt_in, a.issue_link_code
        self.redeem_link_code, self.follow, self.follower_count = a.redeem_link_code, a.follow, a.follower_count
        self.community_cases = m = Communities(c)
        self.ensure_community, self.web_community, self.community = m.ensure_community, m.web_community, m.community
        self.communities, self.update_community = m.communities, m.update_community
        self.check_host_eligibility, self.set_ticketing = m.check_host_eligibility, m.set_ticketing
        self.is_instance_admin, self.make_instance_admin = m.is_instance_admin, m.make_instance_admin
        self.lifecycle = lc = Lifecycle(c)
        self.create_space, self.start_space, self.end_space = lc.create_space, lc.start_space, lc.end_space
        self.cancel_space, self.reschedule_space = lc.cancel_space, lc.reschedule_space
        self.edit_space, self.set_reminder = lc.edit_space, lc.set_reminder
        self.attendance = p = Presence(c)
        self.join, self.may_join, self.leave, self.disconnect = p.join, p.may_join, p.leave, p.disconnect
        self.retry_disconnects, self.forget_connections = p.retry_disconnects, p.forget_connections
        self.expire_away = p.expire_away
        self.stage = s = Stage(c)
        self.raise_hand, self.lower_hand, self.approve, self.deny = s.raise_hand, s.lower_hand, s.approve, s.deny
        self.clear_queue, self.invite, self.accept_invite = s.clear_queue, s.invite, s.accept_invite
        self.promote, self.demote, self.mute, self.mute_all = s.promote, s.demote, s.mute, s.mute_all
        self.remove, self.unblock, self.set_subscriber_priority = s.remove, s.unblock, s.set_subscriber_priority
        self.engagement = e = Engagement(c)
        self.pin, self.unpin, self.set_captions = e.pin, e.unpin, e.set_captions
        self.add_caption, self.comment, self.recent_comments = e.add_caption, e.comment, e.recent_comments
        self.recent_captions, self.set_badge, self.badges, self.notice = (e.recent_captions, e.set_badge,
                                                                          e.badges, e.notice)
        self.memberships = Memberships(c)  # Super Follows: tiers, subscriber-only Spaces
        self.queries = q = Queries(c, e)
        self.view, self.list_spaces, self.share = q.view, q.list_spaces, q.share

    @classmethod
    def on_database(cls, sessionmaker: Sessions, bus: EventBus, clock: Clock, **options: Any) -> Core:
        """The composition root's constructor: state in the SQL database behind ``sessionmaker``."""
        from core.storage.uow import Database
        return cls(Database(sessionmaker, clock), bus, clock, **options)

    async def _on_event(self, event: ev.Event) -> None:
        self.ctx.access.on_event(event)

    async def react(self, actor: Actor, space_id: str, emoji: str) -> dict[str, int]:
        """``Engagement.react``; the tallies are per process, so reactions taken by another process (a
        second ``serve``, ``spacebridge cmd react``) are counted here when the bus brings them
        (``_on_reaction``), and this process's own, already counted, are remembered so the bus's
        copy of them is not counted twice."""
        key = (space_id, actor.account_id, validate_emoji(emoji))
        self._own_reactions[key] += 1
        try:
            return await self.engagement.react(actor, space_id, emoji)
        except BaseException:
            self._took_back(key)  # refused (or cancelled) before it was published: nothing will come back
            raise

    async def _on_reaction(self, event: ev.Event) -> None:
        if not isinstance(event, ev.ReactionSent):
            return
        key = (event.space_id, event.account_id, event.emoji)
        if self._own_reactions[key]:
            self._took_back(key)
        else:
            self.ctx.reactions.count(event.space_id, event.emoji)

    def _took_back(self, key: tuple[str, str, str]) -> None:
        self._own_reactions[key] -= 1
        if self._own_reactions[key] <= 0:
            del self._own_reactions[key]

    # ---- plumbing others use (billing runs its own commands in the core's unit of work) -----------
    def uow(self) -> UnitOfWork:
        """A fresh unit of work of the store. Callers outside the core (billing, the web's sign-in
        and console) reach storage only through its repositories (``core.ports``), so they run on
        the fake store in unit tests as they do on the database."""
        return self.ctx.uow()

    async def run(self, fn: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        """Run ``fn`` in a fresh unit of work, retried when another writer won; events published after."""
        return await self.ctx.run(fn)

    def now(self) -> datetime:
        return self.ctx.now()

    async def filter_text(self, kind: str, space_id: str, text: str) -> str:
        return await self.ctx.filter_text(kind, space_id, text)

    @property
    def sessionmaker(self) -> Sessions:
        """The database's sessionmaker (plugins' key-value stores and job runners use it)."""
        return cast("Sessions", getattr(self.store, "sessionmaker"))  # noqa: B009 - only the SQL store has one

    @property
    def bus(self) -> EventBus:
        return self.ctx.bus

    @property
    def clock(self) -> Clock:
        return self.ctx.clock

    @property
    def wake_jobs(self) -> Callable[[], None]:
        return self.ctx.wake_jobs

    @wake_jobs.setter
    def wake_jobs(self, wake: Callable[[], None]) -> None:
        self.ctx.wake_jobs = wake

    @property
    def guards(self) -> list[Guard]:
        return self.ctx.guards

    @property
    def text_filters(self) -> list[TextFilter]:
        return self.ctx.text_filters

    @property
    def reactions(self) -> ReactionBook:
        return self.ctx.reactions

    @property
    def node_id(self) -> str:
        return self.ctx.node_id

    @property
    def host_grace(self) -> timedelta:
        return self.ctx.host_grace

    @property
    def speaker_grace(self) -> timedelta:
        return self.ctx.speaker_grace

    @property
    def presence_stale(self) -> timedelta:
        return self.ctx.presence_stale

    @property
    def owed_disconnects(self) -> dict[str, tuple[str, str]]:
        return self.ctx.owed_disconnects
