"""Keeping a Space's chat cards current, once for both surfaces: render the view, compare the
fingerprint with what each card shows, and edit only the cards that are out of date.

The surface gives ``render`` (view -> payload and fingerprint) and ``edit`` (one card); cards that
are not messages (Discord's scheduled events) go to ``other``. ``CardRefresher`` (core/cards.py)
coalesces the marks and calls ``refresh``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from core.cards import Card, CardStore
from core.errors import NotFound
from core.model.space import SpaceState

if TYPE_CHECKING:
    from core.services import Core, SpaceView

P = TypeVar("P")


def notice_text(text: str) -> str:
    """A Space-wide notice, posted as a reply to each of its cards."""
    return f"ℹ️ {text}"


class CardKeeper(Generic[P]):
    def __init__(self, core: Core, cards: CardStore, render: Callable[[SpaceView], tuple[P, str]],
                 edit: Callable[[Card, P, str], Awaitable[None]],
                 other: Callable[[Card, SpaceView], Awaitable[None]] | None = None,
                 is_other: Callable[[Card], bool] = lambda c: False) -> None:
        self.core, self.cards, self.render, self.edit = core, cards, render, edit
        self.other, self.is_other = other, is_other

    async def refresh(self, space_id: str) -> bool:
        """Edit every card of the Space that shows something out of date; True once it has closed."""
        try:
            view = await self.core.view(space_id)
        except NotFound:
            return True
        payload, fp = self.render(view)
        for card in await self.cards.for_space(space_id):
            if self.is_other(card):
                if self.other is not None:
                    await self.other(card, view)
                continue
            if card.rendered != fp:
                await self.edit(card, payload, fp)
        return view.space.state in (SpaceState.ENDED, SpaceState.CANCELLED)
