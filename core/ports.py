"""Ports: the narrow Protocols through which the core talks to the world.

Adapters, billing and plugins implement them; the core never imports an implementation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

from core.clock import Clock
from core.events import Event
from core.model.accounts import Account, Identity, LinkCode, Passkey, Tier
from core.model.analytics import Sale, Span
from core.model.community import Community
from core.model.space import Space
from core.model.subscription import Subscription, SubscriptionPayment
from core.model.subscription import Tier as SubTier
from core.model.ticket import PaidTicket, Ticket

if TYPE_CHECKING:  # audio frames are numpy arrays, but the CLI and the web pages never import numpy
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "AudioFrame",
    "AudioTap",
    "AudioTick",
    "Clock",
    "Delivery",
    "DeliveryResult",
    "MediaRoom",
    "Notifier",
    "PaymentGateway",
]

SAMPLE_RATE = 48_000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 960 samples per channel per 20 ms frame


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """20 ms of mono 48 kHz signed 16-bit PCM, stamped with the room's frame counter."""

    seq: int
    pcm: npt.NDArray[np.int16]
    speaker_id: str | None = None  # None for the room mix


@dataclass(frozen=True, slots=True)
class AudioTick:
    """One 20 ms step of a room: the mix and each publishing speaker's own frame, on one clock.

    ``seq`` counts 20 ms steps since the room opened, so ``seq * 0.02`` is a position in time that
    every consumer (captions, recording, timeline) shares.
    """

    seq: int
    mix: npt.NDArray[np.int16]
    speakers: dict[str, npt.NDArray[np.int16]]


class AudioTap(Protocol):
    """The room's audio, for Discord playback, captions and recording.

    Each subscription gets its own bounded queue: a slow consumer loses frames, never the room.
    """

    def mix(self, space_id: str) -> AsyncIterator[AudioFrame]: ...

    def speakers(self, space_id: str) -> AsyncIterator[AudioFrame]: ...

    def ticks(self, space_id: str) -> AsyncIterator[AudioTick]:
        """Every tick, with silence included, so consumers can keep time (recording, captions)."""
        ...

    def opus_packets(self, space_id: str) -> AsyncIterator[tuple[int, bytes]]:
        """The room's single Opus encode as (seq, packet): what listeners receive, unmodified."""
        ...


class MediaRoom(Protocol):
    """What the core asks of a media server: open, close, and silence people at once."""

    async def open(self, space_id: str) -> None: ...

    async def close(self, space_id: str) -> None: ...

    async def set_publishers(self, space_id: str, account_ids: set[str]) -> None:
        """Only these accounts' audio reaches the mix; everyone else is dropped at the server."""
        ...


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message to one Identity, produced by a durable job."""

    platform: str
    external_id: str
    template: str  # e.g. "space.live", "space.reminder"; adapters render it
    data: dict[str, Any] = field(default_factory=dict)
    dedupe_key: str = ""


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What a Notifier reports: sent, retry later, or the recipient can never be reached."""

    status: str  # "sent" | "retry" | "unreachable"
    retry_after_s: float = 0.0
    detail: str = ""


class Notifier(Protocol):
    """Delivers messages on one platform and honours that platform's rate limits."""

    platform: str

    async def deliver(self, delivery: Delivery) -> DeliveryResult: ...


class PaymentGateway(Protocol):
    """One payment provider (Stripe, Telegram Stars) as billing's refund jobs see it."""

    provider: str

    async def refund(self, provider_ref: str, amount_minor: int, idempotency_key: str, reason: str) -> str:
        """Give the money back; returns the provider's refund id. Must be safe to repeat with the
        same key (the job may run twice after a crash)."""
        ...


EventHandler = Callable[[Any], Awaitable[None]]


# ---- storage ports: what the use cases need from a unit of work ---------------------------------
# The SQLAlchemy implementation is core/storage/uow.py; tests/support/fake_uow.py keeps them in memory.


