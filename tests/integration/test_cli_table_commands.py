"""Table commands in a shell: ``spacebridge cmd NAME SPACE --as ACCOUNT [--OPTION VALUE ...]``."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from core.bus import RedisBus
from core.clock import SystemClock
from core.model.accounts import Actor
from core.services import Core
from core.storage import migrate
from core.storage.engine import make_engine, make_sessionmaker
from spacebridge.cli import app
from tests.support import services


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    migrate.upgrade(url)
    monkeypatch.setenv("SPACEBRIDGE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SPACEBRIDGE_DATABASE_URL", url)
    return CliRunner()


def _json(runner: CliRunner, *args: str) -> tuple[int, dict[str, Any]]:
    r = runner.invoke(app, [*args, "--json"])
    assert "Traceback" not in r.output, r.output
    return r.exit_code, json.loads(r.stdout.strip().splitlines()[-1])


def test_table_commands_run_from_the_shell_with_the_tables_rules(runner: CliRunner) -> None:
    host = _json(runner, "account", "create", "Hana")[1]["id"]
    fan = _json(runner, "account", "create", "Finn")[1]["id"]
    space = _json(runner, "space", "schedule", "Later", "--as", host, "--at", "+2h", "--override")[1]["id"]

    code, out = _json(runner, "cmd", "remind", space, "--as", fan)
    assert code == 0 and out["outcome"] == "reminder.on"
    code, out = _json(runner, "cmd", "reschedule", space, "--as", fan, "--when", "+3h")
    assert code == 1 and out["error"]["code"] == "role.host_required"  # refused before the core ran
    code, out = _json(runner, "cmd", "reschedule", space, "--as", host, "--when", "soon")
    assert code == 1 and out["error"]["code"] == "time.unreadable"
    code, out = _json(runner, "cmd", "reschedule", space, "--as", host, "--when", "+3h")
    assert code == 0 and out["outcome"] == "space.rescheduled" and out["result"]["scheduled_for"]
    code, out = _json(runner, "cmd", "follow", "-", "--as", fan, "--host", host)
    assert code == 0 and out["result"] == {"followers": 1}

    code, out = _json(runner, "cmd", "refund", space, "--as", fan)
    assert code == 1 and out["error"]["code"] == "ticket.none_paid"
    code, out = _json(runner, "cmd", "share", space, "--as", fan)
    assert code == 0 and out["result"]["links"]["web"].endswith(f"/s/{space}")
    code, out = _json(runner, "cmd", "start", space, "--as", host)
    assert code == 0 and out["outcome"] == "space.started"
    code, out = _json(runner, "cmd", "hand", space, "--as", fan)
    assert code == 0 and out["outcome"] == "hand.raised" and out["result"] == 1
    code, out = _json(runner, "cmd", "remove", space, "--as", host, "--person", fan, "--block", "--reason", "spam")
    assert code == 0 and out["data"] == {"account_id": fan, "blocked": True}
    code, out = _json(runner, "cmd", "comment", space, "--as", fan, "--text", "hi")
    assert code == 1 and out["error"]["code"] == "space.blocked"


def test_a_reaction_without_a_bus_is_refused_in_words(runner: CliRunner) -> None:
    """Reactions are never stored: with no Redis bus to carry it, the shell says so instead of losing it."""
    host = _json(runner, "account", "create", "Hana")[1]["id"]
    space = _json(runner, "space", "create", "Now", "--as", host, "--override")[1]["id"]
    code, out = _json(runner, "cmd", "react", space, "--as", host, "--emoji", "👏")
    assert code == 1 and out["error"]["code"] == "reaction.needs_bus"
    assert "SPACEBRIDGE_REDIS_URL" in out["error"]["message"]


async def test_a_reaction_from_the_shell_shows_in_the_serving_process_tally(
        runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve`` and the shell share the database and the Redis bus; the shell's clap is counted by the
    serving process (which only ever counts reactions in memory) and its own clap once, not twice."""
    services.require("redis")
    prefix = f"clitest-{uuid.uuid4().hex[:8]}:"
    monkeypatch.setenv("SPACEBRIDGE_REDIS_URL", services.REDIS_URL)
    monkeypatch.setenv("SPACEBRIDGE_REDIS_PREFIX", prefix)
    engine = make_engine(f"sqlite:///{tmp_path / 'cli.sqlite3'}")
    bus = RedisBus(services.REDIS_URL, prefix=prefix)
    await bus.start()
    core = Core(make_sessionmaker(engine), bus, SystemClock())
    try:
        host = await core.ensure_account("web", "hana", "Hana")
        fan = await core.ensure_account("web", "finn", "Finn")
        space = await core.create_space(Actor(account_id=host.id, platform="web", is_community_admin=True), "Now")
        await core.join(Actor(account_id=fan.id, platform="web"), space.id)
        await core.react(Actor(account_id=host.id, platform="web"), space.id, "💜")

        code, out = await asyncio.to_thread(_json, runner, "cmd", "react", space.id, "--as", fan.id, "--emoji", "👏")
        assert code == 0 and out["outcome"] == "reaction.sent"
        deadline = asyncio.get_running_loop().time() + 10.0
        while "👏" not in (await core.view(space.id)).reactions:
            assert asyncio.get_running_loop().time() < deadline, "the shell's reaction never reached the tally"
            await asyncio.sleep(0.02)
        assert (await core.view(space.id)).reactions == {"💜": 1, "👏": 1}
    finally:
        await bus.close()
        await engine.dispose()


def test_bad_options_are_refused_in_words_before_anything_runs(runner: CliRunner) -> None:
    host = _json(runner, "account", "create", "Hana")[1]["id"]
    space = _json(runner, "space", "create", "Now", "--as", host, "--override")[1]["id"]
    for args, argument in ((["--colour", "red"], "colour"), (["--person"], "person"), (["stray"], "stray")):
        code, out = _json(runner, "cmd", "approve", space, "--as", host, *args)
        assert code == 2 and out["error"]["code"] == "protocol.bad_argument", out
        assert out["error"]["argument"] == argument and argument in out["error"]["message"]
    code, out = _json(runner, "cmd", "fly", space, "--as", host)
    assert code == 2 and out["error"]["code"] == "protocol.unknown_command"
    r = runner.invoke(app, ["cmd", "end", space, "--as", host])
    assert r.exit_code == 0 and r.stdout.strip() == "space.ended_by_host"
