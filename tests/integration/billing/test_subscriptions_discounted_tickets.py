"""Discounted tickets for subscribers: a ticketed Space whose host gives their subscribers at or above
a tier a percentage off. On a running instance selling through the strict Stripe front over
localstripe: the Space's page shows the subscriber price beside the full one; a Gold subscriber's
web Buy (Checkout) is charged the discounted amount (read back from localstripe's PaymentIntent),
with the platform's fee on that amount, as is the card path's PaymentIntent; a Basic subscriber, an
ended subscription and a buyer whose hold predates their subscription are priced by the
subscription at the moment the payment is made; the cancel refunds exactly what each paid. The
studio's Ticket form sets the discount and bad terms are refused, changing nothing; the CLI too."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest

from billing.sales import TicketSales
from core.errors import DomainError
from core.model.accounts import Account, Actor
from core.model.space import Ticketing
from core.model.ticket import TicketStatus
from tests.integration.billing.test_subscriptions import Env, env, sub_obj, until
from tests.integration.billing.test_subscriptions_cli import Shell, shell
from tests.integration.web.test_studio import CSRF, call

__all__ = ["env", "shell"]


async def _subscribe(env: Env, ref: str, tier: Any, who: Account, *, ended: bool = False) -> None:
    """Stripe's signed events for a subscription (and, ``ended``, its end)."""
    now = int(time.time())
    await env.event("customer.subscription.created", sub_obj(ref, tier, who.id, "active", now + 86400 * 20),
                    created=now - 5)
    if ended:
        await env.event("customer.subscription.deleted", sub_obj(ref, tier, who.id, "canceled", now + 86400 * 20),
                        created=now - 4)


async def _buy_on_the_page(env: Env, space_id: str, who: Account) -> str:
    """The Space page's Buy a ticket: the Checkout Session it redirects to."""
    status, _, location = await call(env.p, "POST", f"/s/{space_id}/ticket", who, {"csrf": CSRF})
    assert status == 303 and "/pay/cs_" in location, (status, location)
    return location.rsplit("/", 1)[1]


