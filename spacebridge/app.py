"""The composition root: builds the engine, bus, core, job workers and web app from Settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import aiohttp
import discord
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine
from telegram.error import InvalidToken, NetworkError

from adapters.discord.bot import DiscordAdapter, DiscordConfig
from adapters.telegram.bot import TelegramAdapter, TelegramConfig
from adapters.telegram.limits import FloodLimits
from adapters.webrtc.drain import SOCKETS, Sockets, close_sockets
from adapters.webrtc.placement import Node, Placement, RedisPlacement, new_node_id
from adapters.webrtc.router import Rooms
from billing.ledger import Ledger
from billing.refunds import make_refund_handler
from billing.sales import TicketSales
from billing.stripe_gateway import StripeGateway
from core.bus import EventBus, InProcessBus, RedisBus
from core.clock import Clock, SystemClock
from core.commands import BUILTINS, Command
from core.notifications import GRACE, FanoutHandler, TrackingNotifier
from core.presence import EXPIRE_JOB, PresenceKeeper, make_expire_handler
from core.redis_support import Duty
from core.scheduler import JobRunner, make_deliver_handlers
from core.services import Core
from core.storage.engine import make_engine, make_sessionmaker
from core.tokens import JoinTokens
from plugins.manager import PluginManager
from spacebridge.config import ConfigError, Settings, data_dir
from spacebridge.doctor import database_problem_now
from spacebridge.http_edges import HttpLimits
from spacebridge.http_edges import install as install_http_edges
from spacebridge.instance import INSTANCE, PLATFORM, Instance, Platform
from spacebridge.schema import ensure_schema

__all__ = ["INSTANCE", "PLATFORM", "Instance", "Platform", "add_job_runners", "build", "database_ok",
           "database_problem_now", "make_web_app", "start", "stop"]

log = logging.getLogger("spacebridge")
DRAIN_CLOSE_S = 2.0  # how long a shutdown waits for sockets to take their 1012 and handlers to end


async def build(settings: Settings, *, clock: Clock | None = None, upgrade: bool = True,
                table: Iterable[Command] = BUILTINS) -> Instance:
    """Every part of an instance from ``settings``; ``table`` is the command table every surface (web,
    Discord, Telegram) reads through ``plugins.table``, the core's ``BUILTINS`` unless a test adds entries."""
    try:
        engine = make_engine(settings.resolved_database_url(), connect_timeout_s=settings.database_connect_timeout_s,
                             statement_timeout_s=settings.database_statement_timeout_s)
    except OSError as e:  # SQLite's directory cannot be made
        from spacebridge.doctor import database_problem

        raise ConfigError(database_problem(settings, e)) from None
    if upgrade:
        await ensure_schema(settings, engine)
    if set(settings.roles) != {"web", "jobs", "discord", "telegram", "media"} and not settings.redis_url:
        raise ConfigError("running only some roles means other processes run the rest: they share events "
                          "and media placement through Redis, so set SPACEBRIDGE_REDIS_URL (docs/deploy.md)")
    prefix = settings.redis_prefix or None  # None: derived from the Redis URL's database index
    bus: EventBus = RedisBus(settings.redis_url, prefix=prefix) if settings.redis_url else InProcessBus()
    clock = clock or SystemClock()
    sm = make_sessionmaker(engine)
    platform = Instance(settings=settings, engine=engine, sessionmaker=sm, bus=bus, clock=clock,
                        core=Core(sm, bus, clock, reaction_rate_per_s=settings.reaction_rate_per_s,
                                  host_grace_s=settings.host_grace_s, speaker_grace_s=settings.speaker_grace_s,
                                  presence_stale_s=settings.presence_stale_s))
    platform.presence = PresenceKeeper(platform.core, heartbeat_s=settings.presence_heartbeat_s)
    platform.core.wake_jobs = platform.wake
    platform.ledger = Ledger(platform.core, hold=timedelta(minutes=settings.ticket_hold_minutes),
                             fee_bps=settings.platform_fee_bps)
    placement: Placement | None = None
    if settings.redis_url:
        placement = RedisPlacement(settings.redis_url, Node(new_node_id(), settings.internal_url),
                                   media="media" in settings.roles, ttl_s=settings.media_lease_s, prefix=prefix)
    platform.rooms = Rooms(platform.core, ice_servers=settings.ice_servers,
                           announce=set(settings.ice_announce) or None, placement=placement,
                           internal_key=settings.resolved_secret().decode(), hls_dir=settings.resolved_hls_dir(),
                           hls_segment_s=settings.hls_segment_s, hls_list_size=settings.hls_list_size,
                           max_listeners=settings.webrtc_max_listeners,
                           per_process=settings.room_listeners_per_process)
    platform.rooms.allowed = settings.candidate_policy()  # the server never probes networks it was not given
    platform.tokens = JoinTokens(settings.resolved_secret())
    platform.plugins = PluginManager(
        platform.core, audio=platform.rooms, config=settings.plugins, data_dir=data_dir(),
        public_url=settings.base_url(), disabled=settings.plugins_disabled, reserved=reserved_command_names(),
        setup_timeout_s=settings.plugin_setup_timeout_s, several_processes=bool(settings.redis_url), table=table)
    if settings.ticketing_enabled:
        assert settings.stripe_api_key is not None
        platform.stripe = StripeGateway(settings.stripe_api_key.get_secret_value(),
                                        api_base=settings.stripe_api_base or None, fee_bps=settings.platform_fee_bps)
        platform.gateways["stripe"] = platform.stripe
    if settings.telegram_bot_token is not None and "telegram" in settings.roles:
        platform.telegram = make_telegram(platform)
        if settings.redis_url:
            platform.telegram.cards_duty = Duty(settings.redis_url, "telegram-cards", new_node_id(), ttl_s=5.0,
                                                prefix=prefix)
        platform.notifiers["telegram"] = platform.telegram
        platform.gateways["telegram_stars"] = platform.telegram
    if settings.discord_bot_token is not None and "discord" in settings.roles:
        platform.discord = make_discord(platform)
        platform.notifiers["discord"] = platform.discord
    return platform


