"""One declarative table of every Space command, and the one dispatcher every surface calls.

Why: a command declared once exists everywhere with the same rules and words. The web protocol and
page, Discord, Telegram and the CLI are generated from the table: each surface only turns its input
into ``dispatch(core, actor, name, space_id, raw_args)`` and words the ``Outcome`` or error code.

The pieces:

- ``Option(name, kind, description, required, choices, max_len)``; kinds (``KINDS``):
  ``text``, ``number`` (a whole number), ``flag`` (true/false), ``person`` (an account id or a queue
  position ``"2"``/``"#2"``; a platform mention or reply is resolved to an account id by its adapter
  before dispatch), ``emoji`` (one emoji; ``choices`` is the palette surfaces offer, any emoji is
  accepted), ``when`` (a time, ``core.timeparse``: ISO 8601 with a zone, ``+90m``, ``in 2h``) and
  ``choice`` (one of ``choices``).
- ``Command(name, summary, handler, options, least_role, states, button, icon, scope, guest_ok, plugin)``:
  ``least_role`` is ``anyone`` (joined, not a guest) / ``speaker`` (on stage) / ``moderator`` (host or
  co-host) / ``host``; ``states`` a subset of ``scheduled``/``live``/``ended`` (cancelled counts as
  ended); ``scope`` ``space`` (needs a Space) or ``account`` (a Space is optional: follow, link).
- The handler is ``async (Invocation) -> Outcome``. ``Outcome`` is a stable code and data (no English:
  surfaces word it) plus ``result``, what the web ``ok`` frame carries (a hand's queue position,
  reaction tallies, the comment line).
- ``dispatch`` validates the arguments against the options (``protocol.bad_argument`` naming the
  argument; strictly typed for JSON, read from text with ``text=True`` for chat and the CLI), then
  checks the Space's state and the caller's least role *before* the core runs (the core still
  enforces its own rules), resolves persons and times, and runs the handler. Plugin commands are
  entries of the same table (``plugins/manager.py`` adds them), so they go through the same door.

Worked example (docs/architecture.md): a command with an option and a least role is one ``Command``
in ``BUILTINS`` plus its handler; every surface lists and runs it from here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from core.command_model import (
    KINDS,
    LEAST_ROLES,
    MAX_ID,
    MAX_TEXT,
    NEEDED_RANK,
    ROLE_RANK,
    STATES,
    Command,
    Handler,
    Invocation,
    Kind,
    LeastRole,
    Option,
    Outcome,
    Ports,
    Scope,
    State,
    TicketDesk,
    check_command,
    validate_args,
)
from core.errors import Conflict, Forbidden, Invalid, NotFound, Unavailable
from core.model.accounts import Actor
from core.model.space import Space, SpaceState
from core.reactions import DEFAULT_REACTIONS
from core.timeparse import parse_when

if TYPE_CHECKING:
    from core.services import Core

__all__ = [
    "ALIASES", "BUILTINS", "BUILTIN_TABLE", "COMMAND_NAMES", "KINDS", "LEAST_ROLES", "REACTIONS", "STATES",
    "Command", "CommandTable", "Handler", "Invocation", "Kind", "LeastRole", "Option", "Outcome", "Ports", "Scope",
    "State", "TicketDesk", "check_command", "check_role", "check_state", "dispatch", "markdown", "resolve_person",
    "role_in", "validate_args",
]
REACTIONS: tuple[str, ...] = DEFAULT_REACTIONS  # the one palette every surface offers
_POSITION = re.compile(r"^#?(\d{1,4})$")


# ---- the table -------------------------------------------------------------------------------------
class CommandTable:
    """Every command a surface offers: the core's (``BUILTINS``) and each loaded plugin's."""

    def __init__(self, commands: Iterable[Command] = ()) -> None:
        self._commands: dict[str, Command] = {}
        for c in commands:
            self.add(c)

    def add(self, command: Command) -> None:
        if command.name in self._commands or command.name in ALIASES:
            raise Invalid("plugin.command_taken", name=command.name)
        self._commands[command.name] = command

    def remove(self, name: str) -> None:
        self._commands.pop(name, None)

    def get(self, name: str) -> Command | None:
        return self._commands.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._commands

    def __iter__(self) -> Iterator[Command]:
        return iter(sorted(self._commands.values(), key=lambda c: c.name))

    def __len__(self) -> int:
        return len(self._commands)

    def names(self) -> list[str]:
        return sorted(self._commands)

    def public(self) -> list[dict[str, Any]]:
        return [c.public() for c in self]

    def resolve(self, name: Any) -> tuple[Command, dict[str, Any]]:
        """The entry for ``name`` (or an old web name, ``raise_hand``) and the arguments an alias implies."""
        if isinstance(name, str) and name in ALIASES:
            target, implied = ALIASES[name]
            return self._commands[target], dict(implied)
        command = self._commands.get(name) if isinstance(name, str) else None
        if command is None:
            raise Invalid("protocol.unknown_command", name=str(name)[:40], known=self.names())
        return command, {}


def _state_of(space: Space) -> str:
    return "ended" if space.state in (SpaceState.ENDED, SpaceState.CANCELLED) else space.state.value


def role_in(space: Space, account_id: str) -> str:
    r = space.role_of(account_id)
    return r.value if r is not None else "listener"


def check_state(command: Command, space: Space) -> None:
    state = _state_of(space)
    if state in command.states:
        return
    if state == "ended":
        raise Conflict("space.closed", space_id=space.id, state=space.state.value)
    if state == "scheduled" and "live" in command.states:
        raise Conflict("space.not_live", space_id=space.id, state=state)
    raise Conflict("command.not_now", command=command.name, state=state, allowed=list(command.states))


def check_role(command: Command, actor: Actor, role: str) -> None:
    needed = NEEDED_RANK[command.least_role]
    if ROLE_RANK[role] < needed and not actor.is_operator:
        code = {1: "role.stage_required", 2: "role.moderator_required", 3: "role.host_required"}[needed]
        raise Forbidden(code, role=role, command=command.name)


def resolve_person(space: Space | None, value: str) -> str:
    """An account id as given, or the account at that queue position (``"2"``, ``"#2"``)."""
    m = _POSITION.match(value.strip())
    if m is None:
        return value.strip()
    n = int(m.group(1))
    if space is None or not 1 <= n <= len(space.hands):
        raise NotFound("person.not_in_queue", position=n, queued=len(space.hands) if space else 0)
    return space.hands[n - 1].account_id


async def dispatch(core: Core, actor: Actor, name: Any, space_id: str | None, raw_args: Any, *,
                   table: CommandTable | None = None, ports: Ports | None = None, guest: bool = False,
                   text: bool = False) -> Outcome:
    """Run one table command for ``actor``; every refusal is a ``DomainError`` and changes nothing."""
    command, implied = (table or BUILTIN_TABLE).resolve(name)
    if guest and not command.guest_ok:
        raise Forbidden("guest.link_account", command=command.name)
    args = validate_args(command, raw_args, text=text)
    args.update(implied)
    space: Space | None = None
    if space_id and not command.preload and not any(o.kind == "person" for o in command.options):
        return await command.handler(Invocation(core, actor, None, "listener", args, ports or Ports(),
                                                target=space_id))
    if space_id:
        space = (await core.view(space_id)).space
    elif command.scope == "space":
        raise Invalid("protocol.bad_argument", argument="space", problem="is missing")
    role = role_in(space, actor.account_id) if space is not None else "listener"
    if space is not None:
        check_state(command, space)
        check_role(command, actor, role)
    for o in command.options:
        if o.name not in args:
            continue
        if o.kind == "person":
            args[o.name] = resolve_person(space, args[o.name])
        elif o.kind == "when":
            args[o.name] = parse_when(args[o.name], core.now())
    return await command.handler(Invocation(core, actor, space, role, args, ports or Ports()))


# ---- the core's commands ---------------------------------------------------------------------------
def _done(outcome: str, result: Any = None, **data: Any) -> Outcome:
    return Outcome(outcome, data, result)


async def _hand(i: Invocation) -> Outcome:
    assert i.space is not None
    up = i.args.get("up")
    if up is None:  # the one toggle every surface shares
        up = i.space.queue_position(i.actor.account_id) is None
    if up:
        position = await i.core.raise_hand(i.actor, i.space_id)
        return _done("hand.raised", position, position=position)
    await i.core.lower_hand(i.actor, i.space_id)
    return _done("hand.lowered")


def _person(i: Invocation, option: str = "person") -> str:
    return str(i.args.get(option) or i.actor.account_id)


async def _approve(i: Invocation) -> Outcome:
    await i.core.approve(i.actor, i.space_id, _person(i))
    return _done("stage.approved", account_id=_person(i))


async def _deny(i: Invocation) -> Outcome:
    await i.core.deny(i.actor, i.space_id, _person(i))
    return _done("stage.denied", account_id=_person(i))


async def _invite(i: Invocation) -> Outcome:
    await i.core.invite(i.actor, i.space_id, _person(i))
    return _done("stage.invited", account_id=_person(i))


async def _accept(i: Invocation) -> Outcome:
    await i.core.accept_invite(i.actor, i.space_id)
    return _done("stage.joined")


async def _promote(i: Invocation) -> Outcome:
    role = str(i.args.get("role", "speaker"))
    await i.core.promote(i.actor, i.space_id, _person(i), role)
    return _done("stage.promoted", account_id=_person(i), role=role)


async def _demote(i: Invocation) -> Outcome:
    await i.core.demote(i.actor, i.space_id, _person(i))
    return _done("stage.demoted", account_id=_person(i))


async def _step_down(i: Invocation) -> Outcome:
    await i.core.demote(i.actor, i.space_id, i.actor.account_id)
    return _done("stage.stepped_down")


async def _mute(i: Invocation) -> Outcome:
    await i.core.mute(i.actor, i.space_id, _person(i), True)
    return _done("stage.muted", account_id=_person(i))


async def _unmute(i: Invocation) -> Outcome:
    await i.core.mute(i.actor, i.space_id, _person(i), False)
    return _done("stage.unmuted", account_id=_person(i))


async def _mute_all(i: Invocation) -> Outcome:
    await i.core.mute_all(i.actor, i.space_id)
    return _done("stage.all_muted")


async def _remove(i: Invocation) -> Outcome:
    block = bool(i.args.get("block", False))
    await i.core.remove(i.actor, i.space_id, _person(i), block=block, reason=str(i.args.get("reason", "")))
    return _done("person.removed", account_id=_person(i), blocked=block)


async def _clear_queue(i: Invocation) -> Outcome:
    await i.core.clear_queue(i.actor, i.space_id)
    return _done("queue.cleared")


async def _subscriber_priority(i: Invocation) -> Outcome:
    space = await i.core.set_subscriber_priority(i.actor, i.space_id, i.args.get("on"))
    on = space.subscriber_priority
    return _done("queue.subscriber_priority_on" if on else "queue.subscriber_priority_off", {"enabled": on},
                 enabled=on)


async def _pin(i: Invocation) -> Outcome:
    space = await i.core.pin(i.actor, i.space_id, str(i.args["title"]), url=i.args.get("url"),
                             message_ref=i.args.get("message_ref"))
    pin_id = space.pins[-1].id if space.pins else None
    return _done("pin.added", pin_id=pin_id)


async def _unpin(i: Invocation) -> Outcome:
    await i.core.unpin(i.actor, i.space_id, str(i.args["pin_id"]))
    return _done("pin.removed", pin_id=i.args["pin_id"])


async def _captions(i: Invocation) -> Outcome:
    on = bool(i.args["enabled"])
    await i.core.set_captions(i.actor, i.space_id, on)
    return _done("captions.on" if on else "captions.off")


async def _react(i: Invocation) -> Outcome:
    tallies = await i.core.react(i.actor, i.space_id, str(i.args["emoji"]))
    return _done("reaction.sent", tallies, emoji=i.args["emoji"])


async def _comment(i: Invocation) -> Outcome:
    line = await i.core.comment(i.actor, i.space_id, str(i.args["text"]))
    return _done("comment.posted", line)


async def _share(i: Invocation) -> Outcome:
    links = dict(i.ports.links(i.space_id)) if i.ports.links is not None else {}
    p = await i.core.share(i.space_id, links)
    payload = {"space_id": p.space_id, "title": p.title, "host_name": p.host_name, "state": p.state,
               "starts_at": p.starts_at.isoformat() if p.starts_at else None, "links": p.links}
    return _done("space.shared", payload, **payload)


async def _start(i: Invocation) -> Outcome:
    await i.core.start_space(i.actor, i.space_id)
    return _done("space.started")


async def _end(i: Invocation) -> Outcome:
    await i.core.end_space(i.actor, i.space_id)
    return _done("space.ended_by_host")


async def _cancel(i: Invocation) -> Outcome:
    await i.core.cancel_space(i.actor, i.space_id)  # queues the ticket refunds itself
    return _done("space.cancelled")


async def _reschedule(i: Invocation) -> Outcome:
    space = await i.core.reschedule_space(i.actor, i.space_id, i.args["when"])
    when = space.scheduled_for.isoformat() if space.scheduled_for else None
    return _done("space.rescheduled", {"scheduled_for": when}, scheduled_for=when)


async def _remind(i: Invocation) -> Outcome:
    on = bool(i.args.get("on", True))
    await i.core.set_reminder(i.actor, i.space_id, on)
    return _done("reminder.on" if on else "reminder.off")


def _host_of(i: Invocation) -> str:
    host = i.args.get("host") or (i.space.host_id if i.space is not None else None)
    if not host:
        raise Invalid("protocol.bad_argument", argument="host", problem="is missing")
    return str(host)


async def _follow(i: Invocation) -> Outcome:
    n = await i.core.follow(i.actor, _host_of(i), True)
    return _done("follow.on", {"followers": n}, host_id=_host_of(i), followers=n)


async def _unfollow(i: Invocation) -> Outcome:
    n = await i.core.follow(i.actor, _host_of(i), False)
    return _done("follow.off", {"followers": n}, host_id=_host_of(i), followers=n)


async def _link(i: Invocation) -> Outcome:
    code = i.args.get("code")
    if code:
        account = await i.core.redeem_link_code(i.actor, str(code))
        return _done("link.linked", {"account_id": account.id}, account_id=account.id)
    issued = await i.core.issue_link_code(i.actor)
    data = {"code": issued.code, "expires_at": issued.expires_at.isoformat()}
    return _done("link.code", data, **data)


async def _ticket(i: Invocation) -> Outcome:
    if i.ports.tickets is None:
        raise Unavailable("command.unavailable", command="ticket")
    got = dict(await i.ports.tickets.ticket(i.actor, i.space_id))
    return _done("ticket.offered", got, **got)


async def _refund(i: Invocation) -> Outcome:
    if i.ports.tickets is None:
        raise Unavailable("command.unavailable", command="refund")
    got = dict(await i.ports.tickets.refund(i.actor, i.space_id))
    return _done("ticket.refund_requested", got, **got)


_PERSON = Option("person", "person", "Who: an account id, a queue position (#2), a mention or a reply", True)
_OPEN: tuple[State, ...] = ("scheduled", "live")
BUILTINS: tuple[Command, ...] = (
    Command("hand", "Raise or lower your hand to ask to speak", _hand,
            (Option("up", "flag", "true raises, false lowers; left out, it toggles"),), button="Raise hand",
            icon="✋"),
    Command("approve", "Bring a raised hand on stage", _approve, (_PERSON,), "moderator", icon="✅"),
    Command("deny", "Lower someone's raised hand", _deny, (_PERSON,), "moderator", icon="🚫"),
    Command("invite", "Invite someone to speak", _invite, (_PERSON,), "moderator", icon="📨"),
    Command("accept_invite", "Accept an invitation to speak", _accept, button="Accept invitation", icon="🎤"),
    Command("promote", "Make someone a speaker or co-host", _promote,
            (_PERSON, Option("role", "choice", "The new role", False, ("speaker", "cohost"))), "moderator",
            icon="⬆️"),
    Command("demote", "Move someone from the stage to the audience", _demote, (_PERSON,), "moderator",
            icon="⬇️"),
    Command("step_down", "Leave the stage and listen", _step_down, least_role="speaker", button="Step down",
            icon="⬇️"),
    Command("mute", "Mute a speaker (or yourself)", _mute,
            (Option("person", "person", "Who (left out: you)"),), "speaker", icon="🔇"),
    Command("unmute", "Unmute yourself (moderators may lift others' mute)", _unmute,
            (Option("person", "person", "Who (left out: you)"),), "speaker", icon="🎙️"),
    Command("mute_all", "Mute everyone on stage but you and the host", _mute_all, least_role="moderator",
            button="Mute all", icon="🔇"),
    Command("remove", "Remove someone from the Space (and block them from your Spaces)", _remove,
            (_PERSON, Option("block", "flag", "Also block them from the host's Spaces"),
             Option("reason", "text", "Why (kept in the moderation log)", max_len=500)), "moderator", _OPEN,
            icon="⛔"),
    Command("clear_queue", "Lower every raised hand", _clear_queue, least_role="moderator",
            button="Clear hands", icon="🧹"),
    Command("subscriber_priority", "Put the host's subscribers' raised hands first in the queue (or not)",
            _subscriber_priority, (Option("on", "flag", "true: subscribers first, false: raise order; left out, it "
                                          "toggles"),), "moderator", _OPEN, button="Subscribers first", icon="⭐"),
    Command("pin", "Pin a link or message to the Space", _pin,
            (Option("title", "text", "What to show", True, max_len=MAX_TEXT),
             Option("url", "text", "A link", max_len=2048),
             Option("message_ref", "text", "A chat message it points to", max_len=MAX_ID)), "speaker", _OPEN,
            icon="📌"),
    Command("unpin", "Take a pin down", _unpin, (Option("pin_id", "text", "Which pin", True, max_len=MAX_ID),),
            "speaker", _OPEN, icon="📍"),
    Command("captions", "Turn live captions on or off", _captions,
            (Option("enabled", "flag", "On or off", True),), "speaker", _OPEN, icon="💬"),
    Command("react", "Send a reaction", _react,
            (Option("emoji", "emoji", "One emoji", True, REACTIONS),), icon="👏", preload=False),
    Command("comment", "Write in the Space's chat", _comment,
            (Option("text", "text", "What to say", True, max_len=MAX_TEXT),), icon="💬"),
    Command("share", "Links to share this Space", _share, states=_OPEN, button="Share", icon="🔗", guest_ok=True),
    Command("start", "Start a scheduled Space now", _start, least_role="host", states=("scheduled",),
            button="Start", icon="▶️"),
    Command("end", "End the Space for everyone", _end, least_role="host", button="End", icon="⏹️"),
    Command("cancel", "Cancel a scheduled Space (tickets are refunded)", _cancel, least_role="host",
            states=("scheduled",), icon="✖️"),
    Command("reschedule", "Move a scheduled Space", _reschedule,
            (Option("when", "when", "New start: 2026-12-01T18:00+00:00, +90m, in 2h", True),), "host",
            ("scheduled",), icon="🗓️"),
    Command("remind", "Be reminded when the Space starts", _remind,
            (Option("on", "flag", "false turns the reminder off"),), states=("scheduled",), button="Remind me",
            icon="⏰"),
    Command("follow", "Follow a host (this Space's, if you name none)", _follow,
            (Option("host", "person", "The host's account id"),), states=("scheduled", "live", "ended"),
            button="Follow host", icon="➕", scope="account"),
    Command("unfollow", "Stop following a host", _unfollow, (Option("host", "person", "The host's account id"),),
            states=("scheduled", "live", "ended"), icon="➖", scope="account"),
    Command("link", "Link your accounts on two platforms: get a code, or redeem one", _link,
            (Option("code", "text", "A code from the other platform", max_len=32),),
            states=("scheduled", "live", "ended"), icon="🔗", scope="account"),
    Command("ticket", "Get a ticket for this Space", _ticket, states=_OPEN, button="Get ticket", icon="🎟️"),
    Command("refund", "Ask for your ticket's money back", _refund, states=("scheduled", "live", "ended"),
            icon="💸"),
)
# old web names, kept so existing clients keep working: name -> (table command, implied arguments)
ALIASES: dict[str, tuple[str, Mapping[str, Any]]] = {
    "raise_hand": ("hand", {"up": True}),
    "lower_hand": ("hand", {"up": False}),
    "muteall": ("mute_all", {}),  # the moderation plugin's old command, documented as /muteall
}
BUILTIN_TABLE = CommandTable(BUILTINS)
COMMAND_NAMES: frozenset[str] = frozenset({c.name for c in BUILTINS} | set(ALIASES))


def markdown(table: CommandTable | None = None) -> str:
    """The table as markdown, for docs/webrtc-protocol.md (regenerate, never hand-edit)."""
    rows = ["| command | least role | states | options | summary |", "|---|---|---|---|---|"]
    for c in table or BUILTIN_TABLE:
        opts = ", ".join(f"`{o.name}`: {o.kind}{'' if o.required else '?'}" for o in c.options) or "-"
        scope = " (no Space needed)" if c.scope == "account" else ""
        rows.append(f"| `{c.name}` | {c.least_role}{' or guest' if c.guest_ok else ''} | {', '.join(c.states)} | "
                    f"{opts} | {c.summary}{scope} |")
    return "\n".join(rows) + "\n"
