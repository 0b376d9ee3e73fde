"""Super Follows in Telegram Stars: a tier's Stars invoice, its payments and renewals, cancelling.

A tier is sold in Stars when its creator gave it a Stars price (``Tier.stars``: ``spacebridge
billing tiers stars``). The bot makes a subscription invoice link (``createInvoiceLink`` with
``subscription_period`` = 30 days, currency XTR) whose payload names the tier, the subscriber and a
nonce (``sub:TIER:ACCOUNT:NONCE``); Telegram bills the same payload every 30 days until the
subscriber cancels. That payload is the subscription's ``provider_ref``.

Each ``successful_payment`` (the first: ``is_first_recurring``; a renewal: ``is_recurring``) carries
``subscription_expiration_date``, the end of the period it paid for. It is applied once (its
``telegram_payment_charge_id`` is the payment's key: Telegram may deliver an update twice) and in
order (an older payment never shortens the period). Telegram sends nothing when a renewal fails,
so a subscription whose renewal does not come lapses with time alone: it opens its tier until the
period's end plus the same grace as Stripe's (``core.model.subscription.GRACE``).

Stars are paid to the bot's owner; Telegram pays no creator. Each payment is recorded with the
creator and the platform's fee (``SPACEBRIDGE_PLATFORM_FEE_BPS``), so ``billing report --creator``
shows what the instance owes each creator, as the tickets ledger does for Stars tickets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from billing.subscription_effects import let_go, redraw_badges
from core import events as ev
from core.errors import Conflict, Invalid, NotFound
from core.ids import new_id
from core.model.accounts import Actor
from core.model.subscription import (
    PaymentStatus,
    ProviderState,
    Subscription,
    SubscriptionPayment,
    SubscriptionProvider,
    SubscriptionStatus,
    Tier,
)
from core.ports import UnitOfWork
from core.services import Core

TELEGRAM = SubscriptionProvider.TELEGRAM
PREFIX = "sub:"


@dataclass(frozen=True)
class StarsOffer:
    tier: Tier
    payload: str


@dataclass(frozen=True)
class StarsPaid:
    subscription: Subscription
    tier: Tier
    duplicate: bool  # this charge was applied before (Telegram delivered the update again)


@dataclass(frozen=True)
class StarsRefund:
    subscription: Subscription  # ended now
    stars: int  # the refunded period's Stars
    charge_id: str  # its telegram_payment_charge_id


def _updated(sub: Subscription, now: datetime) -> ev.SubscriptionUpdated:
    return ev.SubscriptionUpdated(account_id=sub.account_id, creator_id=sub.creator_id, subscription_id=sub.id,
                                  status=sub.status.value, at=now)


def is_subscription_payload(payload: str) -> bool:
    return payload.startswith(PREFIX)


def _parse(payload: str) -> tuple[str, str]:
    """(tier id, account id) from an invoice payload, or ``Invalid``."""
    parts = payload.split(":")
    if len(parts) != 4 or parts[0] + ":" != PREFIX or not all(parts[1:]):
        raise Invalid("subscription.bad_payload", payload=payload[:64])
    return parts[1], parts[2]


class StarsSubscriptions:
    def __init__(self, core: Core, fee_bps: int = 0) -> None:
        self.core = core
        self.fee_bps = fee_bps

    def fee_for(self, amount: int) -> int:
        return (amount * self.fee_bps + 5_000) // 10_000

    async def tier_for(self, target: str) -> Tier:
        """The tier ``target`` names: a tier id, or a Space for subscribers (its tier)."""
        async with self.core.uow() as uow:
            tier = await uow.subscriptions.tier(target)
            if tier is None:
                try:
                    space = await uow.spaces.get(target)
                except NotFound:
                    raise NotFound("tier.not_found", tier_id=target) from None
                if space.subscribers is None:
                    raise Conflict("subscription.open_space", space_id=space.id)
                tier = await uow.subscriptions.tier(space.subscribers.tier_id)
            if tier is None:
                raise NotFound("tier.not_found", tier_id=target)
            return tier

    async def _may_subscribe(self, uow: UnitOfWork, account_id: str, tier: Tier) -> None:
        if tier.archived:
            raise Conflict("tier.archived", tier_id=tier.id)
        if not tier.stars:
            raise Conflict("tier.no_stars", tier_id=tier.id)
        if tier.creator_id == account_id:
            raise Conflict("subscription.own_tier", tier_id=tier.id)
        now = self.core.now()
        for s in await uow.subscriptions.of_account(account_id):
            if s.creator_id == tier.creator_id and s.grants(now):
                raise Conflict("subscription.already", subscription_id=s.id, tier_id=s.tier_id)

    async def offer(self, actor: Actor, target: str) -> StarsOffer:
        """What to invoice ``actor`` for a Stars subscription to the tier ``target`` names."""
        tier = await self.tier_for(target)
        async with self.core.uow() as uow:
            await self._may_subscribe(uow, actor.account_id, tier)
        return StarsOffer(tier, f"{PREFIX}{tier.id}:{actor.account_id}:{new_id(8)}")

    async def check(self, account_id: str, payload: str, currency: str, total: int) -> Tier:
        """Pre-checkout (answered within 10 s, so only our own database): the payer is the one
        invoiced, the tier still sells at that price, and they hold no subscription to the creator."""
        tier_id, invoiced = _parse(payload)
        if invoiced != account_id:
            raise NotFound("subscription.not_found", subscription_id=payload[:64])
        if currency != "XTR":
            raise Invalid("ticket.bad_provider", provider=currency, allowed=["XTR"])
        async with self.core.uow() as uow:
            tier = await uow.subscriptions.tier(tier_id)
            if tier is None:
                raise NotFound("tier.not_found", tier_id=tier_id)
            await self._may_subscribe(uow, account_id, tier)
        if total != tier.stars:
            raise Invalid("ticket.amount_mismatch", expected=tier.stars, got=total)
        return tier

    async def paid(self, account_id: str, user_id: int, payload: str, charge_id: str, total: int, currency: str,
                   at: datetime, expires: datetime | None) -> StarsPaid:
        """A first payment or a renewal: the subscription made or extended to ``expires``, the
        payment recorded with the creator's share; once per ``charge_id``."""
        tier_id, invoiced = _parse(payload)
        if invoiced != account_id:
            raise NotFound("subscription.not_found", subscription_id=payload[:64])
        if currency != "XTR" or total <= 0:
            raise Invalid("ticket.bad_provider", provider=currency, allowed=["XTR"])

        async def op(uow: UnitOfWork) -> StarsPaid:
            tier = await uow.subscriptions.tier(tier_id)
            if tier is None:
                raise NotFound("tier.not_found", tier_id=tier_id)
            now = self.core.now()
            sub = await uow.subscriptions.by_ref(TELEGRAM.value, payload, for_update=True)
            if await uow.subscriptions.payment(TELEGRAM.value, charge_id) is not None:
                if sub is None:
                    raise NotFound("subscription.not_found", subscription_id=payload[:64])
                return StarsPaid(sub, tier, duplicate=True)
            if sub is None:
                sub = Subscription(id=new_id(), account_id=account_id, creator_id=tier.creator_id, tier_id=tier.id,
                                   provider=TELEGRAM, provider_ref=payload, status=SubscriptionStatus.INCOMPLETE,
                                   current_period_end=None, cancel_at_period_end=False, created_at=now,
                                   updated_at=now)
                await uow.subscriptions.add(sub)
            await uow.subscriptions.put_payment(SubscriptionPayment(
                provider=TELEGRAM, invoice_ref=charge_id, subscription_ref=payload, creator_id=tier.creator_id,
                amount_minor=total, currency="XTR", fee_minor=self.fee_for(total), status=PaymentStatus.PAID, at=at,
                payment_ref=f"{user_id}:{charge_id}"))
            end = expires
            if sub.current_period_end is not None and (end is None or end < sub.current_period_end):
                end = sub.current_period_end  # an older renewal never shortens the paid period
            state = ProviderState(SubscriptionStatus.ACTIVE, sub.tier_id, end, sub.cancel_at_period_end)
            prices = {t.id: t.price_minor for t in await uow.subscriptions.tiers_of(sub.creator_id, archived=True)}
            opened = sub.tiers_open(now)
            if sub.apply(state, max(at, sub.event_at or at), charge_id, now, prices):
                await uow.subscriptions.save(sub)
                uow.emit(_updated(sub, now))
                if opened != sub.tiers_open(now):
                    await redraw_badges(uow, sub, now)
            return StarsPaid(sub, tier, duplicate=False)

        return await self.core.ctx.run(op)

    async def to_cancel(self, actor: Actor, subscription_id: str) -> tuple[Subscription, int, str]:
        """The subscriber's own open Stars subscription and what ``editUserStarSubscription`` needs:
        the Telegram user and the subscription's first charge."""
        async with self.core.uow() as uow:
            sub = next((s for s in await uow.subscriptions.of_account(actor.account_id) if s.id == subscription_id),
                       None)
            if sub is None:
                raise NotFound("subscription.not_found", subscription_id=subscription_id)
            if sub.provider != TELEGRAM:
                raise Conflict("subscription.other_provider", provider=sub.provider.value)
            if not sub.grants(self.core.now()) or sub.status == SubscriptionStatus.CANCELED:
                raise Conflict("subscription.over", subscription_id=sub.id)
            payments = await uow.subscriptions.payments_of(sub.provider_ref)
        first = next((p.payment_ref for p in payments if p.payment_ref), None)
        if first is None:
            raise NotFound("subscription.not_found", subscription_id=subscription_id)
        user, _, charge = first.partition(":")
        return sub, int(user), charge

    async def canceled(self, sub: Subscription) -> Subscription:
        """Telegram took the cancel (it sends no update for it): open until the paid period ends."""
        async def op(uow: UnitOfWork) -> Subscription:
            cur = await uow.subscriptions.by_ref(TELEGRAM.value, sub.provider_ref, for_update=True)
            assert cur is not None
            now = self.core.now()
            state = ProviderState(SubscriptionStatus.ACTIVE, cur.tier_id, cur.current_period_end, True)
            if cur.apply(state, max(now, cur.event_at or now), f"cancel:{now.isoformat()}", now, {}):
                await uow.subscriptions.save(cur)
                uow.emit(_updated(cur, now))
            return cur

        return await self.core.ctx.run(op)

    async def refund_current(self, actor: Actor, subscription_id: str) -> StarsRefund:
        """The creator gives back the latest period's Stars and ends the subscription now.

        Only the bot can reach Telegram, and the CLI runs without it, so the Bot API calls
        (``editUserStarSubscription`` to stop the renewal, then ``refundStarPayment``) are a durable
        job the bot's process runs (billing/stars_refunds.py), queued in the same transaction that ends
        the subscription and marks the payment refunded: access stops at once, the creator's Stars
        ledger shows it at once, and a second refund finds it done."""
        from billing.stars_refunds import refund_job

        async def op(uow: UnitOfWork) -> StarsRefund:
            sub = next((s for s in await uow.subscriptions.of_creator(actor.account_id) if s.id == subscription_id),
                       None)
            if sub is None:  # someone else's subscriber, or no such subscription: the same answer
                raise NotFound("subscription.not_found", subscription_id=subscription_id)
            if sub.provider != TELEGRAM:
                raise Conflict("subscription.other_provider", provider=sub.provider.value)
            sub = await uow.subscriptions.by_ref(TELEGRAM.value, sub.provider_ref, for_update=True)
            assert sub is not None
            payments = [p for p in await uow.subscriptions.payments_of(sub.provider_ref)
                        if p.payment_ref and p.status in (PaymentStatus.PAID, PaymentStatus.REFUNDED)]
            if not payments:
                raise NotFound("subscription.nothing_to_refund", subscription_id=subscription_id)
            last = payments[-1]  # by payment time: the latest period paid
            if last.status == PaymentStatus.REFUNDED:
                raise Conflict("subscription.already_refunded", subscription_id=sub.id)
            assert last.payment_ref is not None and payments[0].payment_ref is not None
            user, _, charge = last.payment_ref.partition(":")
            first = payments[0].payment_ref.partition(":")[2]
            now = self.core.now()
            last.status = PaymentStatus.REFUNDED
            await uow.subscriptions.put_payment(last)
            state = ProviderState(SubscriptionStatus.ENDED, sub.tier_id, sub.current_period_end, False)
            opened = sub.tiers_open(now)
            if sub.apply(state, max(now, sub.event_at or now), f"refund:{charge}", now, {}):
                await uow.subscriptions.save(sub)
                uow.emit(_updated(sub, now))
                if opened:  # out of the creator's live Spaces for subscribers, and their badges redrawn
                    await let_go(uow, sub, now)
                    await redraw_badges(uow, sub, now)
            await uow.jobs.enqueue(refund_job(sub.id, int(user), charge, first, now))
            return StarsRefund(sub, last.amount_minor, charge)

        done = await self.core.ctx.run(op)
        self.core.wake_jobs()
        return done
