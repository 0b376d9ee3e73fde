"""``--json`` on every ``spacebridge`` command, as the README promises: each subcommand accepts it and
prints valid JSON on stdout, whether it succeeds or refuses (scripts parse both)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
import typer

from spacebridge.cli import app, main


def _leaves(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every runnable command of the click tree Typer builds (groups have ``commands``)."""
    if hasattr(command, "commands"):
        return [leaf for name, sub in sorted(command.commands.items()) for leaf in _leaves(sub, (*path, name))]
    return [(path, command)]


LEAVES = _leaves(typer.main.get_command(app))


def _run(*args: str) -> tuple[int, str]:
    import sys

    out = io.StringIO()
    argv = sys.argv
    sys.argv = ["spacebridge", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0) if not isinstance(e.code, str) else 1
    finally:
        sys.argv = argv
    return code, out.getvalue()


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for var in ("SPACEBRIDGE_DATABASE_URL", "SPACEBRIDGE_REDIS_URL", "SPACEBRIDGE_PUBLIC_URL", "SPACEBRIDGE_CONFIG",
                "STRIPE_API_KEY", "DISCORD_BOT_TOKEN", "TELEGRAM_BOT_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SPACEBRIDGE_DATA_DIR", str(tmp_path / "data"))
    code, out = _run("account", "create", "Ada", "--admin", "--json")
    assert code == 0, out
    host = json.loads(out)["id"]
    code, out = _run("space", "create", "Town hall", "--as", host, "--json")
    assert code == 0, out
    return {"ACCOUNT": host, "SPACE": json.loads(out)["id"]}


# arguments that make a command succeed on a fresh instance; commands not named here are run with
# none, and must answer the usage error in JSON too
ARGS = {
    ("account", "show"): ["ACCOUNT"], ("account", "tier"): ["ACCOUNT", "paid"], ("account", "create"): ["Bob"],
    ("space", "list"): [], ("space", "show"): ["SPACE"], ("space", "link"): ["SPACE", "--role", "guest"],
    ("space", "schedule"): ["AMA", "--as", "ACCOUNT", "--at", "in 2h"], ("community", "list"): [],
    ("audit",): ["SPACE"], ("plugins", "list"): [], ("billing", "report"): ["SPACE"], ("doctor",): [],
    ("db", "upgrade"): [], ("serve",): ["--port", "99999"],
}


def test_every_command_has_a_json_option() -> None:
    missing = [" ".join(path) for path, command in LEAVES
               if not any("--json" in getattr(p, "opts", []) for p in command.params)]
    assert missing == []
    assert len(LEAVES) >= 30  # the tree was found (every group walked)


def test_every_command_prints_json(instance: dict[str, str]) -> None:
    for path, _ in LEAVES:
        args = [instance.get(a, a) for a in ARGS.get(path, [])]
        code, out = _run(*path, *args, "--json")
        lines = [line for line in out.splitlines() if line.strip()]
        assert lines, (path, code)
        for line in lines:
            json.loads(line)  # every line a JSON value: nothing else on stdout
        if path in ARGS and path != ("serve",):
            assert code == 0, (path, out)
