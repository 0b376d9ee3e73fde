"""Super Follows on Discord: a server maps a creator's tier to a role (``/spacebridge setup
subscriber_tier subscriber_role``), and each subscriber holds that role in every server that maps
it while their subscription opens the tier (at or above it, as for a Space); they lose it when it
stops. Each ``subscription.updated`` event brings that subscriber's roles in line at once;
``sync_tier_roles`` (run with the interested-members sweep) catches what ends with time alone (a
renewal that never came, a cancelled subscription's paid period, a downgrade's former tier)."""

from __future__ import annotations

import asyncio
import logging

import discord

from adapters.discord.base import PLATFORM, DiscordBase
from core import events as ev

log = logging.getLogger(__name__)


class TierRolesMixin(DiscordBase):
    async def _mapped(self) -> list[tuple[discord.Guild, str, int]]:
        """(guild, tier id, role id) for every tier role a server of ours maps."""
        if self.client is None:
            return []
        out = []
        for c in await self.core.communities():
            if c.platform != PLATFORM or not c.settings.tier_roles:
                continue
            guild = self.client.get_guild(int(c.external_id))
            if guild is None:
                continue
            for tier_id, role_id in c.settings.tier_roles.items():
                out.append((guild, tier_id, int(role_id)))
        return out

    async def _opens(self, account_id: str, tier_id: str) -> bool:
        async with self.core.uow() as uow:
            tier = await uow.subscriptions.tier(tier_id)
            if tier is None:
                return False
            return bool(await uow.subscriptions.reaching(tier.creator_id, tier_id, [account_id], self.core.now()))

    async def _tier_roles_of(self, account_id: str, mapped: list[tuple[discord.Guild, str, int]]) -> None:
        """Give or take back each mapped role for one account, by what their subscriptions open now."""
        users = [int(i.external_id) for i in await self.core.identities(account_id) if i.platform == PLATFORM]
        if not users:
            return
        for guild, tier_id, role_id in mapped:
            role = guild.get_role(role_id)
            if role is None:
                continue
            holds = await self._opens(account_id, tier_id)
            for uid in users:
                await self._set_role(guild, uid, role, holds, tier_id)

    async def _set_role(self, guild: discord.Guild, uid: int, role: discord.Role, holds: bool, tier_id: str) -> None:
        try:
            member = await guild.fetch_member(uid)  # its roles as they are now, not as cached
            has = any(r.id == role.id for r in member.roles)
            if holds and not has:
                await member.add_roles(role, reason=f"Spacebridge: subscriber to tier {tier_id}")
            elif not holds and has:
                await member.remove_roles(role, reason=f"Spacebridge: subscription to tier {tier_id} ended")
        except discord.NotFound:
            return  # not in this server
        except discord.Forbidden:
            log.warning("cannot change %s's tier role in %s: missing Manage Roles (or the role is above mine)",
                        uid, guild)

    async def _on_subscription(self, event: ev.SubscriptionUpdated) -> None:
        mapped = await self._mapped()
        if mapped:
            await self._tier_roles_of(event.account_id, mapped)

    async def sync_tier_roles(self) -> None:
        """Every subscriber of a mapped tier's creator, in line with now (what time alone ended)."""
        mapped = await self._mapped()
        creators: set[str] = set()
        accounts: set[str] = set()
        async with self.core.uow() as uow:
            for _, tier_id, _ in mapped:
                tier = await uow.subscriptions.tier(tier_id)
                if tier is not None:
                    creators.add(tier.creator_id)
            for creator in creators:
                accounts.update(s.account_id for s in await uow.subscriptions.of_creator(creator))
        for account in sorted(accounts):
            await self._tier_roles_of(account, mapped)

    async def _tier_roles_loop(self) -> None:
        while self._started:
            await asyncio.sleep(self.config.interested_sync_s)
            try:
                await self.sync_tier_roles()
            except Exception:
                log.exception("syncing tier roles failed")
