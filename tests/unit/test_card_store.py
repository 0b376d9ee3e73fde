"""The chat card store on the in-memory store: it needs no database, only core.ports' Cards."""

from __future__ import annotations

from core.bus import InProcessBus
from core.cards import CardStore
from core.clock import FrozenClock
from core.model.accounts import Actor
from core.services import Core
from tests.support.fake_uow import FakeStore


async def test_a_card_is_remembered_once_edited_and_forgotten() -> None:
    bus = InProcessBus()
    await bus.start()
    core = Core(FakeStore(), bus, FrozenClock())
    host = Actor(account_id=(await core.ensure_account("web", "h", "Host")).id, is_community_admin=True)
    space = await core.create_space(host, "Cards")
    cards = CardStore(core, "telegram")

    assert await cards.add("chat1", "m1", space.id, "v1")
    assert not await cards.add("chat1", "m1", space.id, "v2")  # the same message: never a second card
    card = await cards.in_chat("chat1", space.id)
    assert card is not None and card.rendered == "v1"
    assert await cards.open_spaces() == [space.id]
    assert await CardStore(core, "discord").for_space(space.id) == []  # each platform its own cards

    await cards.rendered(card, "v2")
    found = await cards.find("chat1", "m1")
    assert found is not None and found.rendered == "v2"

    await core.end_space(host, space.id)
    assert await cards.open_spaces() == []  # an ended Space's cards no longer change
    await cards.drop(card)
    assert await cards.for_space(space.id) == []
    await bus.close()
