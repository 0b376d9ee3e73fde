"""The one command table: its invariants, and dispatch refusing in words and changing nothing."""

from __future__ import annotations

from typing import Any

import pytest

from core.command_model import Invocation
from core.commands import (
    ALIASES,
    BUILTIN_TABLE,
    BUILTINS,
    KINDS,
    LEAST_ROLES,
    STATES,
    Command,
    CommandTable,
    Option,
    Outcome,
    dispatch,
    markdown,
    validate_args,
)
from core.errors import DomainError, Invalid
from core.messages import describe
from core.model.accounts import Actor
from core.reactions import DEFAULT_REACTIONS
from core.services import Core

ISSUE_16 = {"hand", "approve", "deny", "invite", "accept_invite", "promote", "demote", "step_down", "mute", "unmute",
            "mute_all", "remove", "clear_queue", "pin", "unpin", "captions", "react", "comment", "share", "end",
            "cancel", "start", "reschedule", "remind", "follow", "unfollow", "link", "ticket", "refund"}
ISSUE_19 = {"subscriber_priority"}  # Super Follows: the host's subscribers' hands first in the queue


def test_the_table_holds_every_space_command_once_with_known_kinds_roles_and_states() -> None:
    names = [c.name for c in BUILTINS]
    assert len(names) == len(set(names))
    assert set(names) == ISSUE_16 | ISSUE_19
    for c in BUILTINS:
        assert c.least_role in LEAST_ROLES and c.states and set(c.states) <= set(STATES), c.name
        assert c.summary and all(o.kind in KINDS and o.description for o in c.options), c.name
        assert not (c.button and any(o.required for o in c.options)), c.name
    for alias, (target, _) in ALIASES.items():
        assert target in BUILTIN_TABLE and alias not in BUILTIN_TABLE
    react = BUILTIN_TABLE.get("react")
    assert react is not None and react.options[0].choices == DEFAULT_REACTIONS  # one palette everywhere
    doc = markdown()
    assert all(f"`{n}`" in doc for n in names)


def test_a_bad_entry_or_a_taken_name_is_refused_when_added() -> None:
    async def noop(i: Invocation) -> Outcome:
        return Outcome("done")

    with pytest.raises(Invalid) as e:
        Command("x1", "bad", noop, (Option("shade", "colour", "?"),))  # type: ignore[arg-type]
    assert e.value.code == "command.bad_entry" and "kind" in describe(e.value)
    with pytest.raises(Invalid):
        Command("pick", "needs choices", noop, (Option("what", "choice", "which"),))
    with pytest.raises(Invalid):
        Command("wave", "a button cannot fill this", noop, (Option("to", "text", "who", True),), button="Wave")
    table = CommandTable(BUILTINS)
    for taken in ("hand", "raise_hand"):
        with pytest.raises(Invalid) as e:
            table.add(Command(taken, "again", noop))
        assert e.value.code == "plugin.command_taken"


def test_arguments_are_strict_in_json_and_read_from_text_for_chat_and_the_cli() -> None:
    remove = BUILTIN_TABLE.resolve("remove")[0]
    cases: list[tuple[Any, str, str]] = [
        ({"person": "a", "block": "yes"}, "block", "must be true or false"),
        ({"block": True}, "person", "is missing"),
        ({"person": "a", "colour": 1}, "colour", "is not an argument of this command"),
        ({"person": "a", "reason": "x" * 501}, "reason", "is too long (at most 500 characters)"),
        ({"person": 7}, "person", "must be text"),
        ([1], "args", "must be an object"),
    ]
    for raw, argument, problem in cases:
        with pytest.raises(Invalid) as e:
            validate_args(remove, raw)
        assert e.value.code == "protocol.bad_argument" and e.value.data == {"argument": argument, "problem": problem}
        assert describe(e.value) == f"The command's argument {argument} {problem}."
    assert validate_args(remove, {"person": "a", "block": "yes"}, text=True) == {"person": "a", "block": True}
    promote = BUILTIN_TABLE.resolve("promote")[0]
    with pytest.raises(Invalid) as e:
        validate_args(promote, {"person": "a", "role": "king"})
    assert e.value.data["argument"] == "role"


async def _live(core: Core) -> tuple[str, Actor, Actor, Actor]:
    host = await core.ensure_account("web", "h", "Hana")
    fan = await core.ensure_account("web", "f", "Finn")
    other = await core.ensure_account("web", "o", "Otto")
    space = await core.create_space(Actor(account_id=host.id, is_community_admin=True), "Table talk")
    actors = Actor(account_id=host.id), Actor(account_id=fan.id), Actor(account_id=other.id)
    for a in actors[1:]:
        await core.join(a, space.id)
    return space.id, *actors


