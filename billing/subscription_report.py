"""A creator's Super Follows figures: subscribers per tier, monthly recurring revenue, churn, failed
payments, and money in the provider's terms (as billing/ledger.py's ticket report).

- ``active``: subscriptions that open their tier now (active, past_due within its grace, canceled
  but paid until the period ends);
- ``mrr_minor``: the monthly price of those that will renew (active and past_due; a subscription
  canceled at period end brings nothing next month);
- ``churned_30d`` / ``churn_rate``: subscriptions that ended in the last 30 days (or ran out with
  time alone: a Telegram Stars renewal that never came, past its grace), and that number
  over those plus the active ones;
- ``failed_payments_30d``: renewal attempts that failed in the last 30 days (each retry counts);
- ``gross_minor`` every period paid, ``refunded_minor`` what the creator gave back, ``fees_minor``
  the platform's fees kept, ``net_minor`` what the creator keeps (in the tiers' currency);
- ``stars_gross`` / ``stars_refunded`` / ``stars_fees`` / ``stars_net``: the same for Telegram Stars
  subscriptions (XTR). Telegram pays Stars to the bot's owner, so ``stars_net`` is the creator's
  share the instance owes them (billing/stars_subscriptions.py records it with each payment).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from core.model.subscription import GRACE, PaymentStatus, Subscription, SubscriptionStatus
from core.services import Core

WINDOW = timedelta(days=30)


@dataclass(frozen=True)
class TierFigures:
    tier_id: str
    name: str
    price_minor: int
    archived: bool
    active: int


@dataclass(frozen=True)
class SubscriptionReport:
    creator_id: str
    currency: str
    active: int
    mrr_minor: int
    churned_30d: int
    churn_rate: float
    failed_payments_30d: int
    gross_minor: int
    refunded_minor: int
    fees_minor: int
    net_minor: int
    tiers: list[TierFigures] = field(default_factory=list)
    # Telegram Stars subscriptions (XTR): paid to the bot's owner, so this is what the creator is owed
    stars_gross: int = 0
    stars_refunded: int = 0
    stars_fees: int = 0
    stars_net: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _over_at(s: Subscription, now: datetime) -> datetime | None:
    """When a subscription stopped opening its tier, or None while it still does. Telegram sends
    nothing when a Stars renewal fails or a cancelled one runs out, so those end with time alone."""
    if s.status == SubscriptionStatus.ENDED:
        return s.ended_at
    if s.grants(now) or s.current_period_end is None:
        return None
    if s.status == SubscriptionStatus.CANCELED:
        return s.current_period_end
    return s.current_period_end + GRACE if s.status != SubscriptionStatus.INCOMPLETE else None


async def creator_report(core: Core, creator_id: str) -> SubscriptionReport:
    now = core.now()
    async with core.uow() as uow:
        await uow.accounts.get(creator_id)  # NotFound for an unknown creator
        tiers = await uow.subscriptions.tiers_of(creator_id, archived=True)
        subs = await uow.subscriptions.of_creator(creator_id)
        payments = await uow.subscriptions.creator_payments(creator_id)
    price = {t.id: t.price_minor for t in tiers}
    opening = [s for s in subs if s.grants(now)]
    renewing = [s for s in opening if s.status in (SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE)]
    churned = sum(1 for s in subs if (over := _over_at(s, now)) is not None and now - over < WINDOW)
    stars = [p for p in payments if p.currency == "XTR"]
    payments = [p for p in payments if p.currency != "XTR"]
    stars_gross = sum(p.amount_minor for p in stars if p.status in (PaymentStatus.PAID, PaymentStatus.REFUNDED))
    stars_refunded = sum(p.amount_minor for p in stars if p.status == PaymentStatus.REFUNDED)
    stars_fees = sum(p.fee_minor for p in stars if p.status == PaymentStatus.PAID)
    taken = [p for p in payments if p.status in (PaymentStatus.PAID, PaymentStatus.REFUNDED)]
    gross = sum(p.amount_minor for p in taken)
    refunded = sum(p.amount_minor for p in payments if p.status == PaymentStatus.REFUNDED)
    fees = sum(p.fee_minor for p in payments if p.status == PaymentStatus.PAID)
    return SubscriptionReport(
        creator_id=creator_id, currency=tiers[0].currency if tiers else "", active=len(opening),
        mrr_minor=sum(price.get(s.tier_id, 0) for s in renewing), churned_30d=churned,
        churn_rate=round(churned / (churned + len(opening)), 4) if churned + len(opening) else 0.0,
        failed_payments_30d=sum(p.failures for p in payments if now - p.at < WINDOW),
        gross_minor=gross, refunded_minor=refunded, fees_minor=fees, net_minor=gross - refunded - fees,
        tiers=[TierFigures(t.id, t.name, t.price_minor, t.archived, sum(1 for s in opening if s.tier_id == t.id))
               for t in tiers],
        stars_gross=stars_gross, stars_refunded=stars_refunded, stars_fees=stars_fees,
        stars_net=stars_gross - stars_refunded - stars_fees)
