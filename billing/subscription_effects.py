"""What a subscription's change does in its creator's live Spaces, whichever provider it came from
(Stripe's events: billing/subscription_events.py; Telegram Stars: billing/stars_subscriptions.py).

- ``let_go``: in a live Space for subscribers, someone whose subscription no longer lets them in
  leaves at once (``SubscriptionChanged``: the web room cuts them off, HLS refuses their tokens).
- ``redraw_badges``: someone on stage or in the queue gained or lost the subscriber badge
  (``SubscriberChanged``, with the Space's new badge list): the web room and the chat cards redraw.
"""

from __future__ import annotations

from datetime import datetime

from core import events as ev
from core.model.subscription import Subscription
from core.ports import UnitOfWork
from core.services import access_error


async def let_go(uow: UnitOfWork, sub: Subscription, now: datetime) -> None:
    """The subscription opens less than before: in the creator's live Spaces for subscribers where
    its subscriber is now refused, they leave, and each surface hears it."""
    for space in await uow.spaces.find(states=["live"], host_id=sub.creator_id):
        if space.subscribers is None or space.role_of(sub.account_id) is not None:
            continue
        if not await uow.spaces.is_present(space.id, sub.account_id):
            continue
        reached = await uow.subscriptions.reaching(sub.creator_id, space.subscribers.tier_id,
                                                   [sub.account_id], now)
        if access_error(space, sub.account_id, blocked=False, paid=True, subscribed=bool(reached),
                        now=now) is None:
            continue
        await uow.spaces.set_absent(space.id, sub.account_id, now)
        uow.emit(ev.SubscriptionChanged(space_id=space.id, account_id=sub.account_id, subscription_id=sub.id,
                                        status=sub.status.value, at=now))


async def redraw_badges(uow: UnitOfWork, sub: Subscription, now: datetime) -> None:
    """The tiers ``sub`` opens changed: each of the creator's live Spaces that names its subscriber
    (stage or queue, the people a view badges) gets the badge list as ``Context.paying`` reads it."""
    tiers = await uow.subscriptions.tiers_of(sub.creator_id, archived=True)
    if not tiers:
        return
    cheapest = min(tiers, key=lambda t: t.price_minor)
    for space in await uow.spaces.find(states=["live"], host_id=sub.creator_id):
        named = {*space.stage, *(h.account_id for h in space.hands)} - {space.host_id}
        if sub.account_id not in named:
            continue
        paying = await uow.subscriptions.reaching(sub.creator_id, cheapest.id, sorted(named), now)
        uow.emit(ev.SubscriberChanged(space_id=space.id, account_id=sub.account_id,
                                      subscriber=sub.account_id in paying, subscribers=tuple(sorted(paying)),
                                      at=now))
