"""The shapes of the command table (core/commands.py): options, commands, invocations, outcomes, and
argument validation generated from the option kinds (a strict pydantic model per command)."""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from core.errors import Invalid
from core.model.accounts import Actor
from core.model.space import Space

if TYPE_CHECKING:
    from core.services import Core

Kind = Literal["text", "number", "flag", "person", "emoji", "when", "choice"]
LeastRole = Literal["anyone", "speaker", "moderator", "host"]
State = Literal["scheduled", "live", "ended"]
Scope = Literal["space", "account"]
KINDS: tuple[str, ...] = get_args(Kind)
LEAST_ROLES: tuple[str, ...] = get_args(LeastRole)
STATES: tuple[str, ...] = get_args(State)
ROLE_RANK = {"listener": 0, "speaker": 1, "cohost": 2, "host": 3}
NEEDED_RANK = {"anyone": 0, "speaker": 1, "moderator": 2, "host": 3}
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{1,31}$")
MAX_ID = 128  # account ids, pin ids
MAX_TEXT = 4096  # free text (the core applies its own, smaller limits and says so)
MAX_NUMBER = 2**53 - 1


@dataclass(frozen=True)
class Option:
    """One argument of a command."""

    name: str
    kind: Kind
    description: str
    required: bool = False
    choices: tuple[str, ...] = ()
    max_len: int | None = None

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "description": self.description, "required": self.required,
                "choices": list(self.choices), "max_len": self.max_len}


class TicketDesk(Protocol):
    """Tickets, provided by billing through the composition root (core never imports billing)."""

    async def ticket(self, actor: Actor, space_id: str) -> Mapping[str, Any]: ...

    async def refund(self, actor: Actor, space_id: str) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class Ports:
    """What some handlers need from outside the core, injected by the surface or composition root."""

    tickets: TicketDesk | None = None
    links: Callable[[str], Mapping[str, str]] | None = None  # space id -> {"web": url, ...} for share


@dataclass(frozen=True)
class Invocation:
    """A validated command: who, where (``space`` is None for an account command without one), what."""

    core: Core
    actor: Actor
    space: Space | None
    role: str  # host | cohost | speaker | listener (listener also when there is no Space)
    args: Mapping[str, Any]
    ports: Ports = field(default_factory=Ports)
    target: str | None = None  # the Space's id when the command did not load it (``Command.preload``)

    @property
    def space_id(self) -> str:
        if self.space is not None:
            return self.space.id
        if self.target is not None:
            return self.target
        raise Invalid("protocol.bad_argument", argument="space", problem="is missing")


@dataclass(frozen=True)
class Outcome:
    """What a command did: a stable ``code`` and its ``data`` for words; ``result`` for the web ``ok`` frame."""

    code: str
    data: Mapping[str, Any] = field(default_factory=dict)
    result: Any = None


Handler = Callable[[Invocation], Awaitable[Outcome]]


@dataclass(frozen=True)
class Command:
    """One table entry. ``button``/``icon`` are for surfaces that draw buttons (no required options)."""

    name: str
    summary: str
    handler: Handler
    options: tuple[Option, ...] = ()
    least_role: LeastRole = "anyone"
    states: tuple[State, ...] = ("live",)
    button: str | None = None
    icon: str | None = None
    scope: Scope = "space"
    guest_ok: bool = False
    plugin: str | None = None  # the plugin that registered it; None for the core's own
    # False: dispatch does not read the Space first; the core's own call checks state and access
    # (reactions: a hot path that must not touch the database, see docs/architecture.md)
    preload: bool = True

    def __post_init__(self) -> None:
        check_command(self)

    def public(self) -> dict[str, Any]:
        """What clients are told (the web ``welcome.commands``); surfaces draw their controls from it."""
        return {"name": self.name, "summary": self.summary, "options": [o.public() for o in self.options],
                "least_role": self.least_role, "states": list(self.states), "button": self.button,
                "icon": self.icon, "scope": self.scope, "guest_ok": self.guest_ok, "plugin": self.plugin}


