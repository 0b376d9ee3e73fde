"""Keeping a Space's chat cards current, once for both surfaces: render the view, compare the
fingerprint with what each card shows, and edit only the cards that are out of date.

The surface gives ``render`` (view -> payload and fingerprint) and ``edit`` (one card); cards that
are not messages (Discord's scheduled events) go to ``other``. ``CardRefresher`` (core/cards.py)
coalesces the marks and calls ``refresh``.

``stage`` and ``queue`` are who a card names, once for both surfaces: each person with the marks
the web room draws beside them (co-host, muted, the subscriber badge), read from the ``SpaceView``
every surface renders (``SpaceView.subscribers``: no adapter asks billing per render).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from adapters.chat.wording import SUBSCRIBER_BADGE
from core.cards import Card, CardStore
from core.errors import NotFound
from core.model.space import SpaceState

if TYPE_CHECKING:
    from core.services import Core, SpaceView

P = TypeVar("P")

MAX_LINE_NAMES = 12  # people named on one line (stage, queue) of a card


@dataclass(frozen=True)
class Person:
    """Someone a card names, with what is shown beside their name (the surface escapes ``name``)."""

    account_id: str
    name: str
    cohost: bool = False
    muted: bool = False
    subscriber: bool = False

    def marks(self) -> str:
        """What follows the (escaped) name: `` (co-host)``, `` 🔇``, `` · subscriber``."""
        return ((" (co-host)" if self.cohost else "") + (" 🔇" if self.muted else "")
                + (SUBSCRIBER_BADGE if self.subscriber else ""))


def _person(view: SpaceView, account_id: str) -> Person:
    s = view.space
    return Person(account_id, view.names.get(account_id, account_id), cohost=account_id in s.cohosts,
                  muted=account_id in s.muted, subscriber=account_id in view.subscribers)


def stage(view: SpaceView) -> list[Person]:
    """The co-hosts and speakers a card names (the host has a line of their own), at most a line's worth."""
    return [_person(view, a) for a in [*view.space.cohosts, *view.space.speakers][:MAX_LINE_NAMES]]


def queue(view: SpaceView) -> list[Person]:
    """The raised hands in queue order (#1 first, as every surface numbers them), at most a line's worth."""
    return [_person(view, h.account_id) for h in view.space.hands[:MAX_LINE_NAMES]]


def price_text(minor: int, currency: str) -> str:
    """A price on a card: Stars are whole (XTR has no minor unit), money has two decimals."""
    return f"{minor} ⭐" if currency.upper() == "XTR" else f"{minor / 100:.2f} {currency.upper()}"


def ticket_price(view: SpaceView) -> str | None:
    """The full ticket price, or None for a Space without tickets."""
    t = view.space.ticketing
    return None if t is None else price_text(t.price_minor, t.currency)


@dataclass(frozen=True)
class SubscriberTerms:
    """What the host's subscribers at ``tier_name`` or above pay for a ticket (the surface escapes the name)."""

    tier_name: str
    price: str  # "free", or the subscriber price with its discount

    def text(self, escape: Callable[[str], str]) -> str:
        return f"⭐ Subscribers at {escape(self.tier_name)} or above: {self.price}"


def subscriber_terms(view: SpaceView) -> list[SubscriberTerms]:
    """The ticket terms' subscriber lines, free entry first (docs/subscriptions.md), the same words on
    every surface; a tier that no longer exists is left out."""
    t = view.space.ticketing
    if t is None:
        return []
    out: list[SubscriberTerms] = []
    if t.free_tier_id and t.free_tier_id in view.tier_names:
        out.append(SubscriberTerms(view.tier_names[t.free_tier_id], "free"))
    paying = t.subscriber_price()
    if paying is not None and t.discount_tier_id in view.tier_names:
        out.append(SubscriberTerms(view.tier_names[str(t.discount_tier_id)],
                                   f"{price_text(paying, t.currency)} ({t.discount_percent}% off)"))
    return out


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
