"""Go-live alerts and reminders reach the host's paying subscribers (Super Follows) before other
followers, through the durable job queue: their deliveries are queued first and due earlier, so they
are sent first; a subscriber who does not follow still hears the host go live; a lapsed (ended)
subscription counts for nothing; a reminder still goes only to those who asked for one."""

from __future__ import annotations

from datetime import timedelta

from core.clock import FrozenClock
from core.model.accounts import Actor
from core.model.subscription import Subscription, SubscriptionProvider, SubscriptionStatus, Tier
from core.services import Core
from tests.integration.test_alerts import setup
from tests.support.fakes import RecordingNotifier


def sent(tg: RecordingNotifier, template: str) -> list[str]:
    """Recipients in the order they were sent to (``RecordingNotifier.to`` sorts them)."""
    return [d.external_id for d in tg.sent if d.template == template]


async def _subscribe(core: Core, tier: Tier, who: Actor, status: SubscriptionStatus) -> None:
    now = core.now()
    async with core.uow() as uow:
        await uow.subscriptions.add(Subscription(
            id=f"S{who.account_id}", account_id=who.account_id, creator_id=tier.creator_id, tier_id=tier.id,
            provider=SubscriptionProvider.STRIPE, provider_ref=f"sub_{who.account_id}", status=status,
            current_period_end=now + timedelta(days=20), cancel_at_period_end=False, created_at=now,
            updated_at=now, ended_at=now if status == SubscriptionStatus.ENDED else None))
        await uow.commit()


async def test_paying_subscribers_hear_first(core: Core, clock: FrozenClock) -> None:
    host, fans, tg, runner = await setup(core, 5)
    tier = await core.memberships.create_tier(host, "Supporter", 500, "eur")
    outsider_acc = await core.ensure_account("telegram", "payer", "Payer")  # pays, does not follow
    payer = Actor(account_id=outsider_acc.id, platform="telegram")
    await _subscribe(core, tier, fans[4], SubscriptionStatus.ACTIVE)
    await _subscribe(core, tier, fans[3], SubscriptionStatus.PAST_DUE)  # within its grace: still paying
    await _subscribe(core, tier, fans[2], SubscriptionStatus.ENDED)
    await _subscribe(core, tier, payer, SubscriptionStatus.ACTIVE)

    start = clock.now() + timedelta(hours=2)
    space = await core.create_space(host, "Members first", start_at=start)
    for fan in (fans[0], fans[3]):
        await core.set_reminder(fan, space.id)
    clock.set(start - timedelta(minutes=10))
    await runner.run_until_idle()
    assert sent(tg, "space.reminder") == ["fan3", "fan0"]  # the paying one first; nobody who did not ask

    clock.set(start)
    await runner.run_until_idle()
    await core.start_space(host, space.id)
    await runner.run_until_idle()
    live = sent(tg, "space.live")
    assert sorted(live[:3]) == ["fan3", "fan4", "payer"], live  # every paying subscriber, before the rest
    assert sorted(live[3:]) == ["fan0", "fan1", "fan2"], live  # the ended subscription is an ordinary follower
    assert len(live) == len(set(live)) == 6, "someone was alerted twice"
