"""The pytest side of the network guard: the hook in this process, in every Python subprocess
(``site/sitecustomize.py`` on ``PYTHONPATH``), loopback-only ICE for every server the suite runs,
and a run that fails when anything tried to leave 127.0.0.0/8 (listed with destination and stack).

Chromium is not Python: tests launch it with ``tests.support.netguard.CHROMIUM_FLAGS``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.support.netguard import guard

SITE = Path(__file__).resolve().parent / "site"
ICE_ALLOWED = "127.0.0.0/8,::1/128"  # SPACEBRIDGE_ICE_ALLOWED_NETWORKS for every server the tests start
_log: Path | None = None
_found: list[dict[str, Any]] = []


def pytest_configure(config: pytest.Config) -> None:
    global _log
    guard.install()
    fd, name = tempfile.mkstemp(prefix="netguard-", suffix=".jsonl")
    os.close(fd)
    _log = Path(name)
    os.environ[guard.LOG_ENV] = name
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(SITE), os.environ.get("PYTHONPATH")) if p)
    os.environ.setdefault("SPACEBRIDGE_ICE_ALLOWED_NETWORKS", ICE_ALLOWED)


def violations() -> list[dict[str, Any]]:
    """Every refused socket use so far, here and in subprocesses (they write to the shared log)."""
    return guard.read_log(str(_log)) if _log is not None else list(guard.violations)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _found[:] = violations()
    if _found and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if _log is not None:
        _log.unlink(missing_ok=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _found:
        return
    tr = terminalreporter
    tr.section("netguard: sockets outside 127.0.0.0/8", sep="=", red=True, bold=True)
    for v in _found[:50]:
        tr.write_line(f"{v['event']} -> {v['destination']}  (pid {v['pid']} {' '.join(v['argv'])})")
        if v.get("test"):
            tr.write_line(f"    during {v['test']}")
        for frame in v["stack"][-8:]:
            tr.write_line(f"      {frame}")
    if len(_found) > 50:
        tr.write_line(f"... and {len(_found) - 50} more")
