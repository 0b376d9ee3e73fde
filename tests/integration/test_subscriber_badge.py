"""The subscriber badge's data: a Space's view (what every surface renders, and the web room's
``space`` in its welcome and sync) names which of the people it shows (stage, queue) hold a paying
subscription to the host, at any tier; an ended subscription, someone else's subscribers and a
host without tiers name nobody."""

from __future__ import annotations

from datetime import timedelta

from core.clock import FrozenClock
from core.model.accounts import Actor
from core.model.subscription import Subscription, SubscriptionProvider, SubscriptionStatus, Tier
from core.services import Core


async def _subscribe(core: Core, tier: Tier, account_id: str, status: SubscriptionStatus) -> None:
    now = core.now()
    async with core.uow() as uow:
        await uow.subscriptions.add(Subscription(
            id=f"S{account_id}", account_id=account_id, creator_id=tier.creator_id, tier_id=tier.id,
            provider=SubscriptionProvider.STRIPE, provider_ref=f"sub_{account_id}", status=status,
            current_period_end=now + timedelta(days=20), cancel_at_period_end=False, created_at=now,
            updated_at=now, ended_at=now if status == SubscriptionStatus.ENDED else None))
        await uow.commit()


async def test_view_names_the_hosts_paying_subscribers(core: Core, clock: FrozenClock) -> None:
    host_acc = await core.ensure_account("web", "host", "Host")
    host = Actor(account_id=host_acc.id, is_community_admin=True)
    space = await core.create_space(host, "Badges")
    people = {n: await core.ensure_account("web", n, n.title()) for n in ("cheap", "dear", "ended", "none", "other")}
    assert (await core.view(space.id)).subscribers == []  # a host without tiers

    cheap = await core.memberships.create_tier(host, "Basic", 300, "eur")
    dear = await core.memberships.create_tier(host, "Gold", 1500, "eur")
    elsewhere = await core.memberships.create_tier(Actor(account_id=people["other"].id), "Other's", 900, "eur")
    await _subscribe(core, cheap, people["cheap"].id, SubscriptionStatus.ACTIVE)
    await _subscribe(core, dear, people["dear"].id, SubscriptionStatus.PAST_DUE)  # within its grace
    await _subscribe(core, dear, people["ended"].id, SubscriptionStatus.ENDED)
    await _subscribe(core, elsewhere, people["none"].id, SubscriptionStatus.ACTIVE)  # pays someone else
    await core.memberships.archive_tier(host, cheap.id)  # off sale: its subscribers keep it
    for who in people.values():
        await core.join(Actor(account_id=who.id), space.id)
        await core.raise_hand(Actor(account_id=who.id), space.id)

    view = await core.view(space.id)
    expected = sorted([people["cheap"].id, people["dear"].id])
    assert view.subscribers == expected
    assert view.as_dict()["subscribers"] == expected
