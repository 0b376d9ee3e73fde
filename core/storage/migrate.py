"""Alembic, driven from code: ``spacebridge db upgrade`` and ``serve`` on SQLite call ``upgrade``.

Alembic is imported only where a migration runs or a live database's revision is read: every CLI
command checks the schema's head first (``head_revision`` reads the revision files' own two lines),
and importing Alembic costs about as much as the rest of a command that reads one table."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from core.storage.engine import normalize_url

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).parent / "migrations"
_REVISION = re.compile(r"^(down_revision|revision)(?:\s*:[^=]+)?\s*=\s*(?:['\"]([^'\"]+)['\"]|None)\s*$", re.M)


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Blocking (Alembic runs its own event loop): call it from a thread when a loop is running."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    """The newest revision: read from the files (``revision = '...'``, ``down_revision = '...'``)
    when they form one plain chain, otherwise (branches, merges, other spellings) Alembic decides."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        found = dict((key, value) for key, value in _REVISION.findall(path.read_text(encoding="utf-8")))
        if "revision" not in found or "down_revision" not in found or not found["revision"]:
            return _alembic_head()
        revisions.add(found["revision"])
        if found["down_revision"]:
            parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else _alembic_head()


def _alembic_head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
