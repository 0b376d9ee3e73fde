"""The subscriber badge on Telegram (issue 19): the Space's card in the group, and /queue, mark the
host's paying subscribers on stage and in the queue with the web room's words ("· subscriber");
someone who never subscribed, or whose subscription ended, is not marked. Through the unmodified
python-telegram-bot and the fake Bot API; the paying subscriber pays in Telegram Stars."""

from __future__ import annotations

from core.model.subscription import SubscriptionStatus
from tests.integration.telegram.conftest import FAN1, FAN2, FAN3, GROUP, HOST, TG
from tests.integration.telegram.test_flows import card_for
from tests.integration.test_subscriber_badge import _subscribe as add_subscription

DAY = 86_400


async def test_card_and_queue_badge_the_hosts_paying_subscribers(tg: TG) -> None:
    host = await tg.actor(HOST, "Hosty")
    tier = await tg.core.memberships.create_tier(host, "Inner circle", 500, "eur")
    tier = await tg.core.memberships.set_stars(host, tier.id, 300)
    # Finn pays in Stars; Ed's subscription has ended; Bea never subscribed
    await tg.say(FAN1, FAN1, "/start", name="Finn")
    mark = len(tg.fake.calls)
    await tg.fake.send_text(FAN1, FAN1, f"/subscribe {tier.id}", name="Finn")
    payload = (await tg.fake.wait_for(lambda c: c.method == "createInvoiceLink", after=mark)).params["payload"]
    await tg.fake.reply_to(FAN1, mark)
    now = int(tg.clock.now().timestamp())
    mark = len(tg.fake.calls)
    await tg.fake.subscription_paid(FAN1, payload, 300, "stxBADGE", now + 30 * DAY, date=now)
    assert "Welcome" in (await tg.fake.reply_to(FAN1, mark)).params["text"]
    ed = await tg.actor(FAN3, "Ed")
    await add_subscription(tg.core, tier, ed.account_id, SubscriptionStatus.ENDED)

    mark = len(tg.fake.calls)
    await tg.say(GROUP, HOST, '/space new "Open Mic"', name="Hosty")
    card = await card_for(tg, GROUP, lambda t: "LIVE" in t and "Open Mic" in t, mark)
    msg_id = card.params.get("message_id") or max(k[1] for k in tg.fake.messages if k[0] == GROUP)
    for user, name in ((FAN1, "Finn"), (FAN2, "Bea"), (FAN3, "Ed")):
        assert "Hand raised" in await tg.say(GROUP, user, "/hand", name=name)
    await card_for(tg, GROUP, lambda t: "\nQueue: 1. Finn · subscriber, 2. Bea, 3. Ed" in t)

    queue = await tg.say(GROUP, HOST, "/queue")
    fan1, bea = (await tg.actor(FAN1)).account_id, (await tg.actor(FAN2)).account_id
    assert f"1. Finn · subscriber (<code>{fan1}</code>)" in queue, queue
    assert f"2. Bea (<code>{bea}</code>)" in queue and f"3. Ed (<code>{ed.account_id}</code>)" in queue

    assert "Finn is now on stage" in await tg.say(GROUP, HOST, "/approve 1")
    assert "Ed is now on stage" in await tg.say(GROUP, HOST, "/approve 2")
    final = await card_for(tg, GROUP, lambda t: "On stage: Finn · subscriber, Ed\n" in t and "\nQueue: 1. Bea" in t)
    assert final.method == "editMessageText" and "✋ 1 in queue" in final.params["text"]
    shown = str(tg.fake.messages[(GROUP, msg_id)]["text"])  # what the group reads now
    assert "On stage: Finn · subscriber, Ed\n" in shown and "Queue: 1. Bea" in shown
    assert "Bea ·" not in shown and "Ed ·" not in shown
