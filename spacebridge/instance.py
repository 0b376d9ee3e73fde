"""The running instance and the web app key that carries it: a module of its own so that the
composition root (app.py) and the web routes both import it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from adapters.discord.bot import DiscordAdapter
from adapters.telegram.bot import TelegramAdapter
from adapters.webrtc.router import Rooms
from billing.ledger import Ledger
from billing.stripe_gateway import StripeGateway
from core.bus import EventBus
from core.clock import Clock
from core.ports import Notifier, PaymentGateway
from core.presence import PresenceKeeper
from core.scheduler import JobRunner
from core.services import Core
from core.tokens import JoinTokens
from plugins.manager import PluginManager
from spacebridge.config import Settings


@dataclass
class Instance:
    """The running instance: everything one process runs; ``start``/``stop`` bracket its life."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    bus: EventBus
    core: Core
    clock: Clock
    notifiers: dict[str, Notifier] = field(default_factory=dict)
    gateways: dict[str, PaymentGateway] = field(default_factory=dict)
    ledger: Ledger = field(init=False)
    rooms: Rooms = field(init=False)
    tokens: JoinTokens = field(init=False)
    stripe: StripeGateway | None = None
    telegram: TelegramAdapter | None = None
    discord: DiscordAdapter | None = None
    plugins: PluginManager = field(init=False)
    presence: PresenceKeeper = field(init=False)
    runners: list[JobRunner] = field(default_factory=list)
    web_app: web.Application | None = None
    _site_runner: web.AppRunner | None = None
    url: str = ""  # the public address (links); bound_url is where this process listens
    bound_url: str = ""

    def wake(self) -> None:
        for r in self.runners:
            r.wake()


INSTANCE: web.AppKey[Instance] = web.AppKey("instance", Instance)

# The names before the rename (Platform meant the running instance, not a chat platform), for code
# written against them; new code says Instance and INSTANCE.
Platform = Instance
PLATFORM = INSTANCE