def reserved_command_names() -> set[str]:
    """Names the platforms already use for core commands; a plugin may not take them."""
    from adapters.telegram.bot import COMMANDS as TELEGRAM_COMMANDS
    from core.commands import COMMAND_NAMES

    return {"space", "spacebridge", "start", "help", *COMMAND_NAMES, *(c for c, _ in TELEGRAM_COMMANDS)}


def make_discord(platform: Instance) -> DiscordAdapter:
    s = platform.settings
    assert s.discord_bot_token is not None
    sales = TicketSales(platform.ledger, platform.stripe, s.base_url()) if platform.stripe is not None else None
    return DiscordAdapter(
        platform.core, platform.ledger, platform.tokens, s.base_url(),
        DiscordConfig(token=s.discord_bot_token.get_secret_value(), api_base=s.discord_api_base or None,
                      gateway_url=s.discord_gateway_url or None, ca_file=s.discord_ca_file or None,
                      card_interval_s=s.discord_card_interval_s, global_per_s=s.discord_global_per_s,
                      guild_ready_timeout_s=s.discord_guild_ready_timeout_s, voice=s.discord_voice,
                      interested_sync_s=s.discord_interested_sync_s, shard_count=s.discord_shard_count,
                      shard_ids=tuple(s.discord_shard_ids)),
        audio=platform.rooms, stripe_sales=sales, plugins=platform.plugins)


def make_telegram(platform: Instance) -> TelegramAdapter:
    s = platform.settings
    assert s.telegram_bot_token is not None
    secret = s.telegram_webhook_secret.get_secret_value()
    if s.telegram_mode == "webhook" and not (secret and s.public_url.startswith("https://")):
        raise ConfigError("telegram_mode=webhook needs SPACEBRIDGE_TELEGRAM_WEBHOOK_SECRET and an https:// "
                          "SPACEBRIDGE_PUBLIC_URL (Telegram only delivers webhooks over HTTPS)")
    sales = TicketSales(platform.ledger, platform.stripe, s.base_url()) if platform.stripe is not None else None
    return TelegramAdapter(
        platform.core, platform.ledger, platform.tokens, s.base_url(),
        TelegramConfig(token=s.telegram_bot_token.get_secret_value(), api_base=s.telegram_api_base or None,
                       mode=s.telegram_mode, webhook_secret=secret, card_interval_s=s.telegram_card_interval_s,
                       webapp_max_age_s=s.telegram_webapp_max_age_s,
                       limits=FloodLimits(overall_per_s=s.telegram_overall_per_s, chat_per_s=s.telegram_chat_per_s,
                                          group_per_min=s.telegram_group_per_min)),
        stripe_sales=sales, plugins=platform.plugins)


def configured_platforms(settings: Settings) -> set[str]:
    return {p for p, token in (("telegram", settings.telegram_bot_token), ("discord", settings.discord_bot_token))
            if token is not None}


def add_job_runners(platform: Instance, count: int) -> None:
    core = platform.core
    notifiers = {p: TrackingNotifier(n, core) for p, n in platform.notifiers.items()}
    ledger = platform.ledger
    handlers: dict[str, Any] = {
        # alerts go to every platform configured for the instance, whichever process delivers them
        "space.fanout": FanoutHandler(core, configured_platforms(platform.settings)),
        **make_deliver_handlers(notifiers),
        "ticket.refund": make_refund_handler(ledger, platform.gateways),
        EXPIRE_JOB: make_expire_handler(core),
    }
    if platform.telegram is not None:  # only the bot's process can call Telegram (docs/subscriptions.md)
        from billing.stars_refunds import REFUND_JOB, make_stars_refund_handler

        handlers[REFUND_JOB] = make_stars_refund_handler(platform.telegram)
    # a grace expiry is never too late to apply (after an outage the seat must still be given up)
    grace = {**GRACE, EXPIRE_JOB: timedelta(days=3650)}
    for i in range(count):
        platform.runners.append(JobRunner(
            platform.sessionmaker, handlers, platform.clock,
            worker_id=f"{socket.gethostname()}:{os.getpid()}:{i}", grace=grace,
            lease_s=platform.settings.job_lease_s,
        ))


