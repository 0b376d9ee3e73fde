"""A creator's subscription tiers on Discord (issue 19): ``/space tiers``, ``/space tier_create``,
``/space tier_archive`` and ``/space tier_stars``, answered ephemerally.

Why under ``/space`` and not ``/spacebridge``: ``/spacebridge`` is the server's setup, hidden from
everyone without Manage Server (``default_permissions``) and usable only in a server, while tiers
belong to the creator, who is rarely a server admin and may well manage them from a DM with the bot.
``/space`` already holds the creator's other own-account commands (``subscribe``, ``link``,
``schedule``) and has room (Discord allows 25 subcommands; layout.py checks it). The work itself is
``adapters.chat.tiers`` (the studio's and the CLI's calls and refusals), shared with Telegram.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from adapters.chat import tiers as chat_tiers
from adapters.chat.wording import markdown

if TYPE_CHECKING:
    from adapters.discord.commands import CommandsMixin

STYLE = markdown(discord.utils.escape_markdown)
TIER = "The tier's id, or its name"


def tier_commands(me: CommandsMixin) -> tuple[app_commands.Command[Any, Any, None], ...]:
    """The four tier commands, for ``/space`` (layout.OWN places them)."""

    @app_commands.command(name="tiers", description="Your subscription tiers: prices, Stars, subscribers")
    async def tiers(interaction: discord.Interaction) -> None:
        actor = await me._actor(interaction.user)
        await me._reply(interaction, await chat_tiers.listing(
            me.core, actor.account_id, STYLE, how="Make one with `/space tier_create`."))

    @app_commands.command(name="tier_create", description="Sell a new monthly subscription tier (at most 3)")
    @app_commands.describe(name="The tier's name", price="Monthly price, e.g. 4.50 (whole Stars for XTR)",
                           currency="3-letter currency, the same for all your tiers (eur, usd...)",
                           perks="What subscribers get")
    async def tier_create(interaction: discord.Interaction, name: str, price: str, currency: str,
                          perks: str | None = None) -> None:
        actor = await me._actor(interaction.user)
        tier = await chat_tiers.create(me.core, getattr(me.stripe_sales, "gateway", None), me.public_url,
                                       me.ledger.fee_bps, actor, name, price, currency, perks or "")
        await me._reply(interaction, chat_tiers.created(
            tier, STYLE, stars_how="Sell it in Telegram Stars too with `/space tier_stars`."))

    @app_commands.command(name="tier_archive", description="Take one of your tiers off sale (subscribers keep it)")
    @app_commands.describe(tier=TIER)
    async def tier_archive(interaction: discord.Interaction, tier: str) -> None:
        actor = await me._actor(interaction.user)
        await me._reply(interaction, chat_tiers.archived(await chat_tiers.archive(me.core, actor, tier), STYLE))

    @app_commands.command(name="tier_stars", description="Sell one of your tiers in Telegram Stars too")
    @app_commands.describe(tier=TIER, stars="Stars every 30 days (1 to 10000), or off")
    async def tier_stars(interaction: discord.Interaction, tier: str, stars: str) -> None:
        actor = await me._actor(interaction.user)
        await me._reply(interaction, chat_tiers.starred(await chat_tiers.set_stars(me.core, actor, tier, stars),
                                                        STYLE))

    return tiers, tier_create, tier_archive, tier_stars
