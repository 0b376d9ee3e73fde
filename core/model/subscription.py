"""Super Follows: a creator's subscription Tiers and an Account's Subscription to one of them.

A Tier is what a creator sells monthly (up to ``MAX_TIERS`` of them, one currency per creator so
tiers compare by price). A Subscription mirrors the provider's subscription (Stripe or Telegram
Stars) as the last provider event said it is. Provider events arrive in any order and more than
once, so every change goes through ``Subscription.apply``, which keeps the newest state and never
lets an older event roll it back.

Who a subscription lets in (``Subscription.grants`` / ``tiers_open``):

- ``active``: until the paid period ends, plus ``GRACE`` (a renewal's news may be late);
- ``past_due`` (a renewal payment failed; the provider retries): the grace period, then nothing;
- ``canceled`` (canceled at period end): until the period ends;
- ``incomplete`` (first payment not made) and ``ended``: nothing.

A downgrade keeps the higher tier until the end of the period already paid for it
(``prior_tier_id`` / ``prior_tier_until``); an upgrade counts at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from core.errors import Invalid

MAX_TIERS = 3
MAX_TIER_NAME = 60
MAX_PERKS = 500
# Telegram's bounds for a Stars subscription's price (createInvoiceLink with subscription_period)
MAX_STARS = 10_000
STARS_PERIOD_S = 2_592_000  # the only period Telegram allows: 30 days
# A renewal that failed keeps access this long after the period it paid for ended (Stripe retries
# the payment meanwhile); the same allowance covers a renewal whose webhook is late.
GRACE = timedelta(days=7)


class SubscriptionStatus(StrEnum):
    INCOMPLETE = "incomplete"  # the first payment has not been made
    ACTIVE = "active"
    PAST_DUE = "past_due"  # a renewal failed; access lasts through the grace period
    CANCELED = "canceled"  # canceled at period end: access until then
    ENDED = "ended"


class SubscriptionProvider(StrEnum):
    STRIPE = "stripe"
    TELEGRAM = "telegram"


# The order in which two states carried by events with the same timestamp are applied: an ended
# subscription is never revived by a same-second event that was generated before it ended.
_TIE_RANK = {SubscriptionStatus.INCOMPLETE: 0, SubscriptionStatus.ACTIVE: 1, SubscriptionStatus.PAST_DUE: 1,
             SubscriptionStatus.CANCELED: 1, SubscriptionStatus.ENDED: 2}


@dataclass
class Tier:
    id: str
    creator_id: str
    name: str
    price_minor: int  # per month, in minor units (cents; Stars for XTR)
    currency: str
    perks: str
    created_at: datetime
    archived: bool = False
    stripe_product: str | None = None
    stripe_price: str | None = None
    stars: int | None = None  # the monthly price in Telegram Stars (XTR) when sold on Telegram too

    @staticmethod
    def validate(name: str, price_minor: int, currency: str, perks: str) -> tuple[str, str, str]:
        """Clean name, currency and perks, or ``Invalid`` naming what is wrong."""
        clean = " ".join(name.split())
        if not 1 <= len(clean) <= MAX_TIER_NAME:
            raise Invalid("tier.name_length", length=len(clean), max=MAX_TIER_NAME)
        if price_minor <= 0:
            raise Invalid("tier.bad_price", price=price_minor)
        cur = currency.strip().upper()
        if len(cur) != 3 or not cur.isalpha():
            raise Invalid("tier.bad_currency", currency=currency)
        text = perks.strip()
        if len(text) > MAX_PERKS:
            raise Invalid("tier.perks_length", length=len(text), max=MAX_PERKS)
        return clean, cur, text


def monthly_price_minor(text: str, currency: str) -> int:
    """A monthly price typed by a person, in major units ("5" or "4.50"; whole Stars for XTR), as
    minor units; ``tier.bad_price`` otherwise. The studio and the chat bots read prices this way (the
    CLI takes minor units)."""
    try:
        value = float(text.strip().replace(",", "."))
    except ValueError:
        raise Invalid("tier.bad_price", price=text) from None
    if not value > 0 or value > 1_000_000:
        raise Invalid("tier.bad_price", price=text)
    return round(value) if currency.strip().upper() == "XTR" else round(value * 100)


@dataclass(frozen=True)
class ProviderState:
    """What one provider event says the subscription is now."""

    status: SubscriptionStatus
    tier_id: str
    current_period_end: datetime | None
    cancel_at_period_end: bool
    first: bool = False  # the provider's "created" event: the first of all, so never newer than one applied


@dataclass
class Subscription:
    id: str
    account_id: str  # the subscriber
    creator_id: str
    tier_id: str
    provider: SubscriptionProvider
    provider_ref: str  # the provider's subscription id
    status: SubscriptionStatus
    current_period_end: datetime | None
    cancel_at_period_end: bool
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None = None
    prior_tier_id: str | None = None  # the higher tier a downgrade left, kept until prior_tier_until
    prior_tier_until: datetime | None = None
    event_at: datetime | None = None  # the newest provider event applied (time, then id)
    event_id: str | None = None

    def grants(self, now: datetime) -> bool:
        """Does this subscription let its subscriber in now (at ``tier_id``)?"""
        end = self.current_period_end
        if self.status in (SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE):
            return end is None or now < end + GRACE
        if self.status == SubscriptionStatus.CANCELED:
            return end is not None and now < end
        return False

    def tiers_open(self, now: datetime) -> set[str]:
        """The tiers this subscription opens now: its own, and a downgrade's former tier until the
        end of the period that was paid for it."""
        if not self.grants(now):
            return set()
        out = {self.tier_id}
        if self.prior_tier_id and self.prior_tier_until and now < self.prior_tier_until:
            out.add(self.prior_tier_id)
        return out

    def is_newer(self, at: datetime, event_id: str, state: ProviderState) -> bool:
        """Is an event at ``at`` newer than the last one applied? A subscription's "created" event comes
        before every other, so it never is once one was applied; other same-second events (Stripe's
        ``created`` time has second resolution) apply unless they would revive an ended subscription."""
        if self.event_at is None:
            return True
        if state.first:
            return False
        if at != self.event_at:
            return at > self.event_at
        return _TIE_RANK[state.status] >= _TIE_RANK[self.status] and event_id != self.event_id

    def apply(self, state: ProviderState, at: datetime, event_id: str, now: datetime,
              price_of: dict[str, int]) -> bool:
        """Take the provider's newer state; False (and nothing changed) for an older event.

        ``price_of``: tier id -> monthly price, to tell a downgrade (keep the old tier until the
        paid period ends) from an upgrade."""
        if not self.is_newer(at, event_id, state):
            return False
        if state.tier_id != self.tier_id:
            old, new = price_of.get(self.tier_id, 0), price_of.get(state.tier_id, 0)
            if new < old and self.grants(now) and self.current_period_end is not None:
                self.prior_tier_id, self.prior_tier_until = self.tier_id, self.current_period_end
            elif new >= old:
                self.prior_tier_id = self.prior_tier_until = None
            self.tier_id = state.tier_id
        status = state.status
        if status == SubscriptionStatus.ACTIVE and state.cancel_at_period_end:
            status = SubscriptionStatus.CANCELED
        if status == SubscriptionStatus.ENDED and self.status != SubscriptionStatus.ENDED:
            self.ended_at = at
        elif status != SubscriptionStatus.ENDED:
            self.ended_at = None
        self.status = status
        if state.current_period_end is not None:
            self.current_period_end = state.current_period_end
        self.cancel_at_period_end = state.cancel_at_period_end
        self.event_at, self.event_id, self.updated_at = at, event_id, now
        return True


@dataclass(frozen=True)
class SubscriberAccess:
    """A Space's rule for subscribers: at or above ``tier_id`` (one of the host's tiers).

    ``early_minutes`` 0: subscribers only. ``early_minutes`` N > 0: subscribers first, everyone
    else from N minutes after the host starts the Space."""

    tier_id: str
    early_minutes: int = 0

    def opens_to_all_at(self, started_at: datetime | None) -> datetime | None:
        """When everyone may join, or None while only subscribers may (subscribers-only, or not
        started yet)."""
        if self.early_minutes <= 0 or started_at is None:
            return None
        return started_at + timedelta(minutes=self.early_minutes)


MAX_EARLY_MINUTES = 24 * 60


class PaymentStatus(StrEnum):
    PAID = "paid"
    FAILED = "failed"  # the provider may still collect it on a retry (then it becomes paid)
    REFUNDED = "refunded"


@dataclass
class SubscriptionPayment:
    """One period's invoice of a subscription, as the provider reported it."""

    provider: SubscriptionProvider
    invoice_ref: str
    subscription_ref: str
    creator_id: str | None
    amount_minor: int
    currency: str
    fee_minor: int
    status: PaymentStatus
    at: datetime
    failures: int = 0
    payment_ref: str | None = None  # what a refund is made against (Stripe: the PaymentIntent)