def make_web_app(platform: Instance) -> web.Application:
    from spacebridge import web_routes, web_security, web_session

    app = web.Application(client_max_size=1024 * 1024)
    app[INSTANCE] = platform
    app[SOCKETS] = Sockets()
    # security headers on every response; browser sockets only from this instance's own pages
    web_security.setup(app, lambda: web_security.allowed_origins(
        platform.settings.public_url, platform.bound_url, platform.settings.allowed_origins),
        lambda: web_security.form_targets(platform.settings.discord_api_base, platform.settings.stripe_api_base))
    # signed-in browsers: an encrypted session cookie keyed from the instance secret (docs/web-accounts.md)
    web_session.setup_sessions(app, platform.settings.resolved_secret())
    web_routes.setup(app)
    return app


async def start(platform: Instance, host: str, port: int, *, jobs: int | None = None,
                http: HttpLimits | None = None) -> None:
    """Start every part ``platform`` runs; ``http`` bounds half-sent requests (header and body deadlines)."""
    roles = set(platform.settings.roles)
    await platform.bus.start()
    if "jobs" in roles:
        add_job_runners(platform, platform.settings.job_workers if jobs is None else jobs)
    for r in platform.runners:
        await r.start()
    await platform.plugins.load_installed()  # before the web app and bots, which show plugin commands
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if roles & {"web", "media"}:  # media processes answer other processes' offers over HTTP
        platform.web_app = make_web_app(platform)
        http = http or HttpLimits()
        install_http_edges(platform.web_app, http)
        # requests still running after the sockets got their 1012 are cut after this long, not 60 s
        runner = web.AppRunner(platform.web_app, access_log=None, shutdown_timeout=DRAIN_CLOSE_S,
                                **http.server_kwargs())
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        platform._site_runner = runner
        for addr in runner.addresses:
            if isinstance(addr, tuple) and len(addr) >= 2:
                port = int(addr[1])
                break
    platform.bound_url = f"http://{shown}:{port}"
    platform.url = platform.settings.public_url.rstrip("/") or platform.bound_url
    placement = platform.rooms.placement
    if not placement.node.url:  # other processes on other hosts need internal_url set (docs/deploy.md)
        reach = socket.gethostbyname(socket.gethostname()) if host in ("0.0.0.0", "::", "") else host
        placement.node = Node(placement.node.id, f"http://{reach}:{port}")
    await platform.rooms.start()
    await platform.presence.start()
    platform.plugins.set_public_url(platform.url)
    if platform.telegram is not None:
        if not platform.settings.public_url:
            platform.telegram.public_url = platform.url
        try:
            await platform.telegram.start()
        except InvalidToken:
            raise ConfigError("Telegram refused TELEGRAM_BOT_TOKEN: check it with @BotFather") from None
        except NetworkError as e:
            raise ConfigError(f"cannot reach the Telegram Bot API ({e}); check the network or "
                              "SPACEBRIDGE_TELEGRAM_API_BASE") from None
    if platform.discord is not None:
        if not platform.settings.public_url:
            platform.discord.public_url = platform.url
        try:
            await platform.discord.start()
        except discord.LoginFailure:
            raise ConfigError("Discord refused DISCORD_BOT_TOKEN: check it in the Developer Portal (Bot → Token)") \
                from None
        except (discord.HTTPException, aiohttp.ClientError, OSError, TimeoutError) as e:
            raise ConfigError(f"cannot reach Discord ({e}); check the network or SPACEBRIDGE_DISCORD_API_BASE") \
                from None


async def stop(platform: Instance) -> None:
    """Drain within a few seconds: every web socket is told 1012 (service restart) first, so pages
    reconnect (to this process once restarted, or another); live Spaces stay live and presence rows
    stay, a restart is not a disconnect. Slow parts are bounded, never awaited without a limit."""
    if platform.web_app is not None:
        await close_sockets(platform.web_app, DRAIN_CLOSE_S)
    await platform.presence.stop()
    for r in platform.runners:
        with contextlib.suppress(Exception):
            await r.stop()
    if platform.telegram is not None:
        with contextlib.suppress(Exception):
            await platform.telegram.stop()
    if platform.discord is not None:
        with contextlib.suppress(Exception):
            await platform.discord.stop()
    with contextlib.suppress(Exception):
        await platform.plugins.unload_all()
    if platform._site_runner is not None:
        await platform._site_runner.cleanup()
    await platform.rooms.close()
    if platform.stripe is not None:
        await platform.stripe.close()
    drain = getattr(platform.bus, "drain", None)
    if drain is not None:  # handlers cut off mid-query would leave connections the engine cannot close
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drain(), 5.0)
    await platform.bus.close()
    await platform.engine.dispose()


async def database_ok(engine: AsyncEngine, timeout_s: float = 2.0) -> bool:
    """Whether the database answers within ``timeout_s`` (a partition is a "no", never a hang)."""
    return await database_problem_now(engine, timeout_s) is None
