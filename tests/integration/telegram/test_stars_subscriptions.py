"""Super Follows in Telegram Stars, through the unmodified python-telegram-bot and the fake Bot API:
/subscribe makes a 30-day Stars subscription invoice link, pre-checkout refuses what does not
match, the first payment and renewals (replayed, out of order) extend one subscription, the
subscriber-only Space's link follows it, /unsubscribe cancels the renewal at Telegram, a renewal
that never comes lapses after the grace, and the creator's Stars share is in their report."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from billing.stripe_gateway import StripeGateway
from billing.subscription_report import creator_report
from billing.subscriptions import SubscriptionSales
from core.errors import Conflict, Forbidden, Invalid
from core.model.subscription import GRACE, SubscriberAccess, SubscriptionProvider, SubscriptionStatus, Tier
from tests.integration.telegram.conftest import FAN1, FAN2, FAN3, HOST, TG

DAY = 86_400


async def stars_tier(tg: TG) -> tuple[Tier, str]:
    """HOST's tier sold at 300 Stars, and a live Space for its subscribers."""
    host = replace(await tg.actor(HOST, "Hostess"), is_operator=True)  # eligible to host anywhere
    tier = await tg.core.memberships.create_tier(host, "Inner circle", 500, "eur", "Members-only Spaces")
    tier = await tg.core.memberships.set_stars(host, tier.id, 300)
    space = await tg.core.create_space(host, "Members AMA", start_at=tg.clock.now() + timedelta(hours=1))
    await tg.core.memberships.set_subscriber_access(host, space.id, SubscriberAccess(tier.id))
    await tg.core.start_space(host, space.id)
    return tier, space.id


async def room_answer(tg: TG, user: int, space_id: str) -> str:
    mark = len(tg.fake.calls)
    await tg.fake.send_text(user, user, f"/start join_{space_id}")
    return str((await tg.fake.reply_to(user, mark)).params["text"])


async def test_a_stars_subscription_from_invoice_to_lapse(tg: TG) -> None:
    tier, space_id = await stars_tier(tg)
    for user in (FAN1, FAN2):
        await tg.say(user, user, "/start")

    # not a subscriber yet: refused with the way to subscribe
    refused = await room_answer(tg, FAN1, space_id)
    assert "for the host's subscribers: subscribe to join" in refused and f"/subscribe {space_id}" in refused

    mark = len(tg.fake.calls)
    await tg.fake.send_text(FAN1, FAN1, f"/subscribe {space_id}")  # the Space names its tier
    made = await tg.fake.wait_for(lambda c: c.method == "createInvoiceLink", after=mark)
    assert made.params["currency"] == "XTR" and made.params["subscription_period"] == 2592000
    assert made.params["prices"] == [{"label": "Inner circle", "amount": 300}]
    assert not made.params.get("provider_token")
    payload = made.params["payload"]
    offer = await tg.fake.reply_to(FAN1, mark)
    assert "300 Stars every 30 days" in offer.params["text"]
    assert offer.params["reply_markup"]["inline_keyboard"][0][0]["url"] in tg.fake.invoice_links

    # pre-checkout: a wrong amount, someone else's invoice and a non-Stars currency are refused
    for user, total, currency, ok in ((FAN1, 299, "XTR", False), (FAN2, 300, "XTR", False),
                                      (FAN1, 300, "USD", False), (FAN1, 300, "XTR", True)):
        mark = len(tg.fake.calls)
        await tg.fake.pre_checkout(user, payload, total, currency)
        answer = await tg.fake.wait_for(lambda c: c.method == "answerPreCheckoutQuery", after=mark)
        assert answer.params["ok"] is ok and (ok or answer.params["error_message"])

    now = int(tg.clock.now().timestamp())
    end1 = now + 30 * DAY
    mark = len(tg.fake.calls)
    await tg.fake.subscription_paid(FAN1, payload, 300, "stxSUB1", end1, date=now)
    assert "Welcome to <b>Inner circle</b>" in (await tg.fake.reply_to(FAN1, mark)).params["text"]
    fan1 = (await tg.actor(FAN1)).account_id
    [sub] = await tg.core.memberships.subscriptions_of(fan1)
    assert sub.provider == SubscriptionProvider.TELEGRAM and sub.status == SubscriptionStatus.ACTIVE
    assert int(sub.current_period_end.timestamp()) == end1
    assert "Members AMA" in await room_answer(tg, FAN1, space_id)
    assert "subscribe to join" in await room_answer(tg, FAN2, space_id)  # a non-subscriber still is not

    # Telegram delivers the update again: nothing doubles; a second subscription is refused
    mark = len(tg.fake.calls)
    await tg.fake.subscription_paid(FAN1, payload, 300, "stxSUB1", end1, date=now)
    await tg.fake.reply_to(FAN1, mark)
    assert "already subscribe" in await tg.say(FAN1, FAN1, f"/subscribe {tier.id}")

    # renewals out of order: the later one first; the earlier one never shortens the period
    end2, end3 = end1 + 30 * DAY, end1 + 60 * DAY
    for charge, end, at in (("stxSUB3", end3, now + 60 * DAY), ("stxSUB2", end2, now + 30 * DAY)):
        mark = len(tg.fake.calls)
        await tg.fake.subscription_paid(FAN1, payload, 300, charge, end, first_charge="stxSUB1", date=at)
        assert "renewed" in (await tg.fake.reply_to(FAN1, mark)).params["text"]
    [sub] = await tg.core.memberships.subscriptions_of(fan1)
    assert int(sub.current_period_end.timestamp()) == end3

    report = await creator_report(tg.core, tier.creator_id)
    assert (report.stars_gross, report.stars_refunded) == (900, 0)
    assert report.stars_net == report.stars_gross - report.stars_fees
    assert report.gross_minor == 0 and report.active == 1  # no euro was paid

    # Stripe never takes these Stars: its cancel refuses them, before any call (the creator's refund goes
    # through the bot: test_stars_subscription_refund.py)
    gateway = StripeGateway("sk_test_unused", api_base="http://127.0.0.1:9")
    with pytest.raises(Conflict) as other:
        await SubscriptionSales(tg.core, gateway, "http://x").cancel(await tg.actor(FAN1), sub.id)
    await gateway.close()
    assert other.value.code == "subscription.other_provider"

    # /unsubscribe: Telegram is told to stop renewing (the first charge names the subscription)
    listing = await tg.say(FAN1, FAN1, "/unsubscribe")
    assert sub.id in listing and "Inner circle" in listing
    assert "will not renew" in await tg.say(FAN1, FAN1, f"/unsubscribe {sub.id}")
    [edit] = tg.fake.sent("editUserStarSubscription")
    assert (edit.params["user_id"], edit.params["telegram_payment_charge_id"], edit.params["is_canceled"]) == (
        FAN1, "stxSUB1", True)
    assert tg.fake.star_subscriptions["stxSUB1"]["canceled"] is True
    [sub] = await tg.core.memberships.subscriptions_of(fan1)
    assert sub.status == SubscriptionStatus.CANCELED
    assert "ended" in await tg.say(FAN1, FAN1, f"/unsubscribe {sub.id}")  # a second cancel changes nothing
    assert len(tg.fake.sent("editUserStarSubscription")) == 1
    # someone else cannot cancel it
    assert "no subscription" in await tg.say(FAN2, FAN2, f"/unsubscribe {sub.id}")

    # cancelled: open until the paid period ends, then the link is refused
    tg.clock.advance(seconds=end3 - now - 60)
    assert "Members AMA" in await room_answer(tg, FAN1, space_id)
    tg.clock.advance(seconds=120)
    assert "subscribe to join" in await room_answer(tg, FAN1, space_id)


