"""Subscriber-only Spaces on SQLite and PostgreSQL, with a clock the test moves: Stripe's subscription
events (as the webhook applies them, in its transaction) decide who joins, and the paid period's end,
the grace after a failed renewal and a downgrade's end are met at the moment they fall."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from billing.ledger import Ledger
from billing.webhooks import StripeWebhooks
from core.clock import FrozenClock
from core.errors import Forbidden
from core.model.accounts import Actor
from core.model.subscription import GRACE, SubscriberAccess, SubscriptionStatus, Tier
from core.services import Core


def subscription(ref: str, tier: Tier, account: str, status: str, end: int, price: str | None = None) -> dict[str, Any]:
    return {"id": ref, "object": "subscription", "status": status, "cancel_at_period_end": False,
            "metadata": {"account_id": account, "tier_id": tier.id, "creator_id": tier.creator_id},
            "items": {"data": [{"id": "si_1", "current_period_end": end, "price": {"id": price or tier.stripe_price}}]}}


class Stripe:
    """Stripe's events delivered to the webhook's apply step (the signature is tested elsewhere)."""

    def __init__(self, core: Core, clock: FrozenClock) -> None:
        self.hooks = StripeWebhooks(Ledger(core), "whsec_x")
        self.clock, self.n = clock, 0

    async def send(self, kind: str, obj: dict[str, Any]) -> str:
        self.n += 1
        return await self.hooks.apply({"id": f"evt_{self.n}", "type": kind, "data": {"object": obj},
                                       "created": int(self.clock.now().timestamp()) + self.n})


async def joins(core: Core, who: str, space_id: str) -> str | None:
    """None when ``who`` gets in, else the refusal's code."""
    try:
        await core.join(Actor(account_id=who), space_id)
    except Forbidden as e:
        return e.code
    await core.leave(Actor(account_id=who), space_id)
    return None


async def test_access_follows_each_subscription_over_time(core: Core, clock: FrozenClock) -> None:
    host = await core.ensure_account("web", "host", "Host")
    creator = Actor(account_id=host.id, is_operator=True)
    basic = await core.memberships.set_provider_ids(
        (await core.memberships.create_tier(creator, "Basic", 500, "eur")).id, "prod_b", "price_basic")
    gold = await core.memberships.set_provider_ids(
        (await core.memberships.create_tier(creator, "Gold", 1500, "eur")).id, "prod_g", "price_gold")
    spaces = {}
    for tier in (basic, gold):
        space = await core.create_space(creator, f"{tier.name} circle", start_at=clock.now() + timedelta(hours=1))
        await core.memberships.set_subscriber_access(creator, space.id, SubscriberAccess(tier.id))
        await core.start_space(creator, space.id)
        spaces[tier.name] = space.id
    fans = {n: (await core.ensure_account("web", n, n.title())).id for n in ("down", "late", "none")}
    stripe = Stripe(core, clock)
    end = int((clock.now() + timedelta(days=30)).timestamp())
    assert await stripe.send("customer.subscription.created",
                             subscription("sub_down", gold, fans["down"], "active", end)) == "processed"
    await stripe.send("customer.subscription.created", subscription("sub_late", basic, fans["late"], "active", end))
    assert await joins(core, fans["down"], spaces["Gold"]) is None
    assert await joins(core, fans["down"], spaces["Basic"]) is None  # a dearer tier opens the cheaper one
    assert await joins(core, fans["late"], spaces["Gold"]) == "subscription.required"
    assert await joins(core, fans["none"], spaces["Basic"]) == "subscription.required"

    await stripe.send("customer.subscription.updated",
                      subscription("sub_down", gold, fans["down"], "active", end, price="price_basic"))
    await stripe.send("customer.subscription.updated", subscription("sub_late", basic, fans["late"], "past_due", end))
    assert await joins(core, fans["down"], spaces["Gold"]) is None  # Gold is paid until the period ends
    clock.advance(days=30)  # the period ends
    assert await joins(core, fans["down"], spaces["Gold"]) == "subscription.required"
    assert await joins(core, fans["down"], spaces["Basic"]) is None
    assert await joins(core, fans["late"], spaces["Basic"]) is None  # a failed renewal: the grace
    clock.advance(seconds=GRACE.total_seconds())
    assert await joins(core, fans["late"], spaces["Basic"]) == "subscription.required"  # lapsed
    late = (await core.memberships.subscriptions_of(fans["late"]))[-1]
    assert late.status == SubscriptionStatus.PAST_DUE  # Stripe has not ended it; the grace has


@pytest.mark.parametrize("order", ["in order", "reversed"])
async def test_a_replayed_or_late_event_changes_nothing(core: Core, clock: FrozenClock, order: str) -> None:
    host = await core.ensure_account("web", "host", "Host")
    creator = Actor(account_id=host.id, is_operator=True)
    tier = await core.memberships.set_provider_ids(
        (await core.memberships.create_tier(creator, "Basic", 500, "eur")).id, "prod_b", "price_basic")
    fan = (await core.ensure_account("web", "fan", "Fan")).id
    end = int((clock.now() + timedelta(days=30)).timestamp())
    events = [({"id": "evt_c", "type": "customer.subscription.created", "created": 100,
                "data": {"object": subscription("sub_1", tier, fan, "active", end)}}),
              ({"id": "evt_d", "type": "customer.subscription.deleted", "created": 200,
                "data": {"object": subscription("sub_1", tier, fan, "canceled", end)}})]
    hooks = StripeWebhooks(Ledger(core), "whsec_x")
    for event in events if order == "in order" else events[::-1]:
        assert await hooks.apply(event) == "processed"
    for event in events * 5:
        assert await hooks.apply(event) == "duplicate"
    stranger = {"id": "evt_x", "type": "customer.subscription.created", "created": 300,
                "data": {"object": subscription("sub_x", tier, "no_such_account", "active", end)}}
    assert await hooks.apply(stranger) == "ignored"  # answered (not retried forever), opens nothing
    subs = await core.memberships.subscriptions_of(fan)
    assert len(subs) == 1 and subs[0].status == SubscriptionStatus.ENDED and subs[0].event_id == "evt_d"
