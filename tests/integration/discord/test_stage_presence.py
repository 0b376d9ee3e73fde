"""A Discord member's voice on the Stage is their connection to the Space: leaving the Stage (or a client
that drops out of it) is a disconnect with a grace period, never a leave; a host who comes back in time
still hosts. Against the fake Discord (real gateway WebSocket and HTTP), with the durable job runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from core import events as ev
from core.bus import EventBus
from core.storage.tables import ConnectionRow
from spacebridge.app import stop
from tests.integration.discord.conftest import DC, make_dc
from tests.integration.discord.test_flows import live, setup_guild, until


class Seen:
    """What the core told every surface, in order."""

    def __init__(self, bus: EventBus) -> None:
        self.events: list[ev.Event] = []
        bus.subscribe(self)

    async def __call__(self, event: ev.Event) -> None:
        self.events.append(event)

    def of(self, kind: type[ev.Event], account_id: str | None = None) -> list[ev.Event]:
        return [e for e in self.events if isinstance(e, kind)
                and (account_id is None or getattr(e, "account_id", None) == account_id)]


async def test_a_discord_host_who_drops_off_the_stage_keeps_the_space_until_the_grace_runs_out(dc: DC) -> None:
    await setup_guild(dc)
    space_id = await live(dc)
    host = await dc.actor(dc.host)
    seen = Seen(dc.core.bus)
    await dc.fake.join_voice(dc.guild, dc.host, dc.stage)
    await until(lambda: _connections(dc, space_id, host.account_id, 1))
    await dc.fake.leave_voice(dc.guild, dc.host)  # the Discord client lost its network
    await until(lambda: _async(seen.of(ev.ParticipantAway, host.account_id)))
    view = await dc.core.view(space_id)
    assert view.space.state.value == "live" and view.space.host_id == host.account_id
    assert not seen.of(ev.SpaceEnded)

    await dc.fake.join_voice(dc.guild, dc.host, dc.stage)  # back within the grace period
    back = await until(lambda: _async(seen.of(ev.ParticipantBack, host.account_id)))
    assert back[0].role == "host"
    dc.clock.advance(seconds=dc.core.host_grace.total_seconds() + 1)
    await dc.jobs()  # the first grace job finds the host back and changes nothing
    assert (await dc.core.view(space_id)).space.state.value == "live"

    await dc.fake.leave_voice(dc.guild, dc.host)
    await until(lambda: _async(len(seen.of(ev.ParticipantAway, host.account_id)) == 2))
    dc.clock.advance(seconds=dc.core.host_grace.total_seconds() + 1)
    await dc.jobs()
    ended = await until(lambda: _async(seen.of(ev.SpaceEnded)))
    assert ended[0].reason == "host_disconnected"
    await dc.fake.wait_for(lambda c: c.method == "DELETE" and c.path == f"/stage-instances/{dc.stage}")


async def test_members_already_on_the_stage_count_when_the_space_goes_live(dc: DC) -> None:
    await setup_guild(dc)
    await dc.fake.join_voice(dc.guild, dc.fan, dc.stage)  # waiting on the Stage before the Space starts
    fan = await dc.actor(dc.fan)
    space_id = await live(dc)
    await until(lambda: _connections(dc, space_id, fan.account_id, 1))
    assert (await dc.core.view(space_id)).listener_count == 2
    await dc.fake.leave_voice(dc.guild, dc.fan)
    await until(lambda: _connections(dc, space_id, fan.account_id, 0))
    assert (await dc.core.view(space_id)).listener_count == 1


async def _connections(dc: DC, space_id: str, account_id: str, n: int) -> bool:
    async with dc.core.uow() as uow:
        got: int = await uow.presence.live_count(space_id, account_id, dc.core.now() - dc.core.presence_stale)
    return got == n


async def _async(value: object) -> object:
    return value


async def test_a_restarted_process_takes_the_stage_connections_back(dc: DC, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The old process is gone (its heartbeat stopped, as after SIGKILL); the new one starts while the
    host sits on the Stage: their voice counts as connected again, so nothing is swept or kept away."""
    await setup_guild(dc)
    space_id = await live(dc)
    host = await dc.actor(dc.host)
    await dc.fake.join_voice(dc.guild, dc.host, dc.stage)
    await until(lambda: _connections(dc, space_id, host.account_id, 1))
    await dc.platform.presence.stop()  # the old process stops refreshing its rows
    again = await make_dc(tmp_path, monkeypatch, dc.fake, dc.clock, discord_voice=False)
    seen = Seen(again.bus)
    try:
        async def taken_back() -> bool:
            async with again.core.uow() as uow:
                rows = await uow.session.scalars(select(ConnectionRow.node).where(
                    ConnectionRow.account_id == host.account_id))
                return list(rows) == [again.core.node_id]

        await until(taken_back)
        dc.clock.advance(seconds=dc.core.presence_stale.total_seconds() + 1)
        await again.presence.beat()
        assert await again.presence.sweep() == 0
        view = await again.core.view(space_id)
        assert view.space.state.value == "live" and view.space.host_id == host.account_id
        assert not seen.of(ev.ParticipantAway) and not seen.of(ev.ParticipantLeft)
    finally:
        await stop(again)
