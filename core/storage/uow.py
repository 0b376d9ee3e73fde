"""The unit of work: one transaction, the repositories inside it, and the events it produced.

It rolls back unless ``commit()`` was called, so a command that raises half-way changes nothing, and
it is where a database that stopped answering becomes ``Unavailable`` for every adapter.
"""

from __future__ import annotations

from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.events import Event
from core.storage.engine import raise_unavailable
from core.storage.presence import PresenceRepository
from core.storage.repositories import (
    AccountRepository,
    CommunityRepository,
    SpaceRepository,
    TicketRepository,
)


class UnitOfWork:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self.events: list[Event] = []

    async def __aenter__(self) -> UnitOfWork:
        self.session = self._sessionmaker()
        self.spaces = SpaceRepository(self.session)
        self.accounts = AccountRepository(self.session)
        self.communities = CommunityRepository(self.session)
        self.tickets = TicketRepository(self.session)
        self.presence = PresenceRepository(self.session)
        self.events = []
        self._committed = False
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        """Roll back unless committed; a database outage leaves as ``Unavailable`` (core.errors)."""
        try:
            try:
                if not self._committed:
                    await self.session.rollback()
            finally:
                await self.session.close()
        except Exception as cleanup:  # the connection died with the command
            if e is None:
                raise_unavailable(cleanup)
                raise
        if e is not None:
            raise_unavailable(e)

    async def commit(self) -> None:
        try:
            await self.session.flush()
            await self.session.commit()
        except Exception as e:
            raise_unavailable(e)
            raise
        self._committed = True
        for space in self.spaces.seen.values():
            self.events.extend(space.pending_events)
            space.pending_events.clear()

    def emit(self, event: Event) -> None:
        """Record an event that belongs to no aggregate (follows, links); published after commit."""
        self.events.append(event)
