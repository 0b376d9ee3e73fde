"""What localstripe itself sustains, with Spacebridge's code out of the way: the ceiling under
``bench.ticket_rush``'s ``purchases_per_s``.

    python -m bench.localstripe_ceiling [--purchases N] [--concurrency C] --json

Each purchase makes the requests a card purchase makes in ``bench.ticket_rush`` (create the
PaymentIntent; create a card PaymentMethod, attach it and confirm, as Stripe.js would), straight to
localstripe over HTTP, C at a time; no seat holds, no ledger, no webhooks. Like ``bench.ticket_rush``,
localstripe runs without its per-write store dump unless ``--localstripe-snapshot``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import aiohttp

from tests.support.stripe_fake import LocalStripe


async def run(purchases: int, concurrency: int, snapshot: bool = False) -> dict[str, Any]:
    ls = LocalStripe(snapshot=snapshot)
    await ls.start()
    sem = asyncio.Semaphore(concurrency)
    try:
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk_test_ceiling"}) as http:
            async def post(path: str, data: dict[str, str]) -> dict[str, Any]:
                async with http.post(ls.url + path, data=data) as r:
                    out: dict[str, Any] = await r.json()
                    if r.status >= 400:
                        raise SystemExit(f"localstripe {path}: {out}")
                    return out

            async def purchase() -> None:
                async with sem:
                    pi = await post("/v1/payment_intents", {"amount": "500", "currency": "eur"})
                    pm = await post("/v1/payment_methods", {"type": "card", "card[number]": "4242424242424242",
                                                            "card[exp_month]": "12", "card[exp_year]": "2034",
                                                            "card[cvc]": "123"})
                    await post(f"/v1/payment_intents/{pi['id']}", {"payment_method": str(pm["id"])})
                    await post(f"/v1/payment_intents/{pi['id']}/confirm", {})

            started = time.monotonic()
            await asyncio.gather(*(purchase() for _ in range(purchases)))
            elapsed = time.monotonic() - started
    finally:
        ls.stop()
    return {"purchases": purchases, "concurrency": concurrency, "localstripe_snapshot": snapshot,
            "localstripe_purchases_per_s": round(purchases / elapsed, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--purchases", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--localstripe-snapshot", action="store_true",
                    help="let localstripe dump its whole store on every write, as it does by default")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    out = asyncio.run(run(a.purchases, a.concurrency, a.localstripe_snapshot))
    print(json.dumps(out) if a.json else json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
