"""A ticket rush against localstripe: N buyers at once for S seats, paid by card, settled by webhook.

    python -m bench.ticket_rush --buyers N --seats S --json

Each buyer holds a seat, gets a PaymentIntent from localstripe through the stripe library, pays
(as Stripe.js would) and is granted the seat by localstripe's signed webhook to our endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from billing.ledger import Ledger
from billing.sales import TicketSales
from billing.stripe_gateway import StripeGateway
from billing.webhooks import StripeWebhooks
from core.bus import InProcessBus
from core.clock import SystemClock
from core.errors import DomainError
from core.model.accounts import Account, Actor
from core.model.space import Ticketing
from core.services import Core
from core.storage import migrate
from core.storage.engine import make_engine, make_sessionmaker
from tests.support.stripe_fake import FakeStripe, LocalStripe, free_port

SECRET = "whsec_bench"


async def run(buyers: int, seats: int, url: str) -> dict[str, object]:
    await asyncio.to_thread(migrate.upgrade, url)
    engine = make_engine(url)
    bus = InProcessBus()
    await bus.start()
    core = Core(make_sessionmaker(engine), bus, SystemClock())
    ledger = Ledger(core, fee_bps=500)
    app = web.Application()
    app.router.add_post("/webhooks/stripe", StripeWebhooks(ledger, SECRET).handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    ls = LocalStripe()
    await ls.start()
    await ls.send_webhooks_to(f"http://127.0.0.1:{port}/webhooks/stripe", SECRET)
    payer = FakeStripe(localstripe=ls.url)
    gateway = StripeGateway("sk_test_bench", api_base=ls.url)
    sales = TicketSales(ledger, gateway, "http://bench")
    async with core.uow() as uow:
        for i in range(buyers + 1):
            await uow.accounts.add(Account(id=f"u{i:05d}", display_name=f"u{i}", created_at=core.now()))
        await uow.commit()
    host = Actor(account_id="u00000", is_operator=True)
    space = await core.create_space(host, "Rush", start_at=core.now() + timedelta(days=1))
    await core.set_ticketing(host, space.id, Ticketing(price_minor=1000, currency="eur", capacity=seats))
    sold_out = 0
    gate = asyncio.Semaphore(64)

    async def buyer(i: int) -> str | None:
        nonlocal sold_out
        async with gate:
            try:
                p = await sales.buy_with_card(Actor(account_id=f"u{i:05d}"), space.id)
            except DomainError as e:
                if e.code == "ticket.sold_out":
                    sold_out += 1
                return None
            await payer.pay_intent(p.provider_ref)
            return p.ticket.id

    t0 = time.perf_counter()
    ids = [t for t in await asyncio.gather(*(buyer(i) for i in range(1, buyers + 1))) if t]
    buy_s = time.perf_counter() - t0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (await ledger.report(space.id)).sold < len(ids):
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - t0
    report = await ledger.report(space.id)
    await gateway.close()
    ls.stop()
    await runner.cleanup()
    await bus.close()
    await engine.dispose()
    return {"buyers": buyers, "seats": seats, "paid": report.sold, "oversold": max(0, report.sold - seats),
            "sold_out_answers": sold_out, "purchases_per_s": round(report.sold / elapsed, 1),
            "elapsed_s": round(elapsed, 2), "checkout_phase_s": round(buy_s, 2),
            "note": "includes localstripe's fixed 1 s webhook delay"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--buyers", type=int, default=200)
    ap.add_argument("--seats", type=int, default=50)
    ap.add_argument("--database", default="")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        out = asyncio.run(run(a.buyers, a.seats, a.database or f"sqlite:///{Path(d) / 'rush.sqlite3'}"))
    print(json.dumps(out) if a.json else "\n".join(f"{k}: {v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
