"""The ``spacebridge`` command's Typer app (``run``): serve, database and doctor here; the command
groups in cli_spaces.py, cli_billing.py, cli_admin.py and the command table in cli_commands.py, on
the helpers in cli_support.py. The entry point (cli.py) first offers the command to a running
command server (cli_client.py, cli_server.py), which runs this same app in a forked child."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from spacebridge import cli_admin, cli_billing, cli_spaces
from spacebridge.cli_commands import register as register_table_commands
from spacebridge.cli_support import (
    JsonOpt,
    fail,
    load_settings_or_exit,
)

if TYPE_CHECKING:  # each command imports what it uses when it runs (issue 20)
    from spacebridge.cli_serve import Handle
    from spacebridge.config import Settings

app = typer.Typer(help="Spacebridge: live audio Spaces on the chat apps your community uses.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
register_table_commands(app)  # spacebridge cmd NAME SPACE --as ACCOUNT ...: the command table

# ---- serve ---------------------------------------------------------------------------------------
@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port (0 picks a free one).")] = None,
    role: Annotated[str | None, typer.Option(
        "--role", help="What this process runs, comma-separated: web,jobs,discord,telegram,media "
                       "(all by default; a subset needs SPACEBRIDGE_REDIS_URL, see docs/deploy.md).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the start-up facts as one JSON line.")] = False,
) -> None:
    """Serve the web room, every configured adapter and the job workers; prints the address to open
    and, on a fresh instance, the first-run link that makes the admin account."""
    import logging

    from core.errors import DomainError
    from core.messages import describe
    from spacebridge import logs
    from spacebridge.app import build, start, stop
    from spacebridge.cli_serve import serve_facts
    from spacebridge.cli_support import remember_serve_url
    from spacebridge.config import ConfigError, load_settings

    try:
        settings = load_settings(host=host, port=port, roles=role)
        logs.setup(settings, console=True)  # redacts tokens, keys and passwords whoever logs them
    except ConfigError as e:
        fail(str(e), 2, as_json)
    if settings.log_level != "DEBUG":  # schema upgrades are logged at debug, not shown on every first start
        logging.getLogger("alembic").setLevel(logging.WARNING)

    async def main() -> None:
        from spacebridge.cli_serve import spawn
        from spacebridge.config import data_dir

        await _preflight(settings)
        commands = spawn(data_dir())  # imports the CLI while this process builds the rest
        try:
            await _serve(commands)
        finally:
            if commands is not None:
                await asyncio.to_thread(commands.stop)

    async def _serve(commands: Handle | None) -> None:
        from spacebridge.cli_serve import wait_ready

        platform = await build(settings)
        stop_event = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_event.set)
        try:
            await start(platform, settings.host, settings.port)
            remember_serve_url(platform.url)
            if commands is not None:  # CLI commands run after this line take the fast path
                await wait_ready(commands)
            facts = await serve_facts(platform)
            if as_json:
                typer.echo(json.dumps(facts))
            else:
                adapters = ", ".join(["web", *sorted(platform.notifiers)])
                roles = "" if len(settings.roles) == 5 else f"roles: {','.join(settings.roles)}; "
                public = f" as {platform.url}" if platform.url != platform.bound_url else ""
                typer.echo(f"Spacebridge is serving at {platform.bound_url}{public}  (database: "
                           f"{platform.engine.dialect.name}; {roles}adapters: {adapters}; Ctrl-C to stop)")
                typer.echo(facts["next"])
            sys.stdout.flush()
            await stop_event.wait()
        finally:
            await stop(platform)

    try:
        asyncio.run(main())
    except ConfigError as e:
        fail(str(e), 2, as_json)
    except DomainError as e:  # the database went away during start-up
        fail(describe(e), 1, as_json, e.as_dict())
    except OSError as e:
        if _from_bind(e):  # only a failed bind is the listen address's fault
            from spacebridge.doctor import listen_problem

            fail(listen_problem(settings.host, settings.port, e), 2, as_json)
        raise


async def _preflight(settings: Settings) -> None:
    """What serve needs before it builds anything, named the way ``doctor`` names it."""
    from spacebridge.config import ConfigError
    from spacebridge.doctor import check_data_dir, check_redis

    for check in (await check_data_dir(settings), await check_redis(settings)):
        if not check["ok"] and not check.get("optional"):
            raise ConfigError(f"{check['name']}: {check['detail']}")


def _from_bind(e: BaseException) -> bool:
    tb = e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "create_server":
            return True
        tb = tb.tb_next
    return False


# ---- db ------------------------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade(as_json: JsonOpt = False) -> None:
    """Bring the database schema to the version this code needs."""
    from core.storage import migrate

    settings = load_settings_or_exit()
    url = settings.resolved_database_url()
    try:
        migrate.upgrade(url)
    except Exception as e:
        fail(f"upgrade failed on {url.split('@')[-1]}: {e}", 1, as_json, {"code": "db.upgrade_failed"})
    head = migrate.head_revision()
    typer.echo(json.dumps({"revision": head}) if as_json else f"database is at {head}")


# ---- doctor --------------------------------------------------------------------------------------
@app.command()
def doctor(as_json: JsonOpt = False) -> None:
    """Check configuration, database, services and tokens, and say what to fix."""
    from spacebridge import logs
    from spacebridge.config import ConfigError, load_settings
    from spacebridge.doctor import run_checks

    try:
        settings = load_settings()
        logs.setup(settings, console=False)
    except ConfigError as e:
        checks = [{"name": "config", "ok": False, "detail": str(e)}]
    else:
        checks = asyncio.run(run_checks(settings))
    if as_json:
        typer.echo(json.dumps({"ok": all(c["ok"] or c.get("optional") for c in checks), "checks": checks}))
    else:
        for c in checks:
            mark = "ok  " if c["ok"] else ("--  " if c.get("optional") else "FAIL")
            typer.echo(f"[{mark}] {c['name']}: {c['detail']}")
    if not all(c["ok"] or c.get("optional") for c in checks):
        raise typer.Exit(2)  # what serve exits with for the same problems


for group in (cli_spaces, cli_billing, cli_admin):  # each command group in a module of its own
    group.register(app)


_prebuilt: Any = None  # the click command Typer builds from ``app``, made once by the command server


def prebuild() -> None:
    """Build the click command tree now (the command server does, once, before it forks children):
    reading every command's signature is most of what ``app()`` costs before it runs anything."""
    global _prebuilt
    _prebuilt = typer.main.get_command(app)


def _app(**kwargs: Any) -> Any:
    """``app(**kwargs)``: Typer builds the click command and calls it (the prebuilt one if there is one;
    pretty exceptions are off, so an uncaught error prints as the interpreter prints it either way)."""
    if _prebuilt is None:
        return app(**kwargs)
    return _prebuilt(**kwargs)


def run() -> None:
    """Run the CLI; with --json, even a usage error (a mistyped option) is printed as JSON."""
    if "--json" not in sys.argv[1:]:
        _app()
        return
    from typer.exceptions import Abort, TyperException

    try:
        code = _app(standalone_mode=False)
    except TyperException as e:  # usage errors: unknown option, a value of the wrong type
        typer.echo(json.dumps({"error": {"message": e.format_message(), "code": "cli.usage"}}))
        sys.exit(e.exit_code)
    except Abort:
        typer.echo(json.dumps({"error": {"message": "aborted", "code": "cli.aborted"}}))
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
