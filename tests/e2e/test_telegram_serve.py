"""`spacebridge serve` with TELEGRAM_BOT_TOKEN set runs the bot next to the web room; `doctor` asks
Telegram who the bot is; a token Telegram refuses stops serve with a clear message."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

from tests.e2e.test_cli import ROOT, _env
from tests.support.telegram_fake import FakeBotAPI


async def _run(tmp_path: Path, fake: FakeBotAPI, *args: str, token: str | None = None) -> asyncio.subprocess.Process:
    env = _env(tmp_path, TELEGRAM_BOT_TOKEN=token or fake.token, SPACEBRIDGE_TELEGRAM_API_BASE=fake.base_url)
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "spacebridge", *args, cwd=ROOT, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def test_serve_runs_the_bot_and_doctor_knows_it(tmp_path: Path) -> None:
    fake = await FakeBotAPI().start()
    try:
        proc = await _run(tmp_path, fake, "serve", "--port", "0")
        try:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            assert re.search(r"serving at http://127\.0\.0\.1:\d+", line) and "telegram" in line, line
            mark = len(fake.calls)
            await fake.send_text(555, 555, "/start")
            reply = await fake.reply_to(555, mark, timeout=20)
            assert "Welcome" in reply.params["text"]
        finally:
            proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(proc.wait(), 30)
        assert proc.returncode == 0

        doctor = await _run(tmp_path, fake, "doctor")
        out, _ = await asyncio.wait_for(doctor.communicate(), 60)
        assert "@spacebridge_bot" in out.decode()

        bad = await _run(tmp_path, fake, "serve", "--port", "0", token="7000001:wrong-token_abcdefghijklmnopqrst")
        out, err = await asyncio.wait_for(bad.communicate(), 60)
        assert bad.returncode == 2 and "Telegram refused TELEGRAM_BOT_TOKEN" in err.decode()
    finally:
        await fake.stop()
