"""Space cards: chat messages that show a Space and that their adapter edits as it changes.

The core keeps where each card lives and a hash of what it shows, so that after a restart an
adapter knows which messages are its own, edits only those that are out of date, and never posts
a second card for the same Space in the same chat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from core.model.accounts import check_platform
from core.ports import Card, DuplicateKey
from core.services import Core

__all__ = ["Card", "CardRefresher", "CardStore"]

log = logging.getLogger(__name__)


class CardStore:
    """One platform's cards, each call its own unit of work."""

    def __init__(self, core: Core, platform: str) -> None:
        self.core = core
        self.platform = check_platform(platform)

    async def add(self, chat_id: str, message_id: str, space_id: str, rendered: str) -> bool:
        """Remember a card just posted; False if this message is already known."""
        try:
            async with self.core.ctx.uow() as uow:
                await uow.cards.add(Card(self.platform, chat_id, message_id, space_id, rendered), self.core.now())
                await uow.commit()
        except DuplicateKey:
            return False
        return True

    async def for_space(self, space_id: str) -> list[Card]:
        async with self.core.ctx.uow() as uow:
            return await uow.cards.for_space(self.platform, space_id)

    async def in_chat(self, chat_id: str, space_id: str) -> Card | None:
        async with self.core.ctx.uow() as uow:
            return await uow.cards.in_chat(self.platform, chat_id, space_id)

    async def open_spaces(self) -> list[str]:
        """Spaces with cards that may still change (for catching up after a restart)."""
        async with self.core.ctx.uow() as uow:
            return await uow.cards.open_spaces(self.platform)

    async def rendered(self, card: Card, rendered: str) -> None:
        async with self.core.ctx.uow() as uow:
            await uow.cards.set_rendered(card, rendered, self.core.now())
            await uow.commit()

    async def drop(self, card: Card) -> None:
        async with self.core.ctx.uow() as uow:
            await uow.cards.drop(card)
            await uow.commit()

    async def find(self, chat_id: str, message_id: str) -> Card | None:
        async with self.core.ctx.uow() as uow:
            return await uow.cards.find(self.platform, chat_id, message_id)


class CardRefresher:
    """Coalesces a Space's changes into at most one ``refresh(space_id)`` per interval.

    ``mark`` is called for every event; one task per changed Space refreshes, sleeps the interval,
    and refreshes again only if something changed meanwhile. ``refresh`` returns True once the
    Space is closed for good, which ends its task. Idle tasks end after a few quiet minutes.
    """

    def __init__(self, refresh: Callable[[str], Awaitable[bool]], interval_s: float) -> None:
        self.refresh = refresh
        self.interval_s = interval_s
        self.running = False
        self._dirty: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def mark(self, space_id: str) -> None:
        if not self.running:
            return
        flag = self._dirty.setdefault(space_id, asyncio.Event())
        flag.set()
        task = self._tasks.get(space_id)
        if task is None or task.done():
            self._tasks[space_id] = asyncio.create_task(self._loop(space_id, flag), name=f"cards:{space_id}")

    async def _loop(self, space_id: str, flag: asyncio.Event) -> None:
        idle_rounds = 0
        while self.running:
            if not flag.is_set():
                idle_rounds += 1
                if idle_rounds > 3:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(flag.wait(), 60)
                continue
            idle_rounds = 0
            flag.clear()
            try:
                if await self.refresh(space_id):
                    break
            except Exception:
                log.exception("updating the cards of %s failed", space_id)
            await asyncio.sleep(self.interval_s)
        # no await between the loop's end and here, so no mark() can slip in and be lost
        self._tasks.pop(space_id, None)
        self._dirty.pop(space_id, None)

    async def stop(self) -> None:
        self.running = False
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