async def test_a_renewal_that_never_comes_lapses_after_the_grace(tg: TG) -> None:
    tier, space_id = await stars_tier(tg)
    await tg.say(FAN3, FAN3, "/start")
    mark = len(tg.fake.calls)
    await tg.fake.send_text(FAN3, FAN3, f"/subscribe {tier.id}")
    payload = (await tg.fake.wait_for(lambda c: c.method == "createInvoiceLink", after=mark)).params["payload"]
    await tg.fake.reply_to(FAN3, mark)  # the offer
    now = int(tg.clock.now().timestamp())
    mark = len(tg.fake.calls)
    await tg.fake.subscription_paid(FAN3, payload, 300, "stxLAPSE", now + 30 * DAY, date=now)
    assert "Welcome" in (await tg.fake.reply_to(FAN3, mark)).params["text"]
    tg.clock.advance(days=30)  # the renewal is late: the grace keeps it open
    assert "Members AMA" in await room_answer(tg, FAN3, space_id)
    tg.clock.advance(seconds=int(GRACE.total_seconds()) + 1)
    assert "subscribe to join" in await room_answer(tg, FAN3, space_id)
    report = await creator_report(tg.core, tier.creator_id)
    assert (report.active, report.mrr_minor, report.churned_30d) == (0, 0, 1), "a lapse counts as churn"


async def test_a_tier_without_a_stars_price_points_to_the_web_and_guests_learn_nothing_is_sold(tg: TG) -> None:
    host = await tg.actor(HOST, "Hostess")
    tier = await tg.core.memberships.create_tier(host, "Web only", 500, "eur")
    await tg.say(FAN1, FAN1, "/start")
    mark = len(tg.fake.calls)
    await tg.fake.send_text(FAN1, FAN1, f"/subscribe {tier.id}")
    answer = await tg.fake.reply_to(FAN1, mark)
    assert "sold on the creator's page" in answer.params["text"]
    assert answer.params["reply_markup"]["inline_keyboard"][0][0]["url"].endswith(f"/u/{tier.creator_id}")
    assert not tg.fake.sent("createInvoiceLink")
    assert "no tier zzzz" in await tg.say(FAN1, FAN1, "/subscribe zzzz")
    assert "Usage" in await tg.say(FAN1, FAN1, "/subscribe")
    # the creator cannot subscribe to themselves; a bad Stars price is refused and changes nothing
    await tg.core.memberships.set_stars(host, tier.id, 50)
    await tg.say(HOST, HOST, "/start")
    assert "your own tier" in await tg.say(HOST, HOST, f"/subscribe {tier.id}")
    for bad in (0, 10_001):
        with pytest.raises(Invalid) as refused:
            await tg.core.memberships.set_stars(host, tier.id, bad)
        assert refused.value.code == "tier.bad_stars"
    with pytest.raises(Forbidden):  # only the creator prices their tier
        await tg.core.memberships.set_stars(await tg.actor(FAN1), tier.id, 10)
    assert (await tg.core.memberships.tier(tier.id)).stars == 50
