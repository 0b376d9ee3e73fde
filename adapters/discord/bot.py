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
import logging
import ssl
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
import yarl
from discord import app_commands

from billing.ledger import Ledger
from core import events as ev
from core.cards import CardRefresher, CardStore
from core.ports import AudioTap
from core.services import Core
from core.tokens import JoinTokens

if TYPE_CHECKING:
    from plugins.manager import PluginManager

from adapters.discord import layout
from adapters.discord.base import PLATFORM, DiscordConfig, _State, stage_connection
from adapters.discord.commands import CommandsMixin
from adapters.discord.setup import SetupMixin
from adapters.discord.stage import StageMixin
from adapters.discord.tier_roles import TierRolesMixin

__all__ = ["DiscordAdapter", "DiscordConfig", "Pacer", "stage_connection"]

log = logging.getLogger(__name__)


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


class DiscordAdapter(CommandsMixin, SetupMixin, StageMixin, TierRolesMixin):

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
        self._tier_task: asyncio.Task[None] | None = None
        self._started = False

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
        self._register_setup(self.tree)
        if self.plugins is not None:
            for spec in self.plugins.command_list():
                self.tree.add_command(self._plugin_command(spec))
        problems = layout.problems([c.to_dict(self.tree) for c in self.tree.get_commands()])
        if problems:  # Discord would refuse the whole sync, and every command would vanish
            raise RuntimeError("the slash commands break Discord's limits: " + "; ".join(problems))
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
        self._tier_task = asyncio.create_task(self._tier_roles_loop(), name="discord-tier-roles")

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
        if self._tier_task is not None:
            self._tier_task.cancel()
        for space_id in list(self._state.voice):
            await self._leave_voice(space_id)
        # wait for cancelled work to unwind before the database goes away: a task cancelled in the middle
        # of a transaction must roll back on a live connection, or it never finishes
        tasks = [t for t in self._state.tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if self._sync_task is not None:
            tasks.append(self._sync_task)
        if self._tier_task is not None:
            tasks.append(self._tier_task)
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

    async def _on_event(self, event: ev.Event) -> None:
        if not self._started:
            return
        if isinstance(event, ev.TicketChanged):
            self._spawn(self._ticket_role(event))
        if isinstance(event, ev.SubscriptionUpdated):
            self._spawn(self._on_subscription(event))
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
