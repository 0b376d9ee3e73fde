"""Super Follows against localstripe behind the strict Stripe front, on a running instance: a creator's
tier becomes a Stripe Product and monthly Plan, a fan subscribes through Checkout (subscription
mode) and Stripe's signed events drive the subscription; the join token is minted (or refused) by
the instance's own endpoint. The subscription's whole life is also delivered as hand-built,
signed Stripe events: replayed, out of order, forged and stale."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text

from billing.stripe_gateway import BillingError, StripeGateway
from billing.subscription_report import creator_report
from billing.subscriptions import SubscriptionSales
from core.errors import Conflict, DomainError
from core.model.accounts import Account, Actor
from core.model.subscription import GRACE, SubscriberAccess, SubscriptionStatus, Tier
from core.storage import migrate
from core.storage.engine import make_engine
from spacebridge.app import Instance
from spacebridge.web_session import COOKIE_NAME, session_key
from tests.integration.web.test_studio import CSRF, admin_host, cookie
from tests.support.stripe_fake import sign
from tests.support.stripe_site import stripe_site
from tests.support.stripe_strict import StrictStripe

SECRET = "whsec_superfollows"


@dataclass
class Env:
    p: Instance
    fake: StrictStripe
    sales: SubscriptionSales
    creator: Account

    async def event(self, kind: str, obj: dict[str, Any], *, created: int, event_id: str | None = None,
                    secret: str = SECRET, signed_at: int | None = None) -> tuple[int, dict[str, Any]]:
        """A Stripe event as Stripe signs it, with its own ``created`` time."""
        payload = json.dumps({"id": event_id or f"evt_{secrets.token_hex(10)}", "object": "event", "type": kind,
                              "created": created, "data": {"object": obj}, "api_version": "2025-01-01"}).encode()
        return await self.fake.send_event(kind, {}, payload=payload, signature=sign(payload, secret, signed_at))

    async def token(self, space_id: str, who: Account | None) -> tuple[int, dict[str, Any]]:
        """The room's first request: ``POST /api/spaces/{id}/join-token`` (a guest has no cookie)."""
        async with aiohttp.ClientSession(cookies=await cookie(self.p, who) if who else self.guest_cookie()) as http, \
                http.post(f"{self.p.url}/api/spaces/{space_id}/join-token", headers={"X-CSRF-Token": CSRF}) as r:
            body = await r.json()
            return r.status, body

    def guest_cookie(self) -> dict[str, str]:
        """A browser that opened the Space's page without signing in: a session with only its CSRF value."""
        data = {"created": int(time.time()), "session": {"csrf": CSRF}}
        key = session_key(self.p.settings.resolved_secret())
        return {COOKIE_NAME: key.encrypt(json.dumps(data).encode()).decode()}

    async def status_of(self, who: Account) -> SubscriptionStatus | None:
        subs = await self.p.core.memberships.subscriptions_of(who.id)
        return subs[-1].status if subs else None


@pytest.fixture
async def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    from tests.support.loopback import LOOPBACK, ensure_loopback_alias

    ensure_loopback_alias()
    async with stripe_site(tmp_path, monkeypatch, StrictStripe, SECRET, localstripe_webhooks=False,
                           ice_announce=[LOOPBACK], platform_fee_bps=1000) as (p, fake):
        creator = await admin_host(p)
        yield Env(p, fake, SubscriptionSales(p.core, p.stripe, p.settings.base_url(), fee_bps=1000), creator)


