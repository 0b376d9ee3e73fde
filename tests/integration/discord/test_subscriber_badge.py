"""The subscriber badge on Discord (issue 19): the Space's card in the announce channel, and /stage
queue, mark the host's paying subscribers on stage and in the queue with the web room's words
("· subscriber"); someone who never subscribed, or whose subscription ended, is not marked. The
badge is read from the Space's view at each refresh of the card, and a subscription that starts or
ends mid-Space for someone on stage or in the queue refreshes the card at once. Through the
unmodified discord.py and the fake Discord; subscriptions through Stripe's events applied by the
webhook's own step."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from core.model.accounts import Actor
from tests.integration.discord.conftest import DC
from tests.integration.discord.test_flows import live, setup_guild
from tests.integration.discord.test_subscriptions import Stripe, subscription

SARA, OLGA, ED = 300000000000000051, 300000000000000052, 300000000000000053


def fields(embed: dict[str, Any]) -> dict[str, str]:
    return {f["name"]: f["value"] for f in embed.get("fields", [])}


async def test_card_and_queue_badge_the_hosts_paying_subscribers(dc: DC) -> None:
    for uid, name in ((SARA, "Sara"), (OLGA, "Olga"), (ED, "Ed")):
        dc.fake.add_member(dc.guild, uid, name)
    await setup_guild(dc)
    space_id = await live(dc)
    await dc.fake.wait_for(lambda c: c.method == "POST" and c.path == f"/channels/{dc.text}/messages")
    card = next(m for m, v in dc.fake.messages.items() if v["channel_id"] == str(dc.text) and v["embeds"])

    host = await dc.actor(dc.host, "Hana")
    tier = await dc.core.memberships.create_tier(Actor(account_id=host.account_id), "Supporter", 500, "eur")
    tier = await dc.core.memberships.set_provider_ids(tier.id, "prod_b", "price_b")
    stripe = Stripe(dc.platform, dc.clock)
    end = int((dc.clock.now() + timedelta(days=30)).timestamp())
    fan, sara, ed = (await dc.actor(dc.fan, "Finn"), await dc.actor(SARA, "Sara"), await dc.actor(ED, "Ed"))
    await stripe.send("customer.subscription.created", subscription("sub_finn", tier, fan.account_id, "active", end))
    await stripe.send("customer.subscription.created", subscription("sub_sara", tier, sara.account_id, "active", end))
    await stripe.send("customer.subscription.created", subscription("sub_ed", tier, ed.account_id, "active", end))
    await stripe.send("customer.subscription.deleted", subscription("sub_ed", tier, ed.account_id, "canceled", end))

    # Sara (paying) and Ed (ended) are brought on stage; Finn (paying) and Olga (never) raise hands
    for uid in (SARA, ED, dc.fan, OLGA):
        iid = await dc.fake.interact(dc.guild, uid, "", custom_id=f"sb:h:{space_id}", message_id=card)
        assert "Hand raised" in (await dc.fake.reply(iid))["content"]
    for _ in range(2):
        r = await dc.ask(dc.host, "stage", "approve", who="1")
        assert "is now on stage" in r["content"], r

    def shows(stage: str, queue: str) -> Any:
        return lambda c: (c.method == "PATCH" and c.path == f"/channels/{dc.text}/messages/{card}"
                          and fields(c.body["embeds"][0]).get("On stage") == stage
                          and fields(c.body["embeds"][0]).get("Queue") == queue)

    edit = await dc.fake.wait_for(shows("Sara · subscriber, Ed", "1. Finn · subscriber\n2. Olga"))
    assert fields(edit.body["embeds"][0])["Hands up"] == "2"
    shown = fields(dc.fake.messages[card]["embeds"][0])  # what a member reading the channel sees now
    assert shown["On stage"] == "Sara · subscriber, Ed" and shown["Queue"] == "1. Finn · subscriber\n2. Olga"

    # /stage queue says the same
    r = await dc.ask(dc.host, "stage", "queue")
    assert f"1. Finn · subscriber (`{fan.account_id}`)" in r["content"], r
    olga = await dc.actor(OLGA, "Olga")
    assert f"2. Olga (`{olga.account_id}`)" in r["content"]

    # Finn's subscription ends while his hand is up: the card drops his badge at once (subscriber.changed)
    mark = len(dc.fake.calls)
    await stripe.send("customer.subscription.deleted", subscription("sub_finn", tier, fan.account_id, "canceled", end))
    await dc.fake.wait_for(shows("Sara · subscriber, Ed", "1. Finn\n2. Olga"), after=mark)
    # and Olga subscribing while her hand is up puts it on at once
    olga_sub = subscription("sub_olga", tier, olga.account_id, "active", end)
    mark = len(dc.fake.calls)
    await stripe.send("customer.subscription.created", olga_sub)
    await dc.fake.wait_for(shows("Sara · subscriber, Ed", "1. Finn\n2. Olga · subscriber"), after=mark)
    await stripe.send("customer.subscription.deleted", subscription("sub_olga", tier, olga.account_id, "canceled",
                                                                    end))
    mark = len(dc.fake.calls)
    iid = await dc.fake.interact(dc.guild, OLGA, "", custom_id=f"sb:h:{space_id}", message_id=card)  # lowers
    assert "lowered" in (await dc.fake.reply(iid))["content"]
    await dc.fake.wait_for(shows("Sara · subscriber, Ed", "1. Finn"), after=mark)
