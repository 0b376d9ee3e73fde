"""Secrets never reach a log: whatever library logs them, in whatever shape, and from a real ``serve``.

httpx logs every Bot API request URL, and the URL carries the bot token; drivers put URLs with
passwords into their errors. The suite as a whole is checked too: tests/support/logcheck.py fails
the run if any log line any test produced (in process or from a ``serve`` subprocess) holds one.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from spacebridge import logs
from spacebridge.config import load_settings
from tests.support.telegram_fake import FakeBotAPI

ROOT = Path(__file__).resolve().parents[2]
TG = "1234567890:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0"  # the shape BotFather hands out (35 after the colon)
DISCORD = "MTAxMjM0NTY3ODkwMTIzNDU2.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789AB"


@pytest.mark.parametrize(("line", "secret"), [
    (f"HTTP Request: POST https://api.telegram.org/bot{TG}/getUpdates \"HTTP/1.1 200 OK\"", TG),
    (f"token={TG}", TG),
    ("stripe key sk_live_51HxYzAbCdEfGhIjKlMnOpQr in use", "sk_live_51HxYzAbCdEfGhIjKlMnOpQr"),
    ("stripe key sk_test_4eC39HqLyjWDarjtT1zdp7dc", "sk_test_4eC39HqLyjWDarjtT1zdp7dc"),
    ("restricted rk_live_51AbCdEfGhIjKlMn", "rk_live_51AbCdEfGhIjKlMn"),
    ("webhook secret whsec_7b2f9c1d0e8a4b6c", "whsec_7b2f9c1d0e8a4b6c"),
    (f"Authorization: Bot {DISCORD}", DISCORD),
    (f"discord token {DISCORD} refused", DISCORD),
    ("connect postgresql+asyncpg://spacebridge:hunter2-pass@db.internal:5432/sb failed", "hunter2-pass"),
    ("redis://:r3dis-Pa55@cache:6379/0 unreachable", "r3dis-Pa55"),
    ("{'Authorization': 'Bearer abc.def-ghi_jkl'}", "abc.def-ghi_jkl"),
])
def test_token_shapes_are_redacted_unconfigured(line: str, secret: str) -> None:
    out = logs.Redactor()(line)
    assert secret not in out and logs.REDACTED in out, out


def test_configured_secrets_are_redacted_plain_and_url_encoded() -> None:
    r = logs.Redactor(["plain-webhook-secret", "p@ss word/1", None, "short"])
    out = r("a=plain-webhook-secret b=p%40ss%20word%2F1 c=p@ss word/1 short")
    assert "plain-webhook-secret" not in out and "p@ss word/1" not in out and "p%40ss%20word%2F1" not in out
    assert out.endswith(" short")  # too short to tell from ordinary words: left alone


def test_urls_stay_readable() -> None:
    out = logs.Redactor()("postgresql://sb:secretpw@db:5432/spacebridge http://127.0.0.1:8080/s/abc")
    assert out == f"postgresql://sb:{logs.REDACTED}@db:5432/spacebridge http://127.0.0.1:8080/s/abc"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """A handler added to the root logger after ``install``, the way a library or an operator would."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(logs.FORMAT))
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


def test_any_library_record_is_redacted_message_args_and_traceback(captured: io.StringIO) -> None:
    secret = "configured-Discord-token-value"
    logs.install([secret])
    logging.getLogger("httpx").info('HTTP Request: %s %s "%s"', "POST", f"http://x/bot{TG}/sendMessage", "200")
    try:
        raise RuntimeError(f"login failed for {secret} via redis://u:pw-in-url@h/0")
    except RuntimeError:
        logging.getLogger("discord.client").exception("could not log in with %s", secret)
    logging.getLogger("some.lib").warning("stack", stack_info=True, extra={"x": 1})
    text = captured.getvalue()
    assert "sendMessage" in text and "could not log in" in text and "RuntimeError" in text
    for s in (TG, secret, "pw-in-url"):
        assert s not in text, text


