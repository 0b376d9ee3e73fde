"""A Hypothesis fuzzer over every CLI command's arguments, run in-process against a temp SQLite database.

Whatever the arguments: no traceback (every failure is a sentence and an exit code), and a refused
command changes nothing in the database.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from typer.testing import CliRunner

from core.storage import migrate
from core.storage.base import Base
from core.storage.engine import make_engine
from spacebridge.cli import app

NASTY = st.one_of(
    st.sampled_from(["", " ", "-5", "0", "99999999999999999999", "nan", "[" * 3000, "{\"a\":" * 500, "\x00",
                     "k=" + "[" * 5000, "=", "x=1", "host_rule={\"kind\":\"followers\",\"min\":-1}", "web",
                     "+90m", "2001-01-01T00:00Z", "in 2h", "listener", "speaker", "é" * 300, "--json"]),
    st.text(max_size=40),
)
COMMANDS: list[tuple[list[str], int, list[str]]] = [
    # (command words, how many positional arguments, options that take a value)
    (["account", "create"], 1, []), (["account", "show"], 1, []), (["account", "tier"], 2, []),
    (["follow"], 1, ["--as"]), (["space", "list"], 0, ["--state", "--host"]),
    (["space", "create"], 1, ["--as", "--topic", "--community"]),
    (["space", "schedule"], 1, ["--as", "--at", "--topic"]), (["space", "start"], 1, ["--as"]),
    (["space", "end"], 1, ["--as"]), (["space", "cancel"], 1, ["--as"]),
    (["space", "reschedule"], 1, ["--at", "--as"]), (["space", "show"], 1, []),
    (["space", "link"], 1, ["--as", "--role", "--ttl"]), (["billing", "report"], 1, []),
    (["billing", "ticketing"], 1, ["--price", "--currency", "--capacity", "--as"]),
    (["billing", "ticketing"], 1, ["--price", "--subscriber-discount", "--discount-tier", "--free-tier", "--as"]),
    (["community", "list"], 0, []), (["community", "create"], 3, []), (["community", "show"], 1, []),
    (["community", "set"], 2, []), (["audit"], 1, ["--limit", "--by"]), (["plugins", "list"], 0, []),
    (["plugins", "enable"], 1, ["--community"]),
    (["cmd", "hand"], 1, ["--as", "--up"]), (["cmd", "reschedule"], 1, ["--as", "--when"]),
    (["cmd", "remove"], 1, ["--as", "--person", "--block", "--reason"]), (["cmd"], 2, ["--as", "--person"]),
    # Super Follows (docs/subscriptions.md)
    (["billing", "tiers", "create"], 0, ["--as", "--name", "--price", "--currency", "--perks"]),
    (["billing", "tiers", "list"], 0, ["--creator"]), (["billing", "tiers", "archive"], 1, ["--as"]),
    (["billing", "tiers", "stars"], 1, ["--as", "--stars"]),
    (["billing", "subscribe"], 1, ["--as"]), (["billing", "subscriptions"], 0, ["--as"]),
    (["billing", "subscription", "cancel"], 1, ["--as"]),
    (["billing", "subscription", "change"], 1, ["--as", "--tier"]),
    (["billing", "subscribers-only"], 1, ["--tier", "--early-access", "--as"]),
    (["billing", "report"], 0, ["--creator"]), (["space", "schedule"], 1, ["--as", "--at", "--tier", "--early-access"]),
]


@st.composite
def invocations(draw: st.DrawFn) -> list[str]:
    words, positional, options = draw(st.sampled_from(COMMANDS))
    args = list(words) + [draw(NASTY) for _ in range(positional)]
    for opt in draw(st.lists(st.sampled_from(options), max_size=3)) if options else []:
        args += [opt, draw(NASTY)]
    if draw(st.booleans()):
        args.append("--json")
    return args


async def _snapshot(url: str) -> dict[str, list[tuple[object, ...]]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return {t.name: sorted((tuple(map(str, r)) for r in (await conn.execute(text(f"SELECT * FROM {t.name}")))),
                                   key=str)
                    for t in Base.metadata.sorted_tables}
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    where = tmp_path_factory.mktemp("cli-fuzz")
    url = f"sqlite:///{where / 'fuzz.sqlite3'}"
    migrate.upgrade(url)
    return url


def test_no_cli_arguments_make_a_traceback_or_a_half_change(database: str, monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    monkeypatch.setenv("SPACEBRIDGE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SPACEBRIDGE_DATABASE_URL", database)
    runner = CliRunner()
    host = json.loads(runner.invoke(app, ["account", "create", "Host", "--json"]).output)["id"]
    assert runner.invoke(app, ["space", "create", "Seed", "--as", host, "--override"]).exit_code == 0

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(args=invocations())
    def one(args: list[str]) -> None:
        before = asyncio.run(_snapshot(database))
        result = runner.invoke(app, args)
        out = result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), (args, repr(result.exception))
        assert "Traceback" not in out, (args, out)
        if result.exit_code != 0:
            assert asyncio.run(_snapshot(database)) == before, (args, out)
            if "--json" in args and result.stdout.strip():
                assert "error" in json.loads(result.stdout.strip().splitlines()[-1]), (args, out)

    one()
