"""The ``Cards`` port on SQL: where each chat card lives and a hash of what it shows (core/cards.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.ports import Card, DuplicateKey
from core.storage.tables import ChatCardRow, SpaceRow


def _card(r: ChatCardRow) -> Card:
    return Card(r.platform, r.chat_id, r.message_id, r.space_id, r.rendered)


class CardRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add(self, card: Card, now: datetime) -> None:
        """Insert now, so that a second card for the same message is ``DuplicateKey`` here."""
        self.s.add(ChatCardRow(platform=card.platform, chat_id=card.chat_id, message_id=card.message_id,
                               space_id=card.space_id, rendered=card.rendered, created_at=now, updated_at=now))
        try:
            await self.s.flush()
        except IntegrityError as e:
            raise DuplicateKey(f"card {card.platform}:{card.chat_id}:{card.message_id}") from e

    async def for_space(self, platform: str, space_id: str) -> list[Card]:
        rows = await self.s.scalars(select(ChatCardRow).where(
            ChatCardRow.platform == platform, ChatCardRow.space_id == space_id))
        return [_card(r) for r in rows]

    async def in_chat(self, platform: str, chat_id: str, space_id: str) -> Card | None:
        row = (await self.s.scalars(select(ChatCardRow).where(
            ChatCardRow.platform == platform, ChatCardRow.chat_id == chat_id,
            ChatCardRow.space_id == space_id))).first()
        return None if row is None else _card(row)

    async def find(self, platform: str, chat_id: str, message_id: str) -> Card | None:
        row = await self.s.get(ChatCardRow, (platform, chat_id, message_id))
        return None if row is None else _card(row)

    async def open_spaces(self, platform: str) -> list[str]:
        q = (select(ChatCardRow.space_id).distinct().join(SpaceRow, SpaceRow.id == ChatCardRow.space_id)
             .where(ChatCardRow.platform == platform, SpaceRow.state.in_(("scheduled", "live"))))
        return list(await self.s.scalars(q))

    async def set_rendered(self, card: Card, rendered: str, now: datetime) -> None:
        await self.s.execute(update(ChatCardRow).where(
            ChatCardRow.platform == card.platform, ChatCardRow.chat_id == card.chat_id,
            ChatCardRow.message_id == card.message_id).values(rendered=rendered, updated_at=now))

    async def drop(self, card: Card) -> None:
        await self.s.execute(delete(ChatCardRow).where(
            ChatCardRow.platform == card.platform, ChatCardRow.chat_id == card.chat_id,
            ChatCardRow.message_id == card.message_id))
