from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from core.bus import InProcessBus
from core.clock import FrozenClock
from core.events import Event
from core.services import Core
from core.storage import migrate
from core.storage.base import Base
from core.storage.engine import make_engine, make_sessionmaker
from spacebridge.app import Instance, build, start, stop
from spacebridge.config import load_settings
from tests.support import services

# Nothing the suite runs leaves loopback (tests/support/netguard): the run fails if anything tries.
pytest_plugins = ["tests.support.netguard.plugin"]


@pytest.fixture(scope="session", autouse=True)
def _secrets_never_logged(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every log line of the run (in process, and from every spacebridge subprocess) is checked for
    secrets at the end; one holding a token or key fails the run (tests/support/logcheck.py)."""
    from tests.support import logcheck

    yield from logcheck.session(request.config, tmp_path_factory.mktemp("logs"))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    services.require("postgresql")
    url = services.create_pg_database()
    migrate.upgrade(url)
    yield url
    services.drop_pg_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on SQLite and on PostgreSQL over a real connection."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'sb.sqlite3'}"
        migrate.upgrade(url)
        return url
    url: str = request.getfixturevalue("pg_url")
    asyncio.run(_truncate(url))
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'sb.sqlite3'}"
    migrate.upgrade(url)
    return url


async def _truncate(url: str) -> None:
    engine = make_engine(url)
    async with engine.begin() as conn:
        names = ", ".join(t.name for t in Base.metadata.sorted_tables)
        await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    await engine.dispose()


class Recorder:
    """A bus subscriber that keeps every event, so tests assert what users would be shown."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def __call__(self, event: Event) -> None:
        self.events.append(event)

    def names(self) -> list[str]:
        return [e.name for e in self.events]


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
async def core(database_url: str, clock: FrozenClock) -> AsyncIterator[Core]:
    engine = make_engine(database_url)
    bus = InProcessBus()
    c = Core(make_sessionmaker(engine), bus, clock)
    c.recorder = Recorder()  # type: ignore[attr-defined]
    bus.subscribe(c.recorder)  # type: ignore[attr-defined]
    await bus.start()
    yield c
    await bus.close()
    await engine.dispose()


@pytest.fixture
async def platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Instance]:
    """A whole running instance (web app, rooms, signaling) on SQLite and a free port; ICE on 127.0.0.2."""
    from tests.support.loopback import LOOPBACK, ensure_loopback_alias

    ensure_loopback_alias()
    monkeypatch.setenv("SPACEBRIDGE_DATA_DIR", str(tmp_path))
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'p.sqlite3'}", ice_announce=[LOOPBACK],
                             job_workers=0)
    p = await build(settings)
    await start(p, "127.0.0.1", 0)
    yield p
    await stop(p)
