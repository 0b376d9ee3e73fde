"""Tickets paid through the real stripe library: localstripe for payments, refunds and its own
signed webhooks; the small front server (tests/support/stripe_fake.py) for Checkout, Connect and
application fees. Our webhook endpoint is a real aiohttp server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from billing.ledger import Ledger
from billing.refunds import make_refund_handler
from billing.sales import TicketSales
from billing.stripe_gateway import BillingError, StripeGateway
from billing.webhooks import StripeWebhooks
from core.bus import InProcessBus
from core.clock import SystemClock
from core.model.accounts import Account, Actor
from core.model.space import Ticketing
from core.model.ticket import TicketStatus
from core.scheduler import JobRunner
from core.services import Core
from core.storage import migrate
from core.storage.engine import make_engine, make_sessionmaker
from tests.support.stripe_fake import FakeStripe, LocalStripe, free_port, sign

SECRET = "whsec_test_secret"


@dataclass
class Env:
    core: Core
    ledger: Ledger
    sales: TicketSales
    gateway: StripeGateway
    fake: FakeStripe
    ls: LocalStripe
    webhook_url: str
    host: Actor
    space_id: str

    async def buyer(self, name: str) -> Actor:
        async with self.core.uow() as uow:
            await uow.accounts.add(Account(id=name, display_name=name, created_at=self.core.now()))
            await uow.commit()
        return Actor(account_id=name)

    async def wait_status(self, ticket_id: str, status: TicketStatus, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (await self.ledger.get(ticket_id)).status == status:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"ticket {ticket_id} never became {status}")

    async def pay_card(self, intent_id: str, card: str = "4242424242424242") -> dict[str, object]:
        return await self.fake.pay_intent(intent_id, card)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    url = f"sqlite:///{tmp_path / 'b.sqlite3'}"
    await asyncio.to_thread(migrate.upgrade, url)
    engine = make_engine(url)
    bus = InProcessBus()
    await bus.start()
    core = Core(make_sessionmaker(engine), bus, SystemClock())
    ledger = Ledger(core, fee_bps=500)
    hooks = StripeWebhooks(ledger, SECRET)
    app = web.Application()
    app.router.add_post("/webhooks/stripe", hooks.handle)
    ours = web.AppRunner(app)
    await ours.setup()
    port = free_port()
    await web.TCPSite(ours, "127.0.0.1", port).start()
    webhook_url = f"http://127.0.0.1:{port}/webhooks/stripe"
    ls = LocalStripe()
    await ls.start()
    await ls.send_webhooks_to(webhook_url, SECRET)
    fake = FakeStripe(localstripe=ls.url, webhook_url=webhook_url, webhook_secret=SECRET)
    front = web.AppRunner(fake.app())
    await front.setup()
    fport = free_port()
    await web.TCPSite(front, "127.0.0.1", fport).start()
    fake.base = f"http://127.0.0.1:{fport}"
    gateway = StripeGateway("sk_test_spacebridge", api_base=fake.base, fee_bps=500)
    acc = await core.ensure_account("web", "creator", "Creator")
    host = Actor(account_id=acc.id, is_operator=True)
    space = await core.create_space(host, "Paid AMA", start_at=core.now() + timedelta(days=1))
    await core.set_ticketing(host, space.id, Ticketing(price_minor=1500, currency="eur", capacity=3))
    yield Env(core, ledger, TicketSales(ledger, gateway, "http://sb.test"), gateway, fake, ls, webhook_url, host,
              space.id)
    await gateway.close()
    await front.cleanup()
    await ours.cleanup()
    ls.stop()
    await bus.close()
    await engine.dispose()


async def test_card_payment_webhook_grants_the_seat(env: Env) -> None:
    fan = await env.buyer("fan")
    purchase = await env.sales.buy_with_card(fan, env.space_id)
    assert purchase.provider_ref.startswith("pi_") and purchase.client_secret
    created = [r for r in env.fake.requests if r["path"] == "/v1/payment_intents" and r["method"] == "POST"]
    assert created[-1]["idempotency_key"] == f"pi:{purchase.ticket.id}"
    assert created[-1]["form"]["metadata"]["ticket_id"] == purchase.ticket.id
    assert (await env.pay_card(purchase.provider_ref))["status"] == "succeeded"
    await env.wait_status(purchase.ticket.id, TicketStatus.PAID)  # localstripe's own signed webhook
    await env.core.start_space(env.host, env.space_id)
    assert (await env.core.join(fan, env.space_id)).listener_count == 2


async def test_declined_card_releases_the_seat(env: Env) -> None:
    fan = await env.buyer("unlucky")
    purchase = await env.sales.buy_with_card(fan, env.space_id)
    await env.pay_card(purchase.provider_ref, card="4000000000000341")
    await env.wait_status(purchase.ticket.id, TicketStatus.VOID)
    assert (await env.ledger.report(env.space_id)).held == 0


async def test_checkout_link_with_connect_and_application_fee(env: Env) -> None:
    acct = await env.gateway.create_connect_account("creator", "creator@example.org")
    link = await env.gateway.account_link(acct, "http://sb.test/connect/refresh", "http://sb.test/connect/done")
    assert acct.startswith("acct_") and acct in link
    assert not await env.gateway.account_ready(acct)
    fan = await env.buyer("chat-fan")
    purchase = await env.sales.buy_with_checkout(fan, env.space_id, "Paid AMA", destination=acct)
    assert purchase.url and purchase.provider_ref.startswith("cs_test_")
    sent = [r for r in env.fake.requests if r["path"] == "/v1/checkout/sessions"][-1]
    assert sent["idempotency_key"] == f"cs:{purchase.ticket.id}"
    assert sent["form"]["payment_intent_data"]["application_fee_amount"] == "75"  # 5 % of 15.00
    assert sent["form"]["payment_intent_data"]["transfer_data"]["destination"] == acct
    await env.fake.complete_session(purchase.provider_ref)
    await env.wait_status(purchase.ticket.id, TicketStatus.PAID)
    r = await env.ledger.report(env.space_id)
    assert (r.sold, r.gross_minor, r.fees_minor, r.net_minor) == (1, 1500, 75, 1425)
    pi_fee = await env.gateway.create_payment_intent(purchase.ticket, destination=acct)
    assert env.fake.fees[pi_fee[0]]["application_fee_amount"] == 75
    with pytest.raises(BillingError) as e:
        await env.gateway.create_connect_account("x", None) and await env.gateway.account_link(
            "acct_missing", "http://a", "http://b")
    assert e.value.code == "billing.provider_refused"


async def test_replays_out_of_order_forged_and_stale(env: Env) -> None:
    fan = await env.buyer("fan")
    purchase = await env.sales.buy_with_card(fan, env.space_id)
    tid, pi = purchase.ticket.id, purchase.provider_ref
    succeeded = {"id": pi, "object": "payment_intent", "amount": 1500, "currency": "eur",
                 "metadata": {"ticket_id": tid}}
    failed_late = env.fake.event("payment_intent.payment_failed", succeeded, "evt_late_fail")
    ok = env.fake.event("payment_intent.succeeded", succeeded, "evt_ok")
    outcomes = []
    for _ in range(5):
        outcomes.append(await env.fake.send_event("", {}, payload=ok))
    assert outcomes[0] == (200, {"received": True, "outcome": "processed"})
    assert all(o == (200, {"received": True, "outcome": "duplicate"}) for o in outcomes[1:])
    assert (await env.fake.send_event("", {}, payload=failed_late))[0] == 200
    assert (await env.ledger.get(tid)).status == TicketStatus.PAID, "a late failure undid a payment"
    paid_events = 0
    await env.core.bus.drain()  # type: ignore[attr-defined]
    # forged: signed with another secret; stale: a genuine signature from 10 minutes ago
    other = await env.buyer("other")
    p2 = await env.sales.buy_with_card(other, env.space_id)
    body = env.fake.event("payment_intent.succeeded", {**succeeded, "id": p2.provider_ref,
                                                        "metadata": {"ticket_id": p2.ticket.id}}, "evt_forged")
    status, err = await env.fake.send_event("", {}, payload=body, signature=sign(body, "whsec_wrong"))
    assert status == 400 and err["error"]["code"] == "webhook.bad_signature"
    status, err = await env.fake.send_event("", {}, payload=body, signature=sign(body, SECRET, int(time.time()) - 600))
    assert status == 400 and err["error"]["code"] == "webhook.stale"
    async with aiohttp.ClientSession() as http, http.post(env.webhook_url, data=b"{not json") as r:
        assert r.status == 400
    assert (await env.ledger.get(p2.ticket.id)).status == TicketStatus.HELD
    # refund arriving before the payment it refunds: the later success must not re-grant access
    p3_fan = await env.buyer("third")
    p3 = await env.sales.buy_with_card(p3_fan, env.space_id)
    obj = {"id": p3.provider_ref, "amount": 1500, "currency": "eur", "metadata": {"ticket_id": p3.ticket.id}}
    await env.fake.send_event("charge.refunded", {"id": "ch_x", "payment_intent": p3.provider_ref,
                                                  "metadata": {"ticket_id": p3.ticket.id}})
    await env.fake.send_event("payment_intent.succeeded", obj)
    assert (await env.ledger.get(p3.ticket.id)).status == TicketStatus.REFUNDED
    assert paid_events == 0


async def test_cancel_refunds_through_localstripe(env: Env) -> None:
    fans = [await env.buyer(f"f{i}") for i in range(3)]
    tickets = []
    for f in fans:
        p = await env.sales.buy_with_card(f, env.space_id)
        await env.pay_card(p.provider_ref)
        tickets.append(p.ticket.id)
    for t in tickets:
        await env.wait_status(t, TicketStatus.PAID)
    await env.core.cancel_space(env.host, env.space_id)
    runner = JobRunner(env.core.sessionmaker, {"ticket.refund": make_refund_handler(env.ledger,
                                                                                  {"stripe": env.gateway})},
                       env.core.clock, worker_id="refunds")
    await runner.run_until_idle()
    for t in tickets:
        assert (await env.ledger.get(t)).status == TicketStatus.REFUNDED
    refunds = [r for r in env.fake.requests if r["path"] == "/v1/refunds"]
    assert sorted(r["idempotency_key"] for r in refunds) == sorted(f"refund:{t}" for t in tickets)
    async with aiohttp.ClientSession() as http, http.get(
            f"{env.ls.url}/v1/refunds", headers={"Authorization": "Bearer sk_test_x"}) as r:
        listed = json.loads(await r.text())["data"]
    ours = {str((await env.ledger.get(t)).provider_ref) for t in tickets}
    mine = [x for x in listed if x.get("payment_intent") in ours]
    assert len(mine) == 3 and all(x["status"] == "succeeded" and x["amount"] == 1500 for x in mine)


async def test_serve_mounts_the_verified_webhook(tmp_path: Path, env: Env) -> None:
    """The real composition root: STRIPE_* set -> /webhooks/stripe verifies and applies events."""
    import os

    from spacebridge.app import build, start, stop
    from spacebridge.config import load_settings

    os.environ["SPACEBRIDGE_DATA_DIR"] = str(tmp_path / "d")
    try:
        settings = load_settings(database_url=f"sqlite:///{tmp_path / 'serve.sqlite3'}", stripe_api_key="sk_test_x",
                                 stripe_webhook_secret=SECRET, stripe_api_base=env.fake.base, job_workers=0)
        platform = await build(settings)
        await start(platform, "127.0.0.1", 0)
        try:
            body = env.fake.event("payment_intent.succeeded", {"id": "pi_unknown", "metadata": {}}, "evt_s1")
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{platform.url}/webhooks/stripe", data=body,
                                     headers={"Stripe-Signature": sign(body, SECRET)}) as r:
                    assert r.status == 200 and (await r.json())["outcome"] == "ignored"
                async with http.post(f"{platform.url}/webhooks/stripe", data=body,
                                     headers={"Stripe-Signature": sign(body, "nope")}) as r:
                    assert r.status == 400
        finally:
            await stop(platform)
    finally:
        os.environ.pop("SPACEBRIDGE_DATA_DIR", None)
