"""Fails the test run if any log line the suite produced holds a secret.

Two sources are read: every record logged in the test process (a handler on the root logger, apart
from pytest's caplog), and the log of every ``spacebridge`` process the suite starts, which all
append to one file because the session sets ``SPACEBRIDGE_LOG_FILE`` (test helpers that build a
clean environment for a subprocess keep that variable; ``serve`` logs there at its configured level
with its redaction installed, CLI commands their warnings). A line fails the run if it holds a
secret the tests configure (the fake Bot API's and the fake Discord's tokens) or anything shaped
like a token or key (``spacebridge.logs.TOKEN_SHAPES``: bot tokens, ``sk_``/``rk_`` keys,
``whsec_`` secrets, Discord tokens). The run's exit status is set to 1 and the lines are shown.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from spacebridge.logs import TOKEN_SHAPES
from tests.support.discord_fake import TOKEN as DISCORD_TOKEN
from tests.support.telegram_fake import FakeBotAPI

LOG_ENV = "SPACEBRIDGE_LOG_FILE"
TELEGRAM_TOKEN: str = inspect.signature(FakeBotAPI).parameters["token"].default
TEST_SECRETS = (TELEGRAM_TOKEN, TELEGRAM_TOKEN.split(":", 1)[1], DISCORD_TOKEN)
# what a leak looks like even when no test configured it: the shapes serve redacts, at any length
_LOOSE_SHAPES = (re.compile(r"\b(?:sk|rk)_(?:live|test)_\w+"), re.compile(r"\bwhsec_\w+"))


def leaks(line: str) -> bool:
    return (any(s in line for s in TEST_SECRETS) or any(p.search(line) for p in TOKEN_SHAPES)
            or any(p.search(line) for p in _LOOSE_SHAPES))


class _Collector(logging.Handler):
    """Keeps only the offending lines (with the test that produced them), so memory stays small."""

    def __init__(self, check: LogCheck) -> None:
        super().__init__(logging.NOTSET)
        self.check = check
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            return
        for line in text.splitlines():
            if leaks(line):
                where = os.environ.get("PYTEST_CURRENT_TEST", "outside a test")
                self.check.found.append(f"{where}: {line[:300]}")


class LogCheck:
    """A pytest plugin registered for the session by the ``_secrets_never_logged`` fixture."""

    def __init__(self, log_file: Path) -> None:
        self.log_file = log_file
        self.found: list[str] = []

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.log_file.exists():
            with self.log_file.open(encoding="utf-8", errors="replace") as f:
                self.found += [f"{self.log_file.name}: {line.rstrip()[:300]}" for line in f if leaks(line)]
        if self.found:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.found:
            return
        terminalreporter.section("secrets in logs", red=True)
        terminalreporter.line(f"{len(self.found)} log line(s) hold a token, key or secret (the run fails):", red=True)
        for line in self.found[:50]:
            terminalreporter.line(f"  {line}")


def session(config: pytest.Config, log_dir: Path) -> Iterator[None]:
    """Collect in-process records and point every spawned ``spacebridge`` at one log file."""
    check = LogCheck(log_dir / "spacebridge.log")
    config.pluginmanager.register(check, "spacebridge-logcheck")
    collector = _Collector(check)
    root = logging.getLogger()
    root.addHandler(collector)
    old = os.environ.get(LOG_ENV)
    os.environ[LOG_ENV] = str(check.log_file)
    try:
        yield
    finally:
        root.removeHandler(collector)
        if old is None:
            os.environ.pop(LOG_ENV, None)
        else:
            os.environ[LOG_ENV] = old
