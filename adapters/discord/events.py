"""Scheduled Spaces as guild scheduled events; members marked Interested get the core's reminders.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import discord

from core.cards import Card
from core.errors import DomainError, NotFound
from core.model.space import SpaceState

if TYPE_CHECKING:
    pass

from adapters.discord import render
from adapters.discord.base import EVENT_CHAT, PLATFORM
from adapters.discord.cards import CardsMixin

log = logging.getLogger(__name__)


class EventsMixin(CardsMixin):
    async def _event_of(self, guild: discord.Guild, space_id: str) -> discord.ScheduledEvent | None:
        card = await self.cards.in_chat(f"{EVENT_CHAT}{guild.id}", space_id)
        if card is None:
            return None
        event = guild.get_scheduled_event(int(card.message_id))
        if event is None:
            try:
                event = await guild.fetch_scheduled_event(int(card.message_id))
            except discord.NotFound:
                await self.cards.drop(card)
                return None
        return event

    async def _scheduled(self, space_id: str) -> None:
        view = await self.core.view(space_id)
        found = await self._guild_of(view.space)
        if found is None:
            return
        guild, settings = found
        stage, channel = self._channels(guild, settings)
        if stage is not None and view.space.scheduled_for is not None \
                and await self.cards.in_chat(f"{EVENT_CHAT}{guild.id}", space_id) is None:
            url = f"{self.public_url}/s/{space_id}"
            try:
                event = await guild.create_scheduled_event(
                    name=view.space.title[:100], start_time=view.space.scheduled_for,
                    entity_type=discord.EntityType.stage_instance, channel=stage,
                    privacy_level=discord.PrivacyLevel.guild_only,
                    description=render.event_description(view, url), reason="Spacebridge: a Space was scheduled")
                await self.cards.add(f"{EVENT_CHAT}{guild.id}", str(event.id), space_id, _event_fp(view, url))
            except discord.HTTPException as e:
                log.warning("could not create the scheduled event for %s: %s", space_id, e)
        if channel is not None:
            await self._post_card(channel, space_id, None)

    async def _sync_event(self, card: Card, view: Any) -> None:
        if self.client is None:
            return
        guild = self.client.get_guild(int(card.chat_id.removeprefix(EVENT_CHAT)))
        if guild is None:
            return
        url = f"{self.public_url}/s/{view.space.id}"
        fp = _event_fp(view, url)
        if view.space.state != SpaceState.SCHEDULED or card.rendered == fp:
            return
        event = await self._event_of(guild, view.space.id)
        if event is None or event.status != discord.EventStatus.scheduled:
            return
        await event.edit(name=view.space.title[:100], start_time=view.space.scheduled_for,
                         description=render.event_description(view, url), reason="Spacebridge: the Space changed")
        await self.cards.rendered(card, fp)

    async def on_scheduled_event_user_add(self, event: discord.ScheduledEvent, user: discord.User) -> None:
        await self._interested(event.guild_id, event.id, user, True)

    async def on_scheduled_event_user_remove(self, event: discord.ScheduledEvent, user: discord.User) -> None:
        await self._interested(event.guild_id, event.id, user, False)

    async def _interested(self, guild_id: int, event_id: int, user: discord.abc.User, on: bool) -> None:
        card = await self.cards.find(f"{EVENT_CHAT}{guild_id}", str(event_id))
        if card is None or user.bot:
            return
        actor = await self._actor(user)
        with contextlib.suppress(DomainError):
            await self.core.set_reminder(actor, card.space_id, on)

    async def sync_interested(self) -> int:
        """Interested members the gateway did not tell us about (discord.py only reports cached
        users) become reminder subscribers too; returns how many were added."""
        added = 0
        if self.client is None:
            return 0
        for guild in self.client.guilds:
            community = await self.core.ensure_community(PLATFORM, str(guild.id), guild.name)
            for space in await self.core.list_spaces(states=("scheduled",), community_id=community.id):
                event = await self._event_of(guild, space.id)
                if event is None:
                    continue
                async for user in event.users():
                    if user.bot:
                        continue
                    if await self.core.set_reminder(await self._actor(user), space.id, True):
                        added += 1
        return added

    async def _sync_interested_loop(self) -> None:
        while self._started:
            await asyncio.sleep(self.config.interested_sync_s)
            try:
                await self.sync_interested()
            except Exception:
                log.exception("syncing interested members failed")

    async def _refresh_cards(self, space_id: str) -> bool:
        try:
            view = await self.core.view(space_id)
        except NotFound:
            return True
        c = render.card(view, f"{self.public_url}/s/{space_id}")
        fp = c.fingerprint()
        for card in await self.cards.for_space(space_id):
            if card.chat_id.startswith(EVENT_CHAT):
                with contextlib.suppress(discord.HTTPException):
                    await self._sync_event(card, view)
                continue
            if card.rendered == fp:
                continue
            await self._edit(card, c, fp)
        return view.space.state in (SpaceState.ENDED, SpaceState.CANCELLED)


def _event_fp(view: Any, url: str) -> str:
    s = view.space
    return render.CardContent(discord.Embed(title=s.title, description=render.event_description(view, url),
                                            timestamp=s.scheduled_for), None).fingerprint()
