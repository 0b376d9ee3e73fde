"""The Space aggregate's rules, as a host or listener would meet them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.clock import FrozenClock
from core.errors import Conflict, Forbidden, Invalid
from core.model.space import MAX_SPEAKERS, Role, Space, SpaceState


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


def live(clock: FrozenClock) -> Space:
    s = Space.create(host_id="host", title="Live", now=clock.now())
    s.start("host", clock.now())
    return s


def test_title_and_schedule_limits(clock: FrozenClock) -> None:
    now = clock.now()
    with pytest.raises(Invalid) as e:
        Space.create(host_id="h", title="x" * 121, now=now)
    assert e.value.code == "space.title_length" and e.value.data["length"] == 121
    with pytest.raises(Invalid, match="space.title_length"):
        Space.create(host_id="h", title="   ", now=now)
    with pytest.raises(Invalid, match="space.start_in_past"):
        Space.create(host_id="h", title="t", now=now, start_at=now - timedelta(minutes=1))
    with pytest.raises(Invalid, match="space.start_too_far"):
        Space.create(host_id="h", title="t", now=now, start_at=now + timedelta(days=30, seconds=1))
    s = Space.create(host_id="h", title="  spaced   out  ", now=now, start_at=now + timedelta(days=30))
    assert s.title == "spaced out" and s.state == SpaceState.SCHEDULED


def test_stage_full_refuses_clearly(clock: FrozenClock) -> None:
    s = live(clock)
    for i in range(MAX_SPEAKERS):
        s.raise_hand(f"l{i}", clock.now())
        s.approve("host", f"l{i}", clock.now())
    s.raise_hand("late", clock.now())
    with pytest.raises(Conflict) as e:
        s.approve("host", "late", clock.now())
    assert e.value.code == "stage.full" and e.value.data["max"] == MAX_SPEAKERS
    assert s.queue_position("late") == 1 and "late" not in s.speakers


def test_listener_cannot_moderate(clock: FrozenClock) -> None:
    s = live(clock)
    s.raise_hand("a", clock.now())
    with pytest.raises(Forbidden) as e:
        s.approve("b", "a", clock.now())
    assert e.value.code == "role.moderator_required" and e.value.data["role"] == "listener"


def test_cohost_cannot_demote_cohost_or_promote_cohost(clock: FrozenClock) -> None:
    s = live(clock)
    s.promote("host", "c1", Role.COHOST, clock.now())
    s.promote("host", "c2", Role.COHOST, clock.now())
    with pytest.raises(Conflict, match="stage.cohosts_full"):
        s.promote("host", "c3", Role.COHOST, clock.now())
    with pytest.raises(Forbidden, match="role.host_required"):
        s.demote("c1", "c2", clock.now())
    with pytest.raises(Forbidden, match="role.host_required"):
        s.promote("c1", "x", Role.COHOST, clock.now())
    s.promote("c1", "x", Role.SPEAKER, clock.now())
    assert s.role_of("x") == Role.SPEAKER


def test_host_leaving_hands_over_then_ends(clock: FrozenClock) -> None:
    s = live(clock)
    s.promote("host", "c1", Role.COHOST, clock.now())
    s.leave("host", clock.now())
    assert s.host_id == "c1" and s.state == SpaceState.LIVE and "c1" not in s.cohosts
    s.leave("c1", clock.now())
    assert s.state == SpaceState.ENDED


def test_muted_speaker_is_not_a_publisher_and_can_unmute_self(clock: FrozenClock) -> None:
    s = live(clock)
    s.promote("host", "sp", Role.SPEAKER, clock.now())
    assert "sp" in s.publishers()
    s.mute("host", "sp", clock.now())
    assert "sp" not in s.publishers()
    with pytest.raises(Forbidden):
        s.unmute("other", "sp", clock.now())
    s.unmute("sp", "sp", clock.now())
    assert "sp" in s.publishers()


def test_pins(clock: FrozenClock) -> None:
    s = live(clock)
    for i in range(5):
        s.pin("host", clock.now(), f"link {i}", url=f"https://e.org/{i}")
    with pytest.raises(Conflict, match="pin.full"):
        s.pin("host", clock.now(), "sixth", url="https://e.org/6")
    with pytest.raises(Forbidden, match="role.stage_required"):
        s.unpin("listener", s.pins[0].id, clock.now())
    with pytest.raises(Invalid, match="pin.bad_url"):
        live(clock).pin("host", clock.now(), "bad", url="javascript:alert(1)")
    s.unpin("host", s.pins[0].id, clock.now())
    assert len(s.pins) == 4


def test_invite_accept(clock: FrozenClock) -> None:
    s = live(clock)
    with pytest.raises(Conflict, match="stage.not_invited"):
        s.accept_invite("guest", clock.now())
    s.invite("host", "guest", clock.now())
    s.accept_invite("guest", clock.now())
    assert s.role_of("guest") == Role.SPEAKER
