"""Where each table command lives among the bot's slash commands, and Discord's limits on them.

Why: Discord allows 25 subcommands in one command, so the table (30 commands and growing) cannot all
sit under ``/space``. The layout is derived from the table, so a new table command lands somewhere
by itself: what people on stage and moderators do goes to ``/stage``, commands about a host rather
than a Space are top-level, the rest stays under ``/space``. ``problems`` checks the payload the bot
sends to Discord against Discord's limits before it is sent (startup fails loudly, naming the command,
instead of Discord refusing the whole sync and every command vanishing); a test checks it too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from core.command_model import Command

# The top-level commands that hold subcommands, with what Discord shows for them.
GROUPS: dict[str, str] = {
    "space": "Live audio Spaces: start, schedule, take part, tickets",
    "stage": "The stage: hands, speakers, moderation, pins and captions",
}
# A command whose place is not what its least role says; None: a top-level command of its own.
PLACES: dict[str, str | None] = {
    "accept_invite": "stage",  # anyone invited may accept: it is about the stage all the same
    "follow": None,  # about a host, not a Space
    "unfollow": None,
}
# Discord's own subcommands (no table entry): where they live.
OWN: dict[str, str] = {"schedule": "space", "join": "space", "queue": "stage", "subscribe": "space",
                       # a creator's own tiers (adapters/discord/tiers.py says why not /spacebridge)
                       "tiers": "space", "tier_create": "space", "tier_archive": "space", "tier_stars": "space"}
# A table flag Discord shows under another name (True means the value is inverted): ``/space hand down:True``.
FLAG_NAMES: dict[tuple[str, str], tuple[str, bool]] = {
    ("hand", "up"): ("down", True),
    ("remind", "on"): ("off", True),
    ("captions", "enabled"): ("on", False),
}

MAX_TOP_LEVEL = 100  # chat-input commands per application
MAX_OPTIONS = 25  # options, subcommands or subcommand groups at one level; choices per option
MAX_NAME = 32
MAX_DESCRIPTION = 100
MAX_STRING = 6000  # a string option's max_length
MAX_COMBINED = 8000  # names, descriptions and choice values of one command, all levels together
_NAME = re.compile(r"^[-_\w]{1,32}$")
SUB, GROUP = 1, 2  # option types of a subcommand and a subcommand group


def group_of(command: Command) -> str | None:
    """The ``/group`` a table command is a subcommand of, or None for a top-level command."""
    if command.name in PLACES:
        return PLACES[command.name]
    return "stage" if command.least_role in ("speaker", "moderator") else "space"


def layout(commands: Iterable[Command]) -> dict[str | None, list[str]]:
    """Every command's place: group name (None: top level) -> subcommand names, table and Discord's own."""
    out: dict[str | None, list[str]] = {g: [] for g in GROUPS}
    for c in commands:
        out.setdefault(group_of(c), []).append(c.name)
    for name, group in OWN.items():
        out[group].append(name)
    return out


def leaves(payload: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """What a person can type, from the payload Discord holds: subcommand or command name -> its path."""
    out: dict[str, str] = {}
    for c in payload:
        subs = [o for o in c.get("options") or [] if o.get("type") in (SUB, GROUP)]
        if not subs:
            out[c["name"]] = f"/{c['name']}"
        for s in subs:
            if s.get("type") == GROUP:
                for leaf in s.get("options") or []:
                    out[leaf["name"]] = f"/{c['name']} {s['name']} {leaf['name']}"
            else:
                out[s["name"]] = f"/{c['name']} {s['name']}"
    return out


def _combined(node: Mapping[str, Any]) -> int:
    n = len(node.get("name", "")) + len(node.get("description", ""))
    n += sum(len(str(ch.get("name", ""))) + len(str(ch.get("value", ""))) for ch in node.get("choices") or [])
    return n + sum(_combined(o) for o in node.get("options") or [])


def _check(node: Mapping[str, Any], path: str, depth: int, out: list[str]) -> None:
    name, description = str(node.get("name", "")), str(node.get("description", ""))
    if not _NAME.match(name) or name != name.lower():
        out.append(f"{path}: name {name!r} must be 1-{MAX_NAME} lowercase letters, digits, - or _")
    if not 1 <= len(description) <= MAX_DESCRIPTION:
        out.append(f"{path}: description must be 1-{MAX_DESCRIPTION} characters (is {len(description)})")
    options = list(node.get("options") or [])
    if len(options) > MAX_OPTIONS:
        out.append(f"{path}: {len(options)} options or subcommands, Discord allows {MAX_OPTIONS}")
    if len({o.get("name") for o in options}) != len(options):
        out.append(f"{path}: two options share a name")
    kinds = {o.get("type") in (SUB, GROUP) for o in options}
    if len(kinds) > 1:
        out.append(f"{path}: subcommands and plain options cannot be mixed")
    seen_optional = False
    for o in options:
        sub = f"{path} {o.get('name')}"
        if depth > 0 and (o.get("type") == GROUP or (o.get("type") == SUB and node.get("type") != GROUP)):
            out.append(f"{sub}: nested deeper than Discord allows (command, group, subcommand)")
        if o.get("type") in (SUB, GROUP):
            _check(o, sub, depth + 1, out)
            continue
        _check({k: v for k, v in o.items() if k != "options"}, sub, depth + 1, out)
        if o.get("required"):
            if seen_optional:
                out.append(f"{sub}: a required option must come before the optional ones")
        else:
            seen_optional = True
        if len(o.get("choices") or []) > MAX_OPTIONS:
            out.append(f"{sub}: more than {MAX_OPTIONS} choices")
        if int(o.get("max_length") or 0) > MAX_STRING:
            out.append(f"{sub}: max_length above {MAX_STRING}")


def problems(payload: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every way ``payload`` (the application commands as sent to Discord) breaks Discord's limits."""
    out: list[str] = []
    chat = [c for c in payload if c.get("type", 1) == 1]
    if len(chat) > MAX_TOP_LEVEL:
        out.append(f"{len(chat)} top-level commands, Discord allows {MAX_TOP_LEVEL}")
    if len({c["name"] for c in chat}) != len(chat):
        out.append("two top-level commands share a name")
    for c in chat:
        _check(c, f"/{c['name']}", 0, out)
        if _combined(c) > MAX_COMBINED:
            out.append(f"/{c['name']}: {_combined(c)} characters of names and descriptions, Discord allows "
                       f"{MAX_COMBINED}")
    return out


def top_levels() -> list[str]:
    """The bot's own top-level commands that carry the table (not setup, not plugins')."""
    return [*GROUPS, *(name for name, place in PLACES.items() if place is None)]


def usage(payload: Sequence[Mapping[str, Any]]) -> str:
    """The command list of docs/discord.md, from the payload Discord holds (regenerate, never hand-edit).

    One line per command: its path, required options bare and optional ones in brackets (``space``,
    which every Space command takes, is left out), and its description."""
    lines = []
    tops = top_levels()
    for c in sorted((c for c in payload if c["name"] in tops), key=lambda c: tops.index(c["name"])):
        subs = sorted((o for o in c.get("options") or [] if o.get("type") == SUB), key=lambda o: o["name"]) or [c]
        for s in subs:
            path = f"/{c['name']}" + (f" {s['name']}" if s is not c else "")
            opts = [o["name"] if o.get("required") else f"[{o['name']}]" for o in s.get("options") or []
                    if o["name"] != "space"]
            lines.append(f"- `{' '.join([path, *opts])}`: {s['description']}")
    return "\n".join(lines) + "\n"
