"""Space cards: chat messages that show a Space and that their adapter edits as it changes.

The core keeps where each card lives and a hash of what it shows, so that after a restart an
adapter knows which messages are its own, edits only those that are out of date, and never posts
a second card for the same Space in the same chat.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from core.model.accounts import check_platform
from core.services import Core
from core.storage.tables import ChatCardRow, SpaceRow


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
