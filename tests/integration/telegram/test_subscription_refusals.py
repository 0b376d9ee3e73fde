"""Who a Space for subscribers refuses on Telegram, and the words they read (issue 19's list):
someone who never subscribed and a lapsed subscriber (the subscription ended; a Stars renewal that
never came, past its grace), at both of Telegram's doors: the Join link (/start join_ID, answered
with the way to subscribe in Stars) and the Mini App's sign-in (POST /api/telegram/webapp). Every
Telegram user is an account here, so nobody is a guest (a browser without one is the web's,
tests/integration/billing/test_subscription_refusals.py). Through the unmodified
python-telegram-bot and the fake Bot API."""

from __future__ import annotations

import aiohttp

from adapters.telegram.webapp import sign_init_data
from core.model.subscription import GRACE, SubscriptionStatus
from tests.integration.telegram.conftest import FAN1, FAN2, FAN3, TG
from tests.integration.telegram.test_stars_subscriptions import DAY, room_answer, stars_tier
from tests.integration.test_subscriber_badge import _subscribe as add_subscription

REQUIRED = "This Space is for the host's subscribers: subscribe to join."


async def test_never_subscribed_and_lapsed_are_told_why_at_the_join_link_and_the_mini_app(tg: TG) -> None:
    tier, space_id = await stars_tier(tg)
    for user in (FAN1, FAN2, FAN3):
        await tg.say(user, user, "/start")
    ended = await tg.actor(FAN2)
    await add_subscription(tg.core, tier, ended.account_id, SubscriptionStatus.ENDED)
    # FAN3 pays one month in Stars; the renewal never comes
    mark = len(tg.fake.calls)
    await tg.fake.send_text(FAN3, FAN3, f"/subscribe {tier.id}")
    payload = (await tg.fake.wait_for(lambda c: c.method == "createInvoiceLink", after=mark)).params["payload"]
    await tg.fake.reply_to(FAN3, mark)
    now = int(tg.clock.now().timestamp())
    mark = len(tg.fake.calls)
    await tg.fake.subscription_paid(FAN3, payload, 300, "stxGONE", now + 30 * DAY, date=now)
    assert "Welcome" in (await tg.fake.reply_to(FAN3, mark)).params["text"]
    assert "Members AMA" in await room_answer(tg, FAN3, space_id)  # in, while it is paid
    tg.clock.advance(days=30, seconds=int(GRACE.total_seconds()) + 1)

    async with aiohttp.ClientSession(tg.platform.url) as http:
        for name, user in (("never", FAN1), ("ended", FAN2), ("lapsed", FAN3)):
            answer = await room_answer(tg, user, space_id)
            assert f"⚠️ {REQUIRED}\nSubscribe in Stars with /subscribe {space_id}." in answer, (name, answer)
            init = sign_init_data({"user": f'{{"id":{user},"first_name":"Fan"}}',
                                   "auth_date": str(int(tg.clock.now().timestamp())), "query_id": "AAE"},
                                  tg.fake.token)
            async with http.post("/api/telegram/webapp", json={"init_data": init, "space_id": space_id}) as r:
                body = await r.json()
            assert r.status == 403 and body["error"]["code"] == "subscription.required", (name, body)
            assert body["error"]["message"] == REQUIRED, (name, body)
            assert "token" not in body
