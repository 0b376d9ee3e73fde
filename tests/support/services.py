"""Where the real services are, and whether a test may skip when one is absent.

Locally a missing PostgreSQL or Redis skips its tests with a reason; in CI (CI=true) it fails them,
so a green CI run always means those tests ran.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from urllib.parse import urlsplit

import pytest

POSTGRES_URL = os.environ.get("SPACEBRIDGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SPACEBRIDGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable(url: str, default_port: int) -> bool:
    u = urlsplit(url)
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def require(service: str) -> None:
    url, port = (POSTGRES_URL, 5432) if service == "postgresql" else (REDIS_URL, 6379)
    if _reachable(url, port):
        return
    msg = f"{service} is not reachable at {url.split('@')[-1]}"
    if os.environ.get("CI"):
        pytest.fail(f"{msg}; CI must run these tests")
    pytest.skip(f"{msg} (set SPACEBRIDGE_TEST_{service.upper()}_URL to run)")


def _admin(sql: str) -> None:
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


def create_pg_database() -> str:
    """A fresh database on the test server; returns its URL."""
    name = f"sb_test_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{name}"')
    base = POSTGRES_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
