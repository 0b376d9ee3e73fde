"""The Stage: Discord's voice states into the core, the core's stage changes onto the Stage, and the
room's mix played there.

Both ways: the core's approve/invite/promote unsuppresses a member's linked Discord account on their
Space's Stage, demote and mute suppress (an unmute also lifts a server mute), remove disconnects. A
stage moderator's Move to Audience or Server Mute with Discord's own controls demotes or mutes in the
core, acted by "Discord Stage controls" (the gateway does not say who; Discord checked they may), so
the audit log records it. Every change the bot asks for is remembered until its VOICE_STATE_UPDATE
echo arrives, so the bot's own changes never come back as a second core change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import discord

from core.errors import DomainError
from core.model.accounts import Actor
from core.model.space import Role, Space, SpaceState

if TYPE_CHECKING:
    pass

from adapters.discord.base import PLATFORM, VoiceSession, say, stage_connection
from adapters.discord.events import EventsMixin
from adapters.discord.stages import StagesMixin
from adapters.discord.voice import RoomAudioSource, feed
from adapters.discord.voice_rx import StageBridge, StageVoiceClient
from adapters.webrtc.router import Rooms

log = logging.getLogger(__name__)

CONTROLS_NAME = "Discord Stage controls"  # who the audit log names for changes made with Discord's controls


class StageMixin(StagesMixin, EventsMixin):
    async def on_voice_state_update(self, member: discord.Member, before: discord.VoiceState,
                                    after: discord.VoiceState) -> None:
        if self.client is None or self.client.user is None or member.id == self.client.user.id or member.bot:
            return
        was = self._space_on(member.guild, before.channel)  # the Spaces whose Stages these are
        now = self._space_on(member.guild, after.channel)
        if was is None and now is None:
            return
        try:
            actor = await self._actor(member)
            connection = stage_connection(member.guild.id, member.id)
            if was is not None and was != now:  # a disconnect, not a leave: a client that dropped may come
                self._state.asked.pop((member.guild.id, member.id), None)  # back in the grace period
                await self.core.disconnect(was, actor.account_id, connection)
            if now is None:
                return
            if was != now:
                try:  # the member's voice is a connection, kept fresh by this process's presence heartbeat
                    await self.core.join(actor, now, connection=connection)
                except DomainError as e:  # no ticket, blocked: they may not listen here either
                    log.info("%s may not join %s from the Stage: %s", member, now, e.code)
                    with contextlib.suppress(discord.HTTPException):
                        await member.move_to(None, reason=f"Spacebridge: {say(e)}"[:500])
                    return
                await self._sync_speaker(now, actor.account_id)  # on the core's stage already: speak here too
                return
            await self._stage_controls(member, actor, now, before, after)
        except DomainError as e:
            log.info("voice state of %s not applied: %s", member, e.code)

    async def _stage_controls(self, member: discord.Member, actor: Actor, space_id: str,
                              before: discord.VoiceState, after: discord.VoiceState) -> None:
        """A change on the Stage itself: Request to Speak, or a moderator's Move to Audience or Server Mute
        (not one the bot made: those are echoes of what it asked for)."""
        asked = self._state.asked.get((member.guild.id, member.id), {})

        def foreign(name: str, value: bool) -> bool:
            if asked.get(name) == value:
                del asked[name]
                return False
            return True

        space = (await self.core.view(space_id)).space
        me = actor.account_id
        role = space.role_of(me)
        if before.suppress != after.suppress and foreign("suppress", after.suppress):
            if after.suppress and role is not None and role != Role.HOST and me not in space.muted:
                await self.core.demote(await self._controls(), space_id, me)
        if before.mute != after.mute and foreign("mute", after.mute):
            if after.mute and role is not None and me not in space.muted:
                await self.core.mute(await self._controls(), space_id, me, True)
            elif not after.mute and me in space.muted:
                await self.core.mute(await self._controls(), space_id, me, False)
        if after.requested_to_speak_at is not None and before.requested_to_speak_at is None:
            await self.core.raise_hand(actor, space_id)
        elif after.requested_to_speak_at is None and before.requested_to_speak_at is not None \
                and after.suppress and any(h.account_id == me for h in space.hands):
            await self.core.lower_hand(actor, space_id)

    async def _controls(self) -> Actor:
        """Who acts for Discord's own Stage controls. The gateway does not say who moved or muted a member;
        Discord already checked they may (Mute Members, or their own voice), so the core need not."""
        assert self.client is not None and self.client.user is not None
        account = await self.core.ensure_account(PLATFORM, str(self.client.user.id), CONTROLS_NAME)
        return Actor(account_id=account.id, platform=PLATFORM, is_operator=True)

    async def _members_on_stage(self, space: Space, account_id: str) -> list[discord.Member]:
        """The Discord members (any linked identity) of ``account_id`` now on this Space's Stage."""
        found = await self._guild_of(space)
        stage = None if found is None else self._stage_of(found[0], space.id)
        if found is None or stage is None:
            return []
        guild = found[0]
        out = []
        for ident in await self.core.identities(account_id):
            if ident.platform != PLATFORM:
                continue
            m = guild.get_member(int(ident.external_id))
            if m is not None and m.voice is not None and m.voice.channel is not None \
                    and m.voice.channel.id == stage.id:
                out.append(m)
        return out

    async def _sync_speaker(self, space_id: str, account_id: str) -> None:
        """Put the member's Stage voice where the core says. One sync per person at a time, each from the
        core's state read inside it: syncs spawned by quick successive changes (approve, then a Server
        Mute, then an unmute) otherwise overlapped, and an older one finished after a newer one."""
        lock = self._state.syncing.get((space_id, account_id))
        if lock is None:
            lock = self._state.syncing[(space_id, account_id)] = asyncio.Lock()
        async with lock:
            await self._sync_speaker_now(space_id, account_id)

    async def _sync_speaker_now(self, space_id: str, account_id: str) -> None:
        space = (await self.core.view(space_id)).space
        speaking = space.role_of(account_id) is not None and account_id not in space.muted and space.is_open
        for m in await self._members_on_stage(space, account_id):
            assert m.voice is not None
            asked = self._state.asked.setdefault((m.guild.id, m.id), {})
            # both decided now, from what the core and Discord said together: a Server Mute that arrives
            # while the unsuppress below is under way is a moderator's, not one the core lifted
            unsuppress, lift = m.voice.suppress == speaking, speaking and m.voice.mute
            try:
                if unsuppress:
                    asked["suppress"] = not speaking  # its echo is ours, not a moderator's
                    await m.edit(suppress=not speaking, reason="Spacebridge stage change")
                if lift:  # the core lifted a mute given with Discord's Server Mute
                    asked["mute"] = False
                    await m.edit(mute=False, reason="Spacebridge stage change")
            except discord.HTTPException as e:
                asked.clear()
                log.warning("cannot change %s on the Stage (needs Mute Members): %s", m, e)

    async def _go_live(self, space_id: str, *, announce: bool) -> None:
        async with self._posting.setdefault(space_id, asyncio.Lock()):
            await self._go_live_locked(space_id, announce=announce)

    async def _go_live_locked(self, space_id: str, *, announce: bool) -> None:
        view = await self.core.view(space_id)
        found = await self._guild_of(view.space)
        if found is None or view.space.state != SpaceState.LIVE:
            return
        guild, settings = found
        _, channel = self._channels(guild, settings)
        stage = await self._claim_stage(guild, settings, view.space)
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
                actor = await self._actor(member)
                await self.core.join(actor, space_id, connection=stage_connection(guild.id, member.id))
            except DomainError as e:  # blocked, no ticket: on_voice_state_update turned them away already
                log.info("%s on the Stage not counted in %s: %s", member, space_id, e.code)
                continue
            await self._sync_speaker(space_id, actor.account_id)

    async def _open_stage(self, guild: discord.Guild, stage: discord.StageChannel, space: Space,
                          settings: Any) -> None:
        event = await self._event_of(guild, space.id)
        if event is not None and event.status == discord.EventStatus.scheduled and event.channel_id != stage.id:
            with contextlib.suppress(discord.HTTPException):  # it runs on a Stage of its own
                await event.edit(channel=stage, reason="Spacebridge: the Space runs on this Stage")
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
        async with self._posting.setdefault(space_id, asyncio.Lock()):  # after going live has claimed a Stage
            await self._retopic_locked(space_id)

    async def _retopic_locked(self, space_id: str) -> None:
        view = await self.core.view(space_id)
        found = await self._guild_of(view.space)
        if found is None:
            return
        stage = self._stage_of(found[0], space_id)
        if stage is None or view.space.state != SpaceState.LIVE:
            return
        instance = await self._instance(stage)
        if instance is not None and instance.topic != view.space.title[:120]:
            with contextlib.suppress(discord.HTTPException):
                await instance.edit(topic=view.space.title[:120])

    async def _closed(self, space_id: str) -> None:
        self._posting.pop(space_id, None)
        view = await self.core.view(space_id)
        found = await self._guild_of(view.space)
        if found is None:
            return
        guild, _ = found
        await self._leave_voice(space_id)  # only this Space's: another's Stage and voice are left alone
        await self._release_stage(guild, space_id, ended=view.space.state == SpaceState.ENDED)
        await self._voice_to_next(guild)
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
        """Play this Space on its Stage, unless the bot's voice is on another Space's Stage here: Discord
        allows a bot one voice connection per guild, so it moves over when that Space closes."""
        if any(s.space_id == space_id or s.guild_id == guild.id for s in self._state.voice.values()):
            return
        session = VoiceSession(space_id, guild.id, stage.id, RoomAudioSource())
        self._state.voice[space_id] = session
        session.task = asyncio.create_task(self._run_voice(guild, stage, session), name=f"discord-voice:{space_id}")

    async def _run_voice(self, guild: discord.Guild, stage: discord.StageChannel, session: VoiceSession) -> None:
        assert self.audio is not None
        missing = self._missing(stage, ("connect", "speak"))
        if missing:
            log.warning("cannot play %s on %s: missing %s", session.space_id, stage, ", ".join(missing))
            return
        try:
            vc = await stage.connect(timeout=self.config.voice_timeout_s, reconnect=True, self_deaf=False,
                                     cls=StageVoiceClient)
        except (discord.ClientException, TimeoutError, discord.HTTPException) as e:
            log.warning("could not join the Stage %s: %s", stage, e)
            return
        session.client = vc
        try:
            await guild.me.edit(suppress=False, reason="Spacebridge plays the Space here")
        except discord.HTTPException as e:
            log.warning("could not become a speaker on %s (needs Mute Members): %s", stage, e)
        packets = self.audio.opus_packets(session.space_id)
        if isinstance(self.audio, Rooms) and isinstance(vc, StageVoiceClient):
            # Stage members are mixed into the room as speakers; the Stage hears the room without them
            bridge = session.bridge = StageBridge(self.audio, session.space_id, f"discord:{guild.id}",
                                                  lambda uid: self._account_id(guild, uid))
            vc.listen(bridge.on_stream, bridge.on_gone, bridge.forward)
            packets = bridge.packets()
        session.feeder = asyncio.create_task(feed(session.source, packets))
        vc.play(session.source)

    async def _account_id(self, guild: discord.Guild, user_id: int) -> str:
        """The account a Stage member speaks as (the one their Stage presence joined with)."""
        member = guild.get_member(user_id)
        name = member.display_name if member is not None else str(user_id)
        return (await self.core.ensure_account(PLATFORM, str(user_id), name)).id

    async def _voice_to_next(self, guild: discord.Guild) -> None:
        """The bot's voice, freed by a Space that closed, goes to another live Space's Stage here."""
        if self.audio is None or any(s.guild_id == guild.id for s in self._state.voice.values()):
            return
        for space_id in list(self._state.stages):
            stage = self._stage_of(guild, space_id)
            if stage is not None:
                self._start_voice(guild, stage, space_id)
                return

    async def _leave_voice(self, space_id: str) -> None:
        session = self._state.voice.pop(space_id, None)
        if session is None:
            return
        session.source.close()
        if isinstance(session.client, StageVoiceClient) and session.client.receiver is not None:
            session.client.receiver.stop()
        if session.bridge is not None:
            session.bridge.close()
        for t in (session.feeder, session.task):
            if t is not None and not t.done():
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        if session.client is not None:
            with contextlib.suppress(Exception):
                await session.client.disconnect(force=True)

    def voice_source(self, guild_id: int) -> RoomAudioSource | None:
        """What the bot plays in this guild (its one voice connection there)."""
        session = next((s for s in self._state.voice.values() if s.guild_id == guild_id), None)
        return None if session is None else session.source
