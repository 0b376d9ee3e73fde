"""The subscriber price in the ticket ledger, on SQLite and PostgreSQL: a hold is priced from the
buyer's subscription when it is made (fee on that amount); a buyer whose unpaid hold was priced
before they subscribed gets a new hold at the subscriber price in the same seat (a one-seat Space is
not sold out to them), and a late payment of the old hold is returned; an ended subscription pays
in full."""

from __future__ import annotations

from datetime import timedelta

import pytest

from billing.ledger import Ledger
from core.errors import Conflict
from core.model.accounts import Actor
from core.model.space import Ticketing
from core.model.subscription import Subscription, SubscriptionProvider, SubscriptionStatus, Tier
from core.model.ticket import TicketStatus
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


async def test_holds_are_priced_by_the_subscription_when_made(core: Core) -> None:
    ledger = Ledger(core, fee_bps=500)
    host = Actor(account_id=(await core.ensure_account("web", "creator", "Creator")).id, is_operator=True)
    gold = await core.memberships.create_tier(host, "Gold", 1500, "eur")
    space = await core.create_space(host, "Paid AMA", start_at=core.now() + timedelta(days=1))
    await core.set_ticketing(host, space.id, Ticketing(1000, "eur", 1, discount_tier_id=gold.id, discount_percent=30))
    fan, lapsed = [Actor(account_id=(await core.ensure_account("web", n, n)).id) for n in ("fan", "lapsed")]

    before = await ledger.hold(fan, space.id, "stripe")
    assert (before.amount_minor, before.fee_minor) == (1000, 50)
    await ledger.attach_ref(before.id, "pi_before")
    await _subscribe(core, gold, fan.account_id, SubscriptionStatus.ACTIVE)
    now = await ledger.hold(fan, space.id, "stripe")  # the only seat: the old hold gives it up
    assert now.id != before.id and (now.amount_minor, now.fee_minor) == (700, 35)
    assert await ledger.hold(fan, space.id, "stripe") == now  # priced alike: the same hold again
    assert (await ledger.get(before.id)).status == TicketStatus.VOID
    with pytest.raises(Conflict, match="ticket.sold_out"):
        await ledger.hold(lapsed, space.id, "stripe")

    await ledger.settle(now.id, paid=True, provider_ref="pi_now", amount_minor=700, currency="eur")
    await ledger.settle(before.id, paid=True, provider_ref="pi_before", amount_minor=1000, currency="eur")
    r = await ledger.report(space.id)
    assert (r.sold, r.returned, r.returned_minor, r.refunds_pending) == (1, 1, 1000, 1)
    # a returned payment's fee counts until its refund lands
    assert (r.gross_minor - r.returned_minor, r.fees_minor) == (700, 35 + 50)

    await core.set_ticketing(host, space.id, Ticketing(1000, "eur", 2, discount_tier_id=gold.id, discount_percent=30))
    await _subscribe(core, gold, lapsed.account_id, SubscriptionStatus.ENDED)
    assert (await ledger.hold(lapsed, space.id, "stripe")).amount_minor == 1000
