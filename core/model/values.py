"""The Space aggregate's value objects and limits: states, roles, visibility, a raised hand, a pin,
ticketing terms, and the checks on a title, topics and a start time (core/model/space.py uses them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from core.errors import Invalid

MAX_COHOSTS = 2
MAX_SPEAKERS = 10
MAX_TITLE = 120
MAX_TOPICS = 3
MAX_TOPIC_LEN = 40
MAX_PINS = 5
MAX_PIN_TITLE = 200
MAX_AHEAD = timedelta(days=30)
MAX_SCHEDULED_PER_HOST = 10
MIN_DISCOUNT, MAX_DISCOUNT = 1, 99  # percent off a ticket for the host's subscribers


class SpaceState(StrEnum):
    SCHEDULED = "scheduled"
    LIVE = "live"
    ENDED = "ended"
    CANCELLED = "cancelled"


class Role(StrEnum):
    HOST = "host"
    COHOST = "cohost"
    SPEAKER = "speaker"
    LISTENER = "listener"


class Visibility(StrEnum):
    PUBLIC = "public"
    UNLISTED = "unlisted"


STAGE_ROLES = (Role.HOST, Role.COHOST, Role.SPEAKER)


@dataclass
class Hand:
    account_id: str
    raised_at: datetime
    # Super Follows: a subscriber of the host's when the hand went up (or when subscriber priority was
    # last turned on); read by the use case, so the Queue can order hands without I/O (core/model/queue.py)
    subscriber: bool = False
    seq: int = 0  # raise order among the hands up (set by the Queue): restores it when priority goes off


@dataclass
class Pin:
    id: str
    title: str
    url: str | None
    message_ref: str | None
    by: str
    at: datetime


@dataclass
class Ticketing:
    """A ticketed Space's terms. Prices are integer minor units (cents; Stars for XTR)."""

    price_minor: int
    currency: str
    capacity: int | None
    sales_start: datetime | None = None
    sales_end: datetime | None = None
    free_tier_id: str | None = None  # Super Follows: the host's subscribers at or above it need no ticket
    discount_tier_id: str | None = None  # Super Follows: the host's subscribers at or above it pay less
    discount_percent: int | None = None  # 1 to 99: how much less (both set, or neither)

    def subscriber_price(self) -> int | None:
        """What a subscriber at or above ``discount_tier_id`` pays: the price less the discount,
        rounded half up, never under one minor unit (one Star); None without a discount."""
        if not self.discount_tier_id or not self.discount_percent:
            return None
        return max(1, (self.price_minor * (100 - self.discount_percent) + 50) // 100)


def validate_title(title: str) -> str:
    t = " ".join(title.split())
    if not 1 <= len(t) <= MAX_TITLE:
        raise Invalid("space.title_length", length=len(t), min=1, max=MAX_TITLE)
    return t


def validate_topics(topics: list[str] | tuple[str, ...]) -> list[str]:
    clean = [" ".join(t.split()) for t in topics if t.strip()]
    if len(clean) > MAX_TOPICS:
        raise Invalid("space.too_many_topics", count=len(clean), max=MAX_TOPICS)
    for t in clean:
        if len(t) > MAX_TOPIC_LEN:
            raise Invalid("space.topic_length", topic=t, max=MAX_TOPIC_LEN)
    return clean


def validate_start(when: datetime, now: datetime) -> datetime:
    if when.tzinfo is None:
        raise Invalid("space.naive_time", hint="give a time zone, e.g. 2026-12-01T18:00+00:00")
    if when <= now:
        raise Invalid("space.start_in_past", start=when.isoformat(), now=now.isoformat())
    if when - now > MAX_AHEAD:
        raise Invalid("space.start_too_far", start=when.isoformat(), max_days=MAX_AHEAD.days)
    return when
