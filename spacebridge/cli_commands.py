"""``spacebridge cmd NAME SPACE --as ACCOUNT [--OPTION VALUE ...] [--json]``: every table command in a shell.

Built from core/commands.py, which imports no web framework or chat SDK, so the CLI starts fast. The
options are the table's: ``--person 2`` (a queue position or an account id), ``--block`` (a flag
alone means true; ``--block off`` says false), ``--when +2h``. The command runs through the same
``dispatch`` as the web room and the chat apps, as that account, with the same rules and refusals.

The command's events go over the instance's Redis bus (where ``SPACEBRIDGE_REDIS_URL`` is set), so the
serving processes show the change at once. ``react`` needs that bus: a reaction is never stored, the
serving processes count the ones the bus brings them, so without a bus it is refused, not lost.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand

from spacebridge.cli_support import check_as, fail, known, with_platform

if TYPE_CHECKING:  # the table is imported when ``cmd`` runs or its help is shown, not by every command
    from core.commands import Command, CommandTable, Outcome

HELP = "Run a Space command as an account, with the same rules as every chat app."


def summary(table: CommandTable) -> str:
    """``cmd --help``'s list: one paragraph per entry, ``name --option --optional?: summary (least role)``."""
    return "\n\n".join(
        f"{c.name}{''.join(' --' + o.name.replace('_', '-') + ('' if o.required else '?') for o in c.options)}"
        f": {c.summary} ({c.least_role}{', no SPACE needed' if c.scope == 'account' else ''})" for c in table)


def parse_options(command: Command, words: list[str]) -> dict[str, Any]:
    """``--name value`` pairs as the command's raw arguments (text; the table reads their kinds)."""
    from core.errors import Invalid

    known = {o.name: o for o in command.options}
    out: dict[str, Any] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if not word.startswith("--") or len(word) < 3:
            raise Invalid("protocol.bad_argument", argument=word[:40], problem="is not an --option")
        key, _, value = word[2:].partition("=")
        key = key.replace("-", "_")
        option = known.get(key)
        if option is None:
            raise Invalid("protocol.bad_argument", argument=key[:40], problem="is not an argument of this command")
        if not value:
            nxt = words[i + 1] if i + 1 < len(words) else None
            if option.kind == "flag" and (nxt is None or nxt.startswith("--")):
                value = "true"
            elif nxt is None:
                raise Invalid("protocol.bad_argument", argument=key, problem="needs a value")
            else:
                value, i = nxt, i + 1
        out[key] = value
        i += 1
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def run_command(table: CommandTable | None, ctx: typer.Context, name: str, space: str, as_: str,
                as_json: bool) -> None:
    """``spacebridge cmd``: one entry of ``table`` (None: the core's) as account ``as_``, its
    ``--options`` in ``ctx.args``."""
    from core.commands import BUILTIN_TABLE, dispatch
    from core.errors import Invalid, Unavailable
    from core.model.accounts import Actor

    table = BUILTIN_TABLE if table is None else table
    check_as(as_, as_json)
    try:
        command, _ = table.resolve(name)
        raw = parse_options(command, list(ctx.args))
    except Invalid as e:
        from core.messages import describe

        fail(describe(e), 2, as_json, e.as_dict())
        raise  # unreachable

    async def go(platform: Any) -> Outcome:
        await known(platform.core, as_)
        from core.bus import RedisBus
        from spacebridge.ticket_desk import command_ports

        bus = platform.core.bus
        if isinstance(bus, RedisBus):
            try:
                await bus.start()
            except Exception as e:  # redis errors, OSError: Redis is configured but not answering
                await bus.close()
                if command.name == "react":
                    raise Unavailable("reaction.needs_bus", detail=f"not reachable: {type(e).__name__}") from None
                bus = None  # the change is stored all the same; the rooms see it on their next read
        elif command.name == "react":
            raise Unavailable("reaction.needs_bus", detail="set SPACEBRIDGE_REDIS_URL as serve has it")
        try:
            outcome: Outcome = await dispatch(platform.core, Actor(account_id=as_, platform="web"), name,
                                              None if space == "-" else space, raw, table=table, text=True,
                                              ports=command_ports(platform))
        finally:
            if isinstance(bus, RedisBus):
                await bus.close()  # after the outbox reached Redis (or a warning that it could not)
        return outcome

    outcome = with_platform(go, as_json)
    result = {"command": command.name, "outcome": outcome.code, "data": _plain(dict(outcome.data)),
              "result": _plain(outcome.result)}
    if as_json:
        typer.echo(json.dumps(result))
    else:
        facts = "  ".join(f"{k}={v}" for k, v in result["data"].items())
        typer.echo(f"{outcome.code}{'  ' + facts if facts else ''}")


def with_table(app: typer.Typer, table: CommandTable) -> typer.Typer:
    """``app`` (the whole ``spacebridge`` command) with its ``cmd`` reading ``table`` instead: how a test
    runs an entry it added through the real CLI, as if a developer had put it in ``BUILTINS``."""
    shell = copy.copy(app)
    shell.registered_commands = [c for c in app.registered_commands if c.name != "cmd"]
    register(shell, table)
    return shell


class _TableHelp(TyperCommand):
    """``cmd``: its help lists the core's table, read only when the help is shown."""

    @property
    def help(self) -> str:
        from core.commands import BUILTIN_TABLE

        return f"{HELP}\n\n{summary(BUILTIN_TABLE)}"

    @help.setter
    def help(self, value: str | None) -> None:
        pass  # always the table's


def register(app: typer.Typer, table: CommandTable | None = None) -> None:
    """Add ``cmd`` to the CLI, running and listing the entries of ``table`` (the one place the CLI reads
    its table from: ``spacebridge.cli`` gives the core's, None, imported when ``cmd`` runs or its help
    is shown; a test may give the core's plus its own)."""

    def cmd(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="A table command (see the list above).")],
        space: Annotated[str, typer.Argument(help="Space id; '-' for account commands (follow, link) without one.")],
        as_: Annotated[str, typer.Option("--as", help="Account id to act as.")],
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        run_command(table, ctx, name, space, as_, as_json)

    settings = {"allow_extra_args": True, "ignore_unknown_options": True}
    if table is None:
        app.command("cmd", cls=_TableHelp, context_settings=settings)(cmd)
    else:
        app.command("cmd", help=f"{HELP}\n\n{summary(table)}", context_settings=settings)(cmd)
