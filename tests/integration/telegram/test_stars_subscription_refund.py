"""A creator refunds a Telegram Stars subscription's latest period from the shell, as they refund a
Stripe one: ``billing subscription refund`` ends it at once (the subscriber's join link is refused),
the creator's report counts the Stars as refunded, and the bot's process stops the renewal
(editUserStarSubscription) and gives that period's charge back (refundStarPayment) as a durable job.
A second refund, a non-creator's and a tier change of a Stars subscription are refused in words."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from billing.subscription_report import creator_report
from core.model.subscription import SubscriptionStatus
from tests.integration.telegram.conftest import FAN1, HOST, TG
from tests.integration.telegram.test_stars_subscriptions import DAY, room_answer, stars_tier


async def cli(tmp_path: Path, *args: str) -> tuple[int, str]:
    """``spacebridge ARGS`` as a shell runs it: on the bot's database, without Stripe or the bot."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACEBRIDGE_", "STRIPE_", "TELEGRAM_"))}
    env.update(SPACEBRIDGE_DATABASE_URL=f"sqlite:///{tmp_path / 'tg.sqlite3'}",
               SPACEBRIDGE_DATA_DIR=str(tmp_path / "cli"), SPACEBRIDGE_COMMAND_SERVER="off")
    proc = await asyncio.create_subprocess_exec(str(Path(sys.executable).with_name("spacebridge")), *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert "Traceback" not in err.decode(), err.decode()
    return proc.returncode or 0, out.decode() + err.decode()


async def test_the_creator_refunds_a_stars_period_through_the_bot(tg: TG, tmp_path: Path) -> None:
    tier, space_id = await stars_tier(tg)
    host, fan = (await tg.actor(HOST)).account_id, (await tg.actor(FAN1)).account_id
    gold = await tg.core.memberships.create_tier(await tg.actor(HOST), "Gold", 1500, "eur")
    await tg.say(FAN1, FAN1, "/start")
    mark = len(tg.fake.calls)
    await tg.fake.send_text(FAN1, FAN1, f"/subscribe {tier.id}")
    payload = (await tg.fake.wait_for(lambda c: c.method == "createInvoiceLink", after=mark)).params["payload"]
    await tg.fake.reply_to(FAN1, mark)
    now = int(tg.clock.now().timestamp())
    for charge, first, at in (("stxFIRST", None, now), ("stxRENEW", "stxFIRST", now + 30 * DAY)):
        mark = len(tg.fake.calls)
        await tg.fake.subscription_paid(FAN1, payload, 300, charge, at + 30 * DAY, first_charge=first, date=at)
        await tg.fake.reply_to(FAN1, mark)
    tg.clock.advance(days=31)
    [sub] = await tg.core.memberships.subscriptions_of(fan)
    assert "Members AMA" in await room_answer(tg, FAN1, space_id)

    # a tier change: Telegram cannot reprice a Star subscription, so it is refused with what to do
    rc, out = await cli(tmp_path, "billing", "subscription", "change", sub.id, "--tier", gold.id, "--as", fan)
    assert rc != 0 and "cannot change tier" in out and f"/unsubscribe {sub.id}" in out, out
    # only the creator refunds: the subscriber (or anyone else) is told there is no such subscription
    rc, out = await cli(tmp_path, "billing", "subscription", "refund", sub.id, "--as", fan)
    assert rc != 0 and f"no subscription {sub.id}" in out, out
    assert (await creator_report(tg.core, host)).stars_refunded == 0

    rc, out = await cli(tmp_path, "billing", "subscription", "refund", sub.id, "--as", host)
    assert rc == 0 and out == f"refund of {sub.id}: ended now; the Stars refund is queued for the Telegram bot\n"
    [sub] = await tg.core.memberships.subscriptions_of(fan)
    assert sub.status == SubscriptionStatus.ENDED
    assert "subscribe to join" in await room_answer(tg, FAN1, space_id)  # access is gone at once
    report = await creator_report(tg.core, host)
    assert (report.stars_gross, report.stars_refunded, report.active) == (600, 300, 0)
    rc, out = await cli(tmp_path, "billing", "report", "--creator", host)
    assert "refunded 300 XTR" in out, out

    # the bot's process runs the queued job: renewal stopped (first charge), the latest charge refunded.
    # The CLI queued it on the system clock; the bot's clock is the test's, so bring that up to it
    tg.clock.advance(seconds=max(0.0, (datetime.now(UTC) - tg.clock.now()).total_seconds()) + 1)
    await tg.jobs()
    [edit] = tg.fake.sent("editUserStarSubscription")
    assert (edit.params["user_id"], edit.params["telegram_payment_charge_id"], edit.params["is_canceled"]) == (
        FAN1, "stxFIRST", True)
    [refund] = tg.fake.sent("refundStarPayment")
    assert (refund.params["user_id"], refund.params["telegram_payment_charge_id"]) == (FAN1, "stxRENEW")
    assert tg.fake.charges["stxRENEW"]["refunded"] and not tg.fake.charges["stxFIRST"]["refunded"]

    # a second refund is refused and queues nothing
    rc, out = await cli(tmp_path, "billing", "subscription", "refund", sub.id, "--as", host, "--json")
    assert rc != 0 and "already refunded" in out, out
    await tg.jobs()
    assert len(tg.fake.sent("refundStarPayment")) == 1 and len(tg.fake.sent("editUserStarSubscription")) == 1
    assert (await creator_report(tg.core, host)).stars_refunded == 300
    assert json.loads((await cli(tmp_path, "billing", "subscriptions", "--as", fan, "--json"))[1])[0][
        "status"] == "ended"
