"""Subscriber priority from Discord (issue 19): a co-host's /stage subscriber_priority on:True puts the
host's paying subscribers' hands first; the Hand button's reply gives the subscriber number 1 though
they raised last, and the card's queue and /stage queue number hands in that order. Through the
unmodified discord.py and the fake Discord."""

from __future__ import annotations

from typing import Any

from core.model.accounts import Actor
from core.model.subscription import SubscriptionStatus
from tests.integration.discord.conftest import DC
from tests.integration.discord.test_flows import live, setup_guild
from tests.integration.discord.test_subscriber_badge import fields
from tests.integration.test_subscriber_badge import _subscribe

OLGA = 300000000000000061


async def test_subscribers_hands_go_first_on_the_card_and_in_the_queue(dc: DC) -> None:
    dc.fake.add_member(dc.guild, OLGA, "Olga")
    await setup_guild(dc)
    space_id = await live(dc)
    await dc.fake.wait_for(lambda c: c.method == "POST" and c.path == f"/channels/{dc.text}/messages")
    card = next(m for m, v in dc.fake.messages.items() if v["channel_id"] == str(dc.text) and v["embeds"])

    r = await dc.ask(dc.host, "stage", "subscriber_priority", on=True)
    assert "sells no subscription tiers yet" in r["content"], r  # no tier: refused, nothing changed
    assert not (await dc.core.view(space_id)).space.subscriber_priority
    host = await dc.actor(dc.host, "Hana")
    tier = await dc.core.memberships.create_tier(Actor(account_id=host.account_id), "Supporter", 500, "eur")
    fan = await dc.actor(dc.fan, "Finn")
    await _subscribe(dc.core, tier, fan.account_id, SubscriptionStatus.ACTIVE)
    r = await dc.ask(dc.host, "stage", "subscriber_priority", on=True)
    assert "subscribers' raised hands now go first" in r["content"], r

    replies = []
    for uid in (OLGA, dc.fan):  # Olga first, then the subscriber
        iid = await dc.fake.interact(dc.guild, uid, "", custom_id=f"sb:h:{space_id}", message_id=card)
        replies.append((await dc.fake.reply(iid))["content"])
    assert "number 1" in replies[0] and "number 1" in replies[1], replies

    def queue_is(text: str) -> Any:
        return lambda c: (c.method == "PATCH" and c.path == f"/channels/{dc.text}/messages/{card}"
                          and fields(c.body["embeds"][0]).get("Queue") == text)

    await dc.fake.wait_for(queue_is("1. Finn · subscriber\n2. Olga"))
    r = await dc.ask(dc.host, "stage", "queue")
    assert r["content"].index("1. Finn") < r["content"].index("2. Olga"), r

    mark = len(dc.fake.calls)
    r = await dc.ask(dc.host, "stage", "subscriber_priority", on=False)
    assert "back in the order hands went up" in r["content"], r
    await dc.fake.wait_for(queue_is("1. Olga\n2. Finn · subscriber"), after=mark)
