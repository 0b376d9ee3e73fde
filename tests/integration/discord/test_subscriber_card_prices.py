"""A ticketed Space's card on Discord says what the host's subscribers pay beside the full price, in
the words Telegram's card uses (adapters/chat/cards.py): free entry at one tier, the discounted price
at another (tier names escaped as Markdown)."""

from __future__ import annotations

from dataclasses import replace

from core.model.space import Ticketing
from tests.integration.discord.conftest import DC
from tests.integration.discord.test_flows import setup_guild


async def test_the_card_names_the_subscriber_price_and_the_free_tier(dc: DC) -> None:
    await setup_guild(dc, ticketing=True)
    host = replace(await dc.actor(dc.host, "Hana"), is_operator=True)
    gold = await dc.core.memberships.create_tier(host, "Gold", 1500, "eur")
    vip = await dc.core.memberships.create_tier(host, "VIP*", 3000, "eur")
    r = await dc.ask(dc.host, "space", "schedule", title="Masterclass", when="+2h")
    assert "scheduled for" in r["content"], r
    space = (await dc.core.list_spaces(states=("scheduled",)))[0]
    await dc.core.set_ticketing(host, space.id, Ticketing(price_minor=2000, currency="eur", capacity=5,
                                                          free_tier_id=vip.id, discount_tier_id=gold.id,
                                                          discount_percent=25))
    await dc.core.start_space(host, space.id)
    post = await dc.fake.wait_for(lambda c: c.method in ("POST", "PATCH") and c.path.startswith(
        f"/channels/{dc.text}/messages") and "🔴 LIVE" in str((c.body or {}).get("embeds", [{}])[0].get("description")))
    description = post.body["embeds"][0]["description"]
    assert ("🎟 Ticketed: 20.00 EUR\n⭐ Subscribers at VIP\\* or above: free\n"
            "⭐ Subscribers at Gold or above: 15.00 EUR (25% off)") in description, description
