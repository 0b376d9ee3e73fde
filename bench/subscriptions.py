"""Super Follows renewals: N subscribers whose periods end within one hour, and that hour's Stripe
webhooks delivered signed to our endpoint, out of order and partly replayed.

    python -m bench.subscriptions [--subscribers 10000] [--database URL] [--concurrency 32] --json

The subscriptions are seeded active (a few canceled at period end), each period ending at its own
moment of the past hour. Then the hour's events, as Stripe sends them for a renewal:

- renewed (most): ``customer.subscription.updated`` (the next period) and ``invoice.paid``;
- failed: ``customer.subscription.updated`` past_due and ``invoice.payment_failed``;
- failed, then paid on Stripe's retry: the two above, then ``invoice.paid`` for the same invoice
  and ``customer.subscription.updated`` active;
- ended (canceled at period end): ``customer.subscription.deleted``.

They are shuffled (so a subscription's events arrive in any order), ``--replay`` of them are
delivered twice more (Stripe's retries), and some forged events (a wrong signature) try to give
non-subscribers a subscription. A separate process sends them, as Stripe's senders would be.
Afterwards the database is read back and compared with what each subscriber should have:

- ``lost``: a subscription whose status or paid period is not the one its events say, or an
  invoice with no record;
- ``doubled``: an invoice counted twice (paid amount or failures over what was sent) or an
  event applied twice (a replay answered other than ``duplicate``);
- ``wrongly_granted``: someone let in who should not be, now (ended subscriptions, forged ones)
  and after every old period's grace (only the renewed), through the same read the join token uses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import random
import resource
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.webhook_site import webhook_site
from core.model.accounts import Account
from core.model.subscription import (
    GRACE,
    PaymentStatus,
    Subscription,
    SubscriptionProvider,
    SubscriptionStatus,
    Tier,
)
from core.services import Core
from tests.support.stripe_fake import sign

SECRET = "whsec_bench_subs"
PRICE = 500
MONTH = 30 * 86400
CREATOR = "creator"
TIER = "tier_bench"
STRIPE_PRICE = "price_bench"


def _send_all(url: str, events: list[tuple[bytes, bool]], concurrency: int, out: mp.Queue[Any]) -> None:
    """Stripe's side, in a process of its own: each payload signed at sending time (a forged one
    with the wrong secret); the answers' outcomes counted."""
    out.put(asyncio.run(_send(url, events, concurrency)))


