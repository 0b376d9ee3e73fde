"""What every ``spacebridge`` subcommand shares: loading settings, running a coroutine against the
configured database (core alone, or with the ledger and Stripe), and errors printed as sentences or JSON.
A module of its own so the command groups (cli.py, cli_commands.py, ...) import it, not each other."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:  # imported where used: ``--help`` and a usage error load no settings or model
    from core.model.accounts import Actor
    from core.model.space import Space
    from spacebridge.config import Settings

T = TypeVar("T")

AsOptional = Annotated[str | None, typer.Option("--as", help="Act as this account (default: as the operator).")]
BUSY_RETRIES = 3  # a buy tried again after the database stayed busy past its timeout (see with_platform)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
AsOpt = Annotated[str, typer.Option("--as", help="Account id to act as.")]


def fail(message: str, code: int = 1, as_json: bool = False, data: dict[str, Any] | None = None) -> None:
    if as_json:
        typer.echo(json.dumps({"error": {"message": message, **(data or {})}}))
    else:
        typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def load_settings_or_exit() -> Settings:
    from spacebridge import logs
    from spacebridge.config import ConfigError, load_settings

    try:
        settings = load_settings()
        logs.setup(settings, console=False)  # secrets redacted from whatever a library logs
    except ConfigError as e:
        fail(str(e), 2)
        raise  # unreachable
    return settings


def with_core(fn: Callable[[Any], Awaitable[T]], as_json: bool = False) -> T:
    """Run ``fn(core)`` against the configured database; domain errors become a clear message.

    Built by ``open_platform`` (engine, schema check, bus, core), never by ``spacebridge.app``: a
    command that reads or writes the database imports no adapter, bot SDK, aiortc or numpy."""
    return with_platform(lambda platform: fn(platform.core), as_json, ledger=False)


def operator(account_id: str) -> Actor:
    from core.model.accounts import Actor

    return Actor(account_id=account_id, platform="web", is_operator=True)


def check_as(as_: str | None, as_json: bool) -> None:
    """``--as ""`` is a mistake, never "act as the operator": refuse it before touching anything."""
    if as_ is not None and not as_.strip():
        fail("--as needs an account id (leave --as out to act as the operator where that is allowed)", 2,
              as_json, {"code": "cli.bad_option", "option": "--as"})


async def known(core: Any, *account_ids: str) -> None:
    """A clear account.not_found for an unknown id, instead of a database constraint error later."""
    for account_id in account_ids:
        await core.account(account_id)


def space_dict(s: Space) -> dict[str, Any]:
    return {
        "id": s.id, "title": s.title, "state": s.state.value, "host_id": s.host_id,
        "visibility": s.visibility.value, "topics": s.topics, "community_id": s.community_id,
        "scheduled_for": s.scheduled_for.isoformat() if s.scheduled_for else None,
        "started_at": s.started_at.isoformat() if s.started_at else None,
        "ended_at": s.ended_at.isoformat() if s.ended_at else None,
        "subscribers": None if s.subscribers is None else {"tier_id": s.subscribers.tier_id,
                                                           "early_minutes": s.subscribers.early_minutes},
    }


def print_space(s: Space, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(space_dict(s)))
    else:
        when = s.scheduled_for.strftime(" %Y-%m-%d %H:%M UTC") if s.scheduled_for else ""
        typer.echo(f"{s.id}  {s.state.value:<9}{when}  {s.title}")


def with_platform(fn: Callable[[Any], Awaitable[T]], as_json: bool = False, *, retry_busy: bool = False,
                  ledger: bool = True) -> T:
    """Run ``fn(platform)``: ``platform`` has ``settings``, ``engine``, ``core`` and, with ``ledger``,
    what billing commands need (``ledger``, Stripe ``stripe``), wired as ``serve`` wires them but
    without the adapters: a ticket rush starts many of these at once, so they start fast and only
    read the database until the command itself writes.

    ``retry_busy``: ``fn`` is idempotent (a buy: the same hold, the same payment), so a database
    that stayed busy past its timeout (SQLite's one writer, under a rush on a loaded machine) is
    tried again a few times before the buyer is told to come back later."""
    import random

    from core.errors import DomainError, Unavailable
    from core.messages import describe
    from spacebridge.config import ConfigError

    settings = load_settings_or_exit()

    async def go() -> T:
        async with open_platform(settings, ledger=ledger) as platform:
            for attempt in range(BUSY_RETRIES if retry_busy else 0):
                try:
                    return await fn(platform)
                except Unavailable as e:
                    if e.data.get("what") != "database":
                        raise
                    await asyncio.sleep(random.uniform(0.5, 2.0) * (attempt + 1))  # waiters spread out
            return await fn(platform)

    try:
        return asyncio.run(go())
    except DomainError as e:
        fail(describe(e), 1, as_json, e.as_dict())
    except ConfigError as e:  # e.g. the database cannot be opened: a sentence, never a traceback
        fail(str(e), 2, as_json)
    raise AssertionError("unreachable")


@asynccontextmanager
async def open_platform(settings: Settings, *, ledger: bool = True) -> AsyncIterator[SimpleNamespace]:
    """The engine (schema checked, SQLite upgraded), the bus ``serve`` would use and the core; with
    ``ledger`` also the ticket ledger and, where sales are on, the Stripe gateway. Closed on exit."""
    from core.bus import EventBus, InProcessBus, RedisBus
    from core.clock import SystemClock
    from core.services import Core
    from core.storage.engine import make_engine, make_sessionmaker
    from spacebridge.config import ConfigError
    from spacebridge.schema import ensure_schema

    try:
        engine = make_engine(settings.resolved_database_url(), connect_timeout_s=settings.database_connect_timeout_s,
                             statement_timeout_s=settings.database_statement_timeout_s)
    except OSError as e:  # SQLite's directory cannot be made
        from spacebridge.doctor import database_problem

        raise ConfigError(database_problem(settings, e)) from None
    stripe: Any = None
    try:
        await ensure_schema(settings, engine)
        bus: EventBus = (RedisBus(settings.redis_url, prefix=settings.redis_prefix or None)
                         if settings.redis_url else InProcessBus())
        core = Core(make_sessionmaker(engine), bus, SystemClock(),
                    reaction_rate_per_s=settings.reaction_rate_per_s, host_grace_s=settings.host_grace_s,
                    speaker_grace_s=settings.speaker_grace_s, presence_stale_s=settings.presence_stale_s)
        platform = SimpleNamespace(settings=settings, engine=engine, core=core, ledger=None, stripe=None)
        if ledger:
            from billing.ledger import Ledger

            platform.ledger = Ledger(core, hold=timedelta(minutes=settings.ticket_hold_minutes),
                                     fee_bps=settings.platform_fee_bps)
            if settings.ticketing_enabled:
                from billing.stripe_gateway import StripeGateway

                assert settings.stripe_api_key is not None
                stripe = platform.stripe = StripeGateway(
                    settings.stripe_api_key.get_secret_value(), api_base=settings.stripe_api_base or None,
                    fee_bps=settings.platform_fee_bps)
        yield platform
    finally:
        if stripe is not None:
            await stripe.close()
        await engine.dispose()


SERVE_URL_FILE = "serve-url"  # in the data dir: the public address of the last `serve` started there


def remember_serve_url(url: str) -> None:
    """``serve`` notes its public address so that links the CLI prints later reach it, whatever port
    the shell running the CLI has configured (``--port 0``, ``--port 9000``)."""
    from spacebridge.config import data_dir

    path = data_dir() / SERVE_URL_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(url.rstrip("/") + "\n", encoding="utf-8")
    except OSError:
        pass  # links then fall back to the configured host and port, as before


def link_base(settings: Settings) -> str:
    """Where links printed by the CLI point: the configured public URL; else the address of the last
    ``serve`` on this data dir; else the configured host and port."""
    from spacebridge.config import data_dir

    if settings.public_url.strip():
        return settings.base_url()
    try:
        noted = (data_dir() / SERVE_URL_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        noted = ""
    return noted if noted.startswith(("http://", "https://")) else settings.base_url()
