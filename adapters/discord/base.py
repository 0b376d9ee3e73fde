"""What every part of the Discord bot shares: who is asking, which Space, replies, permissions.

The bot is one ``DiscordAdapter`` made of units (commands, setup, stage, events, cards), each a
class over this base; the shared chat toolkit (adapters/chat) does what Telegram does too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from adapters.chat.actions import JOIN_TOKEN_TTL_S, room_token
from adapters.chat.spaces import pick_space
from adapters.chat.wording import say as chat_say
from billing.ledger import Ledger
from core.cards import CardRefresher, CardStore
from core.errors import DomainError, Forbidden, Invalid
from core.model.accounts import Actor
from core.model.space import Space
from core.ports import AudioTap
from core.services import Core
from core.tokens import JoinTokens

if TYPE_CHECKING:
    from plugins.manager import PluginManager

from adapters.discord.voice import RoomAudioSource

log = logging.getLogger(__name__)

PLATFORM = "discord"
ADMIN_ROLE = "admin"
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
    # the core's words, and where to subscribe from here
    "subscription.required": "This Space is for the host's subscribers: subscribe to join (/space subscribe "
                             "tier:{space_id}).",
    "discord.stars_subscription": "That tier is sold in Telegram Stars here: send /subscribe {tier_id} to the "
                                  "Telegram bot.",
    "discord.stage_busy": "“{title}” is already live on {stage}, and I may not make another Stage here: I need "
                          "Manage Channels in {where}. End that Space first, or a server admin can grant it "
                          "(or pick another category with /spacebridge setup stage_category).",
}


def say(error: DomainError) -> str:
    return chat_say(error, _MISC_TEXT)



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


@dataclass
class VoiceSession:
    """The bot's voice on one Space's Stage (Discord allows a bot one voice connection per guild)."""

    space_id: str
    guild_id: int
    channel_id: int
    source: RoomAudioSource
    feeder: asyncio.Task[None] | None = None
    client: discord.VoiceClient | None = None
    task: asyncio.Task[None] | None = None
    bridge: Any = None  # voice_rx.StageBridge: the Stage's speakers in the room, and the mix-minus


@dataclass
class _State:
    voice: dict[str, VoiceSession] = field(default_factory=dict)  # space id -> session
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    stages: dict[str, tuple[int, int, bool]] = field(default_factory=dict)  # space -> (guild, channel, made)
    stage_locks: dict[int, asyncio.Lock] = field(default_factory=dict)  # guild id -> lock
    # What the bot last asked Discord to set on a member's voice ((guild, user) -> field -> value), until
    # the VOICE_STATE_UPDATE that echoes it arrives: that one is the bot's own change, not a moderator's.
    asked: dict[tuple[int, int], dict[str, bool]] = field(default_factory=dict)
    # (space, account) -> the lock that lets one Stage sync of theirs run at a time (gone when none waits)
    syncing: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary)


def stage_connection(guild_id: int, user_id: int) -> str:
    """The presence connection of a member's voice on a guild's Stage: their Discord client's link to
    the Space, as a socket is a web page's. Stable, so leaving the Stage ends the row joining made."""
    return "discord:" + hashlib.blake2b(f"{guild_id}:{user_id}".encode(), digest_size=12).hexdigest()


class DiscordBase:
    """State every unit reads (set by ``DiscordAdapter.__init__``) and the helpers they share."""

    platform = PLATFORM
    core: Core
    ledger: Ledger
    tokens: JoinTokens
    plugins: PluginManager | None
    public_url: str
    config: DiscordConfig
    audio: AudioTap | None
    stripe_sales: Any
    cards: CardStore
    refresher: CardRefresher
    client: discord.Client | None
    _state: _State
    _posting: dict[str, asyncio.Lock]
    _started: bool

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._state.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._state.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("discord task failed", exc_info=task.exception())

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
        community = await self._community(interaction.guild) if interaction.guild is not None else None
        return await pick_space(self.core, space_id=space_id, community_id=community.id if community else None,
                                host_id=actor.account_id if actor is not None else None, states=states,
                                no_space_code="discord.no_space_here", which_code="discord.which_space")

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
            else:
                await self._refuse_if_busy(guild, settings)
        if announce is not None:
            self._require(announce, ANNOUNCE_NEEDS)

    async def _refuse_if_busy(self, guild: discord.Guild, settings: Any) -> None:
        """Refuse a go-live when this server has no Stage left for it (adapters/discord/stages.py)."""

    async def _guild_of(self, space: Space) -> tuple[discord.Guild, Any] | None:
        if self.client is None or not space.community_id:
            return None
        community = await self.core.community(space.community_id)
        if community.platform != PLATFORM:
            return None
        guild = self.client.get_guild(int(community.external_id))
        return None if guild is None else (guild, community.settings)

    async def _live_discord_spaces(self) -> list[Space]:
        out = []
        for c in await self.core.communities():
            if c.platform == PLATFORM:
                out.extend(await self.core.list_spaces(states=("live",), community_id=c.id))
        return out

    async def _send_room(self, interaction: discord.Interaction, actor: Actor, space_id: str,
                         note: str = "Your personal link to the web room:") -> None:
        token = await room_token(self.core, self.tokens, actor.account_id, space_id)
        buttons = discord.ui.View(timeout=None)
        buttons.add_item(discord.ui.Button(label="Open the room", emoji="🎧",
                                           url=f"{self.public_url}/s/{space_id}#t={token}"))
        await self._reply(interaction, f"{note} (valid {JOIN_TOKEN_TTL_S // 60} min)", view=buttons)

    async def sync_tier_roles(self) -> None:  # tier roles (adapters/discord/tier_roles.py)
        raise NotImplementedError
