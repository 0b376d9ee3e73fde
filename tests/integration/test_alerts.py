"""Reminders, go-live alerts and notices as followers receive them, through the durable job queue."""

from __future__ import annotations

from datetime import timedelta

from core.clock import FrozenClock
from core.model.accounts import Actor
from core.notifications import GRACE, FanoutHandler, TrackingNotifier
from core.scheduler import JobRunner, make_deliver_handlers
from core.services import Core
from core.storage import jobs
from tests.support.fakes import RecordingNotifier


async def setup(core: Core, n_followers: int = 5) -> tuple[Actor, list[Actor], RecordingNotifier, JobRunner]:
    host_acc = await core.ensure_account("telegram", "host", "Host")
    host = Actor(account_id=host_acc.id, platform="telegram", is_community_admin=True)
    fans = []
    for i in range(n_followers):
        a = await core.ensure_account("telegram", f"fan{i}", f"Fan {i}")
        fans.append(Actor(account_id=a.id, platform="telegram"))
        await core.follow(fans[-1], host.account_id)
    tg = RecordingNotifier("telegram")
    notifiers = {"telegram": TrackingNotifier(tg, core)}
    runner = JobRunner(core.sessionmaker, {"space.fanout": FanoutHandler(core, notifiers, page=2),
                                           **make_deliver_handlers(notifiers)},
                       core.clock, worker_id="t", grace=GRACE)
    return host, fans, tg, runner


async def test_schedule_remind_go_live(core: Core, clock: FrozenClock) -> None:
    host, fans, tg, runner = await setup(core)
    start = clock.now() + timedelta(hours=2)
    space = await core.create_space(host, "Weekly AMA", start_at=start)
    await core.set_reminder(fans[0], space.id)
    await core.set_reminder(fans[1], space.id)
    await runner.run_until_idle()
    assert tg.sent == []
    clock.set(start - timedelta(minutes=30))
    await runner.run_until_idle()
    assert tg.to("space.host_reminder") == ["host"]
    clock.set(start - timedelta(minutes=10))
    await runner.run_until_idle()
    assert tg.to("space.reminder") == ["fan0", "fan1"]
    clock.set(start)
    await runner.run_until_idle()
    assert tg.to("space.reminder") == ["fan0", "fan0", "fan1", "fan1"]
    await core.start_space(host, space.id)
    await runner.run_until_idle()
    assert tg.to("space.live") == [f"fan{i}" for i in range(5)]  # followers and subscribers, once each
    live = next(d for d in tg.sent if d.template == "space.live")
    assert live.data["title"] == "Weekly AMA" and live.data["host_name"] == "Host"
    await runner.run_until_idle()
    assert len(tg.sent) == 1 + 4 + 5, "a delivery was repeated"


async def test_reschedule_moves_reminders_and_tells_subscribers(core: Core, clock: FrozenClock) -> None:
    host, fans, tg, runner = await setup(core, 2)
    first = clock.now() + timedelta(hours=1)
    space = await core.create_space(host, "Moved", start_at=first)
    await core.set_reminder(fans[0], space.id)
    second = first + timedelta(days=1)
    await core.reschedule_space(host, space.id, second)
    await runner.run_until_idle()
    assert tg.to("space.rescheduled") == ["fan0"]
    clock.set(first)
    await runner.run_until_idle()
    assert tg.to("space.reminder") == [], "a reminder fired at the old time"
    clock.set(second - timedelta(minutes=10))
    await runner.run_until_idle()
    assert tg.to("space.reminder") == ["fan0"]
    clock.set(second)
    await runner.run_until_idle()
    assert tg.to("space.reminder") == ["fan0", "fan0"]


async def test_cancel_notifies_and_stops_reminders(core: Core, clock: FrozenClock) -> None:
    host, fans, tg, runner = await setup(core, 2)
    start = clock.now() + timedelta(hours=1)
    space = await core.create_space(host, "Cancelled", start_at=start)
    await core.set_reminder(fans[1], space.id)
    await core.cancel_space(host, space.id)
    await runner.run_until_idle()
    clock.set(start)
    await runner.run_until_idle()
    assert tg.to("space.cancelled") == ["fan1"] and tg.to("space.reminder") == []
    async with core.uow() as uow:
        st = await jobs.job_stats(uow.session, group_key=space.id)
    assert st["cancelled"] >= 2 and st["pending"] == 0


async def test_blocked_bot_marks_unreachable_and_retries_429(core: Core, clock: FrozenClock) -> None:
    host, fans, tg, runner = await setup(core, 3)
    tg.blocked.add("fan1")
    tg.flaky["fan2"] = 1
    space = await core.create_space(host, "Live now")
    await runner.run_until_idle()
    assert tg.to("space.live") == ["fan0"]
    clock.advance(seconds=6)
    await runner.run_until_idle()
    assert tg.to("space.live") == ["fan0", "fan2"]
    assert [i.reachable for i in await core.identities(fans[1].account_id)] == [False]
    await core.end_space(host, space.id)
    second = await core.create_space(host, "Again")
    await runner.run_until_idle()
    assert "fan1" not in tg.to("space.live"), "an unreachable user was messaged again"
    assert second.id
