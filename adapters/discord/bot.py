"""The Discord adapter: a discord.py bot that carries Spaces to Stage channels.

On Discord a Space is a Stage. When a Space of a guild goes live the bot opens the stage instance,
joins it, asks to be a speaker and plays the room's mix (the room's own Opus packets), so Discord
listeners hear speakers from every platform. Discord's own "Request to Speak" joins the core's
queue; approving from any platform unsuppresses the member on the Stage; demoting or muting
suppresses them. Scheduled Spaces become guild scheduled events, and members marked "Interested"
get the core's reminders by DM.

Every slash command and button resolves the caller to an ``Actor`` (members with Manage Server are
community admins; their role ids are platform roles for the community's rules) and calls the core,
which decides. A ``DomainError`` becomes an ephemeral reply in the core's words.

Requests are paced below Discord's global limit (50/s) by an aiohttp trace hook on discord.py's own
session; discord.py honours per-route buckets and ``retry_after`` itself, and waits longer than
``max_ratelimit_timeout`` go back to the durable job queue as a retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import ssl
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Optional

import aiohttp
import discord
import yarl
from discord import app_commands

from adapters.discord import render
from adapters.discord.voice import RoomAudioSource, feed
from billing.ledger import Ledger
from core import events as ev
from core.cards import Card, CardRefresher, CardStore
from core.errors import Conflict, DomainError, Forbidden, Invalid, NotFound
from core.messages import describe
from core.model.accounts import Actor
from core.model.space import Role, Space, SpaceState
from core.model.ticket import TicketStatus
from core.ports import AudioTap, Delivery, DeliveryResult
from core.services import Core
from core.timeparse import parse_when
from core.tokens import JoinTokens

if TYPE_CHECKING:
    from plugins.api import CommandSpec
    from plugins.manager import PluginManager

log = logging.getLogger(__name__)

PLATFORM = "discord"
ADMIN_ROLE = "admin"
JOIN_TOKEN_TTL_S = 15 * 60
EVENT_CHAT = "event:"  # CardStore chat ids of scheduled events: "event:<guild id>"

PERMISSION_NAMES = {
    "view_channel": "View Channel", "send_messages": "Send Messages", "embed_links": "Embed Links",
    "manage_channels": "Manage Channels", "mute_members": "Mute Members", "move_members": "Move Members",
    "connect": "Connect", "speak": "Speak", "manage_events": "Manage Events", "manage_roles": "Manage Roles",
}
STAGE_NEEDS = ("view_channel", "manage_channels", "mute_members", "move_members", "connect", "speak")
ANNOUNCE_NEEDS = ("view_channel", "send_messages", "embed_links")

_MISC_TEXT = {
    "discord.missing_permissions": "I'm missing permissions in {where}: {permissions}. A server admin can grant "
                                   "them to my role (Server Settings → Roles), then try again.",
    "discord.guild_only": "Use this in a server, not in DMs.",
    "discord.which_space": "Which Space? Add its id with the space: option (see the card's footer).",
    "discord.no_space_here": "There is no live Space in this server. Start one with /space start.",
    "discord.not_a_member": "That user is not a member of this server.",
    "discord.bad_rule": "{detail}",
    "discord.stars_only": "This Space sells tickets in Telegram Stars: buy it from the Telegram bot.",
}


def say(error: DomainError) -> str:
    return describe(error, _MISC_TEXT)


@dataclass
class DiscordConfig:
    token: str
    api_base: str | None = None  # REST base, e.g. a caching proxy or a local fake: http://127.0.0.1:8080/api/v10
    gateway_url: str | None = None  # gateway WebSocket base
    ca_file: str | None = None  # extra CA to trust (TLS-inspecting proxy; a local fake voice server)
    card_interval_s: float = 5.0
    global_per_s: float = 50.0
    max_ratelimit_wait_s: float = 30.0  # longer waits go back to the job queue (discord.py's minimum is 30)
    guild_ready_timeout_s: float = 2.0
    voice: bool = True
    voice_timeout_s: float = 20.0
    interested_sync_s: float = 300.0
    # Sharding (docs/deploy.md): all shards of shard_count, or only shard_ids, in this process. None:
    # one connection, unsharded (fine below 2,500 servers, Discord's limit per shard).
    shard_count: int | None = None
    shard_ids: tuple[int, ...] = ()


class Pacer:
    """Spaces requests at least ``1/rate`` apart (booking slots ahead), so bursts never hit the
    global limit; interaction callbacks and follow-ups are exempt, as they are on Discord."""

    def __init__(self, rate: float) -> None:
        self.gap = 1.0 / rate
        self._next = 0.0
        self.waited_s = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self.gap
        if slot > now:
            self.waited_s += slot - now
            await asyncio.sleep(slot - now)

    def trace(self, exempt: tuple[str, ...]) -> aiohttp.TraceConfig:
        config = aiohttp.TraceConfig()

        async def on_start(session: Any, ctx: Any, params: aiohttp.TraceRequestStartParams) -> None:
            path = params.url.path
            if params.url.scheme in ("ws", "wss") or any(p in path for p in exempt):
                return
            await self.wait()

        config.on_request_start.append(on_start)
        return config


@dataclass
class VoiceSession:
    space_id: str
    channel_id: int
    source: RoomAudioSource
    feeder: asyncio.Task[None] | None = None
    client: discord.VoiceClient | None = None
    task: asyncio.Task[None] | None = None


@dataclass
class _State:
    voice: dict[int, VoiceSession] = field(default_factory=dict)  # guild id -> session
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


def stage_connection(guild_id: int, user_id: int) -> str:
    """The presence connection of a member's voice on a guild's Stage: their Discord client's link to
    the Space, as a socket is a web page's. Stable, so leaving the Stage ends the row joining made."""
    return "discord:" + hashlib.blake2b(f"{guild_id}:{user_id}".encode(), digest_size=12).hexdigest()


