"""Bad configuration, as an operator meets it: `serve` and `doctor` each name the setting to fix.

Every case runs the real command in a subprocess: exit code 2, a sentence that names the setting,
and no traceback. `serve` must not blame the listen address for database or data-dir problems.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import services

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def _run(tmp: Path, command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SPACEBRIDGE_", "DISCORD_", "TELEGRAM_",
                                                                       "STRIPE_"))}
    base.update({"SPACEBRIDGE_DATA_DIR": str(tmp / "data"), "SPACEBRIDGE_DATABASE_CONNECT_TIMEOUT_S": "2"})
    base.update(env)
    args = ["serve", "--port", env.pop("PORT", "0")] if command == "serve" else ["doctor"]
    return subprocess.run([sys.executable, "-m", "spacebridge", *args], capture_output=True, text=True,
                          env=base, cwd=ROOT, timeout=120)


def test_bad_settings_are_named_by_serve_and_doctor(tmp_path: Path, busy_port: int) -> None:
    services.require("postgresql")
    pg = services.POSTGRES_URL.rsplit("/", 1)[0]
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("not a directory")
    cases: dict[str, tuple[dict[str, str], str]] = {
        "bad port in the database URL": ({"SPACEBRIDGE_DATABASE_URL": "postgresql://u@127.0.0.1:99999/db"},
                                         "SPACEBRIDGE_DATABASE_URL"),
        "relative sqlite://": ({"SPACEBRIDGE_DATABASE_URL": "sqlite://relative.db"}, "SPACEBRIDGE_DATABASE_URL"),
        "missing PostgreSQL database": ({"SPACEBRIDGE_DATABASE_URL": f"{pg}/sb_no_such_database"},
                                        "SPACEBRIDGE_DATABASE_URL"),
        "PostgreSQL not running": ({"SPACEBRIDGE_DATABASE_URL": "postgresql://u@127.0.0.1:1/db"},
                                   "SPACEBRIDGE_DATABASE_URL"),
        "Redis not running": ({"SPACEBRIDGE_REDIS_URL": "redis://127.0.0.1:1/0"}, "SPACEBRIDGE_REDIS_URL"),
        "roles without Redis": ({"SPACEBRIDGE_ROLES": "web"}, "SPACEBRIDGE_REDIS_URL"),
        "port in use": ({"SPACEBRIDGE_PORT": str(busy_port), "PORT": str(busy_port)}, "SPACEBRIDGE_PORT"),
        "data dir is a file": ({"SPACEBRIDGE_DATA_DIR": str(not_a_dir / "data")}, "SPACEBRIDGE_DATA_DIR"),
        "port out of range": ({"SPACEBRIDGE_PORT": "70000", "PORT": "70000"}, "port"),
    }
    runs = [(name, command, env, needle) for name, (env, needle) in cases.items() for command in ("serve", "doctor")]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda r: _run(tmp_path, r[1], dict(r[2])), runs))
    for (name, command, _, needle), p in zip(runs, results, strict=True):
        out = p.stdout + p.stderr
        assert p.returncode == 2, (name, command, p.returncode, out[-800:])
        assert needle in out, (name, command, out[-800:])
        assert "Traceback" not in out, (name, command, out[-2000:])
        if command == "serve" and needle != "SPACEBRIDGE_PORT" and name != "port out of range":
            assert "cannot listen" not in out and "in use" not in out, (name, out[-800:])


def test_doctor_says_all_is_well_only_when_it_is(tmp_path: Path) -> None:
    p = _run(tmp_path, "doctor", {})
    assert p.returncode == 0, p.stdout + p.stderr
    for line in ("[ok  ] listen", "[ok  ] data dir", "[ok  ] database"):
        assert line in p.stdout, p.stdout
