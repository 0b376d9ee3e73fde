"""What every use case shares: the store, bus and clock it was given, plugin hooks, and the few
rules more than one use case applies (access to a Space, host facts, the retry loop)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from datetime import datetime, timedelta
from typing import TypeVar

from core import eligibility
from core.bus import EventBus
from core.clock import Clock
from core.errors import Conflict, DomainError, Forbidden
from core.ids import new_id
from core.model.accounts import Actor, Tier
from core.model.community import WEB_COMMUNITY_EXTERNAL_ID, Community
from core.model.space import Space, SpaceState
from core.ports import DuplicateKey, KeyValues, StaleAggregate, Store, UnitOfWork
from core.reactions import ReactionBook
from core.usecases.batching import AccessCache

T = TypeVar("T")

MAX_COMMAND_RETRIES = 8
PLATFORM_KV = "spacebridge"  # the core's own key-value namespace (comments, badges)

# Hooks plugins add through their context (plugins/api.py); the core calls them, never imports them.
Guard = Callable[[Actor, str, str], Awaitable[None]]  # (actor, space_id, action) -> raise to refuse
TextFilter = Callable[[str, str, str], Awaitable[str]]  # (kind: caption|pin|notice|comment, space_id, text)


def access_error(space: Space, account_id: str, blocked: bool, paid: bool, subscribed: bool = False,
                 now: datetime | None = None) -> DomainError | None:
    """Why ``account_id`` may not enter ``space`` now, or None: the one rule every entry point uses.

    ``subscribed``: the account holds a subscription to the host that reaches the Space's tier
    (``Space.subscribers``); a guest (``account_id`` "") never does. ``now``: for a subscribers-first
    Space, whether it has opened to everyone yet."""
    if space.state != SpaceState.LIVE:
        code = "space.ended" if space.state in (SpaceState.ENDED, SpaceState.CANCELLED) else "space.not_live"
        return Conflict(code, space_id=space.id, state=space.state.value)
    if account_id != space.host_id and blocked:
        return Forbidden("space.blocked", space_id=space.id)
    rule = space.subscribers
    if rule is not None and space.role_of(account_id) is None and not subscribed:
        opens = rule.opens_to_all_at(space.started_at)
        if opens is None or now is None or now < opens:
            code = "subscription.sign_in" if not account_id else (
                "subscription.early_access" if opens is not None else "subscription.required")
            return Forbidden(code, space_id=space.id, tier_id=rule.tier_id, host_id=space.host_id,
                             opens_at=opens.isoformat() if opens else None)
    if space.ticketing is not None and space.role_of(account_id) is None and not paid:
        return Forbidden("ticket.required", space_id=space.id, price_minor=space.ticketing.price_minor,
                         currency=space.ticketing.currency)
    return None


def is_instance_admin(web: Community | None, account_id: str) -> bool:
    """The one definition of an instance admin: named among the web community's moderators (the
    first account on a fresh instance becomes one: ``serve``'s first-run link or ``account create
    --admin``). Host rules, the studio and the CLI all ask this."""
    return (web is not None and web.platform == "web" and web.external_id == WEB_COMMUNITY_EXTERNAL_ID
            and account_id in web.settings.moderator_identities)


class Context:
    """One per ``Core``: injected store, bus and clock, and the state the use cases share."""

    def __init__(self, store: Store, bus: EventBus, clock: Clock, *, reaction_rate_per_s: float = 5.0,
                 reaction_burst: int = 10, wake_jobs: Callable[[], None] | None = None,
                 host_grace_s: float = 180.0, speaker_grace_s: float = 60.0,
                 presence_stale_s: float = 30.0) -> None:
        self.store, self.bus, self.clock = store, bus, clock
        # presence: this process's connections carry node_id; a dropped last connection keeps a
        # seat for a grace period; connections not refreshed for presence_stale are dead
        self.node_id = new_id()
        self.host_grace = timedelta(seconds=host_grace_s)
        self.speaker_grace = timedelta(seconds=speaker_grace_s)
        self.presence_stale = timedelta(seconds=presence_stale_s)
        self.owed_disconnects: dict[str, tuple[str, str]] = {}  # connection -> (space, account)
        self.reactions = ReactionBook(reaction_rate_per_s, reaction_burst)
        self.wake_jobs: Callable[[], None] = wake_jobs or (lambda: None)
        self.access = AccessCache()
        self.guards: list[Guard] = []
        self.text_filters: list[TextFilter] = []
        self.kv: KeyValues = store.kv(PLATFORM_KV)

    def now(self) -> datetime:
        return self.clock.now()

    def uow(self) -> UnitOfWork:
        return self.store.unit_of_work()

    async def run(self, fn: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        """Run a command in a fresh unit of work, retrying when another writer won a race."""
        for _ in range(MAX_COMMAND_RETRIES):
            try:
                async with self.uow() as uow:
                    result = await fn(uow)
                    await uow.commit()
            except (StaleAggregate, DuplicateKey):
                continue
            if uow.events:
                await self.bus.publish(uow.events)
            return result
        raise Conflict("space.busy", hint="too many simultaneous changes; try again")

    async def mutate(self, space_id: str, change: Callable[[Space], object]) -> Space:
        """Load the Space, apply one aggregate method, save (the common shape of a stage command)."""
        async def op(uow: UnitOfWork) -> Space:
            space = await uow.spaces.get(space_id)
            change(space)
            await uow.spaces.save(space)
            return space

        return await self.run(op)

    async def guard(self, actor: Actor, space_id: str, action: str) -> None:
        for g in list(self.guards):
            await g(actor, space_id, action)

    async def filter_text(self, kind: str, space_id: str, text: str) -> str:
        for f in list(self.text_filters):
            text = await f(kind, space_id, text)
        return text

    async def check_access(self, uow: UnitOfWork, space: Space, account_id: str) -> None:
        blocked = account_id != space.host_id and await uow.spaces.is_blocked(space.host_id, account_id)
        paid = (space.ticketing is not None and space.role_of(account_id) is None
                and await uow.tickets.has_paid(space.id, account_id))
        free_tier = space.ticketing.free_tier_id if space.ticketing is not None else None
        if free_tier and not paid and account_id and space.role_of(account_id) is None:  # a subscriber's free seat
            paid = bool(await uow.subscriptions.reaching(space.host_id, free_tier, [account_id], self.now()))
        subscribed = (space.subscribers is not None and space.role_of(account_id) is None and bool(
            await uow.subscriptions.reaching(space.host_id, space.subscribers.tier_id, [account_id], self.now())))
        err = access_error(space, account_id, blocked, paid, subscribed, self.now())
        if err is not None:
            raise err

    async def paying(self, uow: UnitOfWork, host_id: str, accounts: Collection[str]) -> set[str]:
        """Which of ``accounts`` hold a subscription to the host that opens one of its tiers now (at or
        above the cheapest, archived ones included; the join token's rule, ``reaching``): the one
        meaning of "the host's subscriber" for the badge and the queue's subscriber priority."""
        if not accounts:
            return set()
        tiers = await uow.subscriptions.tiers_of(host_id, archived=True)
        if not tiers:
            return set()
        cheapest = min(tiers, key=lambda t: t.price_minor)
        return await uow.subscriptions.reaching(host_id, cheapest.id, accounts, self.now())

    async def community_or_web(self, uow: UnitOfWork, community_id: str | None) -> Community:
        if community_id:
            return await uow.communities.get(community_id)
        c = await uow.communities.by_external("web", WEB_COMMUNITY_EXTERNAL_ID)
        return c or Community(id="", platform="web", external_id=WEB_COMMUNITY_EXTERNAL_ID, name="This instance",
                              created_at=self.now())

    async def facts(self, uow: UnitOfWork, actor: Actor, community: Community | None) -> eligibility.HostFacts:
        """What the host rules look at, for the caller in ``community``."""
        account = await uow.accounts.get(actor.account_id)
        is_mod = bool(community and (actor.account_id in community.settings.moderator_identities
                                     or actor.platform_roles & set(community.settings.moderator_roles)))
        if not is_mod:  # the instance's admins may host in every community that lets admins override
            is_mod = is_instance_admin(await uow.communities.by_external("web", WEB_COMMUNITY_EXTERNAL_ID),
                                       actor.account_id)
        return eligibility.HostFacts(
            account_id=actor.account_id,
            followers=await uow.accounts.follower_count(actor.account_id),
            platform_roles=actor.platform_roles,
            paid=account.tier == Tier.PAID,
            attended=await uow.spaces.attended(actor.account_id),
            is_admin=actor.is_admin or is_mod,
        )
