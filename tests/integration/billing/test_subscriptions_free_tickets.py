"""Free tickets for subscribers: a ticketed Space whose host lets their subscribers at or above a tier
in without a ticket. The join token is minted for such a subscriber (web, as every surface's access
rule is the core's), refused with ``ticket.required`` for a lower tier, an ended subscription and
someone who never subscribed; the live Space's page is the room for the subscriber and the ticket
page for the others. Someone else's tier, or one off sale, is refused and the terms do not change."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest

from core.errors import DomainError
from core.model.accounts import Actor
from core.model.space import Ticketing
from tests.integration.billing.test_subscriptions import Env, env, sub_obj
from tests.integration.billing.test_subscriptions_cli import Shell, shell
from tests.integration.web.test_studio import CSRF, call

__all__ = ["env", "shell"]


async def test_subscribers_at_the_tier_join_a_ticketed_space_free(env: Env) -> None:
    p = env.p
    host = Actor(account_id=env.creator.id)
    basic = await env.sales.create_tier(host, "Basic", 500, "eur")
    gold = await env.sales.create_tier(host, "Gold", 1500, "eur")
    other = await p.core.ensure_account("web", "otto", "Otto")
    others = await env.sales.create_tier(Actor(account_id=other.id), "Otto's", 300, "eur")
    space = await p.core.create_space(host, "Paid show", start_at=p.core.now() + timedelta(hours=1))
    await p.core.set_ticketing(host, space.id, Ticketing(price_minor=900, currency="eur", capacity=10))

    with pytest.raises(DomainError) as refused:
        await p.core.set_ticketing(host, space.id, Ticketing(900, "eur", 10, free_tier_id=others.id))
    assert refused.value.code == "tier.not_hosts"
    await p.core.memberships.archive_tier(host, basic.id)
    with pytest.raises(DomainError) as refused:
        await p.core.set_ticketing(host, space.id, Ticketing(900, "eur", 10, free_tier_id=basic.id))
    assert refused.value.code == "tier.archived"
    assert (await p.core.view(space.id)).space.ticketing.free_tier_id is None  # type: ignore[union-attr]

    status, _, _ = await call(p, "POST", f"/studio/s/{space.id}/ticketing", env.creator, {
        "csrf": CSRF, "price": "9.00", "currency": "eur", "capacity": "10", "free_tier": gold.id})
    assert status == 303
    assert (await p.core.view(space.id)).space.ticketing == Ticketing(900, "EUR", 10, free_tier_id=gold.id)
    status, html, _ = await call(p, "GET", f"/s/{space.id}")
    assert "Free for Hana's subscribers at Gold (€15.00/month) or above" in html

    now = int(time.time())
    fan, low, lapsed, stranger = [await p.core.ensure_account("web", n, n.title())
                                  for n in ("fan", "low", "lapsed", "stranger")]
    await env.event("customer.subscription.created", sub_obj("sub_fan", gold, fan.id, "active", now + 86400 * 20),
                    created=now - 5)
    await env.event("customer.subscription.created", sub_obj("sub_low", basic, low.id, "active", now + 86400 * 20),
                    created=now - 5)
    await env.event("customer.subscription.created", sub_obj("sub_lapsed", gold, lapsed.id, "active",
                                                               now + 86400 * 20), created=now - 5)
    await env.event("customer.subscription.deleted", sub_obj("sub_lapsed", gold, lapsed.id, "canceled",
                                                               now + 86400 * 20), created=now - 4)
    status, html, _ = await call(p, "GET", f"/s/{space.id}", fan)  # scheduled: no ticket to buy
    assert "You're in without a ticket" in html and "Buy a ticket" not in html
    status, html, _ = await call(p, "GET", f"/s/{space.id}", low)
    assert "Buy a ticket · €9.00" in html and "You're in without a ticket" not in html
    await p.core.start_space(host, space.id)
    status, body = await env.token(space.id, fan)
    assert status == 200 and body["role"] == "listener", body
    joined = await p.core.join(Actor(account_id=fan.id, platform="web"), space.id)  # the join checks again
    assert joined.account_id == fan.id
    for who in (low, lapsed, stranger):
        status, body = await env.token(space.id, who)
        assert status == 403 and body["error"]["code"] == "ticket.required", (who.display_name, body)
        with pytest.raises(DomainError) as no_seat:
            await p.core.join(Actor(account_id=who.id, platform="web"), space.id)
        assert no_seat.value.code == "ticket.required"
    status, html, _ = await call(p, "GET", f"/s/{space.id}", fan)
    assert 'id="stage"' in html  # the room itself
    status, html, _ = await call(p, "GET", f"/s/{space.id}", low)
    assert "Buy a ticket · €9.00" in html and 'id="stage"' not in html


async def test_free_tier_from_the_shell(shell: Shell) -> None:
    gold = await shell.json("billing", "tiers", "create", "--as", "creator", "--name", "Gold", "--price", "1500")
    mine = await shell.json("billing", "tiers", "create", "--as", "fan", "--name", "Fan's", "--price", "300")
    space = await shell.json("space", "schedule", "Paid AMA", "--as", "creator", "--at", "+2h", "--override")
    rc, out, err = await shell.run("billing", "ticketing", space["id"], "--price", "900", "--free-tier", mine["id"],
                                   "--json")
    assert rc != 0 and json.loads(out)["error"]["code"] == "tier.not_hosts", (out, err)
    shown = await shell.json("billing", "ticketing", space["id"], "--price", "900", "--free-tier", gold["id"])
    assert shown["ticketing"] == {"price_minor": 900, "currency": "EUR", "capacity": None,
                                  "free_tier_id": gold["id"], "discount_tier_id": None, "discount_percent": None,
                                  "subscriber_price_minor": None}
