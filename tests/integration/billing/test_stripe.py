"""Tickets paid through the real stripe library: localstripe for payments, refunds and its own
signed webhooks; the small front server (tests/support/stripe_fake.py) for Checkout, Connect and
application fees; in front of both, the strict front (tests/support/stripe_strict.py) that refuses
whatever Stripe would refuse. Our webhook endpoint is a real aiohttp server; webhooks the fake
sends are signed by the test."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

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
from tests.support.stripe_fake import LocalStripe, free_port, sign
from tests.support.stripe_strict import StrictStripe

SECRET = "whsec_test_secret"


@dataclass
class Env:
    core: Core
    ledger: Ledger
    sales: TicketSales
    gateway: StripeGateway
    fake: StrictStripe
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
    fake = StrictStripe(ls.url, webhook_url=webhook_url, webhook_secret=SECRET)
    front = web.AppRunner(fake.app())
    await front.setup()
    fport = free_port()
    await web.TCPSite(front, "127.0.0.1", fport).start()
    fake.base = f"http://127.0.0.1:{fport}"
    gateway = StripeGateway("sk_test_spacebridge", api_base=fake.base, fee_bps=500)
    hooks.gateway = gateway  # account.updated clears what it remembers about payout accounts
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
    assert fake.refused == [], "a request Stripe would refuse"


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


async def processed(env: Env, kind: str, count: int = 1) -> None:
    """Wait until our endpoint has recorded ``count`` events of ``kind`` (localstripe sends its own)."""
    from sqlalchemy import func, select

    from core.storage.tables import ProcessedEventRow

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        async with env.core.uow() as uow:
            n = (await uow.session.execute(select(func.count()).select_from(ProcessedEventRow)
                                           .where(ProcessedEventRow.kind == kind))).scalar_one()
        if n >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {kind} event arrived")


async def run_refunds(env: Env) -> None:
    runner = JobRunner(env.core.sessionmaker, {"ticket.refund": make_refund_handler(env.ledger,
                                                                                  {"stripe": env.gateway})},
                       env.core.clock, worker_id="refunds")
    await runner.run_until_idle()


async def test_declined_then_retried_on_the_same_intent_is_honoured(env: Env) -> None:
    fan = await env.buyer("unlucky")
    purchase = await env.sales.buy_with_card(fan, env.space_id)
    declined = await env.pay_card(purchase.provider_ref, card="4000000000000341")
    assert "error" in declined
    await processed(env, "payment_intent.payment_failed")  # localstripe's signed webhook arrived
    assert (await env.ledger.get(purchase.ticket.id)).status == TicketStatus.HELD, "a decline lost the seat"
    assert (await env.ledger.report(env.space_id)).held == 1
    assert (await env.pay_card(purchase.provider_ref))["status"] == "succeeded"  # Stripe.js retries
    await env.wait_status(purchase.ticket.id, TicketStatus.PAID)
    await env.core.bus.drain()  # type: ignore[attr-defined]
    r = await env.ledger.report(env.space_id)
    assert (r.sold, r.returned, r.refunds_pending, r.held) == (1, 0, 0, 0)


async def test_payouts_only_once_connect_says_the_account_can_take_them(env: Env) -> None:
    from core.messages import describe

    acct = await env.gateway.create_connect_account(env.host.account_id, "creator@example.org")
    await env.ledger.set_payout_account(env.host.account_id, acct)
    link = await env.gateway.account_link(acct, "http://sb.test/connect/refresh", "http://sb.test/connect/done")
    assert acct.startswith("acct_") and acct in link
    assert not await env.gateway.account_ready(acct)
    fan = await env.buyer("chat-fan")
    with pytest.raises(BillingError) as e:
        await env.sales.buy_with_checkout(fan, env.space_id, "Paid AMA")
    assert e.value.code == "billing.payouts_not_ready"
    assert "not finished" in describe(e.value)
    assert (await env.ledger.report(env.space_id)).held == 0, "a refused sale kept the seat"
    assert not [r for r in env.fake.requests if r["path"] in ("/v1/checkout/sessions", "/v1/payment_intents")
                and r["method"] == "POST"], "a charge was attempted to an account that cannot take it"
    env.fake.finish_onboarding(acct)
    purchase = await env.sales.buy_with_checkout(fan, env.space_id, "Paid AMA")
    assert purchase.url and purchase.provider_ref.startswith("cs_test_")
    sent = [r for r in env.fake.requests if r["path"] == "/v1/checkout/sessions"][-1]
    assert sent["idempotency_key"].startswith(f"cs:{purchase.ticket.id}:")
    left = int(sent["form"]["expires_at"]) - time.time()
    assert 30 * 60 <= left <= 24 * 3600, "Checkout refuses sessions outside 30 min - 24 h"
    assert sent["form"]["payment_intent_data"]["application_fee_amount"] == "75"  # 5 % of 15.00
    assert sent["form"]["payment_intent_data"]["transfer_data"]["destination"] == acct
    await env.fake.complete_session(purchase.provider_ref)
    await env.wait_status(purchase.ticket.id, TicketStatus.PAID)
    r = await env.ledger.report(env.space_id)
    assert (r.sold, r.gross_minor, r.fees_minor, r.net_minor) == (1, 1500, 75, 1425)


async def test_account_updated_webhook_is_believed_at_once(env: Env) -> None:
    """A creator whose payout account Stripe disables (``transfers`` inactive) stops selling as soon
    as ``account.updated`` arrives, though the account was ready a moment ago; enabled again, sales
    resume at once."""
    acct = await env.gateway.create_connect_account(env.host.account_id, None)
    await env.ledger.set_payout_account(env.host.account_id, acct)
    env.fake.finish_onboarding(acct)
    first = await env.sales.buy_with_card(await env.buyer("early"), env.space_id)
    assert first.provider_ref.startswith("pi_")  # ready, and remembered as ready
    env.fake.accounts[acct]["capabilities"]["transfers"] = "inactive"
    status, body = await env.fake.send_event("account.updated", env.fake.accounts[acct])
    assert (status, body["outcome"]) == (200, "processed")
    late = await env.buyer("late")
    with pytest.raises(BillingError) as e:
        await env.sales.buy_with_card(late, env.space_id)
    assert e.value.code == "billing.payouts_not_ready"
    assert (await env.ledger.report(env.space_id)).held == 1, "only the first buyer's seat is held"
    env.fake.finish_onboarding(acct)
    await env.fake.send_event("account.updated", env.fake.accounts[acct])
    assert (await env.sales.buy_with_card(late, env.space_id)).provider_ref.startswith("pi_")


async def test_the_strict_front_refuses_what_stripe_refuses(env: Env) -> None:
    """The calls the old code made: each is refused as Stripe refuses it."""
    import stripe

    client = env.gateway.client.v1
    acct = await env.gateway.create_connect_account("creator", None)
    base: dict[str, Any] = {"mode": "payment", "success_url": "http://sb.test/ok", "cancel_url": "http://sb.test/no",
                            "line_items": [{"quantity": 1, "price_data": {
                                "currency": "eur", "unit_amount": 1500, "product_data": {"name": "Ticket"}}}]}
    with pytest.raises(stripe.InvalidRequestError, match="at least 30 minutes"):
        await client.checkout.sessions.create_async(params={**base, "expires_at": int(time.time()) + 900})  # type: ignore[arg-type]
    with pytest.raises(stripe.InvalidRequestError, match="capabilities"):
        await client.payment_intents.create_async(params={"amount": 1500, "currency": "eur",
                                                          "transfer_data": {"destination": acct},
                                                          "application_fee_amount": 75})
    with pytest.raises(stripe.InvalidRequestError, match="unknown parameter: colour"):
        await client.payment_intents.create_async(params={"amount": 1500, "currency": "eur",
                                                          "colour": "red"})  # type: ignore[typeddict-unknown-key]
    raw: Any = {**base, "line_items": [{"quantity": 1, "price_data": {"currency": "eur", "unit_amount": 1500,
                                                                       "colour": "red"}}]}
    with pytest.raises(stripe.InvalidRequestError, match=r"unknown parameter: line_items\[0\]\[price_data\]\[colour\]"):
        await client.checkout.sessions.create_async(params=raw)
    raw = {**base, "mode": "paymnt"}
    with pytest.raises(stripe.InvalidRequestError, match="Invalid mode: must be one of payment, setup, subscription"):
        await client.checkout.sessions.create_async(params=raw)
    raw = {**base, "line_items": [{"quantity": 1, "price_data": {"unit_amount": 1500,
                                                                 "product_data": {"name": "Ticket"}}}]}
    with pytest.raises(stripe.InvalidRequestError,
                       match=r"Missing required param: line_items\[0\]\[price_data\]\[currency\]"):
        await client.checkout.sessions.create_async(params=raw)
    raw = {"amount": "lots", "currency": "eur"}
    with pytest.raises(stripe.InvalidRequestError, match="Invalid integer"):
        await client.payment_intents.create_async(params=raw)
    raw = {"colour": "red"}
    with pytest.raises(stripe.InvalidRequestError, match="unknown parameter: colour"):
        await client.payment_intents.list_async(params=raw)
    env.fake.finish_onboarding(acct)
    pi = await client.payment_intents.create_async(params={"amount": 1500, "currency": "eur",
                                                           "transfer_data": {"destination": acct},
                                                           "application_fee_amount": 75})
    assert (await env.pay_card(pi.id))["status"] == "succeeded"
    with pytest.raises(stripe.InvalidRequestError, match="reverse_transfer"):
        await client.refunds.create_async(params={"payment_intent": pi.id})
    with pytest.raises(stripe.IdempotencyError):
        await client.payment_intents.create_async(params={"amount": 1, "currency": "eur"},
                                                  options={"idempotency_key": "k1"})
        await client.payment_intents.create_async(params={"amount": 2, "currency": "eur"},
                                                  options={"idempotency_key": "k1"})
    assert {r["code"] for r in env.fake.refused} == {
        "parameter_invalid_integer", "insufficient_capabilities_for_transfer", "parameter_unknown",
        "parameter_missing", "idempotency_key_in_use", "parameter_invalid_string"}
    assert env.fake.source["package"] == "stripe" and env.fake.source["version"].startswith("16.")
    env.fake.refused.clear()


async def test_checkout_after_card_pays_one_ticket_and_returns_the_second_payment(env: Env) -> None:
    fan = await env.buyer("twice")
    card = await env.sales.buy_with_card(fan, env.space_id)
    link = await env.sales.buy_with_checkout(fan, env.space_id, "Paid AMA")
    assert link.ticket.id == card.ticket.id, "one payable ticket per buyer"
    assert link.ticket.hold_expires_at and link.ticket.hold_expires_at > env.core.now() + timedelta(minutes=30)
    assert (await env.pay_card(card.provider_ref))["status"] == "succeeded"
    await env.wait_status(card.ticket.id, TicketStatus.PAID)
    await env.fake.complete_session(link.provider_ref)  # the buyer pays the link as well
    await processed(env, "checkout.session.completed")
    await processed(env, "payment_intent.succeeded", 2)
    r = await env.ledger.report(env.space_id)
    assert (r.sold, r.returned, r.refunds_pending, r.gross_minor) == (1, 1, 1, 3000)
    await run_refunds(env)
    r = await env.ledger.report(env.space_id)
    assert (r.sold, r.refunded, r.returned, r.refunds_pending) == (1, 0, 1, 0)
    assert (r.gross_minor, r.refunded_minor) == (3000, 1500)
    assert (await env.ledger.get(card.ticket.id)).status == TicketStatus.PAID, "the seat itself stays paid"
    second = env.fake.sessions[link.provider_ref]["payment_intent"]
    refunds = [f for f in env.fake.refund_flags.values() if f["payment_intent"] == second]
    assert len(refunds) == 1 and refunds[0]["reason"] == "duplicate"
    await env.fake.send_event("charge.refunded", {"id": "ch_dup", "object": "charge", "payment_intent": second,
                                                  "metadata": {"ticket_id": card.ticket.id}})
    assert (await env.ledger.get(card.ticket.id)).status == TicketStatus.PAID, "the duplicate's refund took the seat"


async def test_a_rebought_ticket_after_an_expired_hold_is_one_ticket(env: Env) -> None:
    ledger = Ledger(env.core, hold=timedelta(seconds=1), fee_bps=500)
    sales = TicketSales(ledger, env.gateway, "http://sb.test")
    fan = await env.buyer("slow")
    first = await sales.buy_with_card(fan, env.space_id)
    deadline = time.monotonic() + 10
    while (await ledger.report(env.space_id)).held and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    second = await sales.buy_with_card(fan, env.space_id)
    assert second.ticket.id != first.ticket.id
    assert (await env.pay_card(first.provider_ref))["status"] == "succeeded"  # the old tab paid after all
    assert (await env.pay_card(second.provider_ref))["status"] == "succeeded"
    await processed(env, "payment_intent.succeeded", 2)
    statuses = sorted([(await ledger.get(first.ticket.id)).status, (await ledger.get(second.ticket.id)).status])
    assert statuses == [TicketStatus.PAID, TicketStatus.VOID]
    await run_refunds(env)
    r = await ledger.report(env.space_id)
    assert (r.sold, r.returned, r.refunds_pending, r.gross_minor, r.refunded_minor) == (1, 1, 0, 3000, 1500)


async def test_checkout_expiry_releases_the_seat(env: Env) -> None:
    fan = await env.buyer("walked-away")
    link = await env.sales.buy_with_checkout(fan, env.space_id, "Paid AMA")
    assert (await env.ledger.report(env.space_id)).held == 1
    await env.fake.expire_session(link.provider_ref)
    assert (await env.ledger.get(link.ticket.id)).status == TicketStatus.VOID
    assert (await env.ledger.report(env.space_id)).held == 0


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


async def test_webhooks_refuse_bad_shapes_and_isolate_a_failing_event(env: Env) -> None:
    fan = await env.buyer("hooked")
    p = await env.sales.buy_with_card(fan, env.space_id)
    listed = json.dumps({"id": "evt_list", "type": "payment_intent.succeeded", "data": {"object": [1, 2]}}).encode()
    status, body = await env.fake.send_event("", {}, payload=listed)
    assert status == 400 and body["error"]["code"] == "webhook.bad_body"
    ok = env.fake.event("payment_intent.succeeded", {"id": p.provider_ref, "amount": 1500, "currency": "eur",
                                                     "metadata": {"ticket_id": p.ticket.id}}, "evt_future")
    status, body = await env.fake.send_event("", {}, payload=ok, signature=sign(ok, SECRET, int(time.time()) + 3600))
    assert status == 400 and body["error"]["code"] == "webhook.from_future"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b" " * (64 * 1024)

    big = sign(b"x", SECRET)
    async with aiohttp.ClientSession() as http, http.post(env.webhook_url, data=chunks(),
                                                          headers={"Stripe-Signature": big}) as r:
        assert r.status == 413 and (await r.json())["error"]["code"] == "webhook.too_large"
    assert (await env.ledger.get(p.ticket.id)).status == TicketStatus.HELD, "a refused event changed the ledger"
    # a poison event (its ticket id is not text: the old code failed the whole batch) next to a good one
    poison = env.fake.event("payment_intent.succeeded", {"id": "pi_poison", "metadata": {"ticket_id": ["x"]}},
                            "evt_poison")
    results = await asyncio.gather(env.fake.send_event("", {}, payload=poison),
                                   env.fake.send_event("", {}, payload=ok))
    assert results[1] == (200, {"received": True, "outcome": "processed"})
    assert results[0][0] in (200, 500)
    assert (await env.ledger.get(p.ticket.id)).status == TicketStatus.PAID


async def test_report_equals_stripes_ledger_after_a_mix_of_flows(env: Env) -> None:
    """Sales to a Connect creator, a duplicate payment, a declined-then-retried card, Checkout and a
    cancel: the report equals what Stripe holds, before and after the refunds, read back through
    stripe-python (charges and refunds from localstripe; transfers and application fees)."""
    acct = await env.gateway.create_connect_account(env.host.account_id, None)
    await env.ledger.set_payout_account(env.host.account_id, acct)
    env.fake.finish_onboarding(acct)
    a, b, c = [await env.buyer(n) for n in ("a", "b", "c")]
    pa = await env.sales.buy_with_card(a, env.space_id)
    la = await env.sales.buy_with_checkout(a, env.space_id, "Paid AMA")  # same ticket, second way to pay
    assert (await env.pay_card(pa.provider_ref))["status"] == "succeeded"
    await env.wait_status(pa.ticket.id, TicketStatus.PAID)
    await env.fake.complete_session(la.provider_ref)  # paid twice: one is returned
    pb = await env.sales.buy_with_card(b, env.space_id)
    assert "error" in await env.pay_card(pb.provider_ref, card="4000000000000341")
    assert (await env.pay_card(pb.provider_ref))["status"] == "succeeded"
    lc = await env.sales.buy_with_checkout(c, env.space_id, "Paid AMA")
    await env.fake.complete_session(lc.provider_ref)
    await env.wait_status(pb.ticket.id, TicketStatus.PAID)
    await env.wait_status(lc.ticket.id, TicketStatus.PAID)
    await processed(env, "checkout.session.completed", 2)
    await run_refunds(env)
    before = await env.ledger.report(env.space_id)
    assert (before.sold, before.returned, before.refunds_pending) == (3, 1, 0)
    await env.core.cancel_space(env.host, env.space_id)
    await run_refunds(env)
    r = await env.ledger.report(env.space_id)
    assert (r.sold, r.refunded, r.returned, r.refunds_pending) == (3, 3, 1, 0)
    client = env.gateway.client.v1
    ours = {str((await env.ledger.get(t)).provider_ref) for t in (pa.ticket.id, pb.ticket.id, lc.ticket.id)}
    ours.add(str(env.fake.sessions[la.provider_ref]["payment_intent"]))
    charges = [ch for ch in (await client.charges.list_async(params={"limit": 100})).data
               if ch.payment_intent in ours and ch.status == "succeeded"]
    refunds = [x for x in (await client.refunds.list_async(params={"limit": 100})).data if x.payment_intent in ours]
    transfers = (await client.transfers.list_async()).data
    fees = (await client.application_fees.list_async()).data
    for report in (before, r):
        assert report.gross_minor == sum(ch.amount for ch in charges)
    assert r.refunded_minor == sum(x.amount for x in refunds)
    assert r.fees_minor == sum(f.amount - f.amount_refunded for f in fees)
    assert r.net_minor == sum(t.amount - t.amount_reversed for t in transfers)
    assert (r.gross_minor, r.refunded_minor, r.fees_minor, r.net_minor) == (6000, 6000, 0, 0)
    assert all(f.get("reverse_transfer") == "true" and f.get("refund_application_fee") == "true"
               for f in env.fake.refund_flags.values()), "a refund left money with the creator"