class StaleAggregate(Exception):
    """Someone else saved the aggregate first; the command is retried on fresh state."""


class DuplicateKey(Exception):
    """A row the command meant to create exists already (another writer won the race)."""


@dataclass(frozen=True)
class NewJob:
    """A durable job to add in the caller's transaction (an outbox row)."""

    kind: str
    payload: dict[str, Any]
    due_at: datetime
    dedupe_key: str
    group_key: str | None = None
    max_attempts: int = 8
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class CaptionRecord(Protocol):
    """A stored caption line."""

    @property
    def speaker_id(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def start_s(self) -> float: ...
    @property
    def end_s(self) -> float: ...
    @property
    def at(self) -> datetime: ...


class AwayRecord(Protocol):
    """A seat kept for someone whose last connection dropped."""

    @property
    def space_id(self) -> str: ...
    @property
    def account_id(self) -> str: ...
    @property
    def until(self) -> datetime: ...


class Spaces(Protocol):
    async def get(self, space_id: str) -> Space: ...
    async def add(self, space: Space) -> None: ...
    async def save(self, space: Space) -> None: ...
    async def find(self, *, states: Sequence[str] = (), host_id: str | None = None,
                   community_id: str | None = None, include_unlisted: bool = True,
                   limit: int = 100, title_contains: str = "", newest_first: bool = False) -> list[Space]: ...
    async def count_scheduled(self, host_id: str) -> int: ...
    async def set_present(self, space_id: str, account_id: str, now: datetime) -> bool: ...
    async def set_present_many(self, space_id: str, account_ids: Sequence[str], now: datetime) -> set[str]: ...
    async def blocked_among(self, host_id: str, account_ids: Sequence[str]) -> set[str]: ...
    async def set_absent(self, space_id: str, account_id: str, now: datetime) -> bool: ...
    async def is_present(self, space_id: str, account_id: str) -> bool: ...
    async def present_count(self, space_id: str) -> int: ...
    async def present_accounts(self, space_id: str, limit: int = 1000) -> list[str]: ...
    async def clear_presence(self, space_id: str, now: datetime) -> None: ...
    async def attended(self, account_id: str) -> int: ...
    async def block(self, host_id: str, account_id: str, by: str, reason: str, now: datetime) -> None: ...
    async def unblock(self, host_id: str, account_id: str) -> bool: ...
    async def is_blocked(self, host_id: str, account_id: str) -> bool: ...
    async def set_reminder(self, space_id: str, account_id: str, on: bool, now: datetime) -> bool: ...
    async def add_caption(self, space_id: str, speaker_id: str, text: str, start_s: float, end_s: float,
                          now: datetime) -> None: ...
    async def recent_captions(self, space_id: str, limit: int = 20) -> Sequence[CaptionRecord]: ...
    async def reminder_accounts(self, space_id: str, after: str = "", limit: int = 1000) -> list[str]: ...
    async def has_reminder(self, space_id: str, account_id: str) -> bool: ...


class Accounts(Protocol):
    async def get(self, account_id: str) -> Account: ...
    async def identities_for(self, account_ids: Sequence[str]) -> list[Identity]: ...
    async def followers(self, host: str, after: str = "", limit: int = 1000) -> list[str]: ...
    async def add(self, account: Account) -> None: ...
    async def set_tier(self, account_id: str, tier: Tier) -> None: ...
    async def identity(self, platform: str, external_id: str) -> Identity | None: ...
    async def identities(self, account_id: str) -> list[Identity]: ...
    async def add_identity(self, i: Identity) -> None:
        """Raises ``DuplicateKey`` if that platform user has an identity already."""
        ...
    async def update_identity(self, platform: str, external_id: str, **values: Any) -> None: ...
    async def merge_into(self, source: str, target: str) -> object: ...
    async def follow(self, follower: str, host: str, now: datetime) -> bool: ...
    async def unfollow(self, follower: str, host: str) -> bool: ...
    async def follower_count(self, host: str) -> int: ...
    async def is_following(self, follower: str, host: str) -> bool: ...
    async def add_link_code(self, c: LinkCode) -> None: ...
    async def use_link_code(self, code: str, now: datetime) -> LinkCode | None: ...
    async def payout_account(self, account_id: str) -> str | None:
        """The account's Stripe Connect account (where its ticket sales are paid), if any."""
    async def set_payout_account(self, account_id: str, stripe_account: str) -> None: ...


class Communities(Protocol):
    async def get(self, community_id: str) -> Community: ...
    async def by_external(self, platform: str, external_id: str) -> Community | None: ...
    async def add(self, c: Community) -> None: ...
    async def save_settings(self, c: Community) -> None: ...
    async def all(self) -> list[Community]: ...


class Tickets(Protocol):
    async def has_paid(self, space_id: str, account_id: str) -> bool: ...
    async def mark_refundable(self, space_id: str) -> None: ...
    async def paid_ids(self, space_id: str) -> list[str]: ...
    async def paid_among(self, space_id: str, account_ids: Sequence[str]) -> set[str]: ...
    async def holders(self, space_id: str, after: str = "", limit: int = 1000) -> list[str]: ...


class TicketLedger(Tickets, Protocol):
    """The tickets as billing's ledger keeps them (billing/ledger.py has the rules, this the rows).

    A ticket handed out is the unit of work's own: one id gives one ``Ticket`` object for the whole
    transaction, brought up to date with what was saved each time it is read, and ``save`` writes
    its status, hold end and payment reference back (changes not saved are not seen by queries)."""

    async def lock_space(self, space_id: str) -> bool:
        """Take the Space's ticket lock; True if tickets read before it may be stale (reload them)."""
    async def get(self, ticket_id: str, *, reload: bool = False) -> Ticket | None: ...
    async def get_many(self, ticket_ids: Collection[str]) -> list[Ticket]: ...
    async def seats_taken(self, space_id: str, now: datetime, unreferenced_after: datetime) -> int:
        """Paid tickets and unexpired holds; a Stripe hold without a payment reference counts only if
        it was made after ``unreferenced_after``."""
    async def live_of(self, space_ids: Collection[str], account_ids: Collection[str], *,
                      reload: bool = False) -> list[Ticket]:
        """Held and paid tickets of these accounts in these Spaces."""
    async def in_space(self, space_id: str) -> list[Ticket]: ...
    async def by_ref(self, provider_ref: str) -> list[Ticket]: ...
    async def ref_recorded(self, provider_ref: str) -> bool:
        """Has this payment already become a seat (paid, refunded) or a returned-payment row?"""
    async def paid_of(self, space_id: str, account_id: str) -> PaidTicket | None: ...
    async def add_many(self, tickets: Sequence[Ticket]) -> None: ...
    async def save(self, t: Ticket) -> None: ...
    async def attach_refs(self, refs: Iterable[tuple[str, str]], now: datetime) -> None:
        """Save (ticket id, provider reference) pairs."""
    async def first_times(self, provider: str, events: Iterable[tuple[str, str]], now: datetime) -> set[str]:
        """Record provider event ids (with their kinds); returns those not seen before."""


class Passkeys(Protocol):
    """Web sign-in (spacebridge/web_auth*.py): passkeys, each account's web session epoch (a cookie
    carrying an older one is signed out) and the one-time values a browser has already spent."""

    async def get(self, credential_id: str) -> Passkey | None: ...
    async def for_account(self, account_id: str) -> list[Passkey]:
        """Oldest first, at most ``MAX_PASSKEYS``."""
    async def add(self, p: Passkey) -> None: ...
    async def used(self, credential_id: str, sign_count: int, now: datetime) -> None: ...
    async def epoch(self, account_id: str) -> int: ...
    async def bump_epoch(self, account_id: str) -> int:
        """End every web session of the account: the new epoch, which no existing cookie carries."""
    async def spend(self, value: str, now: datetime, ttl_s: float) -> bool:
        """Record a one-time ``value`` as used (kept ``ttl_s``): True the first time, False after."""


class Analytics(Protocol):
    """What the host's console reports (spacebridge/studio_stats.py): listening stretches, counters
    per Space (reactions, hands, comments) and seats sold."""

    async def open_span(self, space_id: str, account_id: str, at: datetime) -> bool:
        """Start a stretch unless one is already open for them (a second tab is not a second listener)."""
    async def close_spans(self, space_id: str, at: datetime, account_id: str | None = None) -> int:
        """End the open stretch of one person (or of everyone, when the Space ends)."""
    async def bump(self, space_id: str, name: str, by: int = 1) -> None: ...
    async def spans(self, space_id: str, limit: int = 100_000) -> list[Span]: ...
    async def tallies(self, space_id: str) -> dict[str, int]: ...
    async def sales(self, space_id: str, limit: int = 1000) -> list[Sale]:
        """Sold seats (paid, or refunded since), newest first; returned payments are not sales."""


class Connections(Protocol):
    async def connect_many(self, rows: Sequence[tuple[str, str, str]], node: str, now: datetime) -> None: ...
    async def drop(self, conn_id: str) -> tuple[str, str] | None: ...
    async def live_count(self, space_id: str, account_id: str, fresh_since: datetime) -> int: ...
    async def heartbeat(self, node: str, now: datetime, but: Sequence[str] = ()) -> int: ...
    async def sweep(self, stale_before: datetime, limit: int = 1000) -> list[tuple[str, str]]: ...
    async def set_away(self, space_id: str, account_id: str, away_id: str, since: datetime,
                       until: datetime) -> bool: ...
    async def back(self, space_id: str, account_ids: Sequence[str]) -> list[str]: ...
    async def take_away(self, away_id: str) -> AwayRecord | None: ...
    async def away(self, space_id: str) -> Sequence[AwayRecord]: ...


class Jobs(Protocol):
    async def enqueue(self, job: NewJob) -> bool: ...
    async def enqueue_many(self, jobs: Sequence[NewJob]) -> int: ...
    async def cancel_group(self, group_key: str) -> int: ...


@dataclass(frozen=True)
class Card:
    """A chat message that shows a Space (see core/cards.py), and a hash of what it shows."""

    platform: str
    chat_id: str
    message_id: str
    space_id: str
    rendered: str


class Cards(Protocol):
    """Where each chat card lives, so an adapter edits its own messages after a restart."""

    async def add(self, card: Card, now: datetime) -> None:
        """Raises ``DuplicateKey`` if that message is known already."""
        ...
    async def for_space(self, platform: str, space_id: str) -> list[Card]: ...
    async def in_chat(self, platform: str, chat_id: str, space_id: str) -> Card | None: ...
    async def find(self, platform: str, chat_id: str, message_id: str) -> Card | None: ...
    async def open_spaces(self, platform: str) -> list[str]: ...
    async def set_rendered(self, card: Card, rendered: str, now: datetime) -> None: ...
    async def drop(self, card: Card) -> None: ...


@dataclass(frozen=True)
class Job:
    """A claimed job, as its handler sees it."""

    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    due_at: datetime
    dedupe_key: str
    group_key: str | None


@dataclass(frozen=True)
class Retried:
    """A claimed job to run again at ``due_at`` (or to fail, past its attempts), with why."""

    job: Job
    due_at: datetime
    error: str


@dataclass(frozen=True)
class Finished:
    """How many of a batch's retries ran out of attempts, and how many will run again."""

    failed: int = 0
    retried: int = 0


class JobStore(Protocol):
    """The job table as a runner sees it: claim due (or abandoned) jobs with a lease, renew the
    lease, and record outcomes; every write touches only jobs this worker still holds."""

    async def claim(self, kinds: Sequence[str], worker_id: str, now: datetime, lease_until: datetime,
                    limit: int) -> list[Job]: ...
    async def renew(self, worker_id: str, lease_until: datetime) -> None: ...
    async def finish(self, worker_id: str, now: datetime, done: Sequence[int], missed: Sequence[int],
                     retried: Sequence[Retried]) -> Finished: ...


class Subscriptions(Protocol):
    """Super Follows (core/storage/subscriptions.py): creators' tiers, subscriptions as the newest
    provider event left them, and each period's payment."""

    async def add_tier(self, t: SubTier) -> None: ...
    async def tier(self, tier_id: str) -> SubTier | None: ...
    async def tiers_of(self, creator_id: str, *, archived: bool = False) -> list[SubTier]:
        """Cheapest first; archived tiers only when asked."""
    async def tier_by_price(self, stripe_price: str) -> SubTier | None: ...
    async def save_tier(self, t: SubTier) -> None: ...
    async def by_ref(self, provider: str, provider_ref: str, *, for_update: bool = False) -> Subscription | None: ...
    async def add(self, sub: Subscription) -> None: ...
    async def save(self, sub: Subscription) -> None: ...
    async def of_account(self, account_id: str) -> list[Subscription]: ...
    async def of_creator(self, creator_id: str) -> list[Subscription]: ...
    async def reaching(self, creator_id: str, tier_id: str, account_ids: Collection[str],
                       now: datetime) -> set[str]:
        """Which accounts hold a subscription to the creator that opens ``tier_id`` (or a dearer tier) now."""
    async def payment(self, provider: str, invoice_ref: str) -> SubscriptionPayment | None: ...
    async def payment_by_ref(self, provider: str, payment_ref: str) -> SubscriptionPayment | None: ...
    async def put_payment(self, p: SubscriptionPayment) -> None: ...
    async def payments_of(self, subscription_ref: str) -> list[SubscriptionPayment]: ...
    async def creator_payments(self, creator_id: str) -> list[SubscriptionPayment]: ...


class UnitOfWork(Protocol):
    """One transaction: the repositories inside it and the events it produced (published after commit).

    Leaving the ``async with`` without ``commit()`` rolls back; an unreachable store leaves as
    ``core.errors.Unavailable``."""

    events: list[Event]

    @property
    def spaces(self) -> Spaces: ...
    @property
    def accounts(self) -> Accounts: ...
    @property
    def communities(self) -> Communities: ...
    @property
    def tickets(self) -> TicketLedger: ...
    @property
    def subscriptions(self) -> Subscriptions: ...
    @property
    def presence(self) -> Connections: ...
    @property
    def jobs(self) -> Jobs: ...
    @property
    def cards(self) -> Cards: ...
    @property
    def passkeys(self) -> Passkeys: ...
    @property
    def analytics(self) -> Analytics: ...

    async def __aenter__(self) -> Self: ...
    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None: ...
    async def commit(self) -> None: ...
    async def flush(self) -> None: ...
    def emit(self, event: Event) -> None: ...


class KeyValues(Protocol):
    """One namespace of small JSON values under string keys, listed in key order (see core/kv.py)."""

    async def get(self, key: str) -> dict[str, Any] | None: ...
    async def put(self, key: str, value: dict[str, Any]) -> None: ...
    async def delete(self, key: str) -> bool: ...
    async def scan(self, prefix: str = "", *, limit: int = 100,
                   newest_first: bool = False) -> Sequence[KeyValueEntry]: ...


@dataclass(frozen=True)
class KeyValueEntry:
    key: str
    value: dict[str, Any]
    updated_at: datetime


class Store(Protocol):
    """Where the core keeps its state: units of work and key-value namespaces."""

    def unit_of_work(self) -> UnitOfWork: ...

    def kv(self, namespace: str) -> KeyValues: ...
