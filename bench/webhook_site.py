"""What the money benchmarks share: a database at the current schema, a Core and Ledger on it, and
Stripe's webhook endpoint served on a loopback port, as an instance serves it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.ledger import Ledger
from billing.webhooks import StripeWebhooks
from core.bus import InProcessBus
from core.clock import SystemClock
from core.services import Core
from core.storage import migrate
from core.storage.engine import make_engine, make_sessionmaker
from tests.support.stripe_fake import free_port


@dataclass
class WebhookSite:
    core: Core
    ledger: Ledger
    port: int
    engine: AsyncEngine
    bus: InProcessBus
    runner: web.AppRunner

    async def close(self) -> None:
        await self.runner.cleanup()
        await self.bus.close()
        await self.engine.dispose()


async def webhook_site(url: str, secret: str, fee_bps: int) -> WebhookSite:
    await asyncio.to_thread(migrate.upgrade, url)
    engine = make_engine(url)
    bus = InProcessBus()
    await bus.start()
    core = Core(make_sessionmaker(engine), bus, SystemClock())
    ledger = Ledger(core, fee_bps=fee_bps)
    app = web.Application()
    app.router.add_post("/webhooks/stripe", StripeWebhooks(ledger, secret).handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return WebhookSite(core, ledger, port, engine, bus, runner)
