"""A CLI command that only reads or writes the database loads no adapter, bot SDK, WebRTC or numpy
(issue 20: ``space list`` took 3-4 s and 170 MB importing every adapter to read one table)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# top-level packages a database-only command must never import
HEAVY = ("numpy", "aiortc", "av", "discord", "telegram", "aiohttp", "alembic", "billing", "plugins", "webauthn",
         "jinja2", "redis", "davey")
# adapters.webrtc.candidates is the ICE network policy the settings validate (ipaddress only)
ALLOWED_ADAPTERS = {"adapters", "adapters.webrtc", "adapters.webrtc.candidates"}

PROBE = """
import json, runpy, sys
sys.argv = ["spacebridge", *json.loads(sys.argv[1])]
code = 0
try:
    runpy.run_module("spacebridge", run_name="__main__")
except SystemExit as e:
    code = e.code or 0
print(json.dumps({"exit": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def _modules(tmp_path: Path, *args: str) -> tuple[str, list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACEBRIDGE_", "DISCORD_", "TELEGRAM_",
                                                                      "STRIPE_"))}
    env["SPACEBRIDGE_DATA_DIR"] = str(tmp_path / "data")
    p = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=120)
    report = json.loads(p.stderr.strip().splitlines()[-1])
    assert report["exit"] == 0, p.stderr
    return p.stdout, report["modules"]


def _heavy(modules: list[str], *, migrating: bool = False) -> list[str]:
    allowed = {"alembic"} if migrating else set()
    return [m for m in modules if m.split(".")[0] in set(HEAVY) - allowed
            or (m.split(".")[0] == "adapters" and m not in ALLOWED_ADAPTERS)]


@pytest.mark.parametrize("args", [("space", "list"), ("account", "create", "Ada", "--json")])
def test_database_commands_import_no_adapter_sdk_or_numpy(tmp_path: Path, args: tuple[str, ...]) -> None:
    """On a fresh data dir the command creates the schema (Alembic, once); on a current one it
    does not even import Alembic."""
    for fresh in (True, False):
        out, modules = _modules(tmp_path, *args)
        assert out.strip()
        assert _heavy(modules, migrating=fresh) == []


def test_space_show_imports_no_adapter(tmp_path: Path) -> None:
    out, _ = _modules(tmp_path, "account", "create", "Ada", "--admin", "--json")
    host = json.loads(out)["id"]
    out, _ = _modules(tmp_path, "space", "create", "Town hall", "--as", host, "--json")
    out, modules = _modules(tmp_path, "space", "show", json.loads(out)["id"], "--json")
    assert json.loads(out)["title"] == "Town hall"
    assert _heavy(modules) == []


def test_schema_head_read_from_files_is_alembics() -> None:
    """The light head read (no Alembic import) names the same revision Alembic does."""
    from core.storage import migrate

    assert migrate.head_revision() == migrate._alembic_head()
