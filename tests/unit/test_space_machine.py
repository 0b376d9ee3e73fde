"""Property test: any sequence of commands keeps the Space's invariants."""

from __future__ import annotations

from datetime import timedelta

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from core.clock import FrozenClock
from core.errors import DomainError
from core.model.space import MAX_COHOSTS, MAX_SPEAKERS, Role, Space, SpaceState

PEOPLE = [f"p{i}" for i in range(16)]
SUBSCRIBERS = {"p1", "p3", "p5", "p7"}  # the host's paying subscribers, as the use case would read them
people = st.sampled_from(PEOPLE)


class SpaceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FrozenClock()
        self.space = Space.create(host_id="p0", title="Property Space", now=self.clock.now(),
                                  start_at=self.clock.now() + timedelta(hours=1))
        self.model_queue: list[str] = []

    def _try(self, fn: object, *args: object) -> bool:
        """Run a command; a refusal must leave the Space exactly as it was."""
        before = (self.space.state, list(self.space.cohosts), list(self.space.speakers), set(self.space.muted),
                  [h.account_id for h in self.space.hands], self.space.host_id, len(self.space.pins),
                  self.space.subscriber_priority)
        n_events = len(self.space.pending_events)
        self.clock.advance(seconds=1)
        try:
            fn(*args)  # type: ignore[operator]
            return True
        except DomainError:
            after = (self.space.state, list(self.space.cohosts), list(self.space.speakers), set(self.space.muted),
                     [h.account_id for h in self.space.hands], self.space.host_id, len(self.space.pins),
                     self.space.subscriber_priority)
            assert after == before, "a refused command changed the Space"
            assert len(self.space.pending_events) == n_events, "a refused command emitted events"
            return False

    @rule()
    def start(self) -> None:
        self._try(self.space.start, self.space.host_id, self.clock.now())

    @rule(by=people)
    def end(self, by: str) -> None:
        was_live = self.space.state == SpaceState.LIVE
        ok = self._try(self.space.end, by, self.clock.now())
        assert not ok or (was_live and by == self.space.host_id)
        if ok:
            self.model_queue.clear()

    @rule(who=people)
    def raise_hand(self, who: str) -> None:
        if self._try(self.space.raise_hand, who, self.clock.now(), who in SUBSCRIBERS):
            self.model_queue.append(who)

    @rule(by=people, on=st.booleans(), has_tiers=st.booleans())
    def subscriber_priority(self, by: str, on: bool, has_tiers: bool) -> None:
        ok = self._try(lambda: self.space.set_subscriber_priority(by, on, self.clock.now(), has_tiers=has_tiers,
                                                                  subscribers=SUBSCRIBERS))
        assert not ok or (self.space.is_moderator(by) and (has_tiers or not on))

    @rule(who=people)
    def lower_hand(self, who: str) -> None:
        if self._try(self.space.lower_hand, who, self.clock.now()):
            self.model_queue.remove(who)

    @rule(by=people, who=people)
    def approve(self, by: str, who: str) -> None:
        if self._try(self.space.approve, by, who, self.clock.now()):
            assert by in (self.space.host_id, *self.space.cohosts)
            self.model_queue.remove(who)

    @rule(by=people, who=people)
    def deny(self, by: str, who: str) -> None:
        if self._try(self.space.deny, by, who, self.clock.now()):
            self.model_queue.remove(who)

    @rule(by=people, who=people, role=st.sampled_from([Role.COHOST, Role.SPEAKER]))
    def promote(self, by: str, who: str, role: Role) -> None:
        if self._try(self.space.promote, by, who, role, self.clock.now()) and who in self.model_queue:
            self.model_queue.remove(who)

    @rule(by=people, who=people)
    def demote(self, by: str, who: str) -> None:
        self._try(self.space.demote, by, who, self.clock.now())

    @rule(by=people, who=people)
    def mute(self, by: str, who: str) -> None:
        self._try(self.space.mute, by, who, self.clock.now())

    @rule(by=people, who=people)
    def remove(self, by: str, who: str) -> None:
        if self._try(self.space.remove, by, who, self.clock.now()) and who in self.model_queue:
            self.model_queue.remove(who)

    @rule(who=people)
    def leave(self, who: str) -> None:
        was_host = who == self.space.host_id
        had_cohost = bool(self.space.cohosts)
        self._try(self.space.leave, who, self.clock.now())
        if who in self.model_queue:
            self.model_queue.remove(who)
        if was_host and self.space.state in (SpaceState.LIVE, SpaceState.ENDED) and self.space.started_at:
            if had_cohost:
                assert self.space.host_id != who
            else:
                assert self.space.state == SpaceState.ENDED
                self.model_queue.clear()

    @rule(by=people)
    def clear(self, by: str) -> None:
        if self._try(self.space.clear_queue, by, self.clock.now()):
            self.model_queue.clear()

    @rule(by=people)
    def pin(self, by: str) -> None:
        self._try(self.space.pin, by, self.clock.now(), "a link", "https://example.org/x")

    @invariant()
    def nobody_both_queued_and_on_stage(self) -> None:
        queued = {h.account_id for h in self.space.hands}
        assert not queued & set(self.space.stage)

    @invariant()
    def caps_hold(self) -> None:
        assert len(self.space.cohosts) <= MAX_COHOSTS
        assert len(self.space.speakers) <= MAX_SPEAKERS
        assert len(set(self.space.stage)) == len(self.space.stage), "someone holds two stage roles"
        assert len(self.space.pins) <= 5

    @invariant()
    def queue_order_kept(self) -> None:
        """Raise order; with subscriber priority on, subscribers first, each group in raise order."""
        want = self.model_queue
        if self.space.subscriber_priority:
            want = [a for a in want if a in SUBSCRIBERS] + [a for a in want if a not in SUBSCRIBERS]
        assert [h.account_id for h in self.space.hands] == want

    @invariant()
    def one_hand_each(self) -> None:
        ids = [h.account_id for h in self.space.hands]
        assert len(ids) == len(set(ids))

    @invariant()
    def closed_space_is_inert(self) -> None:
        if self.space.state in (SpaceState.ENDED, SpaceState.CANCELLED):
            assert not self.space.hands and not self.space.publishers()
            for cmd, args in ((self.space.raise_hand, ("p5", self.clock.now())),
                              (self.space.start, (self.space.host_id, self.clock.now())),
                              (self.space.approve, (self.space.host_id, "p5", self.clock.now())),
                              (self.space.pin, (self.space.host_id, self.clock.now(), "x", "https://a.b")),
                              (self.space.promote, (self.space.host_id, "p5", Role.SPEAKER, self.clock.now()))):
                try:
                    cmd(*args)  # type: ignore[operator]
                except DomainError:
                    continue
                raise AssertionError(f"{cmd.__name__} accepted on a closed Space")


TestSpaceMachine = SpaceMachine.TestCase
TestSpaceMachine.settings = settings(max_examples=150, stateful_step_count=60, deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow])
