"""``spacebridge billing tiers stars`` and the Stars lines of ``billing report --creator``, run as a
shell runs them: a creator prices a tier in Stars (bad input and other people refused, nothing
changed), and the Stars a subscriber paid through Telegram show as what the instance owes them."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from billing.stars_subscriptions import StarsSubscriptions
from core.bus import InProcessBus
from core.clock import SystemClock
from core.model.accounts import Account, Actor
from core.services import Core
from core.storage import migrate
from core.storage.engine import make_engine, make_sessionmaker


@dataclass
class Shell:
    env: dict[str, str]
    core: Core

    async def run(self, *args: str) -> tuple[int, str]:
        cli = str(Path(sys.executable).with_name("spacebridge"))
        proc = await asyncio.create_subprocess_exec(cli, *args, env=self.env, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert "Traceback" not in err.decode(), err.decode()
        return proc.returncode or 0, out.decode() + err.decode()

    async def json(self, *args: str) -> Any:
        rc, out = await self.run(*args, "--json")
        assert rc == 0, out
        return json.loads(out)


@pytest.fixture
async def shell(tmp_path: Path) -> AsyncIterator[Shell]:
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    await asyncio.to_thread(migrate.upgrade, url)
    engine = make_engine(url)
    bus = InProcessBus()
    await bus.start()
    core = Core(make_sessionmaker(engine), bus, SystemClock())
    async with core.uow() as uow:
        for who in ("creator", "fan"):
            await uow.accounts.add(Account(id=who, display_name=who.title(), created_at=core.now()))
        await uow.commit()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "SPACEBRIDGE_"))}
    env.update({"SPACEBRIDGE_DATABASE_URL": url, "SPACEBRIDGE_DATA_DIR": str(tmp_path / "d"),
                "SPACEBRIDGE_PLATFORM_FEE_BPS": "1000"})
    yield Shell(env, core)
    await bus.close()
    await engine.dispose()


async def test_a_creator_prices_a_tier_in_stars_and_sees_what_telegram_subscribers_paid(shell: Shell) -> None:
    tier = await shell.json("billing", "tiers", "create", "--as", "creator", "--name", "Inner", "--price", "500")
    assert tier["stars"] is None
    for args, says in ((["--stars", "0"], "1 to 10000"), (["--stars", "10001"], "1 to 10000"),
                       ([], "give --stars N or --off"), (["--stars", "5", "--off"], "give --stars N or --off")):
        rc, out = await shell.run("billing", "tiers", "stars", tier["id"], "--as", "creator", *args)
        assert rc != 0 and says in out, out
    rc, out = await shell.run("billing", "tiers", "stars", tier["id"], "--as", "fan", "--stars", "300")
    assert rc != 0 and "Only the tier's creator can change it." in out
    assert (await shell.json("billing", "tiers", "list", "--creator", "creator"))[0]["stars"] is None

    rc, out = await shell.run("billing", "tiers", "stars", tier["id"], "--as", "creator", "--stars", "300")
    assert rc == 0 and out.strip() == f"{tier['id']}  Inner  300 XTR/month on Telegram", out
    rc, out = await shell.run("billing", "tiers", "list", "--creator", "creator")
    assert "Inner  5.00 EUR/month  or 300 XTR" in out

    # two periods paid in Stars on Telegram (as the bot applies them), 10% platform fee
    offer = await StarsSubscriptions(shell.core).offer(Actor(account_id="fan"), tier["id"])
    stars = StarsSubscriptions(shell.core, fee_bps=1000)
    now = shell.core.now()
    for n in (1, 2):
        await stars.paid("fan", 4242, offer.payload, f"stx{n}", 300, "XTR", now + timedelta(days=30 * (n - 1)),
                         now + timedelta(days=30 * n))
    report = await shell.json("billing", "report", "--creator", "creator")
    assert (report["stars_gross"], report["stars_fees"], report["stars_net"]) == (600, 60, 540)
    assert report["gross_minor"] == 0 and report["active"] == 1
    rc, out = await shell.run("billing", "report", "--creator", "creator")
    assert "Stars (Telegram): gross 600 XTR  refunded 0 XTR  fees 60 XTR  net 540 XTR (owed to the creator)" in out

    rc, out = await shell.run("billing", "tiers", "stars", tier["id"], "--as", "creator", "--off")
    assert rc == 0 and "not sold in Stars" in out