async def _send(url: str, events: list[tuple[bytes, bool]], concurrency: int) -> dict[str, Any]:
    import aiohttp

    counts: Counter[str] = Counter()
    queue: asyncio.Queue[tuple[int, bytes, bool]] = asyncio.Queue()
    for i, (payload, forged) in enumerate(events):
        queue.put_nowait((i, payload, forged))
    outcomes: list[str] = [""] * len(events)

    async def worker(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            i, payload, forged = queue.get_nowait()
            for _ in range(5):  # a 5xx is retried, as Stripe retries
                sig = sign(payload, "whsec_forged" if forged else SECRET)
                async with http.post(url, data=payload, headers={"Stripe-Signature": sig,
                                                                  "Content-Type": "application/json"}) as r:
                    body = await r.json()
                    if r.status < 500:
                        outcomes[i] = str(body.get("outcome") or body.get("error", {}).get("code") or r.status)
                        break
            counts[outcomes[i]] += 1

    t0 = time.perf_counter()
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return {"elapsed_s": time.perf_counter() - t0, "counts": dict(counts), "outcomes": outcomes}


def _sub_obj(ref: str, account: str, status: str, period_end: int, cancel: bool = False) -> dict[str, Any]:
    return {"id": ref, "object": "subscription", "status": status, "cancel_at_period_end": cancel,
            "metadata": {"account_id": account, "tier_id": TIER, "creator_id": CREATOR},
            "items": {"object": "list", "data": [{"id": f"si_{ref}", "current_period_end": period_end,
                                                  "price": {"id": STRIPE_PRICE}}]}}


def _invoice(ref: str, invoice: str, period_end: int) -> dict[str, Any]:
    return {"id": invoice, "object": "invoice", "amount_paid": PRICE, "amount_due": PRICE, "currency": "eur",
            "payment_intent": f"pi_{invoice}", "parent": {"subscription_details": {"subscription": ref}},
            "lines": {"data": [{"price": {"id": STRIPE_PRICE}, "period": {"end": period_end}}]}}


def _event(kind: str, obj: dict[str, Any], created: int, n: int) -> bytes:
    return json.dumps({"id": f"evt_{n:08d}", "object": "event", "type": kind, "created": created,
                       "api_version": "2025-01-01", "data": {"object": obj}}).encode()


def plan(n: int, start: int, rng: random.Random) -> tuple[dict[str, str], dict[str, int], list[bytes]]:
    """Each subscriber's fate, the period end each should end with, and the hour's events in time order."""
    fate: dict[str, str] = {}
    period: dict[str, int] = {}
    events: list[tuple[int, str, dict[str, Any]]] = []
    for i in range(n):
        acct, ref, inv = f"s{i:05d}", f"sub_{i:05d}", f"in_{i:05d}"
        end = start + (i * 3600) // n  # the periods end across the hour
        r = rng.random()
        kind = "renewed" if r < 0.90 else "failed" if r < 0.95 else "retried" if r < 0.97 else "ended"
        fate[acct] = kind
        nxt = end + MONTH
        if kind == "renewed":
            events += [(end + 1, "customer.subscription.updated", _sub_obj(ref, acct, "active", nxt)),
                       (end + 2, "invoice.paid", _invoice(ref, inv, nxt))]
        elif kind in ("failed", "retried"):
            events += [(end + 1, "customer.subscription.updated", _sub_obj(ref, acct, "past_due", end)),
                       (end + 2, "invoice.payment_failed", _invoice(ref, inv, nxt))]
            if kind == "retried":  # Stripe's retry succeeds later in the hour
                events += [(end + 900, "invoice.paid", _invoice(ref, inv, nxt)),
                           (end + 901, "customer.subscription.updated", _sub_obj(ref, acct, "active", nxt))]
        else:
            events.append((end + 1, "customer.subscription.deleted", _sub_obj(ref, acct, "canceled", end, True)))
        period[acct] = nxt if kind in ("renewed", "retried") else end
    events.sort(key=lambda e: e[0])
    return fate, period, [_event(k, o, at, j) for j, (at, k, o) in enumerate(events)]


async def run(n: int, url: str, concurrency: int, replay: float, forged: int, seed: int) -> dict[str, Any]:
    site = await webhook_site(url, SECRET, fee_bps=1000)
    core, port = site.core, site.port

    rng = random.Random(seed)
    now = core.now()
    start = int(now.timestamp()) - 3600 - 60  # every period ended in the past hour
    fate, period, ordered = plan(n, start, rng)
    outsiders = [f"x{i:05d}" for i in range(forged)]
    async with core.uow() as uow:
        for acct in [CREATOR, *fate, *outsiders]:
            await uow.accounts.add(Account(id=acct, display_name=acct, created_at=now))
        await uow.subscriptions.add_tier(Tier(id=TIER, creator_id=CREATOR, name="Supporter", price_minor=PRICE,
                                              currency="EUR", perks="", created_at=now, stripe_price=STRIPE_PRICE))
        seeded = now - timedelta(hours=2)
        for i, acct in enumerate(fate):
            end = start + (i * 3600) // n
            canceled = fate[acct] == "ended"
            await uow.subscriptions.add(Subscription(
                id=f"S{i:05d}", account_id=acct, creator_id=CREATOR, tier_id=TIER,
                provider=SubscriptionProvider.STRIPE, provider_ref=f"sub_{i:05d}",
                status=SubscriptionStatus.CANCELED if canceled else SubscriptionStatus.ACTIVE,
                current_period_end=_dt(end), cancel_at_period_end=canceled, created_at=seeded, updated_at=seeded,
                event_at=seeded, event_id="evt_seed"))
        await uow.commit()

    deliveries: list[tuple[bytes, bool]] = [(e, False) for e in ordered]
    extra = [e for e in ordered if rng.random() < replay]
    deliveries += [(e, False) for e in extra for _ in range(2)]  # each replayed twice more
    deliveries += [(_event("customer.subscription.created", _sub_obj(f"sub_forged_{a}", a, "active",
                                                                      start + MONTH), start + 10, 90_000_000 + i),
                    True) for i, a in enumerate(outsiders)]
    rng.shuffle(deliveries)

    ctx = mp.get_context("spawn")
    out: mp.Queue[Any] = ctx.Queue()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    sender = ctx.Process(target=_send_all, args=(f"http://127.0.0.1:{port}/webhooks/stripe", deliveries,
                                                 concurrency, out), daemon=True)
    sender.start()
    sent: dict[str, Any] = await asyncio.to_thread(out.get, True, 3600)
    await asyncio.to_thread(sender.join, 30)
    r1 = resource.getrusage(resource.RUSAGE_SELF)

    verdict = await verify(core, fate, period, deliveries, sent["outcomes"], outsiders)
    await site.close()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    elapsed = float(sent["elapsed_s"])
    return {"subscribers": n, "events": len(ordered), "deliveries": len(deliveries),
            "replayed": 2 * len(extra), "forged": forged, "fates": dict(Counter(fate.values())),
            "elapsed_s": round(elapsed, 2), "events_per_s": round(len(deliveries) / elapsed, 1),
            "fresh_events_per_s": round(len(ordered) / elapsed, 1), "answers": sent["counts"],
            "server_cpu_s": round(cpu, 2), "concurrency": concurrency, "database": url.split(":", 1)[0],
            **verdict}


def _dt(ts: int) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC)