async def test_subscribers_at_the_tier_are_charged_the_discounted_price(env: Env) -> None:
    p, fake = env.p, env.fake
    assert p.stripe is not None
    host = Actor(account_id=env.creator.id)
    basic = await env.sales.create_tier(host, "Basic", 500, "eur")
    gold = await env.sales.create_tier(host, "Gold", 1200, "eur")
    acct = await p.stripe.create_connect_account(env.creator.id)  # the platform's fee is an application fee
    await p.ledger.set_payout_account(env.creator.id, acct)
    fake.finish_onboarding(acct)
    space = await p.core.create_space(host, "Paid show", start_at=p.core.now() + timedelta(hours=2))
    await p.core.set_ticketing(host, space.id, Ticketing(price_minor=2000, currency="eur", capacity=10))

    status, _, _ = await call(p, "POST", f"/studio/s/{space.id}/ticketing", env.creator, {
        "csrf": CSRF, "price": "20.00", "currency": "eur", "capacity": "10", "discount_tier": gold.id,
        "discount": "25"})
    assert status == 303
    terms = (await p.core.view(space.id)).space.ticketing
    assert terms == Ticketing(2000, "EUR", 10, discount_tier_id=gold.id, discount_percent=25)
    assert terms.subscriber_price() == 1500

    fan, low, lapsed, late = [await p.core.ensure_account("web", n, n.title())
                              for n in ("fan", "low", "lapsed", "late")]
    await _subscribe(env, "sub_fan", gold, fan)
    await _subscribe(env, "sub_low", basic, low)
    await _subscribe(env, "sub_lapsed", gold, lapsed, ended=True)

    _, html, _ = await call(p, "GET", f"/s/{space.id}", fan)
    assert "€15.00 for Hana's subscribers at Gold (€12.00/month) or above (25% off)." in html
    assert "Buy a ticket · €15.00 (subscriber price)" in html
    _, html, _ = await call(p, "GET", f"/s/{space.id}", low)
    assert f'(25% off): <a href="/u/{env.creator.id}#tiers">subscribe</a>.' in html
    assert "Buy a ticket · €20.00</button>" in html

    # a hold made before subscribing is priced anew once subscribed; its PaymentIntent was the full price
    sales = TicketSales(p.ledger, p.stripe, p.settings.base_url())
    early = await sales.buy_with_card(Actor(account_id=late.id), space.id)
    await _subscribe(env, "sub_late", gold, late)
    card = await sales.buy_with_card(Actor(account_id=late.id), space.id)
    assert card.ticket.id != early.ticket.id and (await p.ledger.get(early.ticket.id)).status == TicketStatus.VOID
    for purchase, amount in ((early, 2000), (card, 1500)):
        pi = await p.stripe.client.v1.payment_intents.retrieve_async(purchase.provider_ref)
        assert (pi.amount, fake.fees[pi.id]["application_fee_amount"]) == (amount, amount // 10)

    paid: dict[str, tuple[str, int]] = {}  # who -> (PaymentIntent, amount charged)
    for who, amount in ((fan, 1500), (low, 2000), (lapsed, 2000)):
        sid = await _buy_on_the_page(env, space.id, who)
        sent = [r for r in fake.requests if r["path"] == "/v1/checkout/sessions" and r["method"] == "POST"][-1]
        assert sent["form"]["line_items"][0]["price_data"]["unit_amount"] == str(amount), who.display_name
        assert sent["form"]["payment_intent_data"]["application_fee_amount"] == str(amount // 10)
        sess = await fake.complete_session(sid)
        pi = await p.stripe.client.v1.payment_intents.retrieve_async(sess["payment_intent"])
        assert pi.amount == amount and pi.status == "succeeded", who.display_name
        paid[who.id] = (pi.id, amount)

    async def all_paid() -> bool:
        r = await p.ledger.report(space.id)
        return r.sold == 3

    await until(all_paid, "the Checkout payments were never settled")
    r = await p.ledger.report(space.id)
    assert (r.gross_minor, r.fees_minor) == (5500, 550)
    fees = {f["id"][4:]: f["amount"] for f in await fake.application_fees()}
    assert sorted(fees[pi[3:]] for pi, _ in paid.values()) == [150, 200, 200]

    await p.core.cancel_space(host, space.id)  # every paid ticket is refunded: what it was charged

    async def refunded() -> bool:
        return (await p.ledger.report(space.id)).refunded == 3

    await until(refunded, "the cancel's refunds never finished")
    back = {f["payment_intent"]: int(f["amount"]) for f in fake.refund_flags.values()}
    assert {pi: back.get(pi) for pi, _ in paid.values()} == {pi: amount for pi, amount in paid.values()}
    r = await p.ledger.report(space.id)
    assert (r.refunded_minor, r.fees_minor) == (5500, 0)


async def test_bad_discount_terms_are_refused_and_change_nothing(env: Env) -> None:
    p = env.p
    host = Actor(account_id=env.creator.id)
    basic = await env.sales.create_tier(host, "Basic", 500, "eur")
    gold = await env.sales.create_tier(host, "Gold", 1200, "eur")
    other = await p.core.ensure_account("web", "otto", "Otto")
    others = await env.sales.create_tier(Actor(account_id=other.id), "Otto's", 300, "eur")
    await p.core.memberships.archive_tier(host, basic.id)
    space = await p.core.create_space(host, "Paid show", start_at=p.core.now() + timedelta(hours=2))
    free = await p.core.create_space(host, "Free show", start_at=p.core.now() + timedelta(hours=3))
    kept = Ticketing(900, "EUR", 10, discount_tier_id=gold.id, discount_percent=10)
    await p.core.set_ticketing(host, space.id, kept)

    for tier, percent, code in ((gold.id, 100, "ticket.bad_discount"), (gold.id, 0, "ticket.bad_discount"),
                                (others.id, 20, "tier.not_hosts"), (basic.id, 20, "tier.archived"),
                                (gold.id, None, "ticket.discount_needs_tier"),
                                (None, 20, "ticket.discount_needs_tier")):
        with pytest.raises(DomainError) as refused:
            await p.core.set_ticketing(host, space.id, Ticketing(900, "eur", 10, discount_tier_id=tier,
                                                                 discount_percent=percent))
        assert refused.value.code == code, (tier, percent)
    with pytest.raises(DomainError) as refused:
        await p.core.community_cases.set_ticket_discount(host, free.id, gold.id, 20)
    assert refused.value.code == "ticket.discount_not_ticketed"
    assert (await p.core.view(free.id)).space.ticketing is None

    status, html, _ = await call(p, "POST", f"/studio/s/{space.id}/ticketing", env.creator, {
        "csrf": CSRF, "price": "9.00", "currency": "eur", "discount_tier": gold.id, "discount": "150"})
    assert status == 400 and "A subscriber discount is 1 to 99 percent off (not 150)." in html
    status, html, _ = await call(p, "POST", f"/studio/s/{space.id}/ticketing", env.creator, {
        "csrf": CSRF, "price": "9.00", "currency": "eur", "discount_tier": others.id, "discount": "20"})
    assert status == 403 and "That tier is not one of the host's." in html
    assert (await p.core.view(space.id)).space.ticketing == kept
    _, html, _ = await call(p, "GET", f"/studio/s/{space.id}", env.creator)
    assert "€8.10 (10% off) for your subscribers at Gold or above." in html


async def test_subscriber_discount_from_the_shell(shell: Shell) -> None:
    gold = await shell.json("billing", "tiers", "create", "--as", "creator", "--name", "Gold", "--price", "1500")
    mine = await shell.json("billing", "tiers", "create", "--as", "fan", "--name", "Fan's", "--price", "300")
    space = await shell.json("space", "schedule", "Paid AMA", "--as", "creator", "--at", "+2h", "--override")
    free = await shell.json("space", "schedule", "Free AMA", "--as", "creator", "--at", "+3h", "--override")
    shown = await shell.json("billing", "ticketing", space["id"], "--price", "999", "--subscriber-discount", "25",
                             "--discount-tier", gold["id"])
    assert shown["ticketing"] == {"price_minor": 999, "currency": "EUR", "capacity": None, "free_tier_id": None,
                                  "discount_tier_id": gold["id"], "discount_percent": 25,
                                  "subscriber_price_minor": 749}
    for args, code in ((["--subscriber-discount", "100", "--discount-tier", gold["id"]], "ticket.bad_discount"),
                       (["--subscriber-discount", "20", "--discount-tier", mine["id"]], "tier.not_hosts"),
                       (["--subscriber-discount", "20"], "ticket.discount_needs_tier")):
        rc, out, err = await shell.run("billing", "ticketing", space["id"], *args, "--json")
        assert rc != 0 and json.loads(out)["error"]["code"] == code, (args, out, err)
    rc, out, err = await shell.run("billing", "ticketing", free["id"], "--subscriber-discount", "20",
                                   "--discount-tier", gold["id"])
    assert rc != 0 and "This Space has no ticket price to discount: set a price first." in out + err
    rc, out, err = await shell.run("billing", "ticketing", space["id"], "--subscriber-discount", "10",
                                   "--discount-tier", gold["id"])  # the rest of the terms stay
    assert rc == 0 and out.strip() == (f"999 EUR, capacity unlimited; 899 EUR (10% off) for subscribers at "
                                       f"{gold['id']} or above"), (out, err)
    shown = await shell.json("billing", "ticketing", space["id"], "--no-subscriber-discount")
    assert shown["ticketing"]["discount_percent"] is None and shown["ticketing"]["price_minor"] == 999