class DiscordAdapter:
    """One bot, started and stopped by ``spacebridge serve``; also the Discord ``Notifier``."""

    platform = PLATFORM

    def __init__(self, core: Core, ledger: Ledger, tokens: JoinTokens, public_url: str, config: DiscordConfig,
                 *, audio: AudioTap | None = None, stripe_sales: Any = None,
                 plugins: PluginManager | None = None) -> None:
        self.core, self.ledger, self.tokens = core, ledger, tokens
        self.plugins = plugins
        self.public_url = public_url.rstrip("/")
        self.config = config
        self.audio = audio if config.voice else None
        self.stripe_sales = stripe_sales
        self.cards = CardStore(core, PLATFORM)
        self.refresher = CardRefresher(self._refresh_cards, config.card_interval_s)
        self.pacer = Pacer(config.global_per_s)
        self.client: discord.Client | None = None
        self.tree: app_commands.CommandTree[discord.Client] | None = None
        self._state = _State()
        # Per Space: a notice waits for the go-live card it replies to (both are spawned tasks).
        self._posting: dict[str, asyncio.Lock] = {}
        self._runner: asyncio.Task[None] | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self._started = False

    # ---- life ---------------------------------------------------------------------------------
    def _make_client(self) -> discord.Client:
        if self.config.api_base:
            discord.http.Route.BASE = self.config.api_base.rstrip("/")
        if self.config.gateway_url:
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.config.gateway_url)
        connector = None
        if self.config.ca_file:
            ctx = ssl.create_default_context(cafile=self.config.ca_file)
            ctx.load_default_certs()
            connector = aiohttp.TCPConnector(ssl=ctx)
        intents = discord.Intents.none()
        intents.guilds = True
        intents.voice_states = True
        intents.guild_scheduled_events = True
        options: dict[str, Any] = dict(
            intents=intents, connector=connector, http_trace=self.pacer.trace(("/interactions/", "/webhooks/")),
            max_ratelimit_timeout=max(self.config.max_ratelimit_wait_s, 30.0),
            guild_ready_timeout=self.config.guild_ready_timeout_s, chunk_guilds_at_startup=False,
            allowed_mentions=discord.AllowedMentions(everyone=False, users=True, roles=False))
        client: discord.Client
        if self.config.shard_count:
            # Each process holds some shards; a guild's events reach only its shard's process, and so
            # the Stage, cards and voice of a guild are handled once, by that process.
            if self.config.shard_ids:
                options["shard_ids"] = list(self.config.shard_ids)
            client = discord.AutoShardedClient(shard_count=self.config.shard_count, **options)
        else:
            client = discord.Client(**options)
        self.tree = app_commands.CommandTree(client)
        self.tree.on_error = self._on_command_error  # type: ignore[method-assign]
        self._register(self.tree)
        if self.plugins is not None:
            for spec in self.plugins.command_list():
                self.tree.add_command(self._plugin_command(spec))
        client.event(self.on_voice_state_update)
        client.event(self.on_interaction)
        client.event(self.on_scheduled_event_user_add)
        client.event(self.on_scheduled_event_user_remove)
        client.event(self.on_guild_join)
        client.event(self.on_guild_available)
        return client

    async def start(self) -> None:
        """Log in (a bad token raises ``discord.LoginFailure``), connect, and wait until ready."""
        client = self.client = self._make_client()
        try:
            await client.login(self.config.token)
        except BaseException:
            await client.close()
            self.client = None
            raise
        self._runner = asyncio.create_task(client.connect(reconnect=True), name="discord-gateway")
        self._runner.add_done_callback(self._gateway_done)
        ready = asyncio.create_task(client.wait_until_ready())
        done, _ = await asyncio.wait({ready, self._runner}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if self._runner in done:
            ready.cancel()
            self._runner.result()  # raises what stopped the gateway
        if ready not in done:
            ready.cancel()
            raise TimeoutError("Discord's gateway did not become ready within 60 s")
        assert self.tree is not None
        await self.tree.sync()
        self.core.bus.subscribe(self._on_event)
        self._started = True
        self.refresher.running = True
        for space_id in await self.cards.open_spaces():
            self.refresher.mark(space_id)
        for space in await self._live_discord_spaces():  # a restart while live: back on the Stage
            self._spawn(self._go_live(space.id, announce=False))
        self._sync_task = asyncio.create_task(self._sync_interested_loop(), name="discord-interested")

    async def stop(self) -> None:
        if not self._started and self.client is None:
            return
        drain = getattr(self.core.bus, "drain", None)
        if drain is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(drain(), 5.0)
        self._started = False
        await self.refresher.stop()
        if self._sync_task is not None:
            self._sync_task.cancel()
        for guild_id in list(self._state.voice):
            await self._leave_voice(guild_id)
        # wait for cancelled work to unwind before the database goes away: a task cancelled in the middle
        # of a transaction must roll back on a live connection, or it never finishes
        tasks = [t for t in self._state.tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if self._sync_task is not None:
            tasks.append(self._sync_task)
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        if self.client is not None:
            await self.client.close()
        if self._runner is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._runner

    def _gateway_done(self, task: asyncio.Task[None]) -> None:
        if self._started and not task.cancelled() and task.exception() is not None:
            log.critical("the Discord gateway connection stopped: %r", task.exception(), exc_info=task.exception())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._state.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._state.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("discord task failed", exc_info=task.exception())

    # ---- who is asking -----------------------------------------------------------------------
    async def _account(self, user: discord.abc.User) -> str:
        return (await self.core.ensure_account(PLATFORM, str(user.id), user.display_name)).id

    async def _actor(self, user: discord.abc.User) -> Actor:
        account = await self._account(user)
        roles: set[str] = set()
        admin = False
        if isinstance(user, discord.Member):
            roles = {str(r.id) for r in user.roles if not r.is_default()}
            perms = user.guild_permissions
            admin = perms.manage_guild or perms.administrator
            if admin:
                roles.add(ADMIN_ROLE)
        return Actor(account_id=account, platform=PLATFORM, platform_roles=frozenset(roles), is_community_admin=admin)

    async def _community(self, guild: discord.Guild | None) -> Any:
        if guild is None:
            raise Invalid("discord.guild_only")
        return await self.core.ensure_community(PLATFORM, str(guild.id), guild.name)

    async def _space(self, interaction: discord.Interaction, space_id: str | None, *,
                     states: tuple[str, ...] = ("live",), actor: Actor | None = None) -> Space:
        """The Space a command is about: the ``space`` option, else the one live (or scheduled, where
        allowed) in this server, else the caller's own."""
        if space_id:
            return (await self.core.view(space_id.strip())).space
        if interaction.guild is not None:
            community = await self._community(interaction.guild)
            candidates = await self.core.list_spaces(states=states, community_id=community.id)
        elif actor is not None:
            candidates = await self.core.list_spaces(states=states, host_id=actor.account_id)
        else:
            candidates = []
        live = [s for s in candidates if s.state == SpaceState.LIVE]
        pick = live or candidates
        if len(pick) == 1 or (live and interaction.guild is not None):
            return pick[0]
        if not pick and interaction.guild is not None and states == ("live",):
            raise NotFound("discord.no_space_here")
        raise Invalid("discord.which_space")

    async def _reply(self, interaction: discord.Interaction, text: str = "", *, ephemeral: bool = True,
                     embed: discord.Embed | None = None, view: discord.ui.View | None = None) -> None:
        kwargs: dict[str, Any] = {"ephemeral": ephemeral}
        if embed is not None:
            kwargs["embed"] = embed
        if view is not None:
            kwargs["view"] = view
        if interaction.response.is_done():
            await interaction.followup.send(text, **kwargs)
        else:
            await interaction.response.send_message(text, **kwargs)

    async def _on_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        original = getattr(error, "original", error)
        if isinstance(original, DomainError):
            text = "⚠️ " + say(original)
        elif isinstance(original, discord.Forbidden):
            text = "⚠️ Discord refused: " + (original.text or "missing permissions") + \
                   ". Check my role's permissions (Server Settings → Roles)."
        elif isinstance(error, app_commands.CheckFailure | app_commands.TransformerError):
            text = "⚠️ " + str(error)
        else:
            log.error("discord command failed", exc_info=original)
            text = "Something went wrong on our side; please try again."
        with contextlib.suppress(discord.HTTPException):
            await self._reply(interaction, text, ephemeral=True)

    # ---- permissions -------------------------------------------------------------------------
    @staticmethod
    def _missing(channel: discord.abc.GuildChannel, needs: tuple[str, ...]) -> list[str]:
        perms = channel.permissions_for(channel.guild.me)
        return [PERMISSION_NAMES[n] for n in needs if not getattr(perms, n)]

    def _require(self, channel: discord.abc.GuildChannel, needs: tuple[str, ...]) -> None:
        missing = self._missing(channel, needs)
        if missing:
            raise Forbidden("discord.missing_permissions", where=f"#{channel.name}", permissions=missing)

    def _require_guild(self, guild: discord.Guild, *needs: str) -> None:
        perms = guild.me.guild_permissions
        missing = [PERMISSION_NAMES[n] for n in needs if not getattr(perms, n)]
        if missing:
            raise Forbidden("discord.missing_permissions", where="this server", permissions=missing)

    def _channels(self, guild: discord.Guild, settings: Any) -> tuple[discord.StageChannel | None,
                                                                      discord.TextChannel | None]:
        stage = guild.get_channel(int(settings.stage_channel)) if settings.stage_channel else None
        announce = guild.get_channel(int(settings.announce_channel)) if settings.announce_channel else None
        return (stage if isinstance(stage, discord.StageChannel) else None,
                announce if isinstance(announce, discord.TextChannel) else None)

    async def _preflight(self, guild: discord.Guild, *, scheduled: bool) -> None:
        """Before a Space is created here: every Discord object it will need can be made."""
        settings = (await self._community(guild)).settings
        stage, announce = self._channels(guild, settings)
        if stage is not None:
            self._require(stage, STAGE_NEEDS)
            if scheduled:
                self._require_guild(guild, "manage_events")
        if announce is not None:
            self._require(announce, ANNOUNCE_NEEDS)

    # ---- commands ------------------------------------------------------------------------------
    def _register(self, tree: app_commands.CommandTree[discord.Client]) -> None:
        space = app_commands.Group(name="space", description="Live audio Spaces")
        admin = app_commands.Group(name="spacebridge", description="Set Spacebridge up for this server",
                                   default_permissions=discord.Permissions(manage_guild=True), guild_only=True)
        me = self

        @space.command(name="start", description="Go live now, or start your scheduled Space")
        @app_commands.describe(title="Title of a new Space", space="Id of your scheduled Space to start",
                               topic="Up to three topics, comma separated")
        async def start(interaction: discord.Interaction, title: str | None = None, space: str | None = None,
                        topic: str | None = None) -> None:
            await me.cmd_start(interaction, title, space, topic)

        @space.command(name="schedule", description="Schedule a Space up to 30 days ahead")
        @app_commands.describe(title="Title", when="When: +2h, in 3d, tomorrow 18:00, 2026-12-01T18:00Z",
                               topic="Up to three topics, comma separated")
        async def schedule(interaction: discord.Interaction, title: str, when: str, topic: str | None = None) -> None:
            await me.cmd_schedule(interaction, title, when, topic)

        @space.command(name="end", description="End your live Space")
        async def end(interaction: discord.Interaction, space: str | None = None) -> None:
            actor = await me._actor(interaction.user)
            s = await me._space(interaction, space, actor=actor)
            s = await me.core.end_space(actor, s.id)
            await me._reply(interaction, f"⏹ **{s.title}** has ended. Thanks for listening!", ephemeral=False)

        @space.command(name="cancel", description="Cancel your scheduled Space (ticket holders are refunded)")
        async def cancel(interaction: discord.Interaction, space: str | None = None) -> None:
            actor = await me._actor(interaction.user)
            s = await me._space(interaction, space, states=("scheduled",), actor=actor)
            s = await me.core.cancel_space(actor, s.id)
            if s.ticketing is not None:
                await me.ledger.refund_all(s.id)
            await me._reply(interaction, f"✖️ **{s.title}** is cancelled."
                            + (" Every ticket is being refunded." if s.ticketing else ""), ephemeral=False)

        @space.command(name="remind", description="Get a DM when a scheduled Space starts")
        async def remind(interaction: discord.Interaction, space: str | None = None, off: bool = False) -> None:
            actor = await me._actor(interaction.user)
            s = await me._space(interaction, space, states=("scheduled",), actor=actor)
            await me.core.set_reminder(actor, s.id, not off)
            await me._reply(interaction, f"🔔 I'll DM you when **{s.title}** starts." if not off
                            else f"No reminder for **{s.title}**.")

        @space.command(name="hand", description="Raise or lower your hand")
        async def hand(interaction: discord.Interaction, space: str | None = None, down: bool = False) -> None:
            actor = await me._actor(interaction.user)
            s = await me._space(interaction, space, actor=actor)
            await me._reply(interaction, await me._toggle_hand(actor, s, down))

        @space.command(name="queue", description="Who has a hand up")
        async def queue(interaction: discord.Interaction, space: str | None = None) -> None:
            actor = await me._actor(interaction.user)
            s = await me._space(interaction, space, actor=actor)
            view = await me.core.view(s.id)
            if not view.space.hands:
                await me._reply(interaction, "No hands are up.")
                return
            lines = [f"{i}. {view.names.get(h.account_id, h.account_id)} (`{h.account_id}`)"
                     for i, h in enumerate(view.space.hands, 1)]
            await me._reply(interaction, "✋ Queue — `/space approve` brings someone up:\n" + "\n".join(lines))

        def stage_command(name: str, description: str, done: str,
                          act: Any, extra: dict[str, Any] | None = None) -> None:
            @space.command(name=name, description=description)
            @app_commands.describe(member="Who", space="Space id (defaults to the live one here)")
            async def command(interaction: discord.Interaction, member: discord.Member,
                              space: str | None = None) -> None:
                actor = await me._actor(interaction.user)
                s = await me._space(interaction, space, actor=actor)
                who = await me._account(member)
                await act(actor, s, who)
                await me._reply(interaction, done.format(name=member.display_name), ephemeral=False)

        stage_command("approve", "Bring a raised hand on stage (host, co-host)", "🎙 {name} is now on stage.",
                      lambda a, s, w: me.core.approve(a, s.id, w))
        stage_command("deny", "Lower someone's hand (host, co-host)", "{name}'s hand was lowered.",
                      lambda a, s, w: me.core.deny(a, s.id, w))
        stage_command("invite", "Invite someone to speak (host, co-host)", "📨 {name} is invited to speak.",
                      lambda a, s, w: me.core.invite(a, s.id, w))
        stage_command("unmute", "Unmute a speaker (host, co-host)", "🔈 {name} is unmuted.",
                      lambda a, s, w: me.core.mute(a, s.id, w, False))
        stage_command("mute", "Mute a speaker (host, co-host)", "🔇 {name} is muted.",
                      lambda a, s, w: me.core.mute(a, s.id, w, True))

        @space.command(name="remove", description="Remove someone from the Space (host, co-host)")
        @app_commands.describe(block="Also keep them out of this host's Spaces", reason="Why (kept in the log)")
        async def remove(interaction: discord.Interaction, member: discord.Member, block: bool = False,
                         reason: str = "", space: str | None = None) -> None:
            actor = await me._actor(interaction.user)
            s = await me._space(interaction, space, actor=actor)
            await me.core.remove(actor, s.id, await me._account(member), block=block, reason=reason)
            await me._reply(interaction, f"{member.display_name} was removed" + (" and blocked." if block else "."),
                            ephemeral=False)

        @space.command(name="pin", description="Pin a link to the Space (people on stage)")
        async def pin(interaction: discord.Interaction, url: str, title: str | None = None,
                      space: str | None = None) -> None:
            actor = await me._actor(interaction.user)
            s = await me._space(interaction, space, actor=actor)
            await me.core.pin(actor, s.id, title or url, url=url)
            await me._reply(interaction, f"📌 Pinned: {title or url}", ephemeral=False)

        @space.command(name="unpin", description="Unpin by number (1 is the first pin on the card)")
        async def unpin(interaction: discord.Interaction, number: app_commands.Range[int, 1, 50],
                        space: str | None = None) -> None:
            actor = await me._actor(interaction.user)
            s = await me._space(interaction, space, actor=actor)
            if number > len(s.pins):
                raise NotFound("pin.not_found", pin_id=str(number))
            await me.core.unpin(actor, s.id, s.pins[number - 1].id)
            await me._reply(interaction, "Unpinned.", ephemeral=False)

        @space.command(name="captions", description="Captions on or off (people on stage)")
        async def captions(interaction: discord.Interaction, on: bool, space: str | None = None) -> None:
            actor = await me._actor(interaction.user)
            s = await me._space(interaction, space, actor=actor)
            await me.core.set_captions(actor, s.id, on)
            await me._reply(interaction, f"💬 Captions {'on' if on else 'off'}.", ephemeral=False)

        @space.command(name="share", description="Share a Space here")
        async def share(interaction: discord.Interaction, space: str | None = None) -> None:
            actor = await me._actor(interaction.user)
            s = await me._space(interaction, space, states=("live", "scheduled"), actor=actor)
            payload = await me.core.share(s.id, {"web": f"{me.public_url}/s/{s.id}"})
            content = render.card(await me.core.view(s.id), f"{me.public_url}/s/{s.id}")
            kwargs: dict[str, Any] = {"embed": content.embed}
            if content.view is not None:
                kwargs["view"] = content.view
            await me._reply(interaction, payload.text(), ephemeral=False, **kwargs)

        @space.command(name="ticket", description="Buy a ticket to a ticketed Space")
        async def ticket(interaction: discord.Interaction, space: str | None = None) -> None:
            actor = await me._actor(interaction.user)
            s = await me._space(interaction, space, states=("live", "scheduled"), actor=actor)
            await me.cmd_ticket(interaction, actor, s)

        @space.command(name="join", description="Your personal link to the web room (to speak from the browser)")
        async def join(interaction: discord.Interaction, space: str | None = None) -> None:
            actor = await me._actor(interaction.user)
            s = await me._space(interaction, space, actor=actor)
            await me._send_room(interaction, actor, s.id)

        @space.command(name="link", description="Link your account across Discord, Telegram and the web")
        @app_commands.describe(code="A code from another platform; leave empty to get one")
        async def link(interaction: discord.Interaction, code: str | None = None) -> None:
            actor = await me._actor(interaction.user)
            if code:
                account = await me.core.redeem_link_code(actor, code.strip())
                await me._reply(interaction, f"✅ Linked to {account.display_name}'s account.")
                return
            issued = await me.core.issue_link_code(actor)
            await me._reply(interaction, f"🔗 Your link code is `{issued.code}` (valid 10 minutes, once). Enter it on "
                                         "Telegram with /link CODE, or on the web.")

        @admin.command(name="setup", description="Channels, roles and who may host (server admins)")
        @app_commands.describe(
            announce_channel="Where Spaces are announced", stage_channel="The Stage where Spaces run",
            announce_role="Role mentioned when a Space goes live", moderator_role="Role that counts as admin here",
            host_rule="Who may host", host_min_followers="Followers needed when host_rule is followers",
            host_role="Role needed when host_rule is role", ticketing="Allow ticketed Spaces",
            ticket_role="Role given to ticket holders (taken back on refund)",
            stage_notify="Notify the server when the Stage goes live")
        async def setup(interaction: discord.Interaction, announce_channel: discord.TextChannel | None = None,
                        stage_channel: discord.StageChannel | None = None, announce_role: discord.Role | None = None,
                        moderator_role: discord.Role | None = None,
                        host_rule: Literal["followers", "role", "everyone", "admins"] | None = None,
                        host_min_followers: app_commands.Range[int, 0, 100_000_000] | None = None,
                        host_role: discord.Role | None = None, ticketing: bool | None = None,
                        ticket_role: discord.Role | None = None, stage_notify: bool | None = None) -> None:
            await me.cmd_setup(interaction, announce_channel, stage_channel, announce_role, moderator_role, host_rule,
                               host_min_followers, host_role, ticketing, ticket_role, stage_notify)

        tree.add_command(space)
        tree.add_command(admin)

    def _plugin_command(self, spec: CommandSpec) -> app_commands.Command[Any, Any, None]:
        """A plugin's command as a top-level app command; its options become typed Discord options."""
        kinds: dict[str, Any] = {"text": str, "number": int, "flag": bool, "member": discord.Member}
        P = inspect.Parameter
        params = [P("interaction", P.POSITIONAL_OR_KEYWORD, annotation=discord.Interaction)]
        described = {"space": "Id of the Space (default: the one live here)"}
        for o in sorted(spec.options, key=lambda o: not o.required):
            kind = Literal.__getitem__(o.choices) if o.kind == "text" and o.choices else kinds[o.kind]
            params.append(P(o.name, P.POSITIONAL_OR_KEYWORD, annotation=kind if o.required else Optional[kind],  # noqa: UP045
                            default=P.empty if o.required else None))
            described[o.name] = o.description[:100] or o.name
        params.append(P("space", P.POSITIONAL_OR_KEYWORD, annotation=Optional[str], default=None))  # noqa: UP045
        me = self

        async def callback(interaction: discord.Interaction, /, **values: Any) -> None:
            await me.cmd_plugin(interaction, spec, values)

        callback.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        callback.__discord_app_commands_param_description__ = described  # type: ignore[attr-defined]
        return app_commands.Command(name=spec.name, description=spec.description or spec.name, callback=callback)

    async def cmd_plugin(self, interaction: discord.Interaction, spec: CommandSpec, values: dict[str, Any]) -> None:
        assert self.plugins is not None
        actor = await self._actor(interaction.user)
        space = await self._space(interaction, values.pop("space", None), states=("live", "scheduled"), actor=actor)
        args: dict[str, Any] = {}
        for k, v in values.items():
            if v is None:
                continue
            args[k] = await self._account(v) if isinstance(v, discord.abc.User) else v
        reply = await self.plugins.invoke(spec.name, actor, space.id, args, PLATFORM)
        await self._reply(interaction, reply.text + (f"\n{reply.url}" if reply.url else ""), ephemeral=True)

    async def cmd_start(self, interaction: discord.Interaction, title: str | None, space_id: str | None,
                        topic: str | None) -> None:
        actor = await self._actor(interaction.user)
        if interaction.guild is not None:
            await self._preflight(interaction.guild, scheduled=False)
        if space_id or not title:
            s = await self._space(interaction, space_id, states=("scheduled",), actor=actor)
            s = await self.core.start_space(actor, s.id)
        else:
            community = await self._community(interaction.guild) if interaction.guild else None
            s = await self.core.create_space(actor, title, topics=_topics(topic),
                                             community_id=community.id if community else None)
        await self._reply(interaction, f"🔴 **{s.title}** is live (`{s.id}`). Followers are being told.",
                          ephemeral=False)
        await self._send_room(interaction, actor, s.id, note="Speak from the web room (Discord voice only plays "
                                                             "the Space here):")

    async def cmd_schedule(self, interaction: discord.Interaction, title: str, when: str, topic: str | None) -> None:
        actor = await self._actor(interaction.user)
        start_at = parse_when(when, self.core.now())
        if interaction.guild is not None:
            await self._preflight(interaction.guild, scheduled=True)
        community = await self._community(interaction.guild) if interaction.guild else None
        s = await self.core.create_space(actor, title, start_at=start_at, topics=_topics(topic),
                                         community_id=community.id if community else None)
        await self._reply(interaction, f"🗓 **{s.title}** scheduled for {render.when(s.scheduled_for)} (`{s.id}`).",
                          ephemeral=False)

    async def cmd_ticket(self, interaction: discord.Interaction, actor: Actor, s: Space) -> None:
        t = s.ticketing
        if t is None:
            raise Conflict("ticket.not_ticketed", space_id=s.id)
        if t.currency.upper() == "XTR":
            raise Conflict("discord.stars_only")
        if self.stripe_sales is None:
            raise Conflict("billing.off", hint="this Space is priced in " + t.currency.upper())
        purchase = await self.stripe_sales.buy_with_checkout(actor, s.id, s.title)
        view = discord.ui.View(timeout=None)
        view.add_item(discord.ui.Button(label="Pay", emoji="🎟", url=purchase.url))
        minutes = int(self.ledger.hold_for.total_seconds() // 60)
        await self._reply(interaction, f"🎟 Pay for **{s.title}** here; the seat is yours for {minutes} min.",
                          view=view)

    async def cmd_setup(self, interaction: discord.Interaction, announce_channel: Any, stage_channel: Any,
                        announce_role: Any, moderator_role: Any, host_rule: str | None,
                        host_min_followers: int | None, host_role: Any, ticketing: bool | None, ticket_role: Any,
                        stage_notify: bool | None) -> None:
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
        warnings = []
        if stage is not None and (m := self._missing(stage, STAGE_NEEDS)):
            warnings.append(f"⚠️ In {stage.mention} I'm missing: {', '.join(m)}.")
        if stage is not None and not guild.me.guild_permissions.manage_events:
            warnings.append("⚠️ Without Manage Events I cannot turn scheduled Spaces into server events.")
        if announce is not None and (m := self._missing(announce, ANNOUNCE_NEEDS)):
            warnings.append(f"⚠️ In {announce.mention} I'm missing: {', '.join(m)}.")
        if st.ticket_role and not guild.me.guild_permissions.manage_roles:
            warnings.append("⚠️ Without Manage Roles I cannot give ticket holders their role.")
        await self._reply(interaction, "\n".join(lines + warnings))

    async def _toggle_hand(self, actor: Actor, s: Space, down: bool) -> str:
        raised = any(h.account_id == actor.account_id for h in s.hands)
        if down or raised:
            await self.core.lower_hand(actor, s.id)
            return "Hand lowered."
        pos = await self.core.raise_hand(actor, s.id)
        return f"✋ Hand raised: you are number {pos} in the queue."

    async def _send_room(self, interaction: discord.Interaction, actor: Actor, space_id: str,
                         note: str = "Your personal link to the web room:") -> None:
        view = await self.core.view(space_id)
        await self.core.may_join(actor.account_id, space_id)
        role = view.space.role_of(actor.account_id) or Role.LISTENER
        token = self.tokens.issue(space_id, actor.account_id, "speaker" if role != Role.LISTENER else "listener",
                                  self.core.now(), ttl_s=JOIN_TOKEN_TTL_S)
        buttons = discord.ui.View(timeout=None)
        buttons.add_item(discord.ui.Button(label="Open the room", emoji="🎧",
                                           url=f"{self.public_url}/s/{space_id}#t={token}"))
        await self._reply(interaction, f"{note} (valid {JOIN_TOKEN_TTL_S // 60} min)", view=buttons)

    # ---- buttons -------------------------------------------------------------------------------
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type != discord.InteractionType.component or interaction.data is None:
            return
        custom_id = str(interaction.data.get("custom_id", ""))
        if not custom_id.startswith("sb:"):
            return
        _, _, rest = custom_id.partition(":")
        kind, _, rest = rest.partition(":")
        space_id, _, arg = rest.partition(":")
        try:
            actor = await self._actor(interaction.user)
            if kind == "r":
                idx = int(arg) if arg.isdigit() else -1
                if not 0 <= idx < len(render.CARD_REACTIONS):
                    raise Invalid("reaction.not_an_emoji")
                tallies = await self.core.react(actor, space_id, render.CARD_REACTIONS[idx])
                answer = " · ".join(f"{e} {c}" for e, c in sorted(tallies.items(), key=lambda kv: -kv[1]))
            elif kind == "h":
                answer = await self._toggle_hand(actor, (await self.core.view(space_id)).space, False)
            elif kind == "m":
                await self.core.set_reminder(actor, space_id, True)
                answer = "🔔 I'll DM you when it starts."
            elif kind == "j":
                await self._send_room(interaction, actor, space_id)
                return
            else:
                raise Invalid("protocol.unknown_command", name=kind)
        except DomainError as e:
            await self._reply(interaction, "⚠️ " + say(e))
            return
        await self._reply(interaction, answer)

    # ---- the Stage: Discord's voice states into the core -------------------------------------
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

    # ---- core events -> Discord -----------------------------------------------------------------
    async def _on_event(self, event: ev.Event) -> None:
        if not self._started:
            return
        if isinstance(event, ev.TicketChanged):
            self._spawn(self._ticket_role(event))
        if not isinstance(event, ev.SpaceEvent):
            return
        if isinstance(event, ev.RoleChanged):
            self._spawn(self._sync_speaker(event.space_id, event.account_id))
        elif isinstance(event, ev.SpeakerMuted):
            self._spawn(self._sync_speaker(event.space_id, event.account_id))
        elif isinstance(event, ev.SpaceStarted):
            self._spawn(self._go_live(event.space_id, announce=True))
        elif isinstance(event, ev.SpaceScheduled) and event.scheduled_for is not None:
            self._spawn(self._scheduled(event.space_id))
        elif isinstance(event, ev.SpaceEnded | ev.SpaceCancelled):
            self._spawn(self._closed(event.space_id))
        elif isinstance(event, ev.SpaceUpdated):
            self._spawn(self._retopic(event.space_id))
        elif isinstance(event, ev.ParticipantLeft) and event.reason in ("removed", "blocked"):
            self._spawn(self._disconnect_member(event.space_id, event.account_id))
        elif isinstance(event, ev.SpaceNotice):
            if event.account_id is None:
                self._spawn(self._post_notice(event))
            return
        self.refresher.mark(event.space_id)

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

    async def _guild_of(self, space: Space) -> tuple[discord.Guild, Any] | None:
        if self.client is None or not space.community_id:
            return None
        community = await self.core.community(space.community_id)
        if community.platform != PLATFORM:
            return None
        guild = self.client.get_guild(int(community.external_id))
        return None if guild is None else (guild, community.settings)

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

    # ---- voice playback ---------------------------------------------------------------------------
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

    # ---- scheduled events ---------------------------------------------------------------------------
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

    # ---- tickets -------------------------------------------------------------------------------------
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

    # ---- guilds ------------------------------------------------------------------------------------
    async def on_guild_available(self, guild: discord.Guild) -> None:
        await self.core.ensure_community(PLATFORM, str(guild.id), guild.name)

    async def on_guild_join(self, guild: discord.Guild) -> None:
        await self.core.ensure_community(PLATFORM, str(guild.id), guild.name)
        channel = guild.system_channel
        if channel is not None and not self._missing(channel, ("view_channel", "send_messages")):
            with contextlib.suppress(discord.HTTPException):
                await channel.send("👋 Spacebridge is here. An admin can run `/spacebridge setup` to pick the Stage "
                                   "and announcement channel; then anyone allowed can go live with `/space start`.")

    async def _live_discord_spaces(self) -> list[Space]:
        out = []
        for c in await self.core.communities():
            if c.platform == PLATFORM:
                out.extend(await self.core.list_spaces(states=("live",), community_id=c.id))
        return out

    # ---- notices (the Notifier port) --------------------------------------------------------------
    async def deliver(self, delivery: Delivery) -> DeliveryResult:
        if self.client is None or not self._started:
            return DeliveryResult("retry", retry_after_s=5.0, detail="the Discord bot is not connected")
        data = delivery.data
        kwargs: dict[str, Any] = {}
        if data.get("space_id"):
            buttons = discord.ui.View(timeout=None)
            label = "Listen" if delivery.template == "space.live" else "Open"
            buttons.add_item(discord.ui.Button(label=label, emoji="🎧", url=f"{self.public_url}/s/{data['space_id']}"))
            kwargs["view"] = buttons
        try:
            dm = await self.client.create_dm(discord.Object(int(delivery.external_id)))
            await dm.send(render.notice(delivery.template, data), **kwargs)
        except discord.RateLimited as e:
            return DeliveryResult("retry", retry_after_s=e.retry_after, detail="Discord asked us to slow down")
        except discord.Forbidden as e:
            return DeliveryResult("unreachable", detail=str(e))
        except discord.NotFound as e:
            return DeliveryResult("unreachable", detail=str(e))
        except discord.HTTPException as e:
            if e.status == 429 or e.status >= 500:
                return DeliveryResult("retry", retry_after_s=5.0, detail=str(e))
            raise
        except (aiohttp.ClientError, TimeoutError) as e:
            return DeliveryResult("retry", retry_after_s=5.0, detail=str(e))
        return DeliveryResult("sent")

    # ---- cards -----------------------------------------------------------------------------------------
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

    async def _edit(self, card: Card, c: render.CardContent, fp: str) -> None:
        assert self.client is not None
        channel = self.client.get_partial_messageable(int(card.chat_id))
        try:
            await channel.get_partial_message(int(card.message_id)).edit(embed=c.embed, view=c.view)
        except (discord.NotFound, discord.Forbidden):
            await self.cards.drop(card)
            return
        await self.cards.rendered(card, fp)


def _topics(topic: str | None) -> list[str]:
    return [t.strip() for t in (topic or "").split(",") if t.strip()][:3]


def _event_fp(view: Any, url: str) -> str:
    s = view.space
    return render.CardContent(discord.Embed(title=s.title, description=render.event_description(view, url),
                                            timestamp=s.scheduled_for), None).fingerprint()


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
