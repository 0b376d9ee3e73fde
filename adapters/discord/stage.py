"""The Stage: Discord's voice states into the core, the core's stage changes onto the Stage, and the
room's mix played there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import discord

from core.errors import DomainError
from core.model.space import Space, SpaceState

if TYPE_CHECKING:
    pass

from adapters.discord.base import PLATFORM, VoiceSession, say, stage_connection
from adapters.discord.events import EventsMixin
from adapters.discord.voice import RoomAudioSource, feed

log = logging.getLogger(__name__)


class StageMixin(EventsMixin):
    async def on_voice_state_update(self, member: discord.Member, before: discord.VoiceState,
                                    after: discord.VoiceState) -> None:
        if self.client is None or self.client.user is None or member.id == self.client.user.id or member.bot:
            return
        try:
            community = await self.core.ensure_community(PLATFORM, str(member.guild.id), member.guild.name)
            stage_id = community.settings.stage_channel
            if not stage_id:
                return
            was = before.channel is not None and str(before.channel.id) == stage_id
            now_in = after.channel is not None and str(after.channel.id) == stage_id
            if not (was or now_in):
                return
            live = await self.core.list_spaces(states=("live",), community_id=community.id)
            if not live:
                return
            space = live[0]
            actor = await self._actor(member)
            connection = stage_connection(member.guild.id, member.id)
            if now_in and not was:
                try:  # the member's voice is a connection, kept fresh by this process's presence heartbeat
                    await self.core.join(actor, space.id, connection=connection)
                except DomainError as e:  # no ticket, blocked: they may not listen here either
                    log.info("%s may not join %s from the Stage: %s", member, space.id, e.code)
                    with contextlib.suppress(discord.HTTPException):
                        await member.move_to(None, reason=f"Spacebridge: {say(e)}"[:500])
                    return
            if was and not now_in:  # a disconnect, not a leave: a client that dropped may come back in the
                await self.core.disconnect(space.id, actor.account_id, connection)  # grace period
                return
            if after.requested_to_speak_at is not None and before.requested_to_speak_at is None:
                await self.core.raise_hand(actor, space.id)
            elif after.requested_to_speak_at is None and before.requested_to_speak_at is not None \
                    and after.suppress and any(h.account_id == actor.account_id for h in space.hands):
                await self.core.lower_hand(actor, space.id)
        except DomainError as e:
            log.info("voice state of %s not applied: %s", member, e.code)

    async def _members_on_stage(self, space: Space, account_id: str) -> list[discord.Member]:
        """The Discord members (any linked identity) of ``account_id`` now on this Space's Stage."""
        if self.client is None or not space.community_id:
            return []
        community = await self.core.community(space.community_id)
        if community.platform != PLATFORM or not community.settings.stage_channel:
            return []
        guild = self.client.get_guild(int(community.external_id))
        if guild is None:
            return []
        out = []
        for ident in await self.core.identities(account_id):
            if ident.platform != PLATFORM:
                continue
            m = guild.get_member(int(ident.external_id))
            if m is not None and m.voice is not None and m.voice.channel is not None \
                    and str(m.voice.channel.id) == community.settings.stage_channel:
                out.append(m)
        return out

    async def _sync_speaker(self, space_id: str, account_id: str) -> None:
        space = (await self.core.view(space_id)).space
        speaking = space.role_of(account_id) is not None and account_id not in space.muted and space.is_open
        for m in await self._members_on_stage(space, account_id):
            assert m.voice is not None
            if m.voice.suppress == (not speaking):
                continue
            try:
                await m.edit(suppress=not speaking, reason="Spacebridge stage change")
            except discord.Forbidden:
                log.warning("cannot move %s on the Stage: missing Mute Members", m)

    async def _go_live(self, space_id: str, *, announce: bool) -> None:
        async with self._posting.setdefault(space_id, asyncio.Lock()):
            await self._go_live_locked(space_id, announce=announce)

    async def _go_live_locked(self, space_id: str, *, announce: bool) -> None:
        view = await self.core.view(space_id)
        found = await self._guild_of(view.space)
        if found is None or view.space.state != SpaceState.LIVE:
            return
        guild, settings = found
        stage, channel = self._channels(guild, settings)
        if stage is not None:
            try:
                await self._open_stage(guild, stage, view.space, settings)
            except discord.HTTPException as e:
                log.warning("could not open the Stage for %s: %s", space_id, e)
            await self._already_on_stage(guild, stage, space_id)
            if self.audio is not None:
                self._start_voice(guild, stage, space_id)
        if announce and channel is not None:
            mention = f"<@&{settings.announce_role}> " if settings.announce_role else ""
            await self._post_card(channel, space_id, f"{mention}🔴 **{view.host_name}** is live: {view.space.title}",
                                  roles=[int(settings.announce_role)] if settings.announce_role else [])

    async def _already_on_stage(self, guild: discord.Guild, stage: discord.StageChannel, space_id: str) -> None:
        """Members in the Stage's voice when the Space goes live, or when this process starts while it is
        live (a restart): their voice is a connection again, before the old one goes stale and is swept."""
        me = self.client.user.id if self.client is not None and self.client.user is not None else None
        for user_id in list(stage.voice_states):
            member = guild.get_member(user_id)
            if member is None:
                with contextlib.suppress(discord.HTTPException):
                    member = await guild.fetch_member(user_id)
            if member is None or member.bot or member.id == me:
                continue
            try:
                await self.core.join(await self._actor(member), space_id,
                                     connection=stage_connection(guild.id, member.id))
            except DomainError as e:  # blocked, no ticket: on_voice_state_update turned them away already
                log.info("%s on the Stage not counted in %s: %s", member, space_id, e.code)

    async def _open_stage(self, guild: discord.Guild, stage: discord.StageChannel, space: Space,
                          settings: Any) -> None:
        event = await self._event_of(guild, space.id)
        if event is not None and event.status == discord.EventStatus.scheduled:
            with contextlib.suppress(discord.HTTPException):
                await event.start(reason="Spacebridge: the Space went live")
        instance = await self._instance(stage)
        topic = space.title[:120]
        if instance is None:
            kwargs: dict[str, Any] = {}
            if event is not None:
                kwargs["scheduled_event"] = event
            await stage.create_instance(topic=topic, send_start_notification=bool(settings.stage_notify),
                                        reason="Spacebridge: the Space went live", **kwargs)
        elif instance.topic != topic:
            await instance.edit(topic=topic)

    async def _retopic(self, space_id: str) -> None:
        view = await self.core.view(space_id)
        found = await self._guild_of(view.space)
        if found is None:
            return
        stage, _ = self._channels(*found)
        if stage is None or view.space.state != SpaceState.LIVE:
            return
        instance = await self._instance(stage)
        if instance is not None and instance.topic != view.space.title[:120]:
            with contextlib.suppress(discord.HTTPException):
                await instance.edit(topic=view.space.title[:120])

    @staticmethod
    async def _instance(stage: discord.StageChannel) -> discord.StageInstance | None:
        """The Stage's live instance, from the cache or, after a restart, from Discord."""
        if stage.instance is not None:
            return stage.instance
        try:
            return await stage.fetch_instance()
        except discord.HTTPException:
            return None

    async def _closed(self, space_id: str) -> None:
        self._posting.pop(space_id, None)
        view = await self.core.view(space_id)
        found = await self._guild_of(view.space)
        if found is None:
            return
        guild, settings = found
        if self._state.voice.get(guild.id, None) is not None and self._state.voice[guild.id].space_id == space_id:
            await self._leave_voice(guild.id)
        stage, _ = self._channels(guild, settings)
        if stage is not None and view.space.state == SpaceState.ENDED:
            instance = await self._instance(stage)
            if instance is not None:
                with contextlib.suppress(discord.NotFound):
                    await instance.delete(reason="Spacebridge: the Space ended")
        event = await self._event_of(guild, space_id)
        if event is not None:
            with contextlib.suppress(discord.HTTPException):
                if event.status == discord.EventStatus.active:
                    await event.end(reason="Spacebridge: the Space ended")
                elif event.status == discord.EventStatus.scheduled:
                    await event.cancel(reason="Spacebridge: the Space was cancelled")

    async def _disconnect_member(self, space_id: str, account_id: str) -> None:
        space = (await self.core.view(space_id)).space
        for m in await self._members_on_stage(space, account_id):
            with contextlib.suppress(discord.HTTPException):
                await m.move_to(None, reason="Spacebridge: removed from the Space")

    def _start_voice(self, guild: discord.Guild, stage: discord.StageChannel, space_id: str) -> None:
        current = self._state.voice.get(guild.id)
        if current is not None and current.space_id == space_id:
            return
        session = VoiceSession(space_id, stage.id, RoomAudioSource())
        self._state.voice[guild.id] = session
        session.task = asyncio.create_task(self._run_voice(guild, stage, session), name=f"discord-voice:{space_id}")

    async def _run_voice(self, guild: discord.Guild, stage: discord.StageChannel, session: VoiceSession) -> None:
        assert self.audio is not None
        missing = self._missing(stage, ("connect", "speak"))
        if missing:
            log.warning("cannot play %s on %s: missing %s", session.space_id, stage, ", ".join(missing))
            return
        try:
            vc: discord.VoiceClient = await stage.connect(timeout=self.config.voice_timeout_s, reconnect=True,
                                                          self_deaf=True)
        except (discord.ClientException, TimeoutError, discord.HTTPException) as e:
            log.warning("could not join the Stage %s: %s", stage, e)
            return
        session.client = vc
        try:
            await guild.me.edit(suppress=False, reason="Spacebridge plays the Space here")
        except discord.HTTPException as e:
            log.warning("could not become a speaker on %s (needs Mute Members): %s", stage, e)
        session.feeder = asyncio.create_task(feed(session.source, self.audio.opus_packets(session.space_id)))
        vc.play(session.source)

    async def _leave_voice(self, guild_id: int) -> None:
        session = self._state.voice.pop(guild_id, None)
        if session is None:
            return
        session.source.close()
        for t in (session.feeder, session.task):
            if t is not None and not t.done():
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        if session.client is not None:
            with contextlib.suppress(Exception):
                await session.client.disconnect(force=True)

    def voice_source(self, guild_id: int) -> RoomAudioSource | None:
        session = self._state.voice.get(guild_id)
        return None if session is None else session.source
