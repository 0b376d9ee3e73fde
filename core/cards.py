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
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from core.model.accounts import check_platform
from core.services import Core
from core.storage.tables import ChatCardRow, SpaceRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Card:
    platform: str
    chat_id: str
    message_id: str
    space_id: str
    rendered: str


def _card(r: ChatCardRow) -> Card:
    return Card(r.platform, r.chat_id, r.message_id, r.space_id, r.rendered)


class CardStore:
    def __init__(self, core: Core, platform: str) -> None:
        self.core = core
        self.platform = check_platform(platform)

    async def add(self, chat_id: str, message_id: str, space_id: str, rendered: str) -> bool:
        """Remember a card just posted; False if this message is already known."""
        now = self.core.now()
        try:
            async with self.core.uow() as uow:
                uow.session.add(ChatCardRow(platform=self.platform, chat_id=chat_id, message_id=message_id,
                                            space_id=space_id, rendered=rendered, created_at=now, updated_at=now))
                await uow.commit()
        except IntegrityError:
            return False
        return True

    async def for_space(self, space_id: str) -> list[Card]:
        async with self.core.uow() as uow:
            rows = await uow.session.scalars(select(ChatCardRow).where(
                ChatCardRow.platform == self.platform, ChatCardRow.space_id == space_id))
            return [_card(r) for r in rows]

    async def in_chat(self, chat_id: str, space_id: str) -> Card | None:
        async with self.core.uow() as uow:
            row = (await uow.session.scalars(select(ChatCardRow).where(
                ChatCardRow.platform == self.platform, ChatCardRow.chat_id == chat_id,
                ChatCardRow.space_id == space_id))).first()
            return None if row is None else _card(row)

    async def open_spaces(self) -> list[str]:
        """Spaces with cards that may still change (for catching up after a restart)."""
        async with self.core.uow() as uow:
            q = (select(ChatCardRow.space_id).distinct().join(SpaceRow, SpaceRow.id == ChatCardRow.space_id)
                 .where(ChatCardRow.platform == self.platform, SpaceRow.state.in_(("scheduled", "live"))))
            return list(await uow.session.scalars(q))

    async def rendered(self, card: Card, rendered: str) -> None:
        async with self.core.uow() as uow:
            await uow.session.execute(update(ChatCardRow).where(
                ChatCardRow.platform == self.platform, ChatCardRow.chat_id == card.chat_id,
                ChatCardRow.message_id == card.message_id).values(rendered=rendered, updated_at=self.core.now()))
            await uow.commit()

    async def drop(self, card: Card) -> None:
        async with self.core.uow() as uow:
            await uow.session.execute(delete(ChatCardRow).where(
                ChatCardRow.platform == self.platform, ChatCardRow.chat_id == card.chat_id,
                ChatCardRow.message_id == card.message_id))
            await uow.commit()

    async def find(self, chat_id: str, message_id: str) -> Card | None:
        async with self.core.uow() as uow:
            row = await uow.session.get(ChatCardRow, (self.platform, chat_id, message_id))
            return None if row is None else _card(row)


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
