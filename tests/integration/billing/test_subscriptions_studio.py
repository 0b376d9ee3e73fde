"""Super Follows in the host's console, on a running instance against localstripe behind the strict
Stripe front: tiers made and archived through ``/studio/tiers`` (their Stripe Product and Plan made;
a bad price, a fourth tier, someone else's tier and a missing CSRF token change nothing), the figures
after a fan subscribed through Checkout, and the New Space form's tier and early access (a bad tier
makes no Space)."""

from __future__ import annotations

import re

from core.model.accounts import Actor
from core.model.space import SpaceState
from core.model.subscription import PaymentStatus, SubscriberAccess, SubscriptionPayment, SubscriptionProvider
from tests.integration.billing.test_subscriptions import Env, env, until
from tests.integration.web.test_studio import CSRF, call, when

__all__ = ["env"]


async def test_tiers_from_the_studio_and_their_figures(env: Env) -> None:
    p, hana = env.p, env.creator
    status, html, _ = await call(p, "GET", "/studio/subscriptions", hana)
    assert status == 200 and "No tiers on sale yet." in html and 'data-figure="active">0<' in html

    status, html, _ = await call(p, "POST", "/studio/tiers", hana,
                                 {"csrf": CSRF, "name": "Gold", "price": "0", "currency": "eur"})
    assert status == 400 and "A tier's monthly price must be above zero." in html
    status, _, _ = await call(p, "POST", "/studio/tiers", hana, {"name": "Gold", "price": "5", "currency": "eur"})
    assert status == 403
    assert await p.core.memberships.tiers(hana.id) == []

    for name, price in (("Supporter", "5"), ("Inner", "15.00"), ("Patron", "40")):
        status, _, where = await call(p, "POST", "/studio/tiers", hana, {
            "csrf": CSRF, "name": name, "price": price, "currency": "eur", "perks": f"{name} perks"})
        assert status == 303 and where.startswith("/studio/subscriptions?done="), (status, where)
    tiers = await p.core.memberships.tiers(hana.id)
    assert [(t.name, t.price_minor, t.currency, t.perks) for t in tiers] == [
        ("Supporter", 500, "EUR", "Supporter perks"), ("Inner", 1500, "EUR", "Inner perks"),
        ("Patron", 4000, "EUR", "Patron perks")]
    assert all(t.stripe_price and t.stripe_product for t in tiers)  # made on Stripe before being saved
    status, html, _ = await call(p, "POST", "/studio/tiers", hana,
                                 {"csrf": CSRF, "name": "Fourth", "price": "1", "currency": "eur"})
    assert status == 409 and "at most 3 tiers" in html
    assert len(await p.core.memberships.tiers(hana.id)) == 3

    supporter, inner, patron = tiers
    other = await p.core.ensure_account("web", "otto", "Otto")
    status, _, _ = await call(p, "POST", f"/studio/tiers/{patron.id}/archive", other, {"csrf": CSRF})
    assert status == 404 and not (await p.core.memberships.tier(patron.id)).archived
    status, _, where = await call(p, "POST", f"/studio/tiers/{patron.id}/archive", hana, {"csrf": CSRF})
    assert status == 303 and (await p.core.memberships.tier(patron.id)).archived

    fan = await p.core.ensure_account("web", "fan", "Fan")
    checkout = await env.sales.checkout(Actor(account_id=fan.id, platform="web"), inner.id)
    await env.fake.subs.complete(checkout.session_id)

    async def active() -> bool:
        return "active" == str(await env.status_of(fan))

    await until(active, "the subscription never became active")
    status, html, _ = await call(p, "GET", "/studio/subscriptions", hana)
    assert status == 200
    figures = dict(re.findall(r'data-figure="(\w+)">([^<]*)<', html))
    assert figures["active"] == "1" and figures["mrr"] == "€15.00" and figures["churn"] == "0 (0%)"
    assert figures["failed"] == "0" and figures["gross"] == "€15.00" and figures["fees"] == "€1.50"
    assert figures["net"] == "€13.50"
    rows = re.findall(r'<tr data-tier="(\w+)">.*?data-figure="tier-active">(\d+)<', html, re.S)
    assert rows == [(supporter.id, "0"), (inner.id, "1")]
    assert "Patron · €40.00/month · 0 active" in html  # off sale, still listed
    assert "Stars paid in all" not in html

    async with p.core.uow() as uow:  # a Telegram Stars period, as billing/stars_subscriptions.py records one
        await uow.subscriptions.put_payment(SubscriptionPayment(
            provider=SubscriptionProvider.TELEGRAM, invoice_ref="tg_charge_1", subscription_ref="tg_sub_1",
            creator_id=hana.id, amount_minor=250, currency="XTR", fee_minor=25, status=PaymentStatus.PAID,
            at=p.core.now()))
        await uow.commit()
    html = (await call(p, "GET", "/studio/subscriptions", hana))[1]
    figures = dict(re.findall(r'data-figure="([\w-]+)">([^<]*)<', html))
    assert figures["stars-gross"] == "250 ⭐" and figures["stars-fees"] == "25 ⭐" and figures["stars-net"] == "225 ⭐"


async def test_new_space_form_for_subscribers(env: Env) -> None:
    p, hana = env.p, env.creator
    tier = await env.sales.create_tier(Actor(account_id=hana.id), "Supporter", 500, "eur")
    status, html, _ = await call(p, "GET", "/studio", hana)
    assert status == 200 and "Subscribers at Supporter (€5.00/month) or above" in html

    other = await p.core.ensure_account("web", "otto", "Otto")
    others = await env.sales.create_tier(Actor(account_id=other.id), "Otto's", 300, "eur")
    base = {"csrf": CSRF, "title": "Members AMA", "start": "later", "when": when(p, hours=3), "visibility": "public"}
    status, html, _ = await call(p, "POST", "/studio/spaces", hana, {**base, "tier": others.id})
    assert status == 403 and "That tier is not one of the host's." in html
    status, html, _ = await call(p, "POST", "/studio/spaces", hana, {**base, "tier": tier.id, "early_access": "2000"})
    assert status == 400
    status, html, _ = await call(p, "POST", "/studio/spaces", hana, {**base, "start": "now", "tier": tier.id})
    assert status == 400 and "Only a scheduled Space can be for subscribers" in html
    assert await p.core.list_spaces(states=("live", "scheduled"), host_id=hana.id) == []

    status, _, where = await call(p, "POST", "/studio/spaces", hana, {**base, "tier": tier.id, "early_access": "10"})
    assert status == 303 and where.startswith("/studio/s/"), (status, where)
    space = (await p.core.view(where.rsplit("/", 1)[1])).space
    assert space.state == SpaceState.SCHEDULED and space.subscribers == SubscriberAccess(tier.id, 10)
    status, _, where = await call(p, "POST", "/studio/spaces", hana, {**base, "tier": ""})
    assert (await p.core.view(where.rsplit("/", 1)[1])).space.subscribers is None
