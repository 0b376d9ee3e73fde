"""Server setup: /spacebridge setup, joining a server, and how the settings read back.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands

from core.errors import Forbidden, Invalid

if TYPE_CHECKING:
    pass

from adapters.discord.base import ANNOUNCE_NEEDS, PLATFORM, STAGE_NEEDS
from adapters.discord.stages import StagesMixin

log = logging.getLogger(__name__)


class SetupMixin(StagesMixin):
    def _register_setup(self, tree: app_commands.CommandTree[discord.Client]) -> None:
        admin = app_commands.Group(name="spacebridge", description="Set Spacebridge up for this server",
                                   default_permissions=discord.Permissions(manage_guild=True), guild_only=True)
        me = self

        @admin.command(name="setup", description="Channels, roles and who may host (server admins)")
        @app_commands.describe(
            announce_channel="Where Spaces are announced", stage_channel="The Stage where Spaces run",
            announce_role="Role mentioned when a Space goes live", moderator_role="Role that counts as admin here",
            host_rule="Who may host", host_min_followers="Followers needed when host_rule is followers",
            host_role="Role needed when host_rule is role", ticketing="Allow ticketed Spaces",
            ticket_role="Role given to ticket holders (taken back on refund)",
            stage_notify="Notify the server when the Stage goes live",
            stage_category="Where I make a Stage for each further Space live at once (default: the Stage's)",
            subscriber_tier="A creator's subscription tier (its id) to give a role for",
            subscriber_role="The role that tier's subscribers hold (leave out to stop giving one)")
        async def setup(interaction: discord.Interaction, announce_channel: discord.TextChannel | None = None,
                        stage_channel: discord.StageChannel | None = None, announce_role: discord.Role | None = None,
                        moderator_role: discord.Role | None = None,
                        host_rule: Literal["followers", "role", "everyone", "admins"] | None = None,
                        host_min_followers: app_commands.Range[int, 0, 100_000_000] | None = None,
                        host_role: discord.Role | None = None, ticketing: bool | None = None,
                        ticket_role: discord.Role | None = None, stage_notify: bool | None = None,
                        stage_category: discord.CategoryChannel | None = None, subscriber_tier: str | None = None,
                        subscriber_role: discord.Role | None = None) -> None:
            await me.cmd_setup(interaction, announce_channel, stage_channel, announce_role, moderator_role, host_rule,
                               host_min_followers, host_role, ticketing, ticket_role, stage_notify, stage_category,
                               subscriber_tier, subscriber_role)

        tree.add_command(admin)

    async def cmd_setup(self, interaction: discord.Interaction, announce_channel: Any, stage_channel: Any,
                        announce_role: Any, moderator_role: Any, host_rule: str | None,
                        host_min_followers: int | None, host_role: Any, ticketing: bool | None, ticket_role: Any,
                        stage_notify: bool | None, stage_category: Any = None, subscriber_tier: str | None = None,
                        subscriber_role: Any = None) -> None:
        guild = interaction.guild
        actor = await self._actor(interaction.user)
        community = await self._community(guild)
        assert guild is not None
        changes: dict[str, Any] = {}
        if announce_channel is not None:
            changes["announce_channel"] = str(announce_channel.id)
        if stage_channel is not None:
            changes["stage_channel"] = str(stage_channel.id)
        if announce_role is not None:
            changes["announce_role"] = str(announce_role.id)
        if moderator_role is not None:
            changes["moderator_roles"] = [str(moderator_role.id)]
        if ticketing is not None:
            changes["ticketing_allowed"] = ticketing
        if ticket_role is not None:
            changes["ticket_role"] = str(ticket_role.id)
        if stage_notify is not None:
            changes["stage_notify"] = stage_notify
        if stage_category is not None:
            changes["stage_category"] = str(stage_category.id)
        if subscriber_role is not None and not subscriber_tier:
            raise Invalid("discord.bad_rule", detail="subscriber_role needs subscriber_tier: the tier it is for.")
        if subscriber_tier:
            tier = await self.core.memberships.tier(subscriber_tier.strip())  # NotFound for an unknown tier
            roles = {k: v for k, v in community.settings.tier_roles.items() if k != tier.id}
            if subscriber_role is not None:
                roles[tier.id] = str(subscriber_role.id)
            changes["tier_roles"] = roles
        if host_rule == "role" and host_role is None:
            raise Invalid("discord.bad_rule", detail="host_rule:role needs host_role: the role hosts must have.")
        if host_rule is not None or host_min_followers is not None:
            kind = host_rule or "followers"
            changes["host_rule"] = {
                "followers": {"kind": "followers", "min": 600 if host_min_followers is None else host_min_followers},
                "role": {"kind": "platform_role", "any_of": [str(host_role.id) if host_role else ""]},
                "everyone": {"kind": "everyone"}, "admins": {"kind": "nobody"},
            }[kind]
        if changes:
            community = await self.core.update_community(actor, community.id, changes)
            if "tier_roles" in changes:  # today's subscribers get (or lose) it now, not at the next sweep
                self._spawn(self.sync_tier_roles())
        elif not actor.is_admin:
            raise Forbidden("community.admin_required", community_id=community.id)
        st = community.settings
        stage, announce = self._channels(guild, st)
        lines = ["⚙️ **Spacebridge settings for this server**",
                 f"Stage: {stage.mention if stage else 'not set (Spaces run in chat and the web room only)'}",
                 f"Announcements: {announce.mention if announce else 'not set'}"
                 + (f" (mentioning <@&{st.announce_role}>)" if st.announce_role else ""),
                 f"Who may host: {_rule_text(st.host_rule.model_dump())}"
                 + (" (admins always may)" if st.admin_override else ""),
                 f"Moderator roles: {', '.join(f'<@&{r}>' for r in st.moderator_roles) or 'none'}",
                 f"Ticketed Spaces: {'allowed' if st.ticketing_allowed else 'off'}"
                 + (f", ticket holders get <@&{st.ticket_role}>" if st.ticket_role else ""),
                 f"Stage start notification: {'on' if st.stage_notify else 'off'}"]
        if st.tier_roles:
            lines.append("Subscriber roles: " + ", ".join(f"tier `{t}` → <@&{r}>" for t, r in st.tier_roles.items()))
        warnings = []
        if stage is not None:
            category, may = self._extra_category(guild, st, stage)
            where = category.mention if category is not None else "the server's top level"
            lines.append(f"Several Spaces live at once: each further one gets a Stage I make in {where}"
                         if may else f"Several Spaces live at once: no (I need Manage Channels in {where} to "
                                     "make a Stage for each; until then a second Space is refused)")
        if stage is not None and (m := self._missing(stage, STAGE_NEEDS)):
            warnings.append(f"⚠️ In {stage.mention} I'm missing: {', '.join(m)}.")
        if stage is not None and not guild.me.guild_permissions.manage_events:
            warnings.append("⚠️ Without Manage Events I cannot turn scheduled Spaces into server events.")
        if announce is not None and (m := self._missing(announce, ANNOUNCE_NEEDS)):
            warnings.append(f"⚠️ In {announce.mention} I'm missing: {', '.join(m)}.")
        if st.tier_roles and not guild.me.guild_permissions.manage_roles:
            warnings.append("⚠️ Without Manage Roles I cannot give subscribers their role.")
        if st.ticket_role and not guild.me.guild_permissions.manage_roles:
            warnings.append("⚠️ Without Manage Roles I cannot give ticket holders their role.")
        await self._reply(interaction, "\n".join(lines + warnings))

    async def on_guild_available(self, guild: discord.Guild) -> None:
        await self.core.ensure_community(PLATFORM, str(guild.id), guild.name)

    async def on_guild_join(self, guild: discord.Guild) -> None:
        await self.core.ensure_community(PLATFORM, str(guild.id), guild.name)
        channel = guild.system_channel
        if channel is not None and not self._missing(channel, ("view_channel", "send_messages")):
            with contextlib.suppress(discord.HTTPException):
                await channel.send("👋 Spacebridge is here. An admin can run `/spacebridge setup` to pick the Stage "
                                   "and announcement channel; then anyone allowed can go live with `/space start`.")


def _rule_text(rule: dict[str, Any]) -> str:
    kind = rule.get("kind")
    if kind == "followers":
        return f"{rule.get('min')}+ followers"
    if kind == "platform_role":
        return "members with " + ", ".join(f"<@&{r}>" for r in rule.get("any_of", []))
    if kind == "everyone":
        return "everyone"
    if kind == "nobody":
        return "admins only"
    return str(kind)


def _topics(topic: str | None) -> list[str]:
    return [t.strip() for t in (topic or "").split(",") if t.strip()][:3]
