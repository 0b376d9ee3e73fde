"""A ticket rush against localstripe: N buyers at once for S seats, paid by card, settled by webhook.

    python -m bench.ticket_rush --buyers N --seats S [--database URL] [--localstripe-snapshot] --json

Each buyer holds a seat, gets a PaymentIntent from localstripe through the stripe library, pays
(as Stripe.js would, from a process of its own: the buyers' browsers) and is granted the seat by
localstripe's signed webhook to our endpoint. localstripe runs without its per-write store dump
(``tests/support/stripe_fake._NO_SNAPSHOT``) unless ``--localstripe-snapshot``: with it, localstripe
alone tops out near 24 purchases/s (``bench.localstripe_ceiling``) and measures itself, not us.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import resource
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.webhook_site import webhook_site
from billing.sales import TicketSales
from billing.stripe_gateway import StripeGateway
from core.errors import DomainError
from core.events import Event, TicketChanged
from core.model.accounts import Account, Actor
from core.model.space import Ticketing
from tests.support.stripe_fake import FakeStripe, LocalStripe

SECRET = "whsec_bench"


def _browsers(localstripe: str, intents: mp.Queue[str | None], ready: Any, concurrency: int) -> None:
    asyncio.run(_pay_all(localstripe, intents, ready, concurrency))


async def _pay_all(localstripe: str, intents: mp.Queue[str | None], ready: Any, concurrency: int) -> None:
    import aiohttp

    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[object]] = set()
    async with aiohttp.ClientSession() as http:
        payer = FakeStripe(localstripe=localstripe, http=http)
        ready.set()  # the buyers' browsers are open before the sale starts
        while (intent := await loop.run_in_executor(None, intents.get)) is not None:
            await gate.acquire()
            task = asyncio.create_task(payer.pay_intent(intent))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            task.add_done_callback(lambda _: gate.release())
        await asyncio.gather(*tasks)


async def run(buyers: int, seats: int, url: str, snapshot: bool = False) -> dict[str, object]:
    site = await webhook_site(url, SECRET, fee_bps=500)
    core, ledger, bus, port = site.core, site.ledger, site.bus, site.port
    ls = LocalStripe(snapshot=snapshot)
    await ls.start()
    await ls.send_webhooks_to(f"http://127.0.0.1:{port}/webhooks/stripe", SECRET)
    ctx = mp.get_context("spawn")
    intents: mp.Queue[str | None] = ctx.Queue()
    ready = ctx.Event()
    browsers = ctx.Process(target=_browsers, args=(ls.url, intents, ready, 64), daemon=True)
    browsers.start()
    if not await asyncio.to_thread(ready.wait, 60):
        raise SystemExit("the browsers process did not start")
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
    paid: dict[str, float] = {}  # ticket -> when its payment was settled

    async def on_ticket(e: Event) -> None:
        if isinstance(e, TicketChanged) and e.status == "paid":
            paid.setdefault(e.ticket_id, time.perf_counter())

    bus.subscribe(on_ticket, names=["ticket.changed"])

    async def buyer(i: int) -> str | None:
        nonlocal sold_out
        async with gate:
            try:
                p = await sales.buy_with_card(Actor(account_id=f"u{i:05d}"), space.id)
            except DomainError as e:
                if e.code == "ticket.sold_out":
                    sold_out += 1
                return None
            intents.put(p.provider_ref)  # the buyer's browser pays it
            return p.ticket.id

    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    ids = [t for t in await asyncio.gather(*(buyer(i) for i in range(1, buyers + 1))) if t]
    buy_s = time.perf_counter() - t0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(paid) < len(ids):  # the report is read once, at the end
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    intents.put(None)
    browsers.join(timeout=30)
    report = await ledger.report(space.id)
    await gateway.close()
    ls.stop()
    await site.close()
    settled = sorted(paid.values())
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {"buyers": buyers, "seats": seats, "paid": report.sold, "oversold": max(0, report.sold - seats),
            "sold_out_answers": sold_out, "purchases_per_s": round(report.sold / elapsed, 1),
            # the rate payments were settled at, first to last: without the fixed 1 s localstripe waits
            # before sending each webhook, which purchases_per_s includes once
            "settled_per_s": round((len(settled) - 1) / (settled[-1] - settled[0]), 1) if len(settled) > 1 else None,
            "server_cpu_ms_per_buyer": round(1000 * cpu / buyers, 2),
            "elapsed_s": round(elapsed, 2), "checkout_phase_s": round(buy_s, 2), "localstripe_snapshot": snapshot}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--buyers", type=int, default=200)
    ap.add_argument("--seats", type=int, default=50)
    ap.add_argument("--database", default="")
    ap.add_argument("--localstripe-snapshot", action="store_true",
                    help="let localstripe dump its whole store on every write, as it does by default")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        out = asyncio.run(run(a.buyers, a.seats, a.database or f"sqlite:///{Path(d) / 'rush.sqlite3'}",
                              a.localstripe_snapshot))
    print(json.dumps(out) if a.json else "\n".join(f"{k}: {v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
