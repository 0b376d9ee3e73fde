"""Go-live fan-out on Telegram: N followers get one DM each, at Telegram's rate, through its limits.

    python -m bench.telegram_broadcast --followers N [--kill-at F] [--database URL] --json

A real ``spacebridge serve`` process (the job worker and the Telegram adapter) sends the alerts to
the fake Bot API (``tests/support/telegram_fake.py``), which enforces Telegram's flood limits and
answers 429 when they are broken. With ``--kill-at 0.5`` the server is SIGKILLed once half the
followers have their DM, then started again: its leased jobs come back after the lease and the
count of duplicates shows how much a crash can repeat (at most one claimed batch).

Prints ``{"followers", "sent", "msgs_per_s", "rate_limited_429", "duplicates", "lost", ...}``;
``msgs_per_s`` is measured over the time messages were flowing (the crash gap excluded).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from core.bus import InProcessBus
from core.clock import SystemClock
from core.model.accounts import Actor
from core.services import Core
from core.storage import migrate
from core.storage.engine import make_engine, make_sessionmaker
from tests.support.telegram_fake import FakeBotAPI, Limits

ROOT = Path(__file__).resolve().parent.parent
LEASE_S = 15.0


async def seed(url: str, followers: int) -> str:
    engine = make_engine(url)
    bus = InProcessBus()
    core = Core(make_sessionmaker(engine), bus, SystemClock())
    host_acc = await core.ensure_account("telegram", "1", "Bench Host")
    host = Actor(account_id=host_acc.id, platform="telegram", is_operator=True)

    async def one(i: int) -> None:
        acc = await core.ensure_account("telegram", str(10_000 + i), f"Fan {i}")
        await core.follow(Actor(account_id=acc.id, platform="telegram"), host.account_id)

    for lo in range(0, followers, 50):
        await asyncio.gather(*(one(i) for i in range(lo, min(followers, lo + 50))))
    space = await core.create_space(host, "Bench go-live")  # live now: queues the go-live fan-out job
    await engine.dispose()
    return space.id


def serve(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "spacebridge", "serve", "--port", "0"], cwd=ROOT, env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def rate(times: list[float], gap_s: float = 2.0) -> float:
    """Messages per second while messages were flowing: pauses longer than ``gap_s`` are left out."""
    if len(times) < 2:
        return 0.0
    busy = sum(b - a for a, b in itertools.pairwise(times) if b - a <= gap_s)
    return (len(times) - 1) / busy if busy > 0 else 0.0


async def main(args: argparse.Namespace) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="sb-tg-bench-"))
    url = args.database or f"sqlite:///{tmp / 'bench.sqlite3'}"
    await asyncio.to_thread(migrate.upgrade, url)
    fake = await FakeBotAPI(limits=Limits()).start()
    space_id = await seed(url, args.followers)
    env = {**os.environ, "SPACEBRIDGE_DATABASE_URL": url, "SPACEBRIDGE_DATA_DIR": str(tmp),
           "TELEGRAM_BOT_TOKEN": fake.token, "SPACEBRIDGE_TELEGRAM_API_BASE": fake.base_url,
           "SPACEBRIDGE_JOB_WORKERS": "1", "SPACEBRIDGE_JOB_LEASE_S": str(LEASE_S), "SPACEBRIDGE_LOG_LEVEL": "WARNING"}
    log = tmp / "serve.log"

    def alerts() -> list[float]:
        return [c.at for c in fake.calls if c.method == "sendMessage" and c.status == 200
                and "is live now" in str(c.params.get("text", ""))]

    t0 = time.monotonic()
    proc = serve(env, log)
    killed_at = None
    restarts = 0
    deadline = t0 + args.followers / 25 + LEASE_S + 120
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            n = len({c.params["chat_id"] for c in fake.calls if c.method == "sendMessage" and c.status == 200
                     and "is live now" in str(c.params.get("text", ""))})
            if args.kill_at and killed_at is None and n >= args.kill_at * args.followers:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed_at = n
                proc = serve(env, log)
                restarts += 1
            if n >= args.followers:
                await asyncio.sleep(1.0)  # let any straggling duplicate arrive before counting
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        await fake.stop()
    times = sorted(alerts())
    per_chat = Counter(c.params["chat_id"] for c in fake.calls if c.method == "sendMessage" and c.status == 200
                       and "is live now" in str(c.params.get("text", "")))
    wanted = {10_000 + i for i in range(args.followers)}
    return {
        "followers": args.followers,
        "sent": sum(per_chat.values()),
        "msgs_per_s": round(rate(times), 2),
        "rate_limited_429": fake.rejected_429,
        "duplicates": sum(c - 1 for c in per_chat.values() if c > 1),
        "lost": len(wanted - set(per_chat)),
        "kill_at": args.kill_at,
        "killed_after_sent": killed_at,
        "elapsed_s": round((times[-1] - times[0]) if times else 0.0, 2),
        "lease_s": LEASE_S,
        "database": url.split(":", 1)[0],
        "space_id": space_id,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--followers", type=int, default=1000)
    ap.add_argument("--kill-at", type=float, default=0.0, help="SIGKILL the server at this fraction sent")
    ap.add_argument("--database", default="")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    out = asyncio.run(main(a))
    print(json.dumps(out) if a.json else json.dumps(out, indent=2))
