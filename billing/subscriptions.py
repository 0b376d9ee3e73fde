"""Super Follows on Stripe: a tier's Product and monthly Price, Checkout in subscription mode, and
the subscriber's and creator's changes (cancel at period end, resume, change tier, refund).

Money goes as for tickets (billing/sales.py): when the creator has a Stripe Connect account, each
invoice is a destination charge to it with the platform's fee (``subscription_data[transfer_data]``
and ``application_fee_percent``), and only once Stripe says the account can take charges;
otherwise the sale is refused with ``billing.payouts_not_ready``. A creator who never started
Connect sells on the platform's account.

A tier's price is created with Stripe's Plans API (``POST /v1/plans``, interval ``month``): a
Plan is a Price to every other endpoint (Checkout's ``line_items[price]``, a subscription item's
``price``), and it is what localstripe implements, so the tests run the same calls. Upgrades are
prorated by Stripe and invoiced at once (``proration_behavior=always_invoice``); a downgrade
takes effect without proration (``none``): the subscriber keeps the higher tier until the end of
the period already paid for it (core/model/subscription.py), then pays the lower price.

What the subscription *is* comes only from Stripe's events (billing/subscription_events.py); these
calls never change our rows except to remember a tier's product and price.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from billing.stripe_gateway import BillingError, StripeGateway
from core.errors import Conflict, Forbidden, NotFound
from core.model.accounts import Actor
from core.model.subscription import PaymentStatus, Subscription, SubscriptionProvider, SubscriptionStatus, Tier
from core.services import Core


@dataclass(frozen=True)
class Checkout:
    tier: Tier
    session_id: str
    url: str


class SubscriptionSales:
    def __init__(self, core: Core, gateway: StripeGateway | None, base_url: str, fee_bps: int = 0) -> None:
        self.core = core
        self.gateway = gateway
        self.base_url = base_url.rstrip("/")
        self.fee_bps = fee_bps

    def _require(self) -> StripeGateway:
        if self.gateway is None:
            raise BillingError("billing.subscriptions_off", hint="set STRIPE_API_KEY and STRIPE_WEBHOOK_SECRET")
        return self.gateway

    async def _stripe_ids(self, gw: StripeGateway, tier: Tier) -> Tier:
        """The tier with its Stripe Product and monthly Price (made once per tier id: idempotency keys)."""
        meta = {"tier_id": tier.id, "creator_id": tier.creator_id}
        params: dict[str, Any] = {"name": tier.name, "metadata": meta}
        if tier.perks:
            params["description"] = tier.perks
        product = await gw._call(gw.client.v1.products.create_async(
            params=params, options={"idempotency_key": f"product:{tier.id}"}))  # type: ignore[arg-type]
        plan = await gw._call(gw.client.v1.plans.create_async(
            params={"amount": tier.price_minor, "currency": tier.currency.lower(), "interval": "month",
                    "product": str(product.id), "nickname": tier.name[:60], "metadata": meta},
            options={"idempotency_key": f"plan:{tier.id}"}))
        return replace(tier, stripe_product=str(product.id), stripe_price=str(plan.id))

    async def publish(self, tier: Tier) -> Tier:
        """A saved tier's Stripe Product and Price, made now if it was created without Stripe."""
        if tier.stripe_price:
            return tier
        made = await self._stripe_ids(self._require(), tier)
        assert made.stripe_product is not None and made.stripe_price is not None
        return await self.core.memberships.set_provider_ids(tier.id, made.stripe_product, made.stripe_price)

    async def create_tier(self, actor: Actor, name: str, price_minor: int, currency: str, perks: str = "") -> Tier:
        """A tier on sale: checked, its Stripe Product and Price made (when Stripe is configured;
        ``publish`` makes them at the first checkout otherwise), then saved, so a refusal at any
        step leaves no tier behind."""
        tier = await self.core.memberships.new_tier(actor, name, price_minor, currency, perks)
        if self.gateway is not None:
            tier = await self._stripe_ids(self.gateway, tier)
        return await self.core.memberships.add_tier(tier)

    async def _destination(self, gw: StripeGateway, creator_id: str) -> dict[str, Any]:
        async with self.core.uow() as uow:
            acct = await uow.accounts.payout_account(creator_id)
        if acct is None:
            return {}
        if not await gw.account_ready(acct):
            raise BillingError("billing.payouts_not_ready", creator_id=creator_id)
        return {"transfer_data": {"destination": acct}, "application_fee_percent": self.fee_bps / 100}

    async def _current(self, account_id: str, creator_id: str) -> Subscription | None:
        """The account's subscription to the creator that is not over (the one to change)."""
        now = self.core.now()
        subs = [s for s in await self.core.memberships.subscriptions_of(account_id)
                if s.creator_id == creator_id and s.grants(now)]
        return subs[-1] if subs else None

    async def checkout(self, actor: Actor, tier_id: str) -> Checkout:
        """A Stripe Checkout link (subscription mode) for ``actor`` to subscribe to a tier."""
        gw = self._require()
        tier = await self.core.memberships.tier(tier_id)
        if tier.archived:
            raise Conflict("tier.archived", tier_id=tier_id)
        if tier.creator_id == actor.account_id:
            raise Conflict("subscription.own_tier", tier_id=tier_id)
        async with self.core.uow() as uow:
            await uow.accounts.get(actor.account_id)
        if (current := await self._current(actor.account_id, tier.creator_id)) is not None:
            raise Conflict("subscription.already", subscription_id=current.id, tier_id=current.tier_id)
        tier = await self.publish(tier)
        meta = {"account_id": actor.account_id, "tier_id": tier.id, "creator_id": tier.creator_id}
        params: dict[str, Any] = {
            "mode": "subscription", "client_reference_id": actor.account_id, "metadata": meta,
            "success_url": f"{self.base_url}/u/{tier.creator_id}?subscribed={tier.id}",
            "cancel_url": f"{self.base_url}/u/{tier.creator_id}",
            "line_items": [{"price": tier.stripe_price, "quantity": 1}],
            "subscription_data": {"metadata": meta, **await self._destination(gw, tier.creator_id)},
        }
        s = await gw._call(gw.client.v1.checkout.sessions.create_async(params=params))  # type: ignore[arg-type]
        return Checkout(tier, str(s.id), str(s.url))

    async def _own(self, actor: Actor, subscription_id: str, *, change: bool = False) -> Subscription:
        """``actor``'s own Stripe subscription (looked up before Stripe is needed, so a Stars one is
        refused for what it is even where Stripe is off)."""
        for s in await self.core.memberships.subscriptions_of(actor.account_id):
            if s.id == subscription_id:
                if change and s.provider == SubscriptionProvider.TELEGRAM:  # Telegram keeps a Star subscription's price
                    raise Conflict("subscription.stars_change", subscription_id=s.id)
                if s.provider != SubscriptionProvider.STRIPE:
                    raise Conflict("subscription.other_provider", provider=s.provider.value)
                return s
        raise NotFound("subscription.not_found", subscription_id=subscription_id)

    async def cancel(self, actor: Actor, subscription_id: str, *, resume: bool = False) -> Subscription:
        """Cancel at the end of the paid period (or take that back with ``resume``)."""
        sub = await self._own(actor, subscription_id)
        gw = self._require()
        if not sub.grants(self.core.now()):
            raise Conflict("subscription.over", subscription_id=sub.id)
        await gw._call(gw.client.v1.subscriptions.update_async(
            sub.provider_ref, params={"cancel_at_period_end": not resume}))
        return sub

    async def change_tier(self, actor: Actor, subscription_id: str, tier_id: str) -> Subscription:
        """Move to another of the same creator's tiers: an upgrade is prorated and invoiced now, a
        downgrade starts at the next renewal's price (the higher tier stays open until then)."""
        sub = await self._own(actor, subscription_id, change=True)
        gw = self._require()
        if not sub.grants(self.core.now()):
            raise Conflict("subscription.over", subscription_id=sub.id)
        new, old = await self.core.memberships.tier(tier_id), await self.core.memberships.tier(sub.tier_id)
        if new.creator_id != sub.creator_id:
            raise Forbidden("tier.not_hosts", tier_id=tier_id)
        if new.archived:
            raise Conflict("tier.archived", tier_id=tier_id)
        if new.id == old.id:
            raise Conflict("subscription.same_tier", tier_id=tier_id)
        new = await self.publish(new)
        current = (await gw._call(gw.client.v1.subscriptions.retrieve_async(sub.provider_ref))).to_dict()
        item = current["items"]["data"][0]["id"]
        change: dict[str, Any] = {
            "items": [{"id": item, "price": new.stripe_price}],
            "proration_behavior": "always_invoice" if new.price_minor > old.price_minor else "none"}
        await gw._call(gw.client.v1.subscriptions.update_async(sub.provider_ref, params=change))  # type: ignore[arg-type]
        return sub

    async def refund_current(self, actor: Actor, subscription_id: str) -> Subscription:
        """The creator gives back the current period's payment and ends the subscription now (ended at
        Stripe first, so a refund that fails can simply be asked for again). A Telegram Stars
        subscription is refunded through the bot instead (``StarsSubscriptions.refund_current``)."""
        async with self.core.uow() as uow:
            sub = next((s for s in await uow.subscriptions.of_creator(actor.account_id) if s.id == subscription_id),
                       None)
            payments = await uow.subscriptions.payments_of(sub.provider_ref) if sub else []
        if sub is None:
            raise NotFound("subscription.not_found", subscription_id=subscription_id)
        if sub.provider == SubscriptionProvider.TELEGRAM:
            from billing.stars_subscriptions import StarsSubscriptions

            done = await StarsSubscriptions(self.core, self.fee_bps).refund_current(actor, subscription_id)
            return done.subscription
        if sub.provider != SubscriptionProvider.STRIPE:
            raise Conflict("subscription.other_provider", provider=sub.provider.value)
        gw = self._require()
        # the latest period paid is the one given back, once: an earlier period is never refunded instead
        settled = [p for p in payments if p.status in (PaymentStatus.PAID, PaymentStatus.REFUNDED) and p.payment_ref]
        if not settled:
            raise NotFound("subscription.nothing_to_refund", subscription_id=subscription_id)
        last = settled[-1]
        if last.status == PaymentStatus.REFUNDED:
            raise Conflict("subscription.already_refunded", subscription_id=subscription_id)
        assert last.payment_ref is not None
        if sub.status != SubscriptionStatus.ENDED:  # ended first: a refund that fails can be asked again
            await gw._call(gw.client.v1.subscriptions.cancel_async(sub.provider_ref))
        await gw.refund(last.payment_ref, last.amount_minor, f"subrefund:{last.invoice_ref}", "requested_by_customer")
        last.status = PaymentStatus.REFUNDED

        async def mark(uow: Any) -> None:
            await uow.subscriptions.put_payment(last)

        await self.core.ctx.run(mark)
        return sub
