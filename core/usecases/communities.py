"""Communities (a guild, a chat, the web instance), their settings, and who may host or sell there."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from core import eligibility
from core.errors import Conflict, Forbidden, Invalid, NotFound
from core.ids import new_id
from core.model.accounts import Actor, check_platform
from core.model.community import WEB_COMMUNITY_EXTERNAL_ID, Community, CommunitySettings
from core.model.space import Space, Ticketing
from core.model.values import MAX_DISCOUNT, MIN_DISCOUNT
from core.ports import UnitOfWork
from core.usecases.context import Context, is_instance_admin


class Communities:
    """Use cases about where Spaces are announced and the rules there."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def ensure_community(self, platform: str, external_id: str, name: str) -> Community:
        check_platform(platform)

        async def op(uow: UnitOfWork) -> Community:
            c = await uow.communities.by_external(platform, external_id)
            if c is None:
                c = Community(id=new_id(), platform=platform, external_id=external_id, name=name[:200],
                              created_at=self.ctx.now())
                await uow.communities.add(c)
            return c

        return await self.ctx.run(op)

    async def web_community(self) -> Community:
        return await self.ensure_community("web", WEB_COMMUNITY_EXTERNAL_ID, "This instance")

    async def is_instance_admin(self, account_id: str) -> bool:
        async with self.ctx.uow() as uow:
            return is_instance_admin(await uow.communities.by_external("web", WEB_COMMUNITY_EXTERNAL_ID), account_id)

    async def make_instance_admin(self, actor: Actor, account_id: str, *, first: bool = False) -> bool:
        """Name ``account_id`` an instance admin (a moderator of the web community). The operator
        (the shell) may at any time; ``first`` (``serve``'s first-run link, checked by the caller)
        only while the instance has no admin yet. False when ``first`` came too late."""
        if not actor.is_operator and not first:
            raise Forbidden("community.admin_required", community_id="web")

        async def op(uow: UnitOfWork) -> bool:
            await uow.accounts.get(account_id)  # account.not_found for an unknown id
            c = await uow.communities.by_external("web", WEB_COMMUNITY_EXTERNAL_ID)
            if c is None:
                c = Community(id=new_id(), platform="web", external_id=WEB_COMMUNITY_EXTERNAL_ID,
                              name="This instance", created_at=self.ctx.now())
                await uow.communities.add(c)
            mods = c.settings.moderator_identities
            if first and mods:
                return account_id in mods
            if account_id not in mods:
                c.settings = c.settings.model_copy(update={"moderator_identities": [*mods, account_id]})
                await uow.communities.save_settings(c)
            return True

        return await self.ctx.run(op)

    async def community(self, community_id: str) -> Community:
        async with self.ctx.uow() as uow:
            return await uow.communities.get(community_id)

    async def communities(self) -> list[Community]:
        async with self.ctx.uow() as uow:
            return await uow.communities.all()

    async def update_community(self, actor: Actor, community_id: str, changes: dict[str, Any]) -> Community:
        """Community admins change settings; the result is validated whole before it is saved."""
        if not actor.is_admin:
            raise Forbidden("community.admin_required", community_id=community_id)

        async def op(uow: UnitOfWork) -> Community:
            c = await uow.communities.get(community_id)
            merged = {**c.settings.model_dump(mode="json"), **changes}
            try:
                c.settings = CommunitySettings.model_validate(merged)
            except ValueError as e:
                raise Invalid("community.bad_settings", detail=str(e)) from None
            await uow.communities.save_settings(c)
            return c

        return await self.ctx.run(op)

    async def check_host_eligibility(self, actor: Actor, community_id: str | None = None) -> list[eligibility.Failure]:
        async with self.ctx.uow() as uow:
            community = await self.ctx.community_or_web(uow, community_id)
            facts = await self.ctx.facts(uow, actor, community)
            return eligibility.check(community.settings.host_rule, facts, community.settings.admin_override)

    async def set_ticketing(self, actor: Actor, space_id: str, ticketing: Ticketing | None) -> Space:
        async def op(uow: UnitOfWork) -> Space:
            space = await uow.spaces.get(space_id)
            if ticketing is not None:
                community = await self.ctx.community_or_web(uow, space.community_id)
                if not community.settings.ticketing_allowed and not actor.is_operator:
                    raise Forbidden("ticket.not_allowed_here", community_id=community.id)
                failures = eligibility.check(community.settings.ticketing_rule,
                                             await self.ctx.facts(uow, actor, community),
                                             community.settings.admin_override)
                if failures:
                    raise Forbidden("eligibility.failed", failures=[f.as_dict() for f in failures])
                await _check_subscriber_terms(uow, space, ticketing)
            space.set_ticketing(actor.account_id, ticketing, self.ctx.now(), override=actor.is_operator)
            await uow.spaces.save(space)
            return space

        return await self.ctx.run(op)

    async def set_ticket_discount(self, actor: Actor, space_id: str, tier_id: str | None,
                                  percent: int | None) -> Space:
        """Give the host's subscribers at or above ``tier_id`` ``percent`` off the ticket (None, None:
        no discount), keeping the rest of the terms; the Space must be ticketed already."""
        async def op(uow: UnitOfWork) -> Space:
            space = await uow.spaces.get(space_id)
            if space.ticketing is None:
                raise Conflict("ticket.discount_not_ticketed", space_id=space_id)
            terms = replace(space.ticketing, discount_tier_id=tier_id, discount_percent=percent)
            await _check_subscriber_terms(uow, space, terms)
            space.set_ticketing(actor.account_id, terms, self.ctx.now(), override=actor.is_operator)
            await uow.spaces.save(space)
            return space

        return await self.ctx.run(op)


async def _check_subscriber_terms(uow: UnitOfWork, space: Space, ticketing: Ticketing) -> None:
    """The tiers the terms name (free, discounted) are the host's own and on sale, and a discount
    is 1 to 99 percent with the tier it is for."""
    if (ticketing.discount_tier_id is None) != (ticketing.discount_percent is None):
        raise Invalid("ticket.discount_needs_tier", space_id=space.id)
    if ticketing.discount_percent is not None and not MIN_DISCOUNT <= ticketing.discount_percent <= MAX_DISCOUNT:
        raise Invalid("ticket.bad_discount", percent=ticketing.discount_percent, min=MIN_DISCOUNT, max=MAX_DISCOUNT)
    for tier_id in (ticketing.free_tier_id, ticketing.discount_tier_id):
        if tier_id is None:
            continue
        tier = await uow.subscriptions.tier(tier_id)
        if tier is None:
            raise NotFound("tier.not_found", tier_id=tier_id)
        if tier.creator_id != space.host_id:
            raise Forbidden("tier.not_hosts", tier_id=tier.id)
        if tier.archived:
            raise Conflict("tier.archived", tier_id=tier.id)
