"""The subscriber badge redraws at once (issue 19): someone in the queue of the host's live Space who
subscribes in Stars, or whose subscription the creator refunds, changes the Space's badges, and
without any other change the web room's socket gets ``subscriber.changed`` with the new
``subscribers`` list (and ``sync`` answers the same) while the group's card is edited to match."""

from __future__ import annotations

from typing import Any

import aiohttp

from billing.stars_subscriptions import StarsSubscriptions
from core.model.accounts import Actor
from tests.integration.telegram.conftest import FAN1, FAN2, GROUP, HOST, TG
from tests.integration.telegram.test_flows import card_for

DAY = 86_400


async def frame(ws: aiohttp.ClientWebSocketResponse, kind: str, event: str | None = None) -> dict[str, Any]:
    """The next frame of ``kind`` (and event ``event``), skipping the others the room sends meanwhile."""
    while True:
        msg: dict[str, Any] = await ws.receive_json(timeout=10)
        if msg["type"] == kind and (event is None or msg["event"]["type"] == event):
            return msg


async def test_a_subscription_that_starts_or_ends_in_the_queue_redraws_room_and_card(tg: TG) -> None:
    host = await tg.actor(HOST, "Hosty")
    tier = await tg.core.memberships.create_tier(host, "Inner circle", 500, "eur")
    tier = await tg.core.memberships.set_stars(host, tier.id, 300)
    await tg.say(FAN1, FAN1, "/start", name="Finn")
    mark = len(tg.fake.calls)
    await tg.say(GROUP, HOST, '/space new "Open Mic"', name="Hosty")
    await card_for(tg, GROUP, lambda t: "LIVE" in t and "Open Mic" in t, mark)
    space_id = (await tg.core.list_spaces(states=("live",)))[0].id
    assert "Hand raised" in await tg.say(GROUP, FAN1, "/hand", name="Finn")
    await card_for(tg, GROUP, lambda t: "\nQueue: 1. Finn" in t and "· subscriber" not in t)
    fan1 = (await tg.actor(FAN1)).account_id
    listener = await tg.actor(FAN2, "Bea")
    await tg.core.join(Actor(account_id=listener.account_id), space_id)
    token = tg.platform.tokens.issue(space_id, listener.account_id, "listener", tg.clock.now(), ttl_s=900)

    async with aiohttp.ClientSession() as http, http.ws_connect(f"{tg.platform.url}/ws/{space_id}") as ws:
        await ws.send_json({"type": "hello", "token": token})
        welcome = await frame(ws, "welcome")
        assert welcome["space"]["queue"] == [fan1] and welcome["space"]["subscribers"] == []

        # Finn subscribes in Stars while his hand is up: nothing else changes in the Space
        mark = len(tg.fake.calls)
        await tg.fake.send_text(FAN1, FAN1, f"/subscribe {tier.id}", name="Finn")
        payload = (await tg.fake.wait_for(lambda c: c.method == "createInvoiceLink", after=mark)).params["payload"]
        await tg.fake.reply_to(FAN1, mark)
        now = int(tg.clock.now().timestamp())
        mark = len(tg.fake.calls)
        await tg.fake.subscription_paid(FAN1, payload, 300, "stxLIVE", now + 30 * DAY, date=now)
        changed = (await frame(ws, "event", "subscriber.changed"))["event"]
        assert (changed["space_id"], changed["account_id"], changed["subscriber"]) == (space_id, fan1, True)
        assert changed["subscribers"] == [fan1]
        await ws.send_json({"type": "sync", "id": 1})  # what the page does with it: the same list
        assert (await frame(ws, "space"))["space"]["subscribers"] == [fan1]
        await card_for(tg, GROUP, lambda t: "\nQueue: 1. Finn · subscriber" in t, mark)

        # the creator refunds it: the badge goes at once, on the page and the card
        [sub] = await tg.core.memberships.subscriptions_of(fan1)
        mark = len(tg.fake.calls)
        await StarsSubscriptions(tg.core).refund_current(host, sub.id)
        changed = (await frame(ws, "event", "subscriber.changed"))["event"]
        assert (changed["account_id"], changed["subscriber"], changed["subscribers"]) == (fan1, False, [])
        await card_for(tg, GROUP, lambda t: "\nQueue: 1. Finn" in t and "· subscriber" not in t, mark)
