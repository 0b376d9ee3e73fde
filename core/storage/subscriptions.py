"""The Super Follows repository: tiers, subscriptions and their payments (the SQL only).

The rules live in core/model/subscription.py (what a subscription opens, which event is newer)
and billing/subscriptions.py (the provider's events); this module reads and writes rows. The
access reads (``reaching``) answer for many accounts at once, for a crowd joining.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.model.subscription import (
    PaymentStatus,
    Subscription,
    SubscriptionPayment,
    SubscriptionProvider,
    SubscriptionStatus,
    Tier,
)
from core.storage.tables import SubscriptionPaymentRow, SubscriptionRow, TierRow

_MAY_OPEN = ("active", "past_due", "canceled")


def _tier(r: TierRow) -> Tier:
    return Tier(id=r.id, creator_id=r.creator_id, name=r.name, price_minor=r.price_minor, currency=r.currency,
                perks=r.perks, created_at=r.created_at, archived=r.archived, stripe_product=r.stripe_product,
                stripe_price=r.stripe_price, stars=r.stars)


def _sub(r: SubscriptionRow) -> Subscription:
    return Subscription(
        id=r.id, account_id=r.account_id, creator_id=r.creator_id, tier_id=r.tier_id,
        provider=SubscriptionProvider(r.provider), provider_ref=r.provider_ref, status=SubscriptionStatus(r.status),
        current_period_end=r.current_period_end, cancel_at_period_end=r.cancel_at_period_end,
        created_at=r.created_at, updated_at=r.updated_at, ended_at=r.ended_at, prior_tier_id=r.prior_tier_id,
        prior_tier_until=r.prior_tier_until, event_at=r.event_at, event_id=r.event_id)


def _payment(r: SubscriptionPaymentRow) -> SubscriptionPayment:
    return SubscriptionPayment(
        provider=SubscriptionProvider(r.provider), invoice_ref=r.invoice_ref, subscription_ref=r.subscription_ref,
        creator_id=r.creator_id, amount_minor=r.amount_minor, currency=r.currency, fee_minor=r.fee_minor,
        status=PaymentStatus(r.status), at=r.at, failures=r.failures, payment_ref=r.payment_ref)


def _sub_values(s: Subscription) -> dict[str, object]:
    return dict(account_id=s.account_id, creator_id=s.creator_id, tier_id=s.tier_id, provider=s.provider.value,
                provider_ref=s.provider_ref, status=s.status.value, current_period_end=s.current_period_end,
                cancel_at_period_end=s.cancel_at_period_end, prior_tier_id=s.prior_tier_id,
                prior_tier_until=s.prior_tier_until, event_at=s.event_at, event_id=s.event_id,
                created_at=s.created_at, updated_at=s.updated_at, ended_at=s.ended_at)


class SubscriptionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    # ---- tiers -------------------------------------------------------------------------------------
    async def add_tier(self, t: Tier) -> None:
        self.s.add(TierRow(id=t.id, creator_id=t.creator_id, name=t.name, price_minor=t.price_minor,
                           currency=t.currency, perks=t.perks, archived=t.archived, stripe_product=t.stripe_product,
                           stripe_price=t.stripe_price, stars=t.stars, created_at=t.created_at))
        await self.s.flush()

    async def tier(self, tier_id: str) -> Tier | None:
        row = await self.s.get(TierRow, tier_id)
        return None if row is None else _tier(row)

    async def tiers_of(self, creator_id: str, *, archived: bool = False) -> list[Tier]:
        q = select(TierRow).where(TierRow.creator_id == creator_id)
        if not archived:
            q = q.where(TierRow.archived.is_(False))
        return [_tier(r) for r in (await self.s.scalars(q.order_by(TierRow.price_minor, TierRow.id))).all()]

    async def tier_by_price(self, stripe_price: str) -> Tier | None:
        row = (await self.s.scalars(select(TierRow).where(TierRow.stripe_price == stripe_price))).first()
        return None if row is None else _tier(row)

    async def save_tier(self, t: Tier) -> None:
        await self.s.execute(update(TierRow).where(TierRow.id == t.id).values(
            name=t.name, perks=t.perks, archived=t.archived, stripe_product=t.stripe_product,
            stripe_price=t.stripe_price, stars=t.stars))

    # ---- subscriptions -----------------------------------------------------------------------------
    async def by_ref(self, provider: str, provider_ref: str, *, for_update: bool = False) -> Subscription | None:
        q = select(SubscriptionRow).where(SubscriptionRow.provider == provider,
                                          SubscriptionRow.provider_ref == provider_ref)
        if for_update:
            q = q.with_for_update()
        row = (await self.s.scalars(q.execution_options(populate_existing=True))).first()
        return None if row is None else _sub(row)

    async def add(self, sub: Subscription) -> None:
        self.s.add(SubscriptionRow(id=sub.id, **_sub_values(sub)))
        await self.s.flush()

    async def save(self, sub: Subscription) -> None:
        await self.s.execute(update(SubscriptionRow).where(SubscriptionRow.id == sub.id).values(**_sub_values(sub)))

    async def of_account(self, account_id: str) -> list[Subscription]:
        q = select(SubscriptionRow).where(SubscriptionRow.account_id == account_id).order_by(SubscriptionRow.created_at)
        return [_sub(r) for r in (await self.s.scalars(q)).all()]

    async def of_creator(self, creator_id: str) -> list[Subscription]:
        q = select(SubscriptionRow).where(SubscriptionRow.creator_id == creator_id).order_by(SubscriptionRow.created_at)
        return [_sub(r) for r in (await self.s.scalars(q)).all()]

    async def reaching(self, creator_id: str, tier_id: str, account_ids: Collection[str], now: datetime) -> set[str]:
        """Which of ``account_ids`` hold a subscription to ``creator_id`` that opens ``tier_id`` (or a
        tier priced at or above it) now."""
        if not account_ids:
            return set()
        required = await self.s.get(TierRow, tier_id)
        if required is None:
            return set()
        prices = {t.id: t.price_minor for t in await self.tiers_of(creator_id, archived=True)}
        q = select(SubscriptionRow).where(SubscriptionRow.creator_id == creator_id,
                                          SubscriptionRow.account_id.in_(list(account_ids)),
                                          SubscriptionRow.status.in_(_MAY_OPEN))
        out = set()
        for r in (await self.s.scalars(q)).all():
            if any(prices.get(t, -1) >= required.price_minor for t in _sub(r).tiers_open(now)):
                out.add(r.account_id)
        return out

    # ---- payments ----------------------------------------------------------------------------------
    async def payment(self, provider: str, invoice_ref: str) -> SubscriptionPayment | None:
        row = await self.s.get(SubscriptionPaymentRow, (provider, invoice_ref), populate_existing=True)
        return None if row is None else _payment(row)

    async def payment_by_ref(self, provider: str, payment_ref: str) -> SubscriptionPayment | None:
        q = select(SubscriptionPaymentRow).where(SubscriptionPaymentRow.provider == provider,
                                                 SubscriptionPaymentRow.payment_ref == payment_ref)
        row = (await self.s.scalars(q.execution_options(populate_existing=True))).first()
        return None if row is None else _payment(row)

    async def put_payment(self, p: SubscriptionPayment) -> None:
        """Insert or update the invoice's row."""
        row = await self.s.get(SubscriptionPaymentRow, (p.provider.value, p.invoice_ref))
        values = dict(subscription_ref=p.subscription_ref, creator_id=p.creator_id, amount_minor=p.amount_minor,
                      currency=p.currency, fee_minor=p.fee_minor, status=p.status.value, failures=p.failures,
                      payment_ref=p.payment_ref, at=p.at)
        if row is None:
            self.s.add(SubscriptionPaymentRow(provider=p.provider.value, invoice_ref=p.invoice_ref, **values))
        else:
            for k, v in values.items():
                setattr(row, k, v)
        await self.s.flush()

    async def payments_of(self, subscription_ref: str) -> list[SubscriptionPayment]:
        q = select(SubscriptionPaymentRow).where(SubscriptionPaymentRow.subscription_ref == subscription_ref)
        return [_payment(r) for r in (await self.s.scalars(q.order_by(SubscriptionPaymentRow.at))).all()]

    async def creator_payments(self, creator_id: str) -> list[SubscriptionPayment]:
        q = select(SubscriptionPaymentRow).where(SubscriptionPaymentRow.creator_id == creator_id)
        return [_payment(r) for r in (await self.s.scalars(q)).all()]
