"""The unit of work: one transaction, the repositories inside it, and the events it produced.

It rolls back unless ``commit()`` was called, so a command that raises half-way changes nothing, and
it is where a database that stopped answering becomes ``Unavailable`` for every adapter.
"""

from __future__ import annotations

from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.clock import Clock
from core.events import Event
from core.storage.analytics import AnalyticsRepository
from core.storage.cards import CardRepository
from core.storage.engine import Sessions, raise_unavailable
from core.storage.jobs import JobQueue
from core.storage.kv import KeyValueStore
from core.storage.passkeys import PasskeyRepository
from core.storage.presence import PresenceRepository
from core.storage.repositories import AccountRepository, CommunityRepository, SpaceRepository
from core.storage.subscriptions import SubscriptionRepository
from core.storage.tickets import TicketRepository


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
        self.subscriptions = SubscriptionRepository(self.session)  # Super Follows (billing/subscriptions.py)
        self.presence = PresenceRepository(self.session)
        self.jobs = JobQueue(self.session)
        self.cards = CardRepository(self.session)
        self.passkeys = PasskeyRepository(self.session)  # web sign-in (spacebridge/web_auth.py)
        self.analytics = AnalyticsRepository(self.session)  # the host's console (spacebridge/studio_stats.py)
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

    async def flush(self) -> None:
        """Send pending writes now (a later statement in this transaction reads them)."""
        await self.session.flush()

    def emit(self, event: Event) -> None:
        """Record an event that belongs to no aggregate (follows, links); published after commit."""
        self.events.append(event)


class Database:
    """The SQL store (``core.ports.Store``): units of work and key-value namespaces on one database."""

    def __init__(self, sessionmaker: Sessions, clock: Clock) -> None:
        self.sessionmaker, self.clock = sessionmaker, clock

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self.sessionmaker)

    def kv(self, namespace: str) -> KeyValueStore:
        return KeyValueStore(self.sessionmaker, self.clock, namespace)