def test_secrets_of_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPACEBRIDGE_DATA_DIR", str(tmp_path))
    (tmp_path / "secret.key").write_text("made-by-serve-join-link-key\n")
    s = load_settings(database_url="postgresql://sb:db%2Fpass@127.0.0.1:5432/sb", redis_url="redis://:redispass@r/0",
                      telegram_bot_token=TG, stripe_api_key="sk_test_configured", stripe_webhook_secret="whsec_conf",
                      telegram_webhook_secret="tg_webhook_secret", plugins={"captions": {"api_key": "plugin-key-1",
                                                                                        "model": "small"}})
    found = set(logs.secrets_of(s))
    assert {TG, "sk_test_configured", "whsec_conf", "tg_webhook_secret", "db%2Fpass", "db/pass", "redispass",
            "made-by-serve-join-link-key", "plugin-key-1"} <= found
    assert "small" not in found


def _env(tmp_path: Path, fake: FakeBotAPI, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACEBRIDGE_", "DISCORD_", "TELEGRAM_",
                                                                      "STRIPE_"))}
    env.update(SPACEBRIDGE_DATA_DIR=str(tmp_path / "data"), TELEGRAM_BOT_TOKEN=fake.token,
               SPACEBRIDGE_TELEGRAM_API_BASE=fake.base_url, **extra)
    return env


async def _serve_and_poll(tmp_path: Path, level: str, polls: int) -> tuple[str, FakeBotAPI]:
    """Run serve with the fake Bot API until the bot has long-polled ``polls`` times; its whole output."""
    fake = await FakeBotAPI().start()
    log_file = tmp_path / f"serve-{level}.log"
    first = ""
    try:
        env = _env(tmp_path, fake, SPACEBRIDGE_LOG_LEVEL=level, SPACEBRIDGE_LOG_FILE=str(log_file))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "spacebridge", "serve", "--port", "0", cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        drains: list[asyncio.Task[bytes]] = []
        try:
            first = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            assert "serving at" in first, first
            # keep reading both pipes: a DEBUG log fills a pipe's 64 KiB and serve would block writing
            drains = [asyncio.create_task(proc.stdout.read()), asyncio.create_task(proc.stderr.read())]
            mark = len(fake.calls)
            await fake.send_text(555, 555, "/start")
            await fake.reply_to(555, mark, timeout=30)  # sendMessage went out too (and was logged)
            await fake.wait_for(lambda c: sum(x.method == "getUpdates" for x in fake.calls[mark:]) >= polls,
                                timeout=60, after=mark)
        finally:
            proc.send_signal(signal.SIGINT)
            if drains:
                await asyncio.wait_for(proc.wait(), 30)
                out, err = await asyncio.wait_for(asyncio.gather(*drains), 30)
            else:
                out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await fake.stop()
    return first + out.decode() + err.decode() + log_file.read_text(), fake


async def test_serve_with_telegram_long_polling_logs_no_token(tmp_path: Path) -> None:
    text, fake = await _serve_and_poll(tmp_path, "DEBUG", polls=3)
    assert "getUpdates" in text and f"bot{logs.REDACTED}/getUpdates" in text  # the lines are there, redacted
    assert fake.token not in text and fake.token.split(":")[1] not in text


async def test_serve_at_info_leaves_out_per_request_lines(tmp_path: Path) -> None:
    text, fake = await _serve_and_poll(tmp_path, "INFO", polls=2)
    assert "HTTP Request" not in text and fake.token not in text


def test_uncaught_traceback_is_redacted_too() -> None:
    """A crash prints its traceback without logging; it is redacted the same way."""
    import subprocess

    code = ("from spacebridge import logs; logs.install(['configured-secret-value'])\n"
            f"raise RuntimeError('bad token {TG} and configured-secret-value')")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "RuntimeError: bad token" in p.stderr, p.stderr
    assert TG not in p.stderr and "configured-secret-value" not in p.stderr
