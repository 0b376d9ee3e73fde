"""A `spacebridge serve` SIGKILLed in the middle of a go-live broadcast, then started again: every
follower gets the alert, and the crash repeats at most one DM per job worker (not the claimed batch).

The DMs go to the fake Bot API (tests/support/telegram_fake.py) over real HTTP, which enforces
Telegram's flood limits; the test waits on what the fake recorded and on the job table, never on time.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from core.bus import InProcessBus
from core.clock import SystemClock
from core.model.accounts import Actor
from core.services import Core
from core.storage import jobs
from core.storage.engine import make_engine, make_sessionmaker
from tests.support.telegram_fake import FakeBotAPI, Limits

FOLLOWERS = 200  # one claimed batch (JobRunner's default batch_size): the old runner repeated all of it
WORKERS = 1
LEASE_S = 5.0  # the smallest lease serve accepts: the dead process's jobs come back quickly
FIRST_FAN = 10_000
ROOT = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any Spacebridge or platform setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACEBRIDGE_", "DISCORD_", "TELEGRAM_",
                                                                      "STRIPE_"))}
    env["SPACEBRIDGE_DATA_DIR"] = str(tmp_path / "data")
    return {**env, **extra}


async def _seed(url: str) -> str:
    """A host with FOLLOWERS Telegram followers goes live, which queues the go-live fan-out job."""
    engine = make_engine(url)
    core = Core(make_sessionmaker(engine), InProcessBus(), SystemClock())
    try:
        host_acc = await core.ensure_account("telegram", "1", "Crash Host")
        host = Actor(account_id=host_acc.id, platform="telegram", is_operator=True)

        async def fan(i: int) -> None:
            acc = await core.ensure_account("telegram", str(FIRST_FAN + i), f"Fan {i}")
            await core.follow(Actor(account_id=acc.id, platform="telegram"), host.account_id)

        for lo in range(0, FOLLOWERS, 25):
            await asyncio.gather(*(fan(i) for i in range(lo, min(FOLLOWERS, lo + 25))))
        space = await core.create_space(host, "Crash go-live")
        return space.id
    finally:
        await engine.dispose()


async def _unfinished(url: str, space_id: str) -> int:
    """Go-live jobs not yet finished (the fan-out and its deliveries)."""
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as s:
            st = await jobs.job_stats(s, group_key=f"{space_id}:notices")
        return st["pending"] + st["running"]
    finally:
        await engine.dispose()


async def _until(cond: Callable[[], bool | Awaitable[bool]], what: str, log: Path, timeout: float = 120.0) -> None:
    """Poll ``cond`` until it holds, with a generous deadline (the serve log is shown if it never does)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await _holds(cond):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} did not happen; serve log:\n{log.read_text()[-3000:]}")
        await asyncio.sleep(0.02)


async def _holds(cond: Callable[[], bool | Awaitable[bool]]) -> bool:
    value = cond()
    return await value if inspect.isawaitable(value) else bool(value)


async def test_sigkill_mid_broadcast_repeats_at_most_one_dm_per_worker(database_url: str, tmp_path: Path) -> None:
    space_id = await _seed(database_url)
    fake = await FakeBotAPI(limits=Limits()).start()
    env = _env(tmp_path, SPACEBRIDGE_DATABASE_URL=database_url, TELEGRAM_BOT_TOKEN=fake.token,
               SPACEBRIDGE_TELEGRAM_API_BASE=fake.base_url, SPACEBRIDGE_JOB_WORKERS=str(WORKERS),
               SPACEBRIDGE_JOB_LEASE_S=str(LEASE_S))
    log = tmp_path / "serve.log"

    def serve() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "spacebridge", "serve", "--port", "0"], cwd=ROOT, env=env,
                                stdout=log.open("ab"), stderr=subprocess.STDOUT)

    def alerts() -> Counter[int]:
        return Counter(int(c.params["chat_id"]) for c in fake.sent("sendMessage")
                       if "is live now" in str(c.params.get("text", "")))

    proc = serve()
    try:
        await _until(lambda: len(alerts()) >= FOLLOWERS // 2, "half the go-live DMs", log)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        before_restart = sum(alerts().values())
        assert before_restart < FOLLOWERS, "the broadcast finished before the kill: nothing was tested"

        proc = serve()
        await _until(lambda: len(alerts()) >= FOLLOWERS, "every follower's DM after the restart", log)
        # every go-live job finished: no straggling repeat can arrive after we count

        async def settled() -> bool:
            return await _unfinished(database_url, space_id) == 0

        await _until(settled, "every go-live job marked finished", log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        await fake.stop()

    per_chat = alerts()
    assert set(per_chat) == {FIRST_FAN + i for i in range(FOLLOWERS)}, "a follower got no go-live DM"
    repeated = {chat: n for chat, n in per_chat.items() if n > 1}
    assert sum(n - 1 for n in repeated.values()) <= WORKERS, f"DMs repeated by the crash: {repeated}"
    assert fake.rejected_429 == 0
