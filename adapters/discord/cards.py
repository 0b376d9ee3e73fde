"""Cards, buttons, notices and DMs: core events into Discord messages (the Notifier port), and tickets.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import aiohttp
import discord

from core import events as ev
from core.cards import Card
from core.errors import DomainError
from core.model.ticket import TicketStatus
from core.ports import Delivery, DeliveryResult

if TYPE_CHECKING:
    pass

from adapters.chat import buttons, wording
from adapters.chat import delivery as sent_as
from adapters.discord import render
from adapters.discord.base import PLATFORM, DiscordBase, say

log = logging.getLogger(__name__)


class CardsMixin(DiscordBase):
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """A card button: ``sb:<kind>:<space>[:<arg>]``, pressed through the shared toolkit."""
        if interaction.type != discord.InteractionType.component or interaction.data is None:
            return
        custom_id = str(interaction.data.get("custom_id", ""))
        if not custom_id.startswith("sb:"):
            return
        kind, space_id, arg = buttons.parse(custom_id.removeprefix("sb:"))
        try:
            actor = await self._actor(interaction.user)
            if kind == buttons.JOIN:
                await self._send_room(interaction, actor, space_id)
                return
            answer = await buttons.press(self.core, actor, kind, space_id, arg, wording.PLAIN)
        except DomainError as e:
            await self._reply(interaction, "⚠️ " + say(e))
            return
        await self._reply(interaction, answer)

    async def _post_notice(self, event: ev.SpaceNotice) -> None:
        """Tell the channels showing the Space (a notice for one person is shown to them in the web room)."""
        if self.client is None:
            return
        async with self._posting.setdefault(event.space_id, asyncio.Lock()):  # the card is posted by now
            cards = await self.cards.for_space(event.space_id)
        for card in cards:
            if card.chat_id.startswith("event:"):
                continue  # a scheduled event, not a channel
            channel = self.client.get_channel(int(card.chat_id))
            if isinstance(channel, discord.TextChannel | discord.Thread):
                try:
                    await channel.send(f"ℹ️ {discord.utils.escape_mentions(event.text)}",
                                       reference=discord.MessageReference(message_id=int(card.message_id),
                                                                          channel_id=channel.id,
                                                                          fail_if_not_exists=False))
                except discord.HTTPException as e:
                    log.warning("could not post a notice for %s in %s: %s", event.space_id, card.chat_id, e)

    async def deliver(self, delivery: Delivery) -> DeliveryResult:
        if self.client is None or not self._started:
            return sent_as.not_connected("Discord")
        data = delivery.data
        kwargs: dict[str, Any] = {}
        if data.get("space_id"):
            link = discord.ui.View(timeout=None)
            label = "Listen" if delivery.template == "space.live" else "Open"
            link.add_item(discord.ui.Button(label=label, emoji="🎧", url=f"{self.public_url}/s/{data['space_id']}"))
            kwargs["view"] = link
        try:
            dm = await self.client.create_dm(discord.Object(int(delivery.external_id)))
            await dm.send(render.notice(delivery.template, data), **kwargs)
        except discord.RateLimited as e:
            return sent_as.retry("Discord asked us to slow down", e.retry_after)
        except (discord.Forbidden, discord.NotFound) as e:
            return sent_as.unreachable(str(e))
        except discord.HTTPException as e:
            if e.status == 429 or e.status >= 500:
                return sent_as.retry(str(e))
            raise
        except (aiohttp.ClientError, TimeoutError) as e:
            return sent_as.retry(str(e))
        return sent_as.SENT

    async def _post_card(self, channel: discord.TextChannel, space_id: str, content: str | None,
                         roles: list[int] | None = None) -> None:
        url = f"{self.public_url}/s/{space_id}"
        c = render.card(await self.core.view(space_id), url)
        kwargs: dict[str, Any] = {"embed": c.embed}
        if c.view is not None:
            kwargs["view"] = c.view
        if content:
            kwargs["allowed_mentions"] = discord.AllowedMentions(
                everyone=False, users=False, roles=[discord.Object(r) for r in roles or []])
        try:
            msg = await channel.send(content, **kwargs)
        except discord.HTTPException as e:
            log.warning("could not post the card of %s in #%s: %s", space_id, channel, e)
            return
        await self.cards.add(str(channel.id), str(msg.id), space_id, c.fingerprint())
        # what changed between reading the view and recording the card (a badge, a pin) found no card
        # to edit: look again (the refresher edits only if the rendering differs)
        self.refresher.mark(space_id)

    async def _edit(self, card: Card, c: render.CardContent, fp: str) -> None:
        assert self.client is not None
        channel = self.client.get_partial_messageable(int(card.chat_id))
        try:
            await channel.get_partial_message(int(card.message_id)).edit(embed=c.embed, view=c.view)
        except (discord.NotFound, discord.Forbidden):
            await self.cards.drop(card)
            return
        await self.cards.rendered(card, fp)

    async def _ticket_role(self, event: ev.TicketChanged) -> None:
        if event.status not in (TicketStatus.PAID.value, TicketStatus.REFUNDED.value):
            return
        view = await self.core.view(event.space_id)
        found = await self._guild_of(view.space)
        if found is None or not found[1].ticket_role:
            return
        guild, settings = found
        role = guild.get_role(int(settings.ticket_role))
        if role is None:
            return
        for ident in await self.core.identities(event.account_id):
            if ident.platform != PLATFORM:
                continue
            member = guild.get_member(int(ident.external_id))
            try:
                if member is None:
                    member = await guild.fetch_member(int(ident.external_id))
                if event.status == TicketStatus.PAID.value:
                    await member.add_roles(role, reason=f"Spacebridge: ticket {event.ticket_id}")
                else:
                    await member.remove_roles(role, reason=f"Spacebridge: ticket {event.ticket_id} refunded")
            except discord.NotFound:
                continue
            except discord.Forbidden:
                log.warning("cannot change %s's ticket role in %s: missing Manage Roles", ident.external_id, guild)
