"""The contract: every table command, on every surface, by the table's rules and with the same outcome.

One scenario per command (``SCENARIOS``), run through each surface's driver against a fresh Space:
the least role succeeds and the change shows in the core; someone below it gets the table's refusal;
a Space in a state the command is not for is refused; a bad argument is refused and changes nothing.
A command without a scenario, or a surface without a command, fails here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from core.commands import BUILTIN_TABLE, BUILTINS, check_role, check_state
from core.errors import DomainError
from core.model.accounts import Actor
from core.usecases.queries import SpaceView
from tests.contract.drivers import Driver, Inexpressible, Person, Result

pytestmark = pytest.mark.asyncio(loop_scope="module")
PLATFORM = {"web": "web", "cli": "web", "discord": "discord", "telegram": "telegram"}
# what must not move when a command is refused (presence counts do: the web page joins as it connects)
WATCHED = ("state", "scheduled_for", "cohosts", "speakers", "muted", "queue", "invited", "pins", "captions_enabled",
           "subscriber_priority", "reactions")


@dataclass
class Ctx:
    """A Space in one state with one person in each role (host, co-host, speaker, listener, other)."""

    d: Driver
    space_id: str
    host: Person
    cohost: Person
    speaker: Person
    listener: Person
    other: Person
    extra: dict[str, Any] = field(default_factory=dict)

    def actor(self, p: Person, **kw: Any) -> Actor:
        return Actor(account_id=p.account_id, platform=PLATFORM[self.d.surface], **kw)

    async def view(self) -> SpaceView:
        return await self.d.core.view(self.space_id)

    async def watched(self) -> dict[str, Any]:
        shown = (await self.view()).as_dict()
        return {k: shown[k] for k in WATCHED}


async def make_ctx(d: Driver, state: str) -> Ctx:
    core = d.core
    people = [await d.person(n) for n in ("Hana", "Cole", "Sam", "Lena", "Otto")]
    host, cohost, speaker, listener, other = people
    c = Ctx(d, "", host, cohost, speaker, listener, other)
    start_at = core.now() + timedelta(hours=2) if state == "scheduled" else None
    space = await core.create_space(c.actor(host, is_community_admin=True), "Contract night", start_at=start_at)
    c.space_id = space.id
    if state == "scheduled":
        return c
    for p in people[1:]:
        await core.join(c.actor(p), space.id)
    await core.promote(c.actor(host), space.id, c.cohost.account_id, "cohost")
    await core.promote(c.actor(host), space.id, c.speaker.account_id, "speaker")
    if state == "ended":
        await core.end_space(c.actor(host), space.id)
    return c


Prep = Callable[[Ctx], Awaitable[Any]]
Check = Callable[[Ctx, SpaceView], Awaitable[bool]]


async def _nothing(c: Ctx) -> None:
    return None


async def _always(c: Ctx, v: SpaceView) -> bool:
    return True


@dataclass(frozen=True)
class Scenario:
    """``who`` (a Ctx role) runs the command with ``args(ctx)`` on a Space in ``state`` after ``prepare``;
    ``check`` sees the change in the core. ``refused``: the outcome on a free Space is a refusal with this
    code (a ticket, a refund). ``bad``/``bad_code``: a bad argument and the code it gets."""

    who: str
    args: Callable[[Ctx], dict[str, Any]] = lambda c: {}
    prepare: Prep = _nothing
    check: Check = _always
    state: str = "live"
    refused: str | None = None
    bad: Callable[[Ctx], dict[str, Any]] | None = None
    bad_code: str = "protocol.bad_argument"


def _a(c: Ctx, p: Person) -> Actor:
    return c.actor(p)


async def _other_hand(c: Ctx) -> None:
    await c.d.core.raise_hand(_a(c, c.other), c.space_id)


async def _invite_listener(c: Ctx) -> None:
    await c.d.core.invite(_a(c, c.host), c.space_id, c.listener.account_id)


async def _mute_speaker(c: Ctx) -> None:
    await c.d.core.mute(_a(c, c.host), c.space_id, c.speaker.account_id, True)


async def _a_pin(c: Ctx) -> None:
    space = await c.d.core.pin(_a(c, c.host), c.space_id, "Slides", url="https://example.org/slides")
    c.extra["pin_id"] = space.pins[-1].id


async def _a_tier(c: Ctx) -> None:
    """The host sells a tier, so their subscribers can be put first (without one it is refused)."""
    await c.d.core.memberships.create_tier(_a(c, c.host), "Supporter", 500, "eur")


async def _following(c: Ctx) -> None:
    await c.d.core.follow(_a(c, c.listener), c.host.account_id, True)


async def _blocked(c: Ctx, v: SpaceView) -> bool:
    try:
        await c.d.core.may_join(c.other.account_id, c.space_id)
    except DomainError:
        return True
    return False


async def _commented(c: Ctx, v: SpaceView) -> bool:
    return any(line.get("text") == "hello all" for line in await c.d.core.recent_comments(c.space_id))


async def _followers(c: Ctx) -> int:
    return int(await c.d.core.follower_count(c.host.account_id))


async def _followed(c: Ctx, v: SpaceView) -> bool:
    return await _followers(c) == 1


async def _unfollowed(c: Ctx, v: SpaceView) -> bool:
    return await _followers(c) == 0


async def _moved(c: Ctx, v: SpaceView) -> bool:
    return v.space.scheduled_for is not None and v.space.scheduled_for > c.d.core.now() + timedelta(hours=2.5)


async def _clapped(c: Ctx, v: SpaceView) -> bool:
    """The tally shows the clap. From a shell it reaches the serving process over the bus, so the
    serving core may count it a moment after the command answered: wait for it, within a deadline."""
    deadline = asyncio.get_running_loop().time() + 10.0
    while v.reactions != {"👏": 1} and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
        v = await c.view()
    return v.reactions == {"👏": 1}


def _is(pred: Callable[[Ctx, SpaceView], bool]) -> Check:
    async def check(c: Ctx, v: SpaceView) -> bool:
        return pred(c, v)

    return check


NOWHERE = {"person": "#9"}
SCENARIOS: dict[str, Scenario] = {
    "hand": Scenario("listener", check=_is(lambda c, v: v.space.queue_position(c.listener.account_id) == 1),
                     bad=lambda c: {"up": "maybe"}),
    "approve": Scenario("cohost", lambda c: {"person": c.other.account_id}, _other_hand,
                        _is(lambda c, v: c.other.account_id in v.space.speakers), bad=lambda c: NOWHERE,
                        bad_code="person.not_in_queue"),
    "deny": Scenario("cohost", lambda c: {"person": c.other.account_id}, _other_hand,
                     _is(lambda c, v: not v.space.hands), bad=lambda c: NOWHERE, bad_code="person.not_in_queue"),
    "invite": Scenario("cohost", lambda c: {"person": c.other.account_id},
                       check=_is(lambda c, v: c.other.account_id in v.space.invited), bad=lambda c: NOWHERE,
                       bad_code="person.not_in_queue"),
    "accept_invite": Scenario("listener", prepare=_invite_listener,
                              check=_is(lambda c, v: c.listener.account_id in v.space.speakers)),
    "promote": Scenario("cohost", lambda c: {"person": c.other.account_id, "role": "speaker"},
                        check=_is(lambda c, v: c.other.account_id in v.space.speakers), bad=lambda c: NOWHERE,
                        bad_code="person.not_in_queue"),
    "demote": Scenario("cohost", lambda c: {"person": c.speaker.account_id},
                       check=_is(lambda c, v: c.speaker.account_id not in v.space.speakers), bad=lambda c: NOWHERE,
                       bad_code="person.not_in_queue"),
    "step_down": Scenario("speaker", check=_is(lambda c, v: c.speaker.account_id not in v.space.speakers)),
    "mute": Scenario("speaker", lambda c: {"person": c.speaker.account_id},
                     check=_is(lambda c, v: c.speaker.account_id in v.space.muted), bad=lambda c: NOWHERE,
                     bad_code="person.not_in_queue"),
    "unmute": Scenario("speaker", lambda c: {"person": c.speaker.account_id}, _mute_speaker,
                       _is(lambda c, v: c.speaker.account_id not in v.space.muted), bad=lambda c: NOWHERE,
                       bad_code="person.not_in_queue"),
    "mute_all": Scenario("cohost", check=_is(lambda c, v: c.speaker.account_id in v.space.muted)),
    "remove": Scenario("cohost", lambda c: {"person": c.other.account_id, "block": True}, check=_blocked,
                       bad=lambda c: NOWHERE, bad_code="person.not_in_queue"),
    "clear_queue": Scenario("cohost", prepare=_other_hand, check=_is(lambda c, v: not v.space.hands)),
    "subscriber_priority": Scenario("cohost", lambda c: {"on": True}, _a_tier,
                                    _is(lambda c, v: v.space.subscriber_priority), bad=lambda c: {"on": "maybe"}),
    "pin": Scenario("speaker", lambda c: {"title": "Slides", "url": "https://example.org/slides"},
                    check=_is(lambda c, v: [p.title for p in v.space.pins] == ["Slides"]),
                    bad=lambda c: {"title": "Slides", "url": "https://example.org/" + "x" * 3000}),
    "unpin": Scenario("speaker", lambda c: {"pin_id": c.extra.get("pin_id", "p1")}, _a_pin,
                      _is(lambda c, v: not v.space.pins), bad=lambda c: {"pin_id": "nopin"},
                      bad_code="pin.not_found"),
    "captions": Scenario("speaker", lambda c: {"enabled": True}, check=_is(lambda c, v: v.space.captions_enabled),
                         bad=lambda c: {"enabled": "sometimes"}),
    "react": Scenario("listener", lambda c: {"emoji": "👏"}, check=_clapped,
                      bad=lambda c: {"emoji": "not an emoji"}, bad_code="reaction.not_an_emoji"),
    "comment": Scenario("listener", lambda c: {"text": "hello all"}, check=_commented,
                        bad=lambda c: {"text": "x" * 5000}),
    "share": Scenario("listener"),
    "start": Scenario("host", state="scheduled", check=_is(lambda c, v: v.space.state.value == "live")),
    "end": Scenario("host", check=_is(lambda c, v: v.space.state.value == "ended")),
    "cancel": Scenario("host", state="scheduled", check=_is(lambda c, v: v.space.state.value == "cancelled")),
    "reschedule": Scenario("host", lambda c: {"when": "+3h"}, state="scheduled", check=_moved,
                           bad=lambda c: {"when": "soon"}, bad_code="time.unreadable"),
    "remind": Scenario("listener", state="scheduled", bad=lambda c: {"on": "maybe"}),
    "follow": Scenario("listener", lambda c: {"host": c.host.account_id}, check=_followed,
                       bad=lambda c: {"host": "nobody000000"}, bad_code="account.not_found"),
    "unfollow": Scenario("listener", lambda c: {"host": c.host.account_id}, _following, _unfollowed,
                         bad=lambda c: {"host": "nobody000000"}, bad_code="account.not_found"),
    "link": Scenario("listener", bad=lambda c: {"code": "ZZZZZZZZ"}, bad_code="link.code_invalid"),
    "ticket": Scenario("listener", refused="ticket.not_ticketed"),  # a free Space: nothing to buy
    "refund": Scenario("listener", refused="ticket.none_paid"),
}
WRONG_STATE = {name: next(s for s in ("scheduled", "live", "ended") if s not in BUILTIN_TABLE.get(name).states)  # type: ignore[union-attr]
               for name in SCENARIOS if BUILTIN_TABLE.get(name) and len(BUILTIN_TABLE.get(name).states) < 3}  # type: ignore[union-attr]


async def run(c: Ctx, who: Person, name: str, args: dict[str, Any]) -> Result:
    try:
        return await c.d.run(who, name, c.space_id, **args)
    except Inexpressible as e:
        pytest.skip(f"{c.d.surface} cannot express it: {e}")


# ---- coverage --------------------------------------------------------------------------------------
async def test_every_table_command_has_a_scenario() -> None:
    assert set(SCENARIOS) == {c.name for c in BUILTINS}, "a table command needs a scenario here (and vice versa)"


async def test_the_surface_offers_every_table_command(driver: Driver) -> None:
    c = await make_ctx(driver, "live")
    await run(c, c.listener, "share", {})  # the web page learns its commands in the welcome
    missing = {cmd.name for cmd in BUILTINS} - driver.offered()
    assert not missing, f"{driver.surface} does not offer {sorted(missing)}"


async def test_a_moderator_approves_another_platforms_hand_by_its_queue_number(driver: Driver) -> None:
    """A person is named the same way everywhere: a hand raised elsewhere is approved by its number here."""
    c = await make_ctx(driver, "live")
    elsewhere = "telegram" if driver.surface != "telegram" else "discord"
    far = await driver.core.ensure_account(elsewhere, "4242", "Faraway")
    await driver.core.join(Actor(account_id=far.id, platform=elsewhere), c.space_id)
    await driver.core.raise_hand(Actor(account_id=far.id, platform=elsewhere), c.space_id)
    result = await run(c, c.cohost, "approve", {"person": "#1"})
    assert result.ok, f"{driver.surface}: {result}"
    assert far.id in (await c.view()).space.speakers


# ---- the four rules, per command -------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_the_least_role_succeeds_and_the_core_shows_it(driver: Driver, name: str) -> None:
    s = SCENARIOS[name]
    c = await make_ctx(driver, s.state)
    await s.prepare(c)
    before = await c.watched()
    result = await run(c, getattr(c, s.who), name, s.args(c))
    if s.refused is not None:
        assert (result.ok, result.code) == (False, s.refused), result
        assert await c.watched() == before
        return
    assert result.ok, f"{driver.surface} /{name}: {result}"
    assert await s.check(c, await c.view()), f"{driver.surface} /{name} answered {result} but the core shows no change"


@pytest.mark.parametrize("name", sorted(n for n, s in SCENARIOS.items()
                                        if BUILTIN_TABLE.get(n) and BUILTIN_TABLE.get(n).least_role != "anyone"))  # type: ignore[union-attr]
async def test_a_role_below_the_least_is_refused_with_the_tables_code(driver: Driver, name: str) -> None:
    s, command = SCENARIOS[name], BUILTIN_TABLE.get(name)
    assert command is not None
    c = await make_ctx(driver, s.state)
    await s.prepare(c)
    before = await c.watched()
    with pytest.raises(DomainError) as expected:
        check_role(command, c.actor(c.listener), "listener")
    result = await run(c, c.listener, name, s.args(c))
    assert (result.ok, result.code) == (False, expected.value.code), f"{driver.surface} /{name}: {result}"
    assert await c.watched() == before


@pytest.mark.parametrize("name", sorted(WRONG_STATE))
async def test_a_space_in_the_wrong_state_is_refused(driver: Driver, name: str) -> None:
    s, command = SCENARIOS[name], BUILTIN_TABLE.get(name)
    assert command is not None
    c = await make_ctx(driver, WRONG_STATE[name])
    before = await c.watched()
    with pytest.raises(DomainError) as expected:
        check_state(command, (await c.view()).space)
    result = await run(c, c.host, name, s.args(c))
    assert (result.ok, result.code) == (False, expected.value.code), f"{driver.surface} /{name}: {result}"
    assert await c.watched() == before


@pytest.mark.parametrize("name", sorted(n for n, s in SCENARIOS.items() if s.bad is not None))
async def test_a_bad_argument_is_refused_and_changes_nothing(driver: Driver, name: str) -> None:
    s = SCENARIOS[name]
    assert s.bad is not None
    c = await make_ctx(driver, s.state)
    await s.prepare(c)
    before = await c.watched()
    result = await run(c, getattr(c, s.who), name, s.bad(c))
    codes = {s.bad_code} | ({"telegram.usage"} if s.bad_code == "protocol.bad_argument" else set())  # says how
    assert not result.ok and result.code in codes, f"{driver.surface} /{name} {s.bad(c)}: {result}"
    assert await c.watched() == before
