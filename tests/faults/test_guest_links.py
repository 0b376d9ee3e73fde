"""Guest links: issued by the CLI, they let someone without an account listen to a public Space, and
are refused in words where a guest may not go."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from typer.testing import CliRunner

from core.model.accounts import Actor
from core.model.space import Ticketing
from spacebridge.app import Instance
from spacebridge.cli import app
from tests.integration.webrtc.test_signaling import connect


async def _link(runner: CliRunner, *args: str) -> tuple[int, dict[str, object]]:
    """The CLI as an operator runs it (its own event loop, so off this test's)."""
    result = await asyncio.to_thread(runner.invoke, app, ["space", "link", *args, "--json"])
    assert "Traceback" not in result.output
    return result.exit_code, json.loads(result.stdout.strip().splitlines()[-1])


async def test_a_guest_link_listens_and_is_refused_where_guests_may_not_go(
        platform: Instance, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    core = platform.core
    monkeypatch.setenv("SPACEBRIDGE_DATABASE_URL", platform.settings.resolved_database_url())
    monkeypatch.setenv("SPACEBRIDGE_SECRET_KEY", platform.settings.resolved_secret().decode())
    host_acc = await core.ensure_account("web", "host", "Host")
    host = Actor(account_id=host_acc.id, is_community_admin=True)
    public = await core.create_space(host, "Open room")
    runner = CliRunner()

    code, out = await _link(runner, public.id, "--role", "guest")
    assert code == 0 and out["account_id"] is None and out["role"] == "guest"
    async with aiohttp.ClientSession() as http:
        guest = await connect(platform, http, public.id, str(out["token"]), None)
        welcome = await guest.recv("welcome")
        assert welcome["you"] == {"account_id": None, "role": "guest"}
        refused = await guest.command("raise_hand")
        assert refused["type"] == "error" and refused["code"] == "guest.link_account"
        await guest.ws.close()

    # a guest link names no account; a personal one needs one
    code, out = await _link(runner, public.id, "--role", "guest", "--as", host_acc.id)
    assert code == 2 and "guest link has no --as" in str(out["error"])
    code, out = await _link(runner, public.id, "--role", "listener")
    assert code == 2 and "needs --as" in str(out["error"])

    await core.end_space(host, public.id)
    unlisted = await core.create_space(host, "Quiet room", visibility="unlisted")
    code, out = await _link(runner, unlisted.id, "--role", "guest")
    assert code != 0 and "personal link" in str(out["error"])

    ticketed = await core.create_space(host, "Paid room", start_at=core.now() + timedelta(days=1))
    operator = Actor(account_id=host_acc.id, is_operator=True)
    await core.set_ticketing(operator, ticketed.id, Ticketing(price_minor=500, currency="eur", capacity=10))
    code, out = await _link(runner, ticketed.id, "--role", "guest")
    assert code != 0 and "ticket" in str(out["error"]).lower()
