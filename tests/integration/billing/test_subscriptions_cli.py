"""``spacebridge billing tiers|subscribe|subscriptions|subscription|subscribers-only|report --creator``
run as a shell runs them, against the strict Stripe front over localstripe, with a webhook endpoint
that receives Stripe's signed events: what a creator and a buyer see, in words and in JSON."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from billing.ledger import Ledger
from billing.webhooks import StripeWebhooks
from core.bus import InProcessBus
from core.clock import SystemClock
from core.model.accounts import Account
from core.services import Core
from core.storage import migrate
from core.storage.engine import make_engine, make_sessionmaker
from tests.support.stripe_fake import LocalStripe, free_port
from tests.support.stripe_strict import StrictStripe

SECRET = "whsec_subs_cli"


@dataclass
class Shell:
    env: dict[str, str]
    fake: StrictStripe
    core: Core

    async def run(self, *args: str) -> tuple[int, str, str]:
        cli = str(Path(sys.executable).with_name("spacebridge"))
        proc = await asyncio.create_subprocess_exec(cli, *args, env=self.env, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert "Traceback" not in err.decode(), err.decode()
        return proc.returncode or 0, out.decode(), err.decode()

    async def json(self, *args: str) -> Any:
        rc, out, err = await self.run(*args, "--json")
        assert rc == 0, (out, err)
        return json.loads(out)


@pytest.fixture
async def shell(tmp_path: Path) -> AsyncIterator[Shell]:
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    await asyncio.to_thread(migrate.upgrade, url)
    engine = make_engine(url)
    bus = InProcessBus()
    await bus.start()
    core = Core(make_sessionmaker(engine), bus, SystemClock())
    hooks = web.AppRunner(web.Application())
    hooks.app.router.add_post("/webhooks/stripe", StripeWebhooks(Ledger(core, fee_bps=1000), SECRET).handle)
    await hooks.setup()
    hport = free_port()
    await web.TCPSite(hooks, "127.0.0.1", hport).start()
    ls = LocalStripe()
    await ls.start()
    fake = StrictStripe(ls.url, webhook_url=f"http://127.0.0.1:{hport}/webhooks/stripe", webhook_secret=SECRET)
    front = web.AppRunner(fake.app())
    await front.setup()
    fport = free_port()
    await web.TCPSite(front, "127.0.0.1", fport).start()
    fake.base = f"http://127.0.0.1:{fport}"
    async with core.uow() as uow:
        for who in ("creator", "fan"):
            await uow.accounts.add(Account(id=who, display_name=who.title(), created_at=core.now()))
        await uow.commit()
    env = {**os.environ, "SPACEBRIDGE_DATABASE_URL": url, "SPACEBRIDGE_DATA_DIR": str(tmp_path / "d"),
           "STRIPE_API_KEY": "sk_test_cli", "STRIPE_WEBHOOK_SECRET": SECRET, "SPACEBRIDGE_STRIPE_API_BASE": fake.base,
           "SPACEBRIDGE_PLATFORM_FEE_BPS": "1000"}
    yield Shell(env, fake, core)
    await front.cleanup()
    ls.stop()
    await hooks.cleanup()
    await bus.close()
    await engine.dispose()
    assert fake.refused == [], "a request Stripe would refuse"


async def test_a_creator_sells_tiers_and_a_fan_subscribes_from_the_shell(shell: Shell) -> None:
    basic = await shell.json("billing", "tiers", "create", "--as", "creator", "--name", "Basic", "--price", "500",
                             "--perks", "Members-only Spaces")
    assert basic["stripe_price"].startswith("plan_") and basic["currency"] == "EUR"
    rc, out, _ = await shell.run("billing", "tiers", "create", "--as", "creator", "--name", "Gold", "--price", "1500")
    assert rc == 0 and out.endswith("Gold  15.00 EUR/month\n"), out
    listed = await shell.json("billing", "tiers", "list", "--creator", "creator")
    assert [t["name"] for t in listed] == ["Basic", "Gold"]
    rc, out, _ = await shell.run("billing", "tiers", "create", "--as", "creator", "--name", "Dollar", "--price", "9",
                                 "--currency", "usd", "--json")
    assert rc != 0 and json.loads(out)["error"]["code"] == "tier.currency_mismatch", out
    rc, out, _ = await shell.run("billing", "tiers", "archive", basic["id"], "--as", "fan")
    assert rc != 0 and "Only the tier's creator can change it." in out + _

    space = await shell.json("space", "schedule", "Members AMA", "--as", "creator", "--at", "+2h",
                             "--override")
    only = await shell.json("billing", "subscribers-only", space["id"], "--tier", basic["id"], "--as", "creator")
    assert only["subscribers"] == {"tier_id": basic["id"], "early_minutes": 0}
    rc, out, _ = await shell.run("billing", "subscribers-only", space["id"], "--tier", basic["id"], "--as", "fan")
    assert rc != 0, out

    gold = listed[1]
    rc, out, _ = await shell.run("space", "schedule", "Not yours", "--as", "fan", "--at", "+2h", "--override",
                                 "--tier", gold["id"], "--json")
    assert rc != 0 and json.loads(out)["error"]["code"] == "tier.not_hosts", out
    assert await shell.json("space", "list", "--host", "fan") == []  # refused before the Space existed
    early = await shell.json("space", "schedule", "Early birds", "--as", "creator", "--at", "+3h", "--override",
                             "--tier", gold["id"], "--early-access", "10")
    assert early["subscribers"] == {"tier_id": gold["id"], "early_minutes": 10}

    link = await shell.json("billing", "subscribe", basic["id"], "--as", "fan")
    assert link["url"].startswith(shell.fake.base + "/pay/cs_")
    session = shell.fake.sessions[link["session_id"]]
    assert session["_subscription_data"]["metadata"] == {"account_id": "fan", "tier_id": basic["id"],
                                                         "creator_id": "creator"}
    await shell.fake.subs.complete(link["session_id"])
    deadline = time.monotonic() + 20
    while (subs := await shell.json("billing", "subscriptions", "--as", "fan")) == [] or subs[0]["status"] != "active":
        assert time.monotonic() < deadline, subs
        await asyncio.sleep(0.1)
    sub = subs[0]
    assert sub["tier_id"] == basic["id"] and sub["provider"] == "stripe"
    mine = await shell.json("billing", "subscriptions", "--as", "creator", "--subscribers")
    assert [s["account_id"] for s in mine] == ["fan"]

    report = await shell.json("billing", "report", "--creator", "creator")
    assert (report["active"], report["mrr_minor"], report["gross_minor"], report["fees_minor"]) == (1, 500, 500, 50)
    assert [(t["name"], t["active"]) for t in report["tiers"]] == [("Basic", 1), ("Gold", 0)]
    rc, out, _ = await shell.run("billing", "report", "--creator", "creator")
    assert "MRR 5.00 EUR" in out and "Basic: 1 subscriber(s) at 5.00 EUR" in out, out

    await shell.json("billing", "subscription", "cancel", sub["id"], "--as", "fan")
    deadline = time.monotonic() + 20
    while (await shell.json("billing", "subscriptions", "--as", "fan"))[0]["status"] != "canceled":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    report = await shell.json("billing", "report", "--creator", "creator")
    assert (report["active"], report["mrr_minor"]) == (1, 0)  # paid until the period ends, renews no more
    rc, out, _ = await shell.run("billing", "subscription", "cancel", sub["id"], "--as", "creator")
    assert rc != 0 and "no subscription" in out + _

    async def status_becomes(want: str, tier: str) -> None:
        deadline = time.monotonic() + 20
        while ((now := (await shell.json("billing", "subscriptions", "--as", "fan"))[0])["status"], now["tier_id"]) \
                != (want, tier):
            assert time.monotonic() < deadline, now
            await asyncio.sleep(0.1)

    await shell.json("billing", "subscription", "resume", sub["id"], "--as", "fan")
    await status_becomes("active", basic["id"])
    rc, out, _ = await shell.run("billing", "subscription", "change", sub["id"], "--tier", gold["id"], "--as", "fan")
    assert rc == 0 and out == f"change of {sub['id']} sent to Stripe\n", out
    await status_becomes("active", gold["id"])
    assert shell.fake.subs.proration[-1][1] == "always_invoice"
    rc, out, _ = await shell.run("billing", "subscription", "refund", sub["id"], "--as", "fan")
    assert rc != 0 and "no subscription" in out + _  # only the creator refunds
    await shell.json("billing", "subscription", "refund", sub["id"], "--as", "creator")
    await status_becomes("ended", gold["id"])
    report = await shell.json("billing", "report", "--creator", "creator")
    assert (report["active"], report["churned_30d"], report["churn_rate"]) == (0, 1, 1.0)
    assert report["refunded_minor"] > 0 and report["gross_minor"] > 500  # the upgrade's proration was charged
