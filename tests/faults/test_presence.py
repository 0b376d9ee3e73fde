"""Presence is per person: a dropped connection is a disconnect with a grace period, never a leave.

On SQLite and PostgreSQL; time is the injected clock, expiry the real durable job runner."""

from __future__ import annotations

from datetime import timedelta

from core import events as ev
from core.clock import FrozenClock
from core.model.accounts import Actor
from core.presence import EXPIRE_JOB, PresenceKeeper, make_expire_handler
from core.scheduler import JobRunner
from core.services import Core


async def _events(core: Core, kind: type[ev.Event]) -> list[ev.Event]:
    """What the room was told so far (the bus hands events over asynchronously: wait for it)."""
    await core.bus.drain()  # type: ignore[attr-defined]
    return [e for e in core.recorder.events if isinstance(e, kind)]  # type: ignore[attr-defined]


async def _expire_due(core: Core) -> int:
    runner = JobRunner(core.sessionmaker, {EXPIRE_JOB: make_expire_handler(core)}, core.clock, worker_id="t",
                       default_grace=timedelta(days=1))
    return await runner.run_until_idle()


async def _live(core: Core, clock: FrozenClock) -> tuple[Actor, Actor, str]:
    host = Actor(account_id=(await core.ensure_account("web", "host", "Host")).id, is_community_admin=True)
    fan = Actor(account_id=(await core.ensure_account("web", "fan", "Fan")).id)
    space = await core.create_space(host, "Blips happen")
    return host, fan, space.id


async def test_a_hosts_blip_keeps_the_space_and_the_room_hears_away_then_back(core: Core, clock: FrozenClock) -> None:
    host, fan, sid = await _live(core, clock)
    await core.join(host, sid, connection="h1")
    await core.join(fan, sid, connection="f1")
    await core.disconnect(sid, host.account_id, "h1")
    away = await _events(core, ev.ParticipantAway)
    assert [(e.account_id, e.role) for e in away] == [(host.account_id, "host")]  # type: ignore[attr-defined]
    assert (await core.view(sid)).space.state.value == "live"
    assert (await core.view(sid)).listener_count == 1  # no ghost: the host is not counted while away
    clock.advance(seconds=30)
    await core.join(host, sid, connection="h2")
    assert [e.account_id for e in await _events(core, ev.ParticipantBack)] == [host.account_id]  # type: ignore[attr-defined]
    clock.advance(seconds=core.host_grace.total_seconds() + 1)
    await _expire_due(core)  # the old grace job finds the host back and changes nothing
    view = await core.view(sid)
    assert view.space.state.value == "live" and view.space.host_id == host.account_id


async def test_only_the_last_connection_counts(core: Core, clock: FrozenClock) -> None:
    host, _, sid = await _live(core, clock)
    await core.join(host, sid, connection="tab1")
    await core.join(host, sid, connection="tab2")  # a second tab, or the reloaded page racing the old socket
    await core.disconnect(sid, host.account_id, "tab1")
    assert not await _events(core, ev.ParticipantAway) and not await _events(core, ev.ParticipantLeft)
    await core.disconnect(sid, host.account_id, "tab2")
    assert len(await _events(core, ev.ParticipantAway)) == 1


async def test_grace_expiry_ends_the_space_with_its_own_reason(core: Core, clock: FrozenClock) -> None:
    host, _fan, sid = await _live(core, clock)
    await core.join(host, sid, connection="h1")
    await core.disconnect(sid, host.account_id, "h1")
    assert await _expire_due(core) == 0  # not due yet
    clock.advance(seconds=core.host_grace.total_seconds() + 1)
    assert await _expire_due(core) == 1
    ended = await _events(core, ev.SpaceEnded)
    assert [e.reason for e in ended] == ["host_disconnected"]  # type: ignore[attr-defined]


async def test_a_speaker_keeps_the_seat_for_the_speaker_grace(core: Core, clock: FrozenClock) -> None:
    host, fan, sid = await _live(core, clock)
    await core.join(host, sid, connection="h1")
    await core.join(fan, sid, connection="f1")
    await core.promote(host, sid, fan.account_id, "speaker")
    await core.disconnect(sid, fan.account_id, "f1")
    assert (await core.view(sid)).space.speakers == [fan.account_id]
    clock.advance(seconds=core.speaker_grace.total_seconds() + 1)
    await _expire_due(core)
    view = await core.view(sid)
    assert view.space.speakers == [] and view.space.state.value == "live"


async def test_an_away_host_hands_over_to_a_connected_cohost(core: Core, clock: FrozenClock) -> None:
    host, fan, sid = await _live(core, clock)
    co_gone = Actor(account_id=(await core.ensure_account("web", "c1", "C1")).id)
    await core.join(host, sid, connection="h1")
    for a, c in ((co_gone, "c1"), (fan, "f1")):
        await core.join(a, sid, connection=c)
        await core.promote(host, sid, a.account_id, "cohost")
    await core.disconnect(sid, co_gone.account_id, "c1")
    await core.disconnect(sid, host.account_id, "h1")
    clock.advance(seconds=core.host_grace.total_seconds() + 1)
    await _expire_due(core)
    view = await core.view(sid)
    assert view.space.state.value == "live" and view.space.host_id == fan.account_id


async def test_explicit_leave_ends_at_once(core: Core, clock: FrozenClock) -> None:
    host, _, sid = await _live(core, clock)
    await core.join(host, sid, connection="h1")
    await core.leave(host, sid)
    assert [e.reason for e in await _events(core, ev.SpaceEnded)] == ["host_left"]  # type: ignore[attr-defined]


async def test_connections_of_a_dead_process_are_swept_and_leave_no_ghosts(core: Core, clock: FrozenClock) -> None:
    host, _fan, sid = await _live(core, clock)
    listeners = [Actor(account_id=(await core.ensure_account("web", f"l{i}", f"L{i}")).id) for i in range(3)]
    await core.join(host, sid, connection="h1")
    for i, a in enumerate(listeners):
        await core.join(a, sid, connection=f"l{i}")
    assert (await core.view(sid)).listener_count == 4
    # that process was SIGKILLed: nobody refreshes its rows; a new process (another Core) sweeps them
    survivor = Core(core.sessionmaker, core.bus, clock, presence_stale_s=core.presence_stale.total_seconds())
    keeper = PresenceKeeper(survivor)
    assert await keeper.sweep() == 0  # fresh rows are left alone
    clock.advance(seconds=core.presence_stale.total_seconds() + 1)
    await core.join(listeners[0], sid, connection="l0-again")  # one listener's page came back in time
    assert await keeper.sweep() == 4
    view = await core.view(sid)
    assert view.listener_count == 1 and view.space.state.value == "live"
    assert [e.account_id for e in await _events(core, ev.ParticipantAway)] == [host.account_id]  # type: ignore[attr-defined]


async def test_a_process_heartbeat_keeps_its_connections(core: Core, clock: FrozenClock) -> None:
    host, _, sid = await _live(core, clock)
    await core.join(host, sid, connection="h1")
    keeper = PresenceKeeper(core)
    for _ in range(3):
        clock.advance(seconds=core.presence_stale.total_seconds() * 0.6)
        assert await keeper.beat() == 1
        assert await keeper.sweep() == 0
    assert not await _events(core, ev.ParticipantAway)
