"""One Stage per Space: which Stage channel each live Space of a guild runs on.

The configured Stage (``/spacebridge setup stage_channel``) goes to the first Space live in the
server. A Space that goes live while another holds it gets a Stage channel of its own, made by the
bot in the setup's ``stage_category`` (else the configured Stage's category) and deleted when that
Space closes; without Manage Channels there, ``/space start`` refuses, naming the Space already live.
The map lives in the database (the ``discord`` key-value namespace), so a restart finds each Space's
Stage again and never deletes a channel the bot did not make.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import discord

from adapters.discord.base import DiscordBase
from core.errors import Conflict, NotFound
from core.model.space import Space, SpaceState
from core.ports import KeyValues

log = logging.getLogger(__name__)

KV_NAMESPACE = "discord"
_KEY = "stage:"  # stage:<space id> -> {"guild": id, "channel": id, "made": bool}


class StagesMixin(DiscordBase):
    _stages_loaded: bool = False

    @property
    def _stage_kv(self) -> KeyValues:
        return self.core.ctx.store.kv(KV_NAMESPACE)

    async def _load_stages(self) -> None:
        """Once per process: the Stages live Spaces held before a restart."""
        if self._stages_loaded:
            return
        for entry in await self._stage_kv.scan(_KEY, limit=10_000):
            v = entry.value
            self._state.stages.setdefault(entry.key.removeprefix(_KEY),
                                          (int(v["guild"]), int(v["channel"]), bool(v["made"])))
        self._stages_loaded = True

    def _space_on(self, guild: discord.Guild, channel: Any) -> str | None:
        """The live Space whose Stage ``channel`` is (``None``: not a Space's Stage)."""
        if channel is None:
            return None
        return next((s for s, (g, c, _) in self._state.stages.items() if g == guild.id and c == channel.id), None)

    def _stage_of(self, guild: discord.Guild, space_id: str) -> discord.StageChannel | None:
        entry = self._state.stages.get(space_id)
        if entry is None or entry[0] != guild.id:
            return None
        channel = guild.get_channel(entry[1])
        return channel if isinstance(channel, discord.StageChannel) else None

    async def _holder(self, guild: discord.Guild, channel_id: int, but: str) -> Space | None:
        """The live Space (other than ``but``) on this Stage; entries of Spaces no longer live are dropped."""
        for space_id, (g, c, _) in list(self._state.stages.items()):
            if g != guild.id or c != channel_id or space_id == but:
                continue
            try:
                space = (await self.core.view(space_id)).space
            except NotFound:
                space = None
            if space is not None and space.state == SpaceState.LIVE:
                return space
            await self._forget_stage(space_id)
        return None

    def _extra_category(self, guild: discord.Guild, settings: Any,
                        main: discord.StageChannel) -> tuple[discord.CategoryChannel | None, bool]:
        """Where another Stage would go, and whether the bot may make it there."""
        category = guild.get_channel(int(settings.stage_category)) if settings.stage_category else None
        if not isinstance(category, discord.CategoryChannel):
            category = main.category
        perms = category.permissions_for(guild.me) if category is not None else guild.me.guild_permissions
        return category, perms.manage_channels

    async def _refuse_if_busy(self, guild: discord.Guild, settings: Any) -> None:
        """Before a Space goes live here: refused when the Stage is taken and no other can be made."""
        main, _ = self._channels(guild, settings)
        if main is None:
            return
        async with self._state.stage_locks.setdefault(guild.id, asyncio.Lock()):
            await self._load_stages()
            holder = await self._holder(guild, main.id, but="")
        if holder is None:
            return
        category, may = self._extra_category(guild, settings, main)
        if not may:
            raise Conflict("discord.stage_busy", space_id=holder.id, title=holder.title, stage=main.mention,
                           where=f"#{category.name}" if category is not None else "this server")

    async def _claim_stage(self, guild: discord.Guild, settings: Any, space: Space) -> discord.StageChannel | None:
        """This Space's Stage: the one it holds, else the configured one if free, else a new one."""
        async with self._state.stage_locks.setdefault(guild.id, asyncio.Lock()):
            await self._load_stages()
            held = self._stage_of(guild, space.id)
            if held is not None:
                return held
            main, _ = self._channels(guild, settings)
            if main is None:
                return None
            holder = await self._holder(guild, main.id, but=space.id)
            if holder is None:
                await self._remember_stage(space.id, guild.id, main.id, made=False)
                return main
            category, may = self._extra_category(guild, settings, main)
            if not may:
                log.warning("%s went live while %s holds %s, and I may not make another Stage", space.id,
                            holder.id, main)
                return None
            try:
                made = await guild.create_stage_channel(space.title[:100] or "Space", category=category,
                                                        reason=f"Spacebridge: a Stage for the Space {space.id}")
            except discord.HTTPException as e:
                log.warning("could not make a Stage for %s: %s", space.id, e)
                return None
            await self._remember_stage(space.id, guild.id, made.id, made=True)
            return made

    async def _remember_stage(self, space_id: str, guild_id: int, channel_id: int, *, made: bool) -> None:
        self._state.stages[space_id] = (guild_id, channel_id, made)
        await self._stage_kv.put(_KEY + space_id, {"guild": str(guild_id), "channel": str(channel_id), "made": made})

    async def _forget_stage(self, space_id: str) -> None:
        self._state.stages.pop(space_id, None)
        await self._stage_kv.delete(_KEY + space_id)

    async def _release_stage(self, guild: discord.Guild, space_id: str, *, ended: bool) -> None:
        """Close this Space's own stage instance (never another's) and delete the Stage if the bot made it."""
        async with self._state.stage_locks.setdefault(guild.id, asyncio.Lock()):
            await self._load_stages()
            entry = self._state.stages.get(space_id)
            if entry is None:
                return
            stage = self._stage_of(guild, space_id)
            if stage is not None and ended:
                instance = await self._instance(stage)
                if instance is not None:
                    with contextlib.suppress(discord.NotFound):
                        await instance.delete(reason="Spacebridge: the Space ended")
            if stage is not None and entry[2]:
                try:
                    await stage.delete(reason="Spacebridge: the Space on this Stage ended")
                except discord.HTTPException as e:
                    log.warning("could not delete the Stage %s made for %s: %s", stage, space_id, e)
            await self._forget_stage(space_id)

    @staticmethod
    async def _instance(stage: discord.StageChannel) -> discord.StageInstance | None:
        """The Stage's live instance, from the cache or, after a restart, from Discord."""
        if stage.instance is not None:
            return stage.instance
        try:
            return await stage.fetch_instance()
        except discord.HTTPException:
            return None
