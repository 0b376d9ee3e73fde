"""Discounted tickets for subscribers on Discord: /space ticket's Checkout link charges the host's
subscriber at the tier the subscriber price, and the reply says so; someone else's link is the full
price, with no such words."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web

from billing.webhooks import StripeWebhooks
from core.clock import SystemClock
from core.model.accounts import Actor
from core.model.space import Ticketing
from spacebridge.app import stop
from tests.integration.discord.conftest import make_dc
from tests.integration.discord.test_subscriptions import subscription
from tests.support.discord_fake import STAGE, TEXT, FakeDiscord, Mention
from tests.support.stripe_fake import LocalStripe, free_port
from tests.support.stripe_strict import StrictStripe

SECRET = "whsec_discord_discount"
HOST, FAN, OTHER = 300000000000000051, 300000000000000052, 300000000000000053


async def test_a_subscribers_checkout_link_is_the_subscriber_price(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    ls = LocalStripe()
    await ls.start()
    stripe = StrictStripe(ls.url, webhook_secret=SECRET)
    front = web.AppRunner(stripe.app())
    await front.setup()
    fport = free_port()
    await web.TCPSite(front, "127.0.0.1", fport).start()
    stripe.base = f"http://127.0.0.1:{fport}"
    fake = await FakeDiscord().start()
    guild = fake.add_guild("Paid")
    for uid, name in ((HOST, "Hana"), (FAN, "Finn"), (OTHER, "Olga")):
        fake.add_member(guild, uid, name)
    p = await make_dc(tmp_path, monkeypatch, fake, SystemClock(), discord_voice=False,
                      stripe_api_key="sk_test_discord", stripe_webhook_secret=SECRET, stripe_api_base=stripe.base)
    try:
        await fake.reply(await fake.interact(guild, guild.owner_id, "spacebridge", "setup", {
            "stage_channel": Mention("channel", fake.channel_of(guild, STAGE)),
            "announce_channel": Mention("channel", fake.channel_of(guild, TEXT)),
            "host_rule": "everyone", "ticketing": True}))
        host = Actor(account_id=(await p.core.ensure_account("discord", str(HOST), "Hana")).id, is_operator=True)
        gold = await p.core.memberships.set_provider_ids(
            (await p.core.memberships.create_tier(host, "Gold", 1200, "eur")).id, "prod_g", "price_g")
        space = await p.core.create_space(host, "Masterclass", start_at=p.core.now() + timedelta(hours=2),
                                          community_id=(await p.core.communities())[-1].id)
        await p.core.set_ticketing(host, space.id, Ticketing(price_minor=2000, currency="eur", capacity=5,
                                                             discount_tier_id=gold.id, discount_percent=25))
        fan = await p.core.ensure_account("discord", str(FAN), "Finn")
        end = int(time.time()) + 30 * 86400
        assert await StripeWebhooks(p.ledger, SECRET).apply({
            "id": "evt_sub_fan", "type": "customer.subscription.created", "created": int(time.time()),
            "data": {"object": subscription("sub_fan", gold, fan.id, "active", end)}}) == "processed"

        for who, amount in ((FAN, 1500), (OTHER, 2000)):
            r = await fake.reply(await fake.interact(guild, who, "space", "ticket", {"space": space.id}))
            url = r["components"][0]["components"][0]["url"]
            [sess] = [s for s in stripe.sessions.values() if s["url"] == url]
            assert sess["amount_total"] == amount, who
            note = "your subscriber price is 15.00 EUR instead of 20.00."
            assert (note in r["content"]) == (who == FAN), r["content"]
    finally:
        await stop(p)
        await front.cleanup()
        ls.stop()
    assert stripe.refused == [], "a request Stripe would refuse"
