"""Super Follows use cases the core owns: a creator's tiers and a Space's rule for subscribers.

Selling a tier and following the provider's subscription events is billing's work
(billing/subscriptions.py); which subscriptions open which Space is the access rule
(``core.usecases.context.access_error``), read where join tokens are minted.
"""

from __future__ import annotations

from dataclasses import replace

from core.errors import Conflict, Forbidden, Invalid, NotFound
from core.ids import new_id
from core.model.accounts import Actor
from core.model.space import Space
from core.model.subscription import MAX_EARLY_MINUTES, MAX_STARS, MAX_TIERS, SubscriberAccess, Subscription, Tier
from core.ports import UnitOfWork
from core.usecases.context import Context


class Memberships:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def create_tier(self, actor: Actor, name: str, price_minor: int, currency: str, perks: str = "") -> Tier:
        """A new tier for ``actor`` (the creator). At most ``MAX_TIERS`` on sale at once, all in one
        currency, so "at or above a tier" compares prices."""
        return await self.add_tier(await self.new_tier(actor, name, price_minor, currency, perks))

    async def new_tier(self, actor: Actor, name: str, price_minor: int, currency: str, perks: str = "") -> Tier:
        """The tier ``create_tier`` would add, checked but not saved (billing makes its Stripe Product
        and Price first, so a refusal from Stripe leaves no tier behind)."""
        clean, cur, text = Tier.validate(name, price_minor, currency, perks)
        tier = Tier(id=new_id(), creator_id=actor.account_id, name=clean, price_minor=price_minor, currency=cur,
                    perks=text, created_at=self.ctx.now())
        async with self.ctx.uow() as uow:
            await self._may_add(uow, tier)
        return tier

    async def _may_add(self, uow: UnitOfWork, tier: Tier) -> None:
        await uow.accounts.get(tier.creator_id)  # NotFound for an unknown creator
        tiers = await uow.subscriptions.tiers_of(tier.creator_id)
        if len(tiers) >= MAX_TIERS:
            raise Conflict("tier.too_many", max=MAX_TIERS)
        if any(t.currency != tier.currency for t in tiers):
            raise Conflict("tier.currency_mismatch", currency=tiers[0].currency, got=tier.currency)
        if any(t.name.casefold() == tier.name.casefold() for t in tiers):
            raise Conflict("tier.name_taken", name=tier.name)

    async def add_tier(self, tier: Tier) -> Tier:
        """Save a tier from ``new_tier`` (its rules checked again, in the saving transaction)."""
        async def op(uow: UnitOfWork) -> Tier:
            await self._may_add(uow, tier)
            await uow.subscriptions.add_tier(tier)
            return tier

        return await self.ctx.run(op)

    async def tiers(self, creator_id: str, *, archived: bool = False) -> list[Tier]:
        async with self.ctx.uow() as uow:
            return await uow.subscriptions.tiers_of(creator_id, archived=archived)

    async def tier(self, tier_id: str) -> Tier:
        async with self.ctx.uow() as uow:
            return await self._tier(uow, tier_id)

    async def _tier(self, uow: UnitOfWork, tier_id: str) -> Tier:
        t = await uow.subscriptions.tier(tier_id)
        if t is None:
            raise NotFound("tier.not_found", tier_id=tier_id)
        return t

    async def archive_tier(self, actor: Actor, tier_id: str) -> Tier:
        """Take a tier off sale. Its subscribers keep what they paid for until their subscriptions end."""
        async def op(uow: UnitOfWork) -> Tier:
            t = await self._tier(uow, tier_id)
            if t.creator_id != actor.account_id and not actor.is_operator:
                raise Forbidden("tier.not_yours", tier_id=tier_id)
            if not t.archived:
                t = replace(t, archived=True)
                await uow.subscriptions.save_tier(t)
            return t

        return await self.ctx.run(op)

    async def set_stars(self, actor: Actor, tier_id: str, stars: int | None) -> Tier:
        """Sell a tier on Telegram too, at ``stars`` Telegram Stars a month (None: not in Stars). A
        Stars subscription keeps the price it was bought at; a new price applies to new subscribers."""
        if stars is not None and not 1 <= stars <= MAX_STARS:
            raise Invalid("tier.bad_stars", stars=stars, max=MAX_STARS)

        async def op(uow: UnitOfWork) -> Tier:
            t = await self._tier(uow, tier_id)
            if t.creator_id != actor.account_id and not actor.is_operator:
                raise Forbidden("tier.not_yours", tier_id=tier_id)
            if t.archived:
                raise Conflict("tier.archived", tier_id=tier_id)
            t = replace(t, stars=stars)
            await uow.subscriptions.save_tier(t)
            return t

        return await self.ctx.run(op)

    async def set_provider_ids(self, tier_id: str, product: str, price: str) -> Tier:
        """Remember the provider's product and price made for a tier (billing/subscriptions.py)."""
        async def op(uow: UnitOfWork) -> Tier:
            t = replace(await self._tier(uow, tier_id), stripe_product=product, stripe_price=price)
            await uow.subscriptions.save_tier(t)
            return t

        return await self.ctx.run(op)

    @staticmethod
    def check_access_rule(host_id: str, access: SubscriberAccess, tier: Tier) -> None:
        """Refuse a rule naming someone else's tier, a tier off sale, or early minutes out of range."""
        if tier.creator_id != host_id:
            raise Forbidden("tier.not_hosts", tier_id=tier.id)
        if tier.archived:
            raise Conflict("tier.archived", tier_id=tier.id)
        if not 0 <= access.early_minutes <= MAX_EARLY_MINUTES:
            raise Invalid("subscription.bad_early_minutes", minutes=access.early_minutes, max=MAX_EARLY_MINUTES)

    async def set_subscriber_access(self, actor: Actor, space_id: str, access: SubscriberAccess | None) -> Space:
        """Make a scheduled Space subscribers-only (or subscribers-first) at one of the host's tiers."""
        async def op(uow: UnitOfWork) -> Space:
            space = await uow.spaces.get(space_id)
            if access is not None:
                self.check_access_rule(space.host_id, access, await self._tier(uow, access.tier_id))
            space.set_subscriber_access(actor.account_id, access, override=actor.is_operator)
            await uow.spaces.save(space)
            return space

        return await self.ctx.run(op)

    async def subscriptions_of(self, account_id: str) -> list[Subscription]:
        async with self.ctx.uow() as uow:
            return await uow.subscriptions.of_account(account_id)

