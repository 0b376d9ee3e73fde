"""A creator's tiers from Discord (issue 19), through the unmodified discord.py and the fake Discord:
/space tier_create, tiers, tier_stars and tier_archive make the same calls as the CLI and the studio,
answer only the caller (ephemeral), refuse what they refuse in the core's words and change nothing
then; with Stripe configured (localstripe) a tier made in chat gets its Product and monthly Plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web

from core.clock import SystemClock
from spacebridge.app import stop
from tests.integration.discord.conftest import DC, make_dc
from tests.support.discord_fake import FakeDiscord
from tests.support.stripe_fake import LocalStripe, free_port
from tests.support.stripe_strict import StrictStripe

EPHEMERAL = 64
HOST = 300000000000000051


async def tiers_of(dc: DC, uid: int) -> list[tuple[str, int, str, int | None, bool]]:
    account = (await dc.actor(uid)).account_id
    return [(t.name, t.price_minor, t.currency, t.stars, t.archived)
            for t in await dc.core.memberships.tiers(account, archived=True)]


async def ask(dc: DC, uid: int, sub: str, **options: Any) -> str:
    r = await dc.ask(uid, "space", sub, **options)
    assert r.get("flags", 0) & EPHEMERAL, r  # a creator's tiers are nobody else's business
    return str(r["content"])


async def test_a_creator_makes_lists_prices_and_archives_tiers(dc: DC) -> None:
    assert "You sell no subscription tiers yet" in await ask(dc, dc.host, "tiers")

    made = await ask(dc, dc.host, "tier_create", name="Inner circle", price="4.50", currency="eur",
                     perks="Members-only Spaces")
    assert "**Inner circle** is on sale at 4.50 EUR/month" in made
    assert await tiers_of(dc, dc.host) == [("Inner circle", 450, "EUR", None, False)]
    [inner] = await dc.core.memberships.tiers((await dc.actor(dc.host)).account_id)

    refusals: list[tuple[str, dict[str, str], str]] = [
        ("tier_create", {"name": "Fans", "price": "3", "currency": "usd"},
         "All your tiers are priced in EUR; this one is in USD."),
        ("tier_create", {"name": "Fans", "price": "-1", "currency": "eur"},
         "A tier's monthly price must be above zero."),
        ("tier_create", {"name": "Fans", "price": "free", "currency": "eur"},
         "A tier's monthly price must be above zero."),
        ("tier_create", {"name": "Inner Circle", "price": "9", "currency": "eur"},
         "You already have a tier called Inner Circle."),
        ("tier_create", {"name": "Fans", "price": "3", "currency": "euro"}, "Currency must be a 3-letter code"),
        ("tier_stars", {"tier": inner.id, "stars": "10001"}, "A tier's price in Stars is 1 to 10000 a month"),
        ("tier_archive", {"tier": "nosuchtier00"}, "There is no tier nosuchtier00."),
    ]
    for sub, options, words in refusals:
        answer = await ask(dc, dc.host, sub, **options)
        assert "⚠️" in answer and words in answer, (sub, options, answer)
    assert await tiers_of(dc, dc.host) == [("Inner circle", 450, "EUR", None, False)]

    assert "at 250 Stars every 30 days" in await ask(dc, dc.host, "tier_stars", tier="inner circle", stars="250")
    await ask(dc, dc.host, "tier_create", name="Supporter", price="2", currency="EUR")
    await ask(dc, dc.host, "tier_create", name="Patron", price="10", currency="eur")
    listing = await ask(dc, dc.host, "tiers")
    assert f"**Inner circle** (`{inner.id}`): 4.50 EUR/month or 250 Stars on Telegram · 0 subscribers" in listing
    assert "Members-only Spaces" in listing
    assert listing.index("Supporter") < listing.index("Inner circle") < listing.index("Patron")

    assert "at most 3 tiers at once" in await ask(dc, dc.host, "tier_create", name="More", price="20", currency="eur")
    assert "Only the tier's creator can change it." in await ask(dc, dc.fan, "tier_archive", tier=inner.id)
    assert "Only the tier's creator can change it." in await ask(dc, dc.fan, "tier_stars", tier=inner.id, stars="1")
    assert "You sell no subscription tiers yet" in await ask(dc, dc.fan, "tiers")  # each sees their own
    assert len(await tiers_of(dc, dc.host)) == 3

    assert "no longer sold in Telegram Stars" in await ask(dc, dc.host, "tier_stars", tier=inner.id, stars="off")
    assert "**Patron** is off sale" in await ask(dc, dc.host, "tier_archive", tier="Patron")
    assert "That tier is no longer on sale." in await ask(dc, dc.host, "tier_stars", tier="Patron", stars="5")
    assert "· archived" in await ask(dc, dc.host, "tiers")
    assert await tiers_of(dc, dc.host) == [("Supporter", 200, "EUR", None, False),
                                           ("Inner circle", 450, "EUR", None, False),
                                           ("Patron", 1000, "EUR", None, True)]


@pytest.mark.slow
async def test_with_stripe_a_tier_made_in_chat_gets_its_product_and_monthly_plan(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ls = LocalStripe()
    await ls.start()
    stripe = StrictStripe(ls.url, webhook_secret="whsec_tier_commands")
    front = web.AppRunner(stripe.app())
    await front.setup()
    port = free_port()
    await web.TCPSite(front, "127.0.0.1", port).start()
    stripe.base = f"http://127.0.0.1:{port}"
    fake = await FakeDiscord().start()
    guild = fake.add_guild("Paid club")
    fake.add_member(guild, HOST, "Hana")
    p = await make_dc(tmp_path, monkeypatch, fake, SystemClock(), discord_voice=False,
                      stripe_api_key="sk_test_tier_commands", stripe_webhook_secret="whsec_tier_commands",
                      stripe_api_base=stripe.base)
    try:
        r = await fake.reply(await fake.interact(guild, HOST, "space", "tier_create", {
            "name": "Supporter", "price": "5", "currency": "eur", "perks": "Members-only Spaces"}))
        assert "**Supporter** is on sale at 5.00 EUR/month" in r["content"], r
        host = await p.core.ensure_account("discord", str(HOST), "Hana")
        [tier] = await p.core.memberships.tiers(host.id)
        assert tier.stripe_product and tier.stripe_price
        async with ClientSession(headers={"Authorization": "Bearer sk_test_tier_commands"}) as http:
            async with http.get(f"{ls.url}/v1/plans/{tier.stripe_price}") as resp:
                plan = await resp.json()
        assert (plan["amount"], plan["currency"], plan["interval"]) == (500, "eur", "month")
    finally:
        await stop(p)
        await fake.stop()
        await front.cleanup()
        ls.stop()
    assert stripe.refused == [], "a request Stripe would refuse"
