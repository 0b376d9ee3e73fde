"""Table commands in a shell: ``spacebridge cmd NAME SPACE --as ACCOUNT [--OPTION VALUE ...]``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from core.storage import migrate
from spacebridge.cli import app


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
    code, out = _json(runner, "cmd", "react", space, "--as", fan, "--emoji", "👏")
    assert code == 1 and out["error"]["code"] == "space.blocked"


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
