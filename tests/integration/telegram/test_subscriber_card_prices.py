"""A ticketed Space's card in a Telegram group says what the host's subscribers pay beside the full
price, in the words Discord's card uses (adapters/chat/cards.py): free entry at one tier, the
discounted price (in Stars, whole) at another."""

from __future__ import annotations

from dataclasses import replace

from core.model.space import Ticketing
from tests.integration.telegram.conftest import GROUP, HOST, TG
from tests.integration.telegram.test_flows import card_for


async def test_the_card_names_the_subscriber_price_and_the_free_tier(tg: TG) -> None:
    host = replace(await tg.actor(HOST, "Hostess"), is_operator=True)
    inner = await tg.core.memberships.create_tier(host, "Inner <circle>", 500, "eur")
    vip = await tg.core.memberships.create_tier(host, "VIP", 3000, "eur")
    mark = len(tg.fake.calls)
    await tg.say(GROUP, HOST, '/space new "Paid Masterclass" +1d', name="Hostess")
    await card_for(tg, GROUP, lambda t: "Paid Masterclass" in t, mark)
    space = (await tg.core.list_spaces(states=("scheduled",)))[0]
    assert space.community_id is not None
    await tg.core.update_community(host, space.community_id, {"ticketing_allowed": True})

    await tg.core.set_ticketing(host, space.id, Ticketing(price_minor=250, currency="XTR", capacity=None,
                                                          free_tier_id=vip.id, discount_tier_id=inner.id,
                                                          discount_percent=33))
    mark = len(tg.fake.calls)
    await tg.core.start_space(host, space.id)
    card = await card_for(tg, GROUP, lambda t: "LIVE" in t and "Paid Masterclass" in t, mark)
    assert ("🎟 Ticketed: 250 ⭐\n⭐ Subscribers at VIP or above: free\n"
            "⭐ Subscribers at Inner &lt;circle&gt; or above: 168 ⭐ (33% off)") in card.params["text"], card.params
