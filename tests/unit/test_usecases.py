"""Use cases on the in-memory store (tests/support/fake_uow.py): the rules, without a database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from core import events as ev
from core.bus import InProcessBus
from core.clock import FrozenClock
from core.errors import Conflict, Forbidden, Invalid
from core.model.accounts import Actor
from core.model.space import MAX_SPEAKERS, SpaceState
from core.services import EXPIRE_JOB, Core
from tests.support.fake_uow import FakeStore


class Seen(list[ev.Event]):
    """The events published so far, once the bus has handed them all over."""

    def __init__(self, bus: InProcessBus) -> None:
        super().__init__()
        self.bus = bus

    async def drained(self) -> Seen:
        await self.bus.drain()
        return self


World = tuple[Core, FakeStore, FrozenClock, Seen]


@pytest.fixture
async def world() -> AsyncIterator[World]:
    store, clock, bus = FakeStore(), FrozenClock(), InProcessBus()
    seen = Seen(bus)

    async def record(e: ev.Event) -> None:
        seen.append(e)

    bus.subscribe(record)
    await bus.start()
    yield Core(store, bus, clock), store, clock, seen
    await bus.close()


async def person(core: Core, name: str) -> Actor:
    return Actor(account_id=(await core.ensure_account("web", name, name)).id)


async def live_space(core: Core) -> tuple[Actor, str]:
    host = await person(core, "host")
    admin = Actor(account_id=host.account_id, is_community_admin=True)  # the admin override, no followers needed
    space = await core.create_space(admin, "Fake store")
    return host, space.id


async def test_one_account_per_platform_user_and_a_bad_id_changes_nothing(world: World) -> None:
    core, store, _, _ = world
    a = await core.ensure_account("telegram", "42", "Ann")
    assert (await core.ensure_account("telegram", "42", "Ann again")).id == a.id
    with pytest.raises(Invalid):
        await core.ensure_account("telegram", "", "nobody")
    assert len(store.state.accounts) == 1


async def test_hand_queue_approve_and_the_full_stage(world: World) -> None:
    core, _, _, _ = world
    host, space_id = await live_space(core)
    people = [await person(core, f"p{i}") for i in range(MAX_SPEAKERS + 1)]
    for p in people:
        await core.join(p, space_id)
    assert [await core.raise_hand(p, space_id) for p in people[:2]] == [1, 2]
    with pytest.raises(Forbidden):
        await core.approve(people[0], space_id, people[1].account_id)  # a listener may not
    space = await core.approve(host, space_id, people[1].account_id)
    assert people[1].account_id in space.speakers
    assert [h.account_id for h in space.hands] == [people[0].account_id]
    for p in people[2:MAX_SPEAKERS + 1]:
        await core.raise_hand(p, space_id)
    for p in [people[0], *people[2:MAX_SPEAKERS]]:
        await core.approve(host, space_id, p.account_id)
    with pytest.raises(Conflict) as full:
        await core.approve(host, space_id, people[MAX_SPEAKERS].account_id)
    assert full.value.code == "stage.full"
    assert len((await core.view(space_id)).space.speakers) == MAX_SPEAKERS


async def test_follow_rules(world: World) -> None:
    core, _, _, seen = world
    fan, host = await person(core, "fan"), await person(core, "star")
    with pytest.raises(Invalid):
        await core.follow(fan, fan.account_id)
    assert await core.follow(fan, host.account_id) == 1
    assert await core.follow(fan, host.account_id) == 1  # twice is once
    assert await core.follow(fan, host.account_id, on=False) == 0
    follows = [(e.following, e.followers) for e in await seen.drained() if isinstance(e, ev.Followed)]
    assert follows == [(True, 1), (False, 0)]


async def test_a_hosts_dropped_connection_keeps_the_space_until_the_grace_runs_out(world: World) -> None:
    core, store, clock, seen = world
    host, space_id = await live_space(core)
    await core.join(host, space_id, connection="tab-1")
    await core.disconnect(space_id, host.account_id, "tab-1")
    away = [e for e in await seen.drained() if isinstance(e, ev.ParticipantAway)]
    assert [e.account_id for e in away] == [host.account_id]
    assert (await core.view(space_id)).space.state == SpaceState.LIVE
    job = next(j for j in store.state.jobs.values() if j.kind == EXPIRE_JOB)
    assert job.due_at == clock.now() + core.host_grace
    clock.advance(seconds=core.host_grace.total_seconds() + 1)
    assert await core.expire_away(job.payload["away_id"])
    assert (await core.view(space_id)).space.state == SpaceState.ENDED
    ended = [e for e in await seen.drained() if isinstance(e, ev.SpaceEnded)]
    assert [e.reason for e in ended] == ["host_disconnected"]


async def test_back_before_the_grace_ends_keeps_the_seat(world: World) -> None:
    core, store, _, seen = world
    host, space_id = await live_space(core)
    await core.join(host, space_id, connection="tab-1")
    await core.disconnect(space_id, host.account_id, "tab-1")
    await core.join(host, space_id, connection="tab-2")
    assert any(isinstance(e, ev.ParticipantBack) for e in await seen.drained())
    job = next(j for j in store.state.jobs.values() if j.kind == EXPIRE_JOB)
    assert not await core.expire_away(job.payload["away_id"])
    assert (await core.view(space_id)).space.state == SpaceState.LIVE


async def test_a_refused_command_changes_nothing(world: World) -> None:
    core, store, _, _ = world
    _, space_id = await live_space(core)
    stranger = await person(core, "stranger")
    before = store.state.spaces[space_id].version
    with pytest.raises(Forbidden):
        await core.end_space(stranger, space_id)
    assert store.state.spaces[space_id].version == before
