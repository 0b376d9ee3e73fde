"""An in-memory store implementing core.ports (UnitOfWork, repositories, Jobs, KeyValues), so use
cases (and billing's ledger, the web's sign-in records: tests/support/fake_repos.py) run without a
database in fast unit tests.

Each unit of work works on a deep copy of the state and swaps it in on commit: leaving without a
commit (or raising) changes nothing, as with the SQL store. Space saves check the version.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import TracebackType
from typing import Any

from core.errors import NotFound
from core.events import Event
from core.model.accounts import Account, Identity, LinkCode, Passkey, Tier
from core.model.community import Community
from core.model.space import Space, SpaceState, Visibility
from core.model.subscription import Subscription, SubscriptionPayment
from core.model.subscription import Tier as SubTier
from core.model.ticket import Ticket
from core.ports import Card, DuplicateKey, KeyValueEntry, NewJob, StaleAggregate
from tests.support.fake_repos import FakeAnalytics, FakePasskeys, FakeSubscriptions, FakeTicketLedger, SpanRecord


@dataclass(frozen=True)
class Caption:
    space_id: str
    speaker_id: str
    text: str
    start_s: float
    end_s: float
    at: datetime


@dataclass(frozen=True)
class Away:
    space_id: str
    account_id: str
    away_id: str
    until: datetime


@dataclass
class State:
    spaces: dict[str, Space] = field(default_factory=dict)
    present: dict[str, set[str]] = field(default_factory=dict)  # space -> accounts present
    attended: dict[str, set[str]] = field(default_factory=dict)  # account -> spaces ever joined
    blocks: set[tuple[str, str]] = field(default_factory=set)  # (host, account)
    reminders: set[tuple[str, str]] = field(default_factory=set)
    captions: list[Caption] = field(default_factory=list)
    accounts: dict[str, Account] = field(default_factory=dict)
    identities: dict[tuple[str, str], Identity] = field(default_factory=dict)
    follows: set[tuple[str, str]] = field(default_factory=set)  # (follower, host)
    link_codes: dict[str, LinkCode] = field(default_factory=dict)
    communities: dict[str, Community] = field(default_factory=dict)
    payouts: dict[str, str] = field(default_factory=dict)  # account -> Stripe Connect account
    tickets: dict[str, Ticket] = field(default_factory=dict)  # as saved (tests/support/fake_repos.py)
    refundable: set[str] = field(default_factory=set)  # paid ticket ids the host's change made refundable
    processed_events: set[tuple[str, str]] = field(default_factory=set)  # (provider, event id)
    passkeys: dict[str, Passkey] = field(default_factory=dict)  # credential id -> passkey
    epochs: dict[str, int] = field(default_factory=dict)  # account -> web session epoch
    spent: dict[str, datetime] = field(default_factory=dict)  # digest of a one-time value -> when spent
    spans: list[SpanRecord] = field(default_factory=list)
    tallies: dict[tuple[str, str], int] = field(default_factory=dict)  # (space, name) -> count
    sub_tiers: dict[str, SubTier] = field(default_factory=dict)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    sub_payments: dict[tuple[str, str], SubscriptionPayment] = field(default_factory=dict)  # (provider, invoice)
    connections: dict[str, tuple[str, str, str, datetime]] = field(default_factory=dict)  # id -> sp, acc, node, seen
    away: dict[tuple[str, str], Away] = field(default_factory=dict)
    jobs: dict[str, NewJob] = field(default_factory=dict)  # dedupe key -> job
    cancelled_groups: list[str] = field(default_factory=list)
    kv: dict[tuple[str, str], KeyValueEntry] = field(default_factory=dict)
    cards: dict[tuple[str, str, str], Card] = field(default_factory=dict)  # (platform, chat, message) -> card


class FakeSpaces:
    def __init__(self, st: State) -> None:
        self.st = st
        self.seen: dict[str, Space] = {}

    async def get(self, space_id: str) -> Space:
        if space_id not in self.st.spaces:
            raise NotFound("space.not_found", space_id=space_id)
        space = copy.deepcopy(self.st.spaces[space_id])
        self.seen[space.id] = space
        return space

    async def add(self, space: Space) -> None:
        self.st.spaces[space.id] = copy.deepcopy(space)
        self.seen[space.id] = space

    async def save(self, space: Space) -> None:
        if self.st.spaces[space.id].version != space.version:
            raise StaleAggregate(space.id)
        space.version += 1
        self.st.spaces[space.id] = copy.deepcopy(space)

    async def find(self, *, states: Sequence[str] = (), host_id: str | None = None,
                   community_id: str | None = None, include_unlisted: bool = True, limit: int = 100,
                   title_contains: str = "", newest_first: bool = False) -> list[Space]:
        out = [s for s in self.st.spaces.values() if (not states or s.state.value in states)
               and (host_id is None or s.host_id == host_id)
               and (community_id is None or s.community_id == community_id)
               and (include_unlisted or s.visibility != Visibility.UNLISTED)
               and title_contains.strip().lower() in s.title.lower()]
        if newest_first:
            out.sort(key=lambda s: s.ended_at or s.started_at or s.created_at, reverse=True)
        return copy.deepcopy(out[:limit])

    async def count_scheduled(self, host_id: str) -> int:
        return sum(1 for s in self.st.spaces.values() if s.host_id == host_id and s.state == SpaceState.SCHEDULED)

    async def set_present(self, space_id: str, account_id: str, now: datetime) -> bool:
        return bool(await self.set_present_many(space_id, [account_id], now))

    async def set_present_many(self, space_id: str, account_ids: Sequence[str], now: datetime) -> set[str]:
        here = self.st.present.setdefault(space_id, set())
        new = set(account_ids) - here
        here |= new
        for a in account_ids:
            self.st.attended.setdefault(a, set()).add(space_id)
        return new

    async def blocked_among(self, host_id: str, account_ids: Sequence[str]) -> set[str]:
        return {a for a in account_ids if (host_id, a) in self.st.blocks}

    async def set_absent(self, space_id: str, account_id: str, now: datetime) -> bool:
        here = self.st.present.get(space_id, set())
        if account_id in here:
            here.discard(account_id)
            return True
        return False

    async def is_present(self, space_id: str, account_id: str) -> bool:
        return account_id in self.st.present.get(space_id, set())

    async def present_count(self, space_id: str) -> int:
        return len(self.st.present.get(space_id, set()))

    async def present_accounts(self, space_id: str, limit: int = 1000) -> list[str]:
        return sorted(self.st.present.get(space_id, set()))[:limit]

    async def clear_presence(self, space_id: str, now: datetime) -> None:
        self.st.present.pop(space_id, None)

    async def attended(self, account_id: str) -> int:
        return len(self.st.attended.get(account_id, set()))

    async def block(self, host_id: str, account_id: str, by: str, reason: str, now: datetime) -> None:
        self.st.blocks.add((host_id, account_id))

    async def unblock(self, host_id: str, account_id: str) -> bool:
        had = (host_id, account_id) in self.st.blocks
        self.st.blocks.discard((host_id, account_id))
        return had

    async def is_blocked(self, host_id: str, account_id: str) -> bool:
        return (host_id, account_id) in self.st.blocks

    async def set_reminder(self, space_id: str, account_id: str, on: bool, now: datetime) -> bool:
        had = (space_id, account_id) in self.st.reminders
        (self.st.reminders.add if on else self.st.reminders.discard)((space_id, account_id))
        return had != on

    async def add_caption(self, space_id: str, speaker_id: str, text: str, start_s: float, end_s: float,
                          now: datetime) -> None:
        self.st.captions.append(Caption(space_id, speaker_id, text, start_s, end_s, now))

    async def recent_captions(self, space_id: str, limit: int = 20) -> list[Caption]:
        return [c for c in self.st.captions if c.space_id == space_id][-limit:]

    async def reminder_accounts(self, space_id: str, after: str = "", limit: int = 1000) -> list[str]:
        return sorted(a for s, a in self.st.reminders if s == space_id and a > after)[:limit]

    async def has_reminder(self, space_id: str, account_id: str) -> bool:
        return (space_id, account_id) in self.st.reminders


class FakeAccounts:
    def __init__(self, st: State) -> None:
        self.st = st

    async def get(self, account_id: str) -> Account:
        if account_id not in self.st.accounts:
            raise NotFound("account.not_found", account_id=account_id)
        return self.st.accounts[account_id]

    async def add(self, account: Account) -> None:
        self.st.accounts[account.id] = account

    async def set_tier(self, account_id: str, tier: Tier) -> None:
        self.st.accounts[account_id] = replace(self.st.accounts[account_id], tier=tier)

    async def identity(self, platform: str, external_id: str) -> Identity | None:
        return self.st.identities.get((platform, external_id))

    async def identities(self, account_id: str) -> list[Identity]:
        return [i for i in self.st.identities.values() if i.account_id == account_id]

    async def add_identity(self, i: Identity) -> None:
        if (i.platform, i.external_id) in self.st.identities:
            raise DuplicateKey(f"identity {i.platform}:{i.external_id}")
        self.st.identities[(i.platform, i.external_id)] = i

    async def update_identity(self, platform: str, external_id: str, **values: Any) -> None:
        if (platform, external_id) in self.st.identities:
            self.st.identities[(platform, external_id)] = replace(self.st.identities[(platform, external_id)],
                                                                  **values)

    async def merge_into(self, source: str, target: str) -> object:
        for key, i in list(self.st.identities.items()):
            if i.account_id == source:
                self.st.identities[key] = replace(i, account_id=target)
        self.st.accounts.pop(source, None)
        return None

    async def follow(self, follower: str, host: str, now: datetime) -> bool:
        had = (follower, host) in self.st.follows
        self.st.follows.add((follower, host))
        return not had

    async def unfollow(self, follower: str, host: str) -> bool:
        had = (follower, host) in self.st.follows
        self.st.follows.discard((follower, host))
        return had

    async def follower_count(self, host: str) -> int:
        return sum(1 for _, h in self.st.follows if h == host)

    async def is_following(self, follower: str, host: str) -> bool:
        return (follower, host) in self.st.follows

    async def followers(self, host: str, after: str = "", limit: int = 1000) -> list[str]:
        return sorted(f for f, h in self.st.follows if h == host and f > after)[:limit]

    async def identities_for(self, account_ids: Sequence[str]) -> list[Identity]:
        return [i for i in self.st.identities.values() if i.account_id in set(account_ids)]

    async def add_link_code(self, c: LinkCode) -> None:
        self.st.link_codes[c.code] = c

    async def use_link_code(self, code: str, now: datetime) -> LinkCode | None:
        c = self.st.link_codes.pop(code, None)
        return c if c is not None and c.expires_at > now else None

    async def payout_account(self, account_id: str) -> str | None:
        await self.get(account_id)
        return self.st.payouts.get(account_id)

    async def set_payout_account(self, account_id: str, stripe_account: str) -> None:
        await self.get(account_id)
        self.st.payouts[account_id] = stripe_account


class FakeCommunities:
    def __init__(self, st: State) -> None:
        self.st = st

    async def get(self, community_id: str) -> Community:
        if community_id not in self.st.communities:
            raise NotFound("community.not_found", community_id=community_id)
        return self.st.communities[community_id]

    async def by_external(self, platform: str, external_id: str) -> Community | None:
        return next((c for c in self.st.communities.values()
                     if (c.platform, c.external_id) == (platform, external_id)), None)

    async def add(self, c: Community) -> None:
        self.st.communities[c.id] = c

    async def save_settings(self, c: Community) -> None:
        self.st.communities[c.id] = c

    async def all(self) -> list[Community]:
        return list(self.st.communities.values())


class FakeConnections:
    def __init__(self, st: State) -> None:
        self.st = st

    async def connect_many(self, rows: Sequence[tuple[str, str, str]], node: str, now: datetime) -> None:
        for c, s, a in rows:
            self.st.connections[c] = (s, a, node, now)

    async def drop(self, conn_id: str) -> tuple[str, str] | None:
        row = self.st.connections.pop(conn_id, None)
        return None if row is None else (row[0], row[1])

    async def live_count(self, space_id: str, account_id: str, fresh_since: datetime) -> int:
        return sum(1 for s, a, _, seen in self.st.connections.values()
                   if (s, a) == (space_id, account_id) and seen >= fresh_since)

    async def heartbeat(self, node: str, now: datetime, but: Sequence[str] = ()) -> int:
        mine = [c for c, row in self.st.connections.items() if row[2] == node and c not in but]
        for c in mine:
            s, a, n, _ = self.st.connections[c]
            self.st.connections[c] = (s, a, n, now)
        return len(mine)

    async def sweep(self, stale_before: datetime, limit: int = 1000) -> list[tuple[str, str]]:
        stale = [c for c, row in self.st.connections.items() if row[3] < stale_before][:limit]
        return sorted({(lambda r: (r[0], r[1]))(self.st.connections.pop(c)) for c in stale})

    async def set_away(self, space_id: str, account_id: str, away_id: str, since: datetime,
                       until: datetime) -> bool:
        if (space_id, account_id) in self.st.away:
            return False
        self.st.away[(space_id, account_id)] = Away(space_id, account_id, away_id, until)
        return True

    async def back(self, space_id: str, account_ids: Sequence[str]) -> list[str]:
        return [a for a in account_ids if self.st.away.pop((space_id, a), None) is not None]

    async def away(self, space_id: str) -> list[Away]:
        return [a for (s, _), a in self.st.away.items() if s == space_id]

    async def take_away(self, away_id: str) -> Away | None:
        for key, a in list(self.st.away.items()):
            if a.away_id == away_id:
                return self.st.away.pop(key)
        return None


class FakeJobs:
    def __init__(self, st: State) -> None:
        self.st = st

    async def enqueue(self, job: NewJob) -> bool:
        return await self.enqueue_many([job]) == 1

    async def enqueue_many(self, jobs: Sequence[NewJob]) -> int:
        new = [j for j in jobs if j.dedupe_key not in self.st.jobs]
        self.st.jobs.update((j.dedupe_key, j) for j in new)
        return len(new)

    async def cancel_group(self, group_key: str) -> int:
        gone = [k for k, j in self.st.jobs.items() if j.group_key == group_key]
        for k in gone:
            del self.st.jobs[k]
        self.st.cancelled_groups.append(group_key)
        return len(gone)


class FakeCards:
    def __init__(self, st: State) -> None:
        self.st = st

    async def add(self, card: Card, now: datetime) -> None:
        key = (card.platform, card.chat_id, card.message_id)
        if key in self.st.cards:
            raise DuplicateKey(f"card {key}")
        self.st.cards[key] = card

    async def for_space(self, platform: str, space_id: str) -> list[Card]:
        return [c for c in self.st.cards.values() if c.platform == platform and c.space_id == space_id]

    async def in_chat(self, platform: str, chat_id: str, space_id: str) -> Card | None:
        return next((c for c in await self.for_space(platform, space_id) if c.chat_id == chat_id), None)

    async def find(self, platform: str, chat_id: str, message_id: str) -> Card | None:
        return self.st.cards.get((platform, chat_id, message_id))

    async def open_spaces(self, platform: str) -> list[str]:
        open_ = (SpaceState.SCHEDULED, SpaceState.LIVE)
        return sorted({c.space_id for c in self.st.cards.values() if c.platform == platform
                       and c.space_id in self.st.spaces and self.st.spaces[c.space_id].state in open_})

    async def set_rendered(self, card: Card, rendered: str, now: datetime) -> None:
        key = (card.platform, card.chat_id, card.message_id)
        if key in self.st.cards:
            self.st.cards[key] = replace(self.st.cards[key], rendered=rendered)

    async def drop(self, card: Card) -> None:
        self.st.cards.pop((card.platform, card.chat_id, card.message_id), None)


class FakeUnitOfWork:
    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.events: list[Event] = []

    async def __aenter__(self) -> FakeUnitOfWork:
        self.st = copy.deepcopy(self.store.state)
        self.spaces, self.accounts = FakeSpaces(self.st), FakeAccounts(self.st)
        self.communities, self.tickets = FakeCommunities(self.st), FakeTicketLedger(self.st)
        self.presence, self.jobs = FakeConnections(self.st), FakeJobs(self.st)
        self.cards = FakeCards(self.st)
        self.passkeys, self.analytics = FakePasskeys(self.st), FakeAnalytics(self.st)
        self.subscriptions = FakeSubscriptions(self.st)
        self.events = []
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None

    async def commit(self) -> None:
        self.store.state = self.st
        for space in self.spaces.seen.values():
            self.events.extend(space.pending_events)
            space.pending_events.clear()

    async def flush(self) -> None:
        return None

    def emit(self, event: Event) -> None:
        self.events.append(event)


class FakeKeyValues:
    def __init__(self, store: FakeStore, namespace: str) -> None:
        self.store, self.namespace = store, namespace

    async def get(self, key: str) -> dict[str, Any] | None:
        e = self.store.state.kv.get((self.namespace, key))
        return None if e is None else dict(e.value)

    async def put(self, key: str, value: dict[str, Any]) -> None:
        self.store.state.kv[(self.namespace, key)] = KeyValueEntry(key, dict(value), self.store.clock_now())

    async def delete(self, key: str) -> bool:
        return self.store.state.kv.pop((self.namespace, key), None) is not None

    async def scan(self, prefix: str = "", *, limit: int = 100, newest_first: bool = False) -> list[KeyValueEntry]:
        rows = sorted((e for (ns, k), e in self.store.state.kv.items()
                       if ns == self.namespace and k.startswith(prefix)), key=lambda e: e.key, reverse=newest_first)
        return rows[:limit]


class FakeStore:
    """``core.ports.Store`` in memory: ``Core(FakeStore(), InProcessBus(), FrozenClock())``."""

    def __init__(self) -> None:
        self.state = State()
        self.clock_now: Callable[[], datetime] = lambda: datetime.now().astimezone()

    def unit_of_work(self) -> FakeUnitOfWork:
        return FakeUnitOfWork(self)

    def kv(self, namespace: str) -> FakeKeyValues:
        return FakeKeyValues(self, namespace)