async def verify(core: Core, fate: dict[str, str], period: dict[str, int], deliveries: list[tuple[bytes, bool]],
                 outcomes: list[str], outsiders: list[str]) -> dict[str, Any]:
    """Read the database back and compare it with each subscriber's events."""
    want_status = {"renewed": SubscriptionStatus.ACTIVE, "retried": SubscriptionStatus.ACTIVE,
                   "failed": SubscriptionStatus.PAST_DUE, "ended": SubscriptionStatus.ENDED}
    async with core.uow() as uow:
        subs = {s.account_id: s for s in await uow.subscriptions.of_creator(CREATOR)}
        payments = {p.invoice_ref: p for p in await uow.subscriptions.creator_payments(CREATOR)}
        now = core.now()
        everyone = [*fate, *outsiders]
        granted_now: set[str] = set()
        granted_later: set[str] = set()
        later = now + GRACE + timedelta(hours=2)  # every old period and its grace are over
        for i in range(0, len(everyone), 500):
            chunk = everyone[i:i + 500]
            granted_now |= await uow.subscriptions.reaching(CREATOR, TIER, chunk, now)
            granted_later |= await uow.subscriptions.reaching(CREATOR, TIER, chunk, later)
    def ends(a: str) -> int | None:
        end = subs[a].current_period_end
        return None if end is None else int(end.timestamp())

    lost = [a for a, f in fate.items() if a not in subs or subs[a].status != want_status[f] or ends(a) != period[a]]
    invoices = {f"in_{a[1:]}": f for a, f in fate.items() if f != "ended"}
    lost_invoices = [i for i, f in invoices.items() if i not in payments
                     or (f == "failed" and payments[i].failures != 1)]  # a failure not recorded
    doubled = [i for i, p in payments.items()
               if p.amount_minor != PRICE or p.failures > (1 if invoices.get(i) in ("failed", "retried") else 0)
               or p.status != (PaymentStatus.FAILED if invoices.get(i) == "failed" else PaymentStatus.PAID)]
    seen: Counter[bytes] = Counter()
    applied_twice = 0
    for (payload, forged), outcome in zip(deliveries, outcomes, strict=True):
        if forged:
            continue
        seen[payload] += 1
        if seen[payload] > 1 and outcome != "duplicate":
            applied_twice += 1
    should_now = {a for a, f in fate.items() if f != "ended"}  # past_due keeps its grace
    should_later = {a for a, f in fate.items() if f in ("renewed", "retried")}
    wrongly = (granted_now - should_now) | (granted_later - should_later)
    denied = (should_now - granted_now) | (should_later - granted_later)
    forged_through = sum(1 for (_, forged), o in zip(deliveries, outcomes, strict=True)
                         if forged and o != "webhook.bad_signature")
    unanswered = sum(1 for o in outcomes if not o)
    return {"lost": len(lost) + len(lost_invoices) + unanswered, "doubled": len(doubled) + applied_twice,
            "wrongly_granted": len(wrongly) + forged_through, "wrongly_denied": len(denied),
            "subscriptions_in_db": len(subs), "invoices_in_db": len(payments),
            "gross_minor": sum(p.amount_minor for p in payments.values() if p.status == PaymentStatus.PAID)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subscribers", type=int, default=10_000)
    ap.add_argument("--database", default="", help="SQLAlchemy URL (default: a fresh SQLite file)")
    ap.add_argument("--concurrency", type=int, default=32, help="deliveries in flight at once")
    ap.add_argument("--replay", type=float, default=0.1, help="share of events Stripe delivers twice more")
    ap.add_argument("--forged", type=int, default=100, help="forged events for non-subscribers")
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--json", action="store_true", help="print JSON (the only output)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        url = a.database or f"sqlite:///{Path(d) / 'subs.sqlite3'}"
        result = asyncio.run(run(a.subscribers, url, a.concurrency, a.replay, a.forged, a.seed))
    result["target_events_per_s"] = 200
    result["ok"] = (result["events_per_s"] >= 200 and result["lost"] == 0 and result["doubled"] == 0
                    and result["wrongly_granted"] == 0 and result["wrongly_denied"] == 0)
    print(json.dumps(result, indent=None if a.json else 2))


if __name__ == "__main__":
    main()