async def test_dispatch_refuses_wrong_role_state_and_arguments_in_words_and_changes_nothing(core: Core) -> None:
    space_id, host, fan, other = await _live(core)
    await dispatch(core, other, "hand", space_id, {})
    before = (await core.view(space_id)).as_dict()
    refusals: list[tuple[Actor, str, dict[str, Any], str]] = [
        (fan, "approve", {"person": other.account_id}, "role.moderator_required"),
        (fan, "end", {}, "role.host_required"),
        (fan, "pin", {"title": "mine"}, "role.stage_required"),
        (host, "start", {}, "command.not_now"),
        (host, "approve", {"person": "#2"}, "person.not_in_queue"),
        (host, "approve", {"person": 2}, "protocol.bad_argument"),
        (host, "fly", {}, "protocol.unknown_command"),
        (fan, "react", {"emoji": "👏"}, "guest.link_account"),
    ]
    for actor, name, args, code in refusals:
        with pytest.raises(DomainError) as e:
            await dispatch(core, actor, name, space_id, args, guest=code == "guest.link_account")
        assert e.value.code == code, (name, e.value)
        assert not describe(e.value).startswith("Refused"), code  # every refusal has its sentence
        assert (await core.view(space_id)).as_dict() == before, name


async def test_a_person_is_named_by_account_id_or_queue_position_and_the_hand_toggles(core: Core) -> None:
    space_id, host, fan, other = await _live(core)
    raised = await dispatch(core, fan, "hand", space_id, {})
    assert raised.code == "hand.raised" and raised.result == 1
    lowered = await dispatch(core, fan, "hand", space_id, {})
    assert lowered.code == "hand.lowered"
    assert (await dispatch(core, fan, "raise_hand", space_id, {})).result == 1  # the old web name
    await dispatch(core, other, "hand", space_id, {"up": "on"}, text=True)
    approved = await dispatch(core, host, "approve", space_id, {"person": "#2"})
    assert approved.data == {"account_id": other.account_id}
    space = (await core.view(space_id)).space
    assert other.account_id in space.speakers and space.queue_position(fan.account_id) == 1
    await dispatch(core, host, "approve", space_id, {"person": fan.account_id})
    await dispatch(core, fan, "step_down", space_id, {})
    assert fan.account_id not in (await core.view(space_id)).space.speakers


async def test_account_commands_need_no_space(core: Core) -> None:
    space_id, host, fan, _ = await _live(core)
    followed = await dispatch(core, fan, "follow", None, {"host": host.account_id})
    assert followed.code == "follow.on" and followed.result == {"followers": 1}
    unfollowed = await dispatch(core, fan, "unfollow", space_id, {})  # this Space's host
    assert unfollowed.result == {"followers": 0}
    with pytest.raises(Invalid) as e:
        await dispatch(core, fan, "follow", None, {})
    assert e.value.data["argument"] == "host"
    with pytest.raises(Invalid) as e:
        await dispatch(core, fan, "hand", None, {})
    assert e.value.data["argument"] == "space"
    code = await dispatch(core, fan, "link", None, {})
    assert code.code == "link.code" and len(code.data["code"]) >= 6
    with pytest.raises(DomainError) as err:
        await dispatch(core, fan, "ticket", space_id, {})
    assert err.value.code == "command.unavailable"  # no ticket desk wired here


def test_the_protocol_doc_shows_the_table_as_generated() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "webrtc-protocol.md").read_text()
    start = doc.index("checks it -->\n") + len("checks it -->\n")
    assert doc[start:doc.index("<!-- end of generated table -->")] == markdown()


async def test_the_worked_example_is_one_entry_and_one_handler(core: Core) -> None:
    """docs/architecture.md's example: a host-only command with an option, added to a table."""
    async def title(i: Invocation) -> Outcome:
        await i.core.edit_space(i.actor, i.space_id, title=str(i.args["text"]))
        return Outcome("space.renamed", {"title": i.args["text"]})

    table = CommandTable([*BUILTINS, Command("title", "Rename the Space", title,
                                             (Option("text", "text", "The new title", True, max_len=100),),
                                             "host", ("scheduled", "live"), icon="✏️")])
    space_id, host, fan, _ = await _live(core)
    assert "title" in {c["name"] for c in table.public()}
    with pytest.raises(DomainError) as e:
        await dispatch(core, fan, "title", space_id, {"text": "Mine now"}, table=table)
    assert e.value.code == "role.host_required"
    with pytest.raises(Invalid) as bad:
        await dispatch(core, host, "title", space_id, {"text": "x" * 101}, table=table)
    assert bad.value.data["argument"] == "text"
    done = await dispatch(core, host, "title", space_id, {"text": "Renamed"}, table=table)
    assert done.code == "space.renamed" and (await core.view(space_id)).space.title == "Renamed"
