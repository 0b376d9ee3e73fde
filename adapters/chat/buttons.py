"""The buttons under a Space's card, the same on both chat surfaces, and what pressing one does.

A button is ``kind`` + Space id + ``arg``; each surface encodes it in its own way (Discord's
``sb:<kind>:<space>[:<arg>]`` custom ids, Telegram's ``<kind>:<space>[:<arg>]`` callback data) and
hands a press back to ``press``. Reactions are ``core.commands.REACTIONS``, the web room's set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from adapters.chat.actions import run
from adapters.chat.wording import Style, word
from core.commands import REACTIONS
from core.errors import Invalid
from core.model.accounts import Actor
from core.model.space import Space, SpaceState

if TYPE_CHECKING:
    from core.services import Core

JOIN, HAND, REACT, REMIND, DETAILS = "j", "h", "r", "m", "d"
PER_ROW = 5  # Discord allows five buttons a row; Telegram reads best the same way


@dataclass(frozen=True)
class Button:
    kind: str
    label: str  # empty for a reaction: the emoji is the button
    emoji: str
    arg: str = ""
    primary: bool = False
    link: bool = False  # the surface renders a URL (join, details), not a press


def card_buttons(space: Space) -> list[list[Button]]:
    """Rows of buttons for the card of ``space``: none once it has closed."""
    if space.state == SpaceState.LIVE:
        rows = [[Button(JOIN, "Join", "🎧", primary=True, link=True), Button(HAND, "Hand", "✋")]]
        reactions = [Button(REACT, "", e, str(i)) for i, e in enumerate(REACTIONS)]
        rows += [reactions[i:i + PER_ROW] for i in range(0, len(reactions), PER_ROW)]
        return rows
    if space.state == SpaceState.SCHEDULED:
        return [[Button(REMIND, "Remind me", "🔔", primary=True), Button(DETAILS, "Details", "ℹ️", link=True)]]
    return []


def parse(data: str) -> tuple[str, str, str]:
    """``kind:space:arg`` -> its parts (missing parts are empty)."""
    kind, _, rest = data.partition(":")
    space_id, _, arg = rest.partition(":")
    return kind, space_id, arg


async def press(core: Core, actor: Actor, kind: str, space_id: str, arg: str, style: Style) -> str:
    """Run what a hand, reaction or reminder button means, through the command table; the answer in words."""
    if kind == REACT:
        idx = int(arg) if arg.isdigit() else -1
        if not 0 <= idx < len(REACTIONS):
            raise Invalid("reaction.not_an_emoji")
        return word(await run(core, actor, "react", space_id, {"emoji": REACTIONS[idx]}), style)
    if kind == HAND:
        return word(await run(core, actor, "hand", space_id), style)
    if kind == REMIND:
        await run(core, actor, "remind", space_id, {"on": True})
        return "🔔 I'll DM you when it starts."
    raise Invalid("protocol.unknown_command", name=kind[:40])