async def until(check: Any, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def members_space(env: Env, tier: Tier, title: str = "Members AMA", early: int = 0) -> str:
    host = Actor(account_id=env.creator.id)
    space = await env.p.core.create_space(host, title, start_at=env.p.core.now() + timedelta(hours=1))
    await env.p.core.memberships.set_subscriber_access(host, space.id, SubscriberAccess(tier.id, early))
    await env.p.core.start_space(host, space.id)
    return space.id


async def test_subscribe_through_checkout_then_cancel_resume_upgrade_and_refund(env: Env) -> None:
    p, fake = env.p, env.fake
    creator = Actor(account_id=env.creator.id)
    basic = await env.sales.create_tier(creator, "Basic", 500, "eur", "Members-only Spaces")
    gold = await env.sales.create_tier(creator, "Gold", 1500, "eur", "Everything, early")
    assert basic.stripe_price and basic.stripe_price.startswith("plan_") and basic.stripe_product
    plans = [r for r in fake.requests if r["path"] == "/v1/plans"]
    assert plans[0]["form"]["interval"] == "month" and plans[0]["form"]["amount"] == "500"
    gold_space = await members_space(env, gold, "Gold circle")
    basic_space = await members_space(env, basic, "Basic circle")

    fan = await p.core.ensure_account("web", "fan", "Fan")
    other = await p.core.ensure_account("web", "other", "Other")
    status, body = await env.token(basic_space, fan)
    assert status == 403 and body["error"]["code"] == "subscription.required", body
    status, body = await env.token(basic_space, None)
    assert status == 403 and body["error"]["code"] == "subscription.sign_in", body

    checkout = await env.sales.checkout(Actor(account_id=fan.id), basic.id)
    assert checkout.url.startswith(fake.base + "/pay/cs_")
    await fake.subs.complete(checkout.session_id)

    async def active() -> bool:
        return await env.status_of(fan) == SubscriptionStatus.ACTIVE

    await until(active, "the subscription never became active")
    assert (await env.token(basic_space, fan))[0] == 200
    status, body = await env.token(gold_space, fan)  # a cheaper tier does not open a dearer one
    assert status == 403 and body["error"]["code"] == "subscription.required"
    assert (await env.token(basic_space, other))[0] == 403
    with pytest.raises(Conflict) as again:
        await env.sales.checkout(Actor(account_id=fan.id), gold.id)
    assert again.value.code == "subscription.already"

    sub = (await p.core.memberships.subscriptions_of(fan.id))[-1]
    await env.sales.cancel(Actor(account_id=fan.id), sub.id)

    async def canceled() -> bool:
        return await env.status_of(fan) == SubscriptionStatus.CANCELED

    await until(canceled, "cancel at period end was never applied")
    assert (await env.token(basic_space, fan))[0] == 200  # paid until the period ends
    await env.sales.cancel(Actor(account_id=fan.id), sub.id, resume=True)
    await until(active, "resume was never applied")

    await env.sales.change_tier(Actor(account_id=fan.id), sub.id, gold.id)
    assert fake.subs.proration[-1] == (sub.provider_ref, "always_invoice")

    async def gold_open() -> bool:
        return (await env.token(gold_space, fan))[0] == 200

    await until(gold_open, "the upgrade never opened the Gold Space")

    await env.sales.refund_current(creator, sub.id)
    refunds = [r for r in fake.requests if r["path"] == "/v1/refunds"]
    assert refunds, "no refund was made"

    async def ended() -> bool:
        return await env.status_of(fan) == SubscriptionStatus.ENDED

    await until(ended, "the refunded subscription never ended")
    status, body = await env.token(basic_space, fan)
    assert status == 403 and body["error"]["code"] == "subscription.required"
    # asked again: refused, and no earlier period is given back instead
    with pytest.raises(Conflict) as again:
        await env.sales.refund_current(creator, sub.id)
    assert again.value.code == "subscription.already_refunded"
    assert len([r for r in fake.requests if r["path"] == "/v1/refunds"]) == len(refunds)


def sub_obj(ref: str, tier: Tier, account: str, status: str, period_end: int, *, cancel: bool = False,
            price: str | None = None) -> dict[str, Any]:
    """A Stripe Subscription object (API 2025: the period on the item)."""
    return {"id": ref, "object": "subscription", "status": status, "cancel_at_period_end": cancel,
            "customer": "cus_x", "metadata": {"account_id": account, "tier_id": tier.id, "creator_id": tier.creator_id},
            "items": {"object": "list", "data": [{"id": "si_x", "current_period_end": period_end,
                                                  "price": {"id": price or tier.stripe_price}}]}}


def invoice_obj(ref: str, invoice: str, amount: int, period_end: int) -> dict[str, Any]:
    return {"id": invoice, "object": "invoice", "amount_paid": amount, "amount_due": amount, "currency": "eur",
            "payment_intent": f"pi_{invoice[3:]}", "parent": {"subscription_details": {"subscription": ref}},
            "lines": {"data": [{"period": {"end": period_end}}]}}


async def test_a_subscriptions_life_in_signed_events_replayed_out_of_order_forged_and_stale(env: Env) -> None:
    p = env.p
    creator = Actor(account_id=env.creator.id)
    tier = await env.sales.create_tier(creator, "Basic", 500, "eur")
    space_id = await members_space(env, tier)
    fan = await p.core.ensure_account("web", "fan", "Fan")
    now = int(time.time())
    month = 30 * 86400
    ref = "sub_life1"
    life = [
        ("customer.subscription.created", sub_obj(ref, tier, fan.id, "active", now + month), now - 50),
        ("invoice.paid", invoice_obj(ref, "in_first", 500, now + month), now - 49),
        ("invoice.payment_failed", invoice_obj(ref, "in_renew", 500, now + 2 * month), now - 40),
        ("customer.subscription.updated", sub_obj(ref, tier, fan.id, "past_due", now + month), now - 40),
        ("invoice.paid", invoice_obj(ref, "in_renew", 500, now + 2 * month), now - 30),
        ("customer.subscription.updated", sub_obj(ref, tier, fan.id, "active", now + 2 * month), now - 30),
        ("customer.subscription.updated", sub_obj(ref, tier, fan.id, "active", now + 2 * month, cancel=True),
         now - 20),
        ("customer.subscription.deleted", sub_obj(ref, tier, fan.id, "canceled", now + 2 * month), now - 10),
    ]
    ids = [f"evt_life_{i}" for i in range(len(life))]
    for i in [1, 0, 5, 3, 7, 2, 6, 4]:  # out of order: the newest state wins whatever arrives last
        kind, obj, created = life[i]
        status, body = await env.event(kind, obj, created=created, event_id=ids[i])
        assert status == 200 and body["outcome"] == "processed", body
    for _ in range(5):  # Stripe's retries: each a duplicate that changes nothing
        for i, (kind, obj, created) in enumerate(life):
            status, body = await env.event(kind, obj, created=created, event_id=ids[i])
            assert status == 200 and body["outcome"] == "duplicate"
    sub = (await p.core.memberships.subscriptions_of(fan.id))[-1]
    assert sub.status == SubscriptionStatus.ENDED and sub.event_id == ids[7]
    status, body = await env.token(space_id, fan)
    assert status == 403 and body["error"]["code"] == "subscription.required"

    report = await creator_report(p.core, env.creator.id)
    assert report.failed_payments_30d == 1 and report.gross_minor == 1000 and report.churned_30d == 1
    assert report.active == 0 and report.mrr_minor == 0
    charge = {"id": "ch_renew", "object": "charge", "payment_intent": "pi_renew", "amount": 500,
              "amount_refunded": 500, "refunded": True}  # refunded from Stripe's dashboard
    status, body = await env.event("charge.refunded", charge, created=now)
    assert status == 200 and body["outcome"] == "processed", body
    report = await creator_report(p.core, env.creator.id)
    assert (report.gross_minor, report.refunded_minor) == (1000, 500)

    forged = await env.event("customer.subscription.created", sub_obj("sub_forged", tier, fan.id, "active",
                                                                      now + month), created=now, secret="whsec_nope")
    stale = await env.event("customer.subscription.created", sub_obj("sub_stale", tier, fan.id, "active",
                                                                     now + month), created=now - 3600,
                            signed_at=now - 3600)
    assert forged[0] == 400 and forged[1]["error"]["code"] == "webhook.bad_signature"
    assert stale[0] == 400 and stale[1]["error"]["code"] == "webhook.stale"
    assert (await env.token(space_id, fan))[0] == 403  # neither let anyone in


async def test_lapsed_past_due_and_downgraded_subscribers(env: Env) -> None:
    p = env.p
    creator = Actor(account_id=env.creator.id)
    basic = await env.sales.create_tier(creator, "Basic", 500, "eur")
    gold = await env.sales.create_tier(creator, "Gold", 1500, "eur")
    gold_space = await members_space(env, gold, "Gold circle")
    now = int(time.time())
    lapsed = await p.core.ensure_account("web", "lapsed", "Lapsed")
    grace = await p.core.ensure_account("web", "grace", "In grace")
    down = await p.core.ensure_account("web", "down", "Downgraded")
    long_ago = now - int(GRACE.total_seconds()) - 86400
    await env.event("customer.subscription.updated", sub_obj("sub_lapsed", gold, lapsed.id, "past_due", long_ago),
                    created=now - 5)
    await env.event("customer.subscription.updated", sub_obj("sub_grace", gold, grace.id, "past_due", now - 3600),
                    created=now - 5)
    period_end = now + 10 * 86400
    await env.event("customer.subscription.created", sub_obj("sub_down", gold, down.id, "active", period_end),
                    created=now - 5)
    await env.event("customer.subscription.updated",
                    sub_obj("sub_down", gold, down.id, "active", period_end, price=basic.stripe_price),
                    created=now - 4)
    status, body = await env.token(gold_space, lapsed)
    assert status == 403 and body["error"]["code"] == "subscription.required"
    assert (await env.token(gold_space, grace))[0] == 200  # a failed renewal keeps access through the grace
    assert (await env.token(gold_space, down))[0] == 200  # the Gold period already paid for
    sub = (await p.core.memberships.subscriptions_of(down.id))[-1]
    assert sub.tier_id == basic.id and sub.prior_tier_id == gold.id
    # at the period's end the Gold Space closes to them (the access read with the time it asks about)
    async with p.core.uow() as uow:
        end = datetime.fromtimestamp(period_end, UTC)
        assert await uow.subscriptions.reaching(env.creator.id, gold.id, [down.id], end - timedelta(seconds=1))
        assert not await uow.subscriptions.reaching(env.creator.id, gold.id, [down.id], end)
        assert await uow.subscriptions.reaching(env.creator.id, basic.id, [down.id], end)


async def test_tiers_rules_and_early_access(env: Env) -> None:
    p = env.p
    creator = Actor(account_id=env.creator.id)
    tiers = [await p.core.memberships.create_tier(creator, n, price, "eur") for n, price in
             (("One", 100), ("Two", 200), ("Three", 300))]
    with pytest.raises(DomainError) as e:
        await p.core.memberships.create_tier(creator, "Four", 400, "eur")
    assert e.value.code == "tier.too_many"
    fan = await p.core.ensure_account("web", "fan", "Fan")
    with pytest.raises(DomainError) as e:
        await p.core.memberships.archive_tier(Actor(account_id=fan.id), tiers[0].id)
    assert e.value.code == "tier.not_yours"
    other = await admin_host(p, "Olga")
    bad = StripeGateway("rk_not_a_key", api_base=env.fake.base)
    try:  # Stripe refuses the Product: no tier is left behind
        with pytest.raises(BillingError) as e:
            await SubscriptionSales(p.core, bad, p.settings.base_url()).create_tier(
                Actor(account_id=other.id), "Basic", 500, "eur")
        assert e.value.code == "billing.bad_key"
    finally:
        await bad.close()
    assert await p.core.memberships.tiers(other.id) == []
    space_id = await members_space(env, tiers[0], "Early birds", early=10)
    status, body = await env.token(space_id, fan)  # subscribers first, everyone 10 minutes after the start
    assert status == 403 and body["error"]["code"] == "subscription.early_access" and body["error"]["opens_at"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_0010_up_down_up(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """0010 applies, reverts and applies again on both databases, leaving the tables the code maps."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    else:
        from tests.support import services

        services.require("postgresql")
        url = services.create_pg_database()
        request.addfinalizer(lambda: services.drop_pg_database(url))
    from alembic import command

    migrate.upgrade(url)
    command.downgrade(migrate.alembic_config(url), "0009")
    migrate.upgrade(url)

    async def check() -> None:
        engine = make_engine(url)
        async with engine.connect() as conn:
            for table in ("sub_tiers", "subscriptions", "subscription_payments"):
                await conn.execute(text(f"SELECT * FROM {table}"))
            await conn.execute(text("SELECT subscribers FROM spaces"))
        await engine.dispose()

    asyncio.run(check())


async def test_connect_creator_is_paid_by_destination_charges_only_once_ready(env: Env) -> None:
    p, fake = env.p, env.fake
    assert p.stripe is not None
    creator = Actor(account_id=env.creator.id)
    tier = await env.sales.create_tier(creator, "Basic", 500, "eur")
    acct = await p.stripe.create_connect_account(env.creator.id)
    await p.ledger.set_payout_account(env.creator.id, acct)
    fan = await p.core.ensure_account("web", "fan", "Fan")
    with pytest.raises(BillingError) as refused:  # onboarding not finished: Stripe would refuse the charges
        await env.sales.checkout(Actor(account_id=fan.id), tier.id)
    assert refused.value.code == "billing.payouts_not_ready"
    fake.finish_onboarding(acct)
    checkout = await env.sales.checkout(Actor(account_id=fan.id), tier.id)
    data = fake.sessions[checkout.session_id]["_subscription_data"]
    assert data["transfer_data"] == {"destination": acct} and float(data["application_fee_percent"]) == 10
    await fake.subs.complete(checkout.session_id)

    async def active() -> bool:
        return await env.status_of(fan) == SubscriptionStatus.ACTIVE

    await until(active, "the subscription never became active")
    report = await creator_report(p.core, env.creator.id)
    assert (report.gross_minor, report.fees_minor, report.net_minor, report.mrr_minor) == (500, 50, 450, 500)

    sub = (await p.core.memberships.subscriptions_of(fan.id))[-1]
    await env.sales.refund_current(creator, sub.id)
    flags = list(fake.refund_flags.values())[-1]
    assert (flags["reverse_transfer"], flags["refund_application_fee"], flags["amount"]) == ("true", "true", 500)

    async def ended() -> bool:
        return await env.status_of(fan) == SubscriptionStatus.ENDED

    await until(ended, "the refunded subscription never ended")
    report = await creator_report(p.core, env.creator.id)
    assert (report.refunded_minor, report.fees_minor, report.net_minor, report.active) == (500, 0, 0, 0)


async def test_a_guest_link_made_before_the_space_became_for_subscribers_is_refused_at_hello(env: Env) -> None:
    p = env.p
    creator = Actor(account_id=env.creator.id)
    tier = await env.sales.create_tier(creator, "Basic", 500, "eur")
    space = await p.core.create_space(creator, "Was open", start_at=p.core.now() + timedelta(hours=1))
    early = p.tokens.issue(space.id, None, "guest", p.core.now(), ttl_s=900)  # the page was open already
    await p.core.memberships.set_subscriber_access(creator, space.id, SubscriberAccess(tier.id))
    await p.core.start_space(creator, space.id)
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{p.url}/ws/{space.id}") as ws:
        await ws.send_json({"type": "hello", "token": early})
        frame = await ws.receive_json(timeout=10)
        assert frame["type"] == "error" and frame["code"] == "subscription.sign_in", frame
        closed = await ws.receive(timeout=10)
        assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 4001


async def test_a_listener_whose_subscription_ends_is_let_go_at_once(env: Env) -> None:
    p = env.p
    creator = Actor(account_id=env.creator.id)
    tier = await env.sales.create_tier(creator, "Basic", 500, "eur")
    space_id = await members_space(env, tier)
    fan = await p.core.ensure_account("web", "fan", "Fan")
    now = int(time.time())
    status, body = await env.event("customer.subscription.created",
                                   sub_obj("sub_live", tier, fan.id, "active", now + 86400), created=now - 2)
    assert status == 200, body
    status, minted = await env.token(space_id, fan)
    assert status == 200, minted
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{p.url}/ws/{space_id}") as ws:
        await ws.send_json({"type": "hello", "token": minted["token"]})
        assert (await ws.receive_json(timeout=10))["type"] == "welcome"
        await env.event("customer.subscription.deleted", sub_obj("sub_live", tier, fan.id, "canceled", now + 86400),
                        created=now - 1)
        revoked = False
        while True:
            msg = await ws.receive(timeout=10)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            frame = json.loads(msg.data)
            if frame["type"] == "error":
                assert frame["code"] == "access.revoked" and frame["data"]["reason"] == "subscription.ended", frame
                assert frame["message"] == ("Your subscription no longer covers this Space, so your place in it "
                                            "has ended.")
                revoked = True
        assert revoked and msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4001
    status, body = await env.token(space_id, fan)
    assert status == 403 and body["error"]["code"] == "subscription.required"


async def test_the_strict_front_refuses_subscription_calls_stripe_would_refuse(env: Env) -> None:
    """What a wrong Super Follows call would send: each is refused as Stripe refuses it."""
    import stripe

    p, fake = env.p, env.fake
    assert p.stripe is not None
    client = p.stripe.client  # stripe-python as the instance uses it, pointed at the strict front
    acct = await p.stripe.create_connect_account(env.creator.id)
    base: dict[str, Any] = {"mode": "subscription", "success_url": "http://sb.test/ok",
                            "line_items": [{"price": "plan_x", "quantity": 1}]}
    refusals = [
        ({**base, "payment_intent_data": {"metadata": {"a": "b"}}}, "payment_intent_data"),
        ({**base, "line_items": [{"quantity": 1}]}, "recurring price"),
        ({**base, "subscription_data": {"application_fee_percent": 10}}, "application_fee_percent"),
        ({**base, "subscription_data": {"transfer_data": {"destination": acct}}}, "capabilities"),
    ]
    for params, says in refusals:
        with pytest.raises(stripe.InvalidRequestError, match=says):
            await client.v1.checkout.sessions.create_async(params=params)  # type: ignore[arg-type]
    with pytest.raises(stripe.InvalidRequestError, match="proration_behavior"):
        await client.v1.subscriptions.update_async("sub_x", params={"proration_behavior": "sometimes"})
    with pytest.raises(stripe.InvalidRequestError, match="interval"):
        await client.v1.plans.create_async(params={"amount": 500, "currency": "eur", "interval": "fortnight",
                                                   "product": "prod_x"})
    assert {r["code"] for r in fake.refused} == {"parameter_invalid", "parameter_missing",
                                                 "insufficient_capabilities_for_transfer", "parameter_invalid_string"}
    fake.refused.clear()