def check_command(c: Command) -> None:
    """A table entry's own rules, so a bad entry (a plugin's too) is refused when it is added."""
    def bad(option: str, problem: str) -> Invalid:
        return Invalid("command.bad_entry", command=c.name, option=option, problem=problem)

    if not NAME_RE.match(c.name):
        raise Invalid("plugin.bad_command_name", name=c.name)
    if c.least_role not in LEAST_ROLES:
        raise bad("least_role", f"must be one of {', '.join(LEAST_ROLES)}")
    if not c.states or any(s not in STATES for s in c.states):
        raise bad("states", f"must be some of {', '.join(STATES)}")
    if c.scope not in ("space", "account"):
        raise bad("scope", "must be space or account")
    seen: set[str] = set()
    for o in c.options:
        if not NAME_RE.match(o.name) or o.name in seen or o.name == "space":
            raise bad(o.name, "needs a unique name of a-z, 0-9 and _ (space is reserved)")
        if o.kind not in KINDS:
            raise bad(o.name, f"kind must be one of {', '.join(KINDS)}")
        if o.kind == "choice" and not o.choices:
            raise bad(o.name, "a choice needs choices")
        seen.add(o.name)
    if c.button and any(o.required for o in c.options):
        raise bad(c.name, "a button cannot fill required options")


# ---- argument validation: a strict pydantic model per command, generated from its options ----------
def _field(o: Option) -> tuple[Any, Any]:
    short = 0 if not o.required else 1
    kinds: dict[str, Any] = {
        "text": Annotated[str, Field(min_length=short, max_length=o.max_len or MAX_TEXT)],
        "number": Annotated[int, Field(ge=-MAX_NUMBER, le=MAX_NUMBER)],
        "flag": bool,
        "person": Annotated[str, Field(min_length=1, max_length=MAX_ID)],
        "emoji": Annotated[str, Field(min_length=1, max_length=64)],
        "when": Annotated[str, Field(min_length=1, max_length=64)],
        "choice": Literal[o.choices] if o.choices else str,
    }
    t = kinds[o.kind]
    return (t, ...) if o.required else (t | None, None)


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@functools.cache
def _model_for(c: Command) -> type[BaseModel]:
    """Built on first use, not at import: the CLI starts without building every command's model."""
    fields: dict[str, Any] = {o.name: _field(o) for o in c.options}
    model: type[BaseModel] = create_model(f"Args_{c.name}", __base__=_Args, **fields)
    return model


_PROBLEMS = {
    "missing": "is missing",
    "extra_forbidden": "is not an argument of this command",
    "string_type": "must be text",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "greater_than_equal": "is too small",
    "less_than_equal": "is too large",
    "string_too_short": "must not be empty",
    "string_too_long": "is too long (at most {max_length} characters)",
    "literal_error": "must be one of {expected}",
}


def validate_args(command: Command, raw: Any, *, text: bool = False) -> dict[str, Any]:
    """``raw`` checked against the command's options: strictly typed JSON, or (``text``) values typed
    as text (``"on"``, ``"12"``) as chat and the CLI give them. Refusal names the first wrong argument."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise Invalid("protocol.bad_argument", argument="args", problem="must be an object")
    model = _model_for(command)
    if text:  # an empty chat/CLI value is no value
        raw = {k: v for k, v in raw.items() if not (isinstance(v, str) and not v.strip())}
    try:
        checked = model.model_validate(dict(raw), strict=not text)
    except ValidationError as e:
        err = e.errors(include_url=False, include_input=False)[0]
        name = str(err["loc"][0]) if err["loc"] else "args"
        problem = _PROBLEMS.get(err["type"], "is of the wrong kind").format(**(err.get("ctx") or {}))
        raise Invalid("protocol.bad_argument", argument=name[:40], problem=problem) from None
    return {k: v for k, v in checked.model_dump().items() if v is not None}
