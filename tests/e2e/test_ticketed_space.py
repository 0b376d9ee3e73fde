"""A ticketed Space end to end: the CLI sells it out, localstripe takes the money and tells our
running ``serve`` by signed webhook, only holders get in, and a cancel refunds everyone."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.netguard.plugin import ICE_ALLOWED
from tests.support.stripe_fake import FakeStripe, LocalStripe, free_port

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_e2e"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[dict[str, str], LocalStripe]]:
    ls = LocalStripe()
    asyncio.run(ls.start())
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACEBRIDGE_", "STRIPE_"))
           or k == "SPACEBRIDGE_LOG_FILE"}  # the run checks every process's log for secrets (support/logcheck)
    env.update(SPACEBRIDGE_DATA_DIR=str(tmp_path / "data"), SPACEBRIDGE_ICE_ALLOWED_NETWORKS=ICE_ALLOWED,
               STRIPE_API_KEY="sk_test_e2e",
               STRIPE_WEBHOOK_SECRET=SECRET, SPACEBRIDGE_STRIPE_API_BASE=ls.url, SPACEBRIDGE_PORT=str(port))
    serve = subprocess.Popen([sys.executable, "-m", "spacebridge", "serve"], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert serve.stdout is not None
    line = serve.stdout.readline()
    assert re.search(r"serving at http://127\.0\.0\.1:\d+", line), line
    asyncio.run(ls.send_webhooks_to(f"http://127.0.0.1:{port}/webhooks/stripe", SECRET))
    try:
        yield env, ls
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(timeout=20)
        ls.stop()


def test_sell_out_attend_cancel_refund(stack: tuple[dict[str, str], LocalStripe]) -> None:
    env, ls = stack

    def sb(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([sys.executable, "-m", "spacebridge", *args], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=120)
        assert (p.returncode == 0) == ok, (args, p.stdout, p.stderr)
        return p

    host = sb("account", "create", "Creator").stdout.strip()
    space = json.loads(sb("space", "schedule", "Masterclass", "--as", host, "--override", "--at", "+2h",
                          "--json").stdout)["id"]
    sb("billing", "ticketing", space, "--price", "2500", "--currency", "eur", "--capacity", "2")
    fans = [sb("account", "create", f"Fan {i}").stdout.strip() for i in range(3)]
    payer = FakeStripe(localstripe=ls.url)
    bought = []
    for fan in fans[:2]:
        p = json.loads(sb("billing", "buy", space, "--as", fan, "--json").stdout)
        assert p["provider_ref"].startswith("pi_") and p["client_secret"]
        assert asyncio.run(payer.pay_intent(p["provider_ref"]))["status"] == "succeeded"
        bought.append(p)
    assert "Sold out: all 2 seats are taken." in sb("billing", "buy", space, "--as", fans[2], ok=False).stderr
    deadline = time.monotonic() + 20
    report: dict[str, int] = {}
    while time.monotonic() < deadline:
        report = json.loads(sb("billing", "report", space, "--json").stdout)
        if report["sold"] == 2:
            break
        time.sleep(0.5)
    assert (report["sold"], report["gross_minor"], report["fees_minor"]) == (2, 5000, 250)
    sb("space", "cancel", space)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        report = json.loads(sb("billing", "report", space, "--json").stdout)
        if report["refunded"] == 2:
            break
        time.sleep(0.5)
    assert (report["refunded"], report["net_minor"]) == (2, 0), report
