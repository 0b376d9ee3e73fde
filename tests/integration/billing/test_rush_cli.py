"""60 people run ``spacebridge billing buy`` at the same moment for 10 seats, each in a process of
its own, against the strict Stripe front and localstripe, on SQLite and on PostgreSQL: exactly 10
get a PaymentIntent (and, paid, a seat), 50 hear "Sold out" in words, nobody sees a traceback, and
no seat is left held once the ten are paid."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web

from billing.ledger import Ledger
from billing.webhooks import StripeWebhooks
from core.bus import InProcessBus
from core.clock import SystemClock
from core.model.accounts import Account, Actor
from core.model.space import Ticketing
from core.model.ticket import TicketStatus
from core.services import Core
from core.storage import migrate
from core.storage.engine import make_engine, make_sessionmaker
from tests.support import services
from tests.support.stripe_fake import LocalStripe, free_port
from tests.support.stripe_strict import StrictStripe

SECRET = "whsec_rush"
BUYERS, SEATS = 60, 10


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'rush.sqlite3'}"
        return
    services.require("postgresql")
    url = services.create_pg_database()
    try:
        yield url
    finally:
        services.drop_pg_database(url)


@pytest.fixture
async def stripe_front() -> AsyncIterator[StrictStripe]:
    ls = LocalStripe(snapshot=False)
    await ls.start()
    fake = StrictStripe(ls.url, webhook_secret=SECRET)
    runner = web.AppRunner(fake.app())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    fake.base = f"http://127.0.0.1:{port}"
    yield fake
    await runner.cleanup()
    ls.stop()
    assert fake.refused == [], "a request Stripe would refuse"


async def test_sixty_cli_buyers_for_ten_seats(database_url: str, stripe_front: StrictStripe, tmp_path: Path) -> None:
    await asyncio.to_thread(migrate.upgrade, database_url)
    engine = make_engine(database_url)
    bus = InProcessBus()
    await bus.start()
    core = Core(make_sessionmaker(engine), bus, SystemClock())
    ledger = Ledger(core)
    hooks = web.AppRunner(web.Application())
    hooks.app.router.add_post("/webhooks/stripe", StripeWebhooks(ledger, SECRET).handle)
    await hooks.setup()
    hport = free_port()
    await web.TCPSite(hooks, "127.0.0.1", hport).start()
    stripe_front.webhook_url = f"http://127.0.0.1:{hport}/webhooks/stripe"
    try:
        acc = await core.ensure_account("web", "creator", "Creator")
        host = Actor(account_id=acc.id, is_operator=True)
        space = await core.create_space(host, "Rush", start_at=core.now() + timedelta(days=1))
        await core.set_ticketing(host, space.id, Ticketing(price_minor=900, currency="eur", capacity=SEATS))
        async with core.uow() as uow:
            for i in range(BUYERS):
                await uow.accounts.add(Account(id=f"rush{i:02d}", display_name=f"R{i}", created_at=core.now()))
            await uow.commit()
        env = {**os.environ, "SPACEBRIDGE_DATABASE_URL": database_url, "SPACEBRIDGE_DATA_DIR": str(tmp_path / "d"),
               "STRIPE_API_KEY": "sk_test_rush", "STRIPE_WEBHOOK_SECRET": SECRET,
               "SPACEBRIDGE_STRIPE_API_BASE": stripe_front.base}
        cli = str(Path(sys.executable).with_name("spacebridge"))

        async def buy(i: int) -> tuple[int, str, str]:
            proc = await asyncio.create_subprocess_exec(
                cli, "billing", "buy", space.id, "--as", f"rush{i:02d}", "--json", env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
            return proc.returncode or 0, out.decode(), err.decode()

        results = await asyncio.gather(*(buy(i) for i in range(BUYERS)))
        assert not [e for _, _, e in results if "Traceback" in e], "a buyer saw a traceback"
        won = [json.loads(o) for rc, o, _ in results if rc == 0]
        lost = [json.loads(o)["error"] for rc, o, _ in results if rc != 0]
        assert len(won) == SEATS, [r for r in results if r[0] != 0 and "sold_out" not in r[1]][:3]
        odd = [e for e in lost if e.get("code") != "ticket.sold_out"
               or e["message"] != f"Sold out: all {SEATS} seats are taken."]
        assert odd == [], odd[:3]
        assert len(lost) == BUYERS - SEATS
        for w in won:  # the ten pay; Stripe's signed webhook settles each
            assert (await stripe_front.pay_intent(w["provider_ref"]))["status"] == "succeeded"
            intent = {"id": w["provider_ref"], "object": "payment_intent", "amount": 900, "currency": "eur",
                      "metadata": {"ticket_id": w["ticket_id"]}}
            assert (await stripe_front.send_event("payment_intent.succeeded", intent))[0] == 200
        deadline = time.monotonic() + 30
        while (await ledger.report(space.id)).sold < SEATS and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        report = await ledger.report(space.id)
        assert (report.sold, report.held, report.returned) == (SEATS, 0, 0)
        assert [(await ledger.get(w["ticket_id"])).status for w in won] == [TicketStatus.PAID] * SEATS
    finally:
        await hooks.cleanup()
        await bus.close()
        await engine.dispose()
