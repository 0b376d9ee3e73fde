"""The ``spacebridge`` command: serve, database, doctor and admin commands that need no chat app."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from core.errors import DomainError
from core.messages import describe
from core.model.accounts import Actor
from core.model.space import Space
from core.timeparse import parse_when
from spacebridge import logs
from spacebridge.cli_commands import register as register_table_commands
from spacebridge.cli_support import (
    AsOpt,
    AsOptional,
    JsonOpt,
    check_as,
    fail,
    known,
    load_settings_or_exit,
    operator,
    print_space,
    space_dict,
    with_core,
    with_platform,
)
from spacebridge.config import ConfigError, Settings, load_settings

T = TypeVar("T")

app = typer.Typer(help="Spacebridge: live audio Spaces on the chat apps your community uses.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
space_app = typer.Typer(help="Create and run Spaces.", no_args_is_help=True)
account_app = typer.Typer(help="Accounts and their platform identities.", no_args_is_help=True)
community_app = typer.Typer(help="Communities (Discord guilds, Telegram chats, this instance).",
                            no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(space_app, name="space")
app.add_typer(account_app, name="account")
billing_app = typer.Typer(help="Ticket sales and creator payouts.", no_args_is_help=True)
app.add_typer(community_app, name="community")
app.add_typer(billing_app, name="billing")
register_table_commands(app)  # spacebridge cmd NAME SPACE --as ACCOUNT ...: the command table

# ---- serve ---------------------------------------------------------------------------------------
@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port (0 picks a free one).")] = None,
    role: Annotated[str | None, typer.Option(
        "--role", help="What this process runs, comma-separated: web,jobs,discord,telegram,media "
                       "(all by default; a subset needs SPACEBRIDGE_REDIS_URL, see docs/deploy.md).")] = None,
) -> None:
    """Serve the web room, every configured adapter and the job workers."""
    from spacebridge.app import build, start, stop

    try:
        settings = load_settings(host=host, port=port, roles=role)
        logs.setup(settings, console=True)  # redacts tokens, keys and passwords whoever logs them
    except ConfigError as e:
        fail(str(e), 2)

    async def main() -> None:
        await _preflight(settings)
        platform = await build(settings)
        stop_event = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_event.set)
        try:
            await start(platform, settings.host, settings.port)
            adapters = ", ".join(["web", *sorted(platform.notifiers)])
            roles = "" if len(settings.roles) == 5 else f"roles: {','.join(settings.roles)}; "
            public = f" as {platform.url}" if platform.url != platform.bound_url else ""
            typer.echo(f"Spacebridge is serving at {platform.bound_url}{public}  (database: "
                       f"{platform.engine.dialect.name}; {roles}adapters: {adapters}; Ctrl-C to stop)")
            sys.stdout.flush()
            await stop_event.wait()
        finally:
            await stop(platform)

    try:
        asyncio.run(main())
    except ConfigError as e:
        fail(str(e), 2)
    except DomainError as e:  # the database went away during start-up
        fail(describe(e), 1)
    except OSError as e:
        if _from_bind(e):  # only a failed bind is the listen address's fault
            from spacebridge.doctor import listen_problem

            fail(listen_problem(settings.host, settings.port, e), 2)
        raise


async def _preflight(settings: Settings) -> None:
    """What serve needs before it builds anything, named the way ``doctor`` names it."""
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
def db_upgrade() -> None:
    """Bring the database schema to the version this code needs."""
    from core.storage import migrate

    settings = load_settings_or_exit()
    url = settings.resolved_database_url()
    try:
        migrate.upgrade(url)
    except Exception as e:
        fail(f"upgrade failed on {url.split('@')[-1]}: {e}", 1)
    typer.echo(f"database is at {migrate.head_revision()}")


# ---- doctor --------------------------------------------------------------------------------------
@app.command()
def doctor(as_json: JsonOpt = False) -> None:
    """Check configuration, database, services and tokens, and say what to fix."""
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


# ---- accounts ------------------------------------------------------------------------------------
@account_app.command("create")
def account_create(name: str, as_json: JsonOpt = False) -> None:
    """Create a web account (for operators running Spaces from the shell)."""
    acc = with_core(lambda core: core.create_account(name), as_json)
    typer.echo(json.dumps({"id": acc.id, "display_name": acc.display_name}) if as_json else acc.id)


@account_app.command("show")
def account_show(account_id: str, as_json: JsonOpt = False) -> None:
    async def go(core: Any) -> dict[str, Any]:
        acc = await core.account(account_id)
        ids = await core.identities(account_id)
        return {"id": acc.id, "display_name": acc.display_name, "tier": acc.tier.value,
                "followers": await core.follower_count(account_id),
                "identities": [{"platform": i.platform, "external_id": i.external_id, "reachable": i.reachable}
                               for i in ids]}

    info = with_core(go, as_json)
    if as_json:
        typer.echo(json.dumps(info))
    else:
        typer.echo(f"{info['id']}  {info['display_name']}  tier={info['tier']}  followers={info['followers']}")
        for i in info["identities"]:
            typer.echo(f"  {i['platform']}:{i['external_id']}{'' if i['reachable'] else ' (unreachable)'}")


@account_app.command("tier")
def account_tier(account_id: str, tier: Annotated[str, typer.Argument(help="free or paid")]) -> None:
    from core.model.accounts import Tier

    try:
        t = Tier(tier)
    except ValueError:
        fail("tier must be free or paid", 2)
    with_core(lambda core: core.set_tier(operator(account_id), account_id, t))
    typer.echo(f"{account_id} is now {t.value}")


@app.command()
def follow(host: str, as_: AsOpt, unfollow: Annotated[bool, typer.Option("--unfollow")] = False,
           as_json: JsonOpt = False) -> None:
    """Follow (or --unfollow) a host; prints the host's follower count."""
    check_as(as_, as_json)

    async def go(core: Any) -> int:
        await known(core, as_, host)
        n: int = await core.follow(Actor(account_id=as_, platform="web"), host, on=not unfollow)
        return n

    n = with_core(go, as_json)
    typer.echo(json.dumps({"host_id": host, "followers": n, "following": not unfollow}) if as_json else
               f"{host} has {n} followers")


# ---- spaces --------------------------------------------------------------------------------------
@space_app.command("list")
def space_list(
    state: Annotated[list[str] | None, typer.Option(help="live, scheduled, ended, cancelled (repeatable)")] = None,
    host: Annotated[str | None, typer.Option(help="Only this host's Spaces.")] = None,
    as_json: JsonOpt = False,
) -> None:
    states = state or ["live", "scheduled"]
    spaces = with_core(lambda core: core.list_spaces(states=states, host_id=host), as_json)
    if as_json:
        typer.echo(json.dumps([space_dict(s) for s in spaces]))
    elif not spaces:
        typer.echo("no Spaces")
    else:
        for s in spaces:
            print_space(s, False)


def _create(title: str, as_: str, at: str | None, topic: list[str] | None, unlisted: bool,
            community: str | None, override: bool, as_json: bool) -> None:
    check_as(as_, as_json)

    async def go(core: Any) -> Space:
        when: datetime | None = parse_when(at, core.now()) if at else None
        actor = Actor(account_id=as_, platform="web", is_operator=override)
        space: Space = await core.create_space(actor, title, start_at=when, topics=topic or [],
                                               visibility="unlisted" if unlisted else "public",
                                               community_id=community)
        return space

    print_space(with_core(go, as_json), as_json)


TopicOpt = Annotated[list[str] | None, typer.Option("--topic", help="Topic (up to 3).")]
UnlistedOpt = Annotated[bool, typer.Option("--unlisted", help="Only people with the link can find it.")]
CommunityOpt = Annotated[str | None, typer.Option(help="Community id (default: this instance).")]
OverrideOpt = Annotated[bool, typer.Option("--override", help="Skip host eligibility (operator).")]


@space_app.command("create")
def space_create(title: str, as_: AsOpt, topic: TopicOpt = None, unlisted: UnlistedOpt = False,
                 community: CommunityOpt = None, override: OverrideOpt = False, as_json: JsonOpt = False) -> None:
    """Start a Space now, hosted by --as."""
    _create(title, as_, None, topic, unlisted, community, override, as_json)


@space_app.command("schedule")
def space_schedule(title: str, as_: AsOpt,
                   at: Annotated[str, typer.Option(help="Start: ISO time with zone, or +90m / in 2h / 3d.")],
                   topic: TopicOpt = None, unlisted: UnlistedOpt = False, community: CommunityOpt = None,
                   override: OverrideOpt = False, as_json: JsonOpt = False) -> None:
    """Schedule a Space up to 30 days ahead."""
    _create(title, as_, at, topic, unlisted, community, override, as_json)


def _space_cmd(space_id: str, as_: str | None, as_json: bool,
               fn: Callable[[Any, Actor], Awaitable[Space]]) -> None:
    check_as(as_, as_json)

    async def go(core: Any) -> Space:
        actor_id = as_ or (await core.view(space_id)).space.host_id
        return await fn(core, Actor(account_id=actor_id, platform="web", is_operator=as_ is None))

    print_space(with_core(go, as_json), as_json)




@space_app.command("start")
def space_start(space_id: str, as_: AsOptional = None, as_json: JsonOpt = False) -> None:
    _space_cmd(space_id, as_, as_json, lambda core, a: core.start_space(a, space_id))


@space_app.command("end")
def space_end(space_id: str, as_: AsOptional = None, as_json: JsonOpt = False) -> None:
    _space_cmd(space_id, as_, as_json, lambda core, a: core.end_space(a, space_id))


@space_app.command("cancel")
def space_cancel(space_id: str, as_: AsOptional = None, as_json: JsonOpt = False) -> None:
    _space_cmd(space_id, as_, as_json, lambda core, a: core.cancel_space(a, space_id))


@space_app.command("reschedule")
def space_reschedule(space_id: str, at: Annotated[str, typer.Option(help="New start time.")],
                     as_: AsOptional = None, as_json: JsonOpt = False) -> None:
    _space_cmd(space_id, as_, as_json, lambda core, a: core.reschedule_space(a, space_id, parse_when(at, core.now())))


@space_app.command("show")
def space_show(space_id: str, as_json: JsonOpt = False) -> None:
    view = with_core(lambda core: core.view(space_id), as_json)
    d = view.as_dict()
    if as_json:
        typer.echo(json.dumps(d))
        return
    typer.echo(f"{d['title']}  [{d['state']}]  id={d['id']}")
    typer.echo(f"host: {d['host_name']} ({d['host_id']})  listeners: {d['listener_count']}")
    if d["scheduled_for"]:
        typer.echo(f"scheduled for: {d['scheduled_for']}")
    for label, key in (("co-hosts", "cohosts"), ("speakers", "speakers"), ("queue", "queue")):
        if d[key]:
            typer.echo(f"{label}: " + ", ".join(d["names"].get(a, a) for a in d[key]))
    for p in d["pins"]:
        typer.echo(f"pinned: {p['title']} {p['url'] or p['message_ref']}")


@space_app.command("link")
def space_link(space_id: str,
               as_: Annotated[str | None, typer.Option(
                   "--as", help="The account the link is for (leave out for a guest link).")] = None,
               role: Annotated[str, typer.Option(help="listener, speaker or guest (no account, listen only)")]
               = "listener",
               ttl: Annotated[int, typer.Option(help="Seconds the link stays valid.")] = 900,
               as_json: JsonOpt = False) -> None:
    """A join link for the web room (signed, short-lived, bound to Space, account and role); a guest
    link has no account and only listens to a public Space that sells no tickets."""
    from core.tokens import JoinTokens

    check_as(as_, as_json)
    if role not in ("listener", "speaker", "guest"):
        fail("role must be listener, speaker or guest", 2, as_json)
    if (role == "guest") != (as_ is None):
        fail("a guest link has no --as; a listener or speaker link needs --as ACCOUNT", 2, as_json,
              {"code": "cli.bad_option", "option": "--as"})
    if not 30 <= ttl <= 7 * 24 * 3600:
        fail("ttl must be between 30 seconds and 7 days", 2, as_json)
    settings = load_settings_or_exit()

    async def go(core: Any) -> dict[str, Any]:
        from core.errors import Conflict, Forbidden

        view = await core.view(space_id)
        if as_ is not None:
            await core.account(as_)
        if view.space.state.value in ("ended", "cancelled"):
            raise Conflict("space.closed", space_id=space_id, state=view.space.state.value)
        if as_ is None and view.space.visibility.value != "public":
            raise Forbidden("space.guests_not_allowed", space_id=space_id)
        if as_ is None and view.space.ticketing is not None:  # a guest has no account to hold a ticket
            raise Forbidden("ticket.required", space_id=space_id)
        token = JoinTokens(settings.resolved_secret()).issue(space_id, as_, role, core.now(), ttl_s=ttl)
        return {"space_id": space_id, "account_id": as_, "role": role, "token": token,
                "url": f"{settings.base_url()}/s/{space_id}#t={token}", "expires_in_s": ttl}

    out = with_core(go, as_json)
    typer.echo(json.dumps(out) if as_json else out["url"])


# ---- billing -------------------------------------------------------------------------------------

@billing_app.command("report")
def billing_report(space_id: str, as_json: JsonOpt = False) -> None:
    """What a ticketed Space sold: tickets, refunds, gross, platform fees and the creator's net."""
    from billing.ledger import Ledger

    r = with_core(lambda core: Ledger(core).report(space_id), as_json)
    if as_json:
        typer.echo(json.dumps(r.as_dict()))
        return
    cur = r.currency

    def money(minor: int) -> str:
        return f"{minor} XTR" if cur == "XTR" else f"{minor / 100:.2f} {cur}"

    typer.echo(f"sold {r.sold} (refunded {r.refunded}, held now {r.held}, capacity {r.capacity or 'unlimited'})")
    if r.returned:
        typer.echo(f"returned {r.returned} extra payment(s) of {money(r.returned_minor)} "
                   f"({r.refunds_pending} refund(s) still on the way)")
    typer.echo(f"gross {money(r.gross_minor)}  refunded {money(r.refunded_minor)}  fees {money(r.fees_minor)}  "
               f"net {money(r.net_minor)}")


@billing_app.command("ticketing")
def billing_ticketing(
    space_id: str,
    price: Annotated[int | None, typer.Option(help="Price in minor units (cents; Stars for XTR).")] = None,
    currency: Annotated[str, typer.Option(help="ISO currency, or XTR for Telegram Stars.")] = "eur",
    capacity: Annotated[int | None, typer.Option(help="Seats (default: unlimited).")] = None,
    sales_start: Annotated[str | None, typer.Option(help="When sales open (ISO time or +2h).")] = None,
    sales_end: Annotated[str | None, typer.Option(help="When sales close.")] = None,
    off: Annotated[bool, typer.Option("--off", help="Make the Space free again.")] = False,
    as_: AsOptional = None, as_json: JsonOpt = False,
) -> None:
    """Make a scheduled Space ticketed (or free again with --off)."""
    from core.model.space import Ticketing

    check_as(as_, as_json)
    if not off and price is None:
        fail("give --price (or --off)", 2, as_json)

    async def go(core: Any) -> Space:
        actor_id = as_ or (await core.view(space_id)).space.host_id
        actor = Actor(account_id=actor_id, platform="web", is_operator=as_ is None)
        terms = None if off else Ticketing(
            price_minor=int(price or 0), currency=currency, capacity=capacity,
            sales_start=parse_when(sales_start, core.now()) if sales_start else None,
            sales_end=parse_when(sales_end, core.now()) if sales_end else None)
        space: Space = await core.set_ticketing(actor, space_id, terms)
        return space

    space = with_core(go, as_json)
    t = space.ticketing
    if as_json:
        typer.echo(json.dumps({**space_dict(space), "ticketing": None if t is None else
                               {"price_minor": t.price_minor, "currency": t.currency, "capacity": t.capacity}}))
    else:
        typer.echo("free" if t is None else f"{t.price_minor} {t.currency}, capacity {t.capacity or 'unlimited'}")


@billing_app.command("buy")
def billing_buy(space_id: str, as_: AsOpt,
                checkout: Annotated[bool, typer.Option("--checkout", help="A hosted checkout link.")] = False,
                as_json: JsonOpt = False) -> None:
    """Hold a seat for --as and open a payment: a PaymentIntent (card form) or a checkout link."""
    from billing.sales import TicketSales

    check_as(as_, as_json)

    async def go(platform: Any) -> dict[str, Any]:
        await known(platform.core, as_)
        sales = TicketSales(platform.ledger, platform.stripe, platform.settings.base_url())
        actor = Actor(account_id=as_, platform="web")
        if checkout:
            view = await platform.core.view(space_id)
            p = await sales.buy_with_checkout(actor, space_id, view.space.title)
        else:
            p = await sales.buy_with_card(actor, space_id)
        return {"ticket_id": p.ticket.id, "provider_ref": p.provider_ref, "client_secret": p.client_secret,
                "url": p.url, "hold_expires_at": p.ticket.hold_expires_at.isoformat()
                if p.ticket.hold_expires_at else None}

    out = with_platform(go, as_json, retry_busy=True)
    typer.echo(json.dumps(out) if as_json else (out["url"] or out["provider_ref"]))


@billing_app.command("refund")
def billing_refund(space_id: str, as_: AsOpt, as_json: JsonOpt = False) -> None:
    """Ask for a refund of --as's ticket (offered once the host has moved the Space)."""
    check_as(as_, as_json)
    t = with_platform(lambda p: p.ledger.request_refund(Actor(account_id=as_, platform="web"), space_id), as_json)
    typer.echo(json.dumps({"ticket_id": t.id, "refund": "queued"}) if as_json else f"refund of {t.id} queued")


@billing_app.command("connect")
def billing_connect(as_: AsOpt, email: Annotated[str | None, typer.Option(help="Creator's e-mail.")] = None,
                    as_json: JsonOpt = False) -> None:
    """Start (or resume) Stripe Connect Express onboarding for a creator; prints the onboarding link."""
    from billing.stripe_gateway import BillingError

    check_as(as_, as_json)

    async def go(platform: Any) -> dict[str, Any]:
        await known(platform.core, as_)
        if platform.stripe is None:
            raise BillingError("billing.off", hint="set STRIPE_API_KEY and STRIPE_WEBHOOK_SECRET")
        acct = await platform.ledger.payout_account(as_)
        if acct is None:
            acct = await platform.stripe.create_connect_account(as_, email)
            await platform.ledger.set_payout_account(as_, acct)
        base = platform.settings.base_url()
        url = await platform.stripe.account_link(acct, f"{base}/connect/refresh", f"{base}/connect/done")
        ready = await platform.stripe.account_ready(acct, fresh=True)
        return {"account_id": as_, "stripe_account": acct, "onboarding_url": url, "ready": ready,
                "message": None if ready else describe(BillingError("billing.payouts_not_ready"))}

    out = with_platform(go, as_json)
    typer.echo(json.dumps(out) if as_json else out["onboarding_url"])
    if not as_json and out["message"]:
        typer.echo(out["message"], err=True)


# ---- communities ---------------------------------------------------------------------------------
@community_app.command("list")
def community_list(as_json: JsonOpt = False) -> None:
    cs = with_core(lambda core: core.communities(), as_json)
    if as_json:
        typer.echo(json.dumps([{"id": c.id, "platform": c.platform, "external_id": c.external_id, "name": c.name}
                               for c in cs]))
    else:
        for c in cs:
            typer.echo(f"{c.id}  {c.platform}:{c.external_id}  {c.name}")


@community_app.command("create")
def community_create(platform: str, external_id: str, name: str, as_json: JsonOpt = False) -> None:
    """Register a community (the bots do this themselves when added)."""
    for label, value, most in (("external id", external_id, 64), ("name", name, 200)):
        if not value.strip() or len(value) > most:
            fail(f"the community's {label} must be 1 to {most} characters, not blank", 2, as_json,
                  {"code": "cli.bad_argument", "argument": label})
    c = with_core(lambda core: core.ensure_community(platform, external_id, name), as_json)
    typer.echo(json.dumps({"id": c.id}) if as_json else c.id)


@community_app.command("show")
def community_show(community_id: str) -> None:
    c = with_core(lambda core: core.community(community_id))
    typer.echo(json.dumps({"id": c.id, "platform": c.platform, "external_id": c.external_id, "name": c.name,
                           "settings": c.settings.model_dump(mode="json")}, indent=2))


SET_HELP = 'KEY=JSON pairs, e.g. host_rule=\'{"kind":"followers","min":100}\''


@community_app.command("set")
def community_set(community_id: str,
                  settings: Annotated[list[str], typer.Argument(help=SET_HELP)],
                  ) -> None:
    """Change community settings (validated as a whole; nothing changes if any value is wrong)."""
    changes: dict[str, Any] = {}
    for item in settings:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            fail(f"expected KEY=VALUE, got {item[:80]!r}", 2)
        try:
            changes[key] = json.loads(raw)
        except json.JSONDecodeError:
            changes[key] = raw
        except RecursionError:
            fail(f"the value of {key[:40]} is nested too deeply", 2)
    c = with_core(lambda core: core.update_community(operator("operator"), community_id, changes))
    typer.echo(json.dumps(c.settings.model_dump(mode="json"), indent=2))


# ---- plugins -----------------------------------------------------------------------------------
plugins_app = typer.Typer(help="Installed plugins (entry-point group spacebridge.plugins).", no_args_is_help=True)
app.add_typer(plugins_app, name="plugins")


@plugins_app.command("list")
def plugins_list(as_json: JsonOpt = False) -> None:
    """Installed plugins, whether the serving process loaded them, and where they are turned off."""
    from plugins.manager import PluginManager, discover

    settings = load_settings_or_exit()

    async def run(core: Any) -> list[dict[str, Any]]:
        manager = PluginManager(core, data_dir=Path("."))
        last = {s["name"]: s for s in await manager.last_statuses()}
        off = {c.id: set(c.settings.plugins_disabled) for c in await core.communities()}
        rows = []
        for ep in discover():
            seen = last.get(ep.name, {})
            state = "disabled" if ep.name in settings.plugins_disabled else seen.get("state", "not loaded yet")
            rows.append({"name": ep.name, "source": ep.value, "version": seen.get("version", ""), "state": state,
                         "error": seen.get("error", ""), "at": seen.get("at"),
                         "off_in": sorted(cid for cid, names in off.items() if ep.name in names)})
        return rows

    rows = with_core(run, as_json)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    if not rows:
        typer.echo("No plugins installed.")
    for r in rows:
        extra = f"  ({r['error']})" if r["error"] else ""
        off = f"  off in: {', '.join(r['off_in'])}" if r["off_in"] else ""
        typer.echo(f"{r['name']:<14} {r['version'] or '-':<8} {r['state']:<14} {r['source']}{extra}{off}")


def _switch(name: str, community_id: str, on: bool) -> None:
    from plugins.manager import discover

    if name not in {ep.name for ep in discover()}:
        fail(f"no installed plugin is called {name!r} (see `spacebridge plugins list`)", 2)

    async def run(core: Any) -> Any:
        c = await core.community(community_id)
        off = [n for n in c.settings.plugins_disabled if n != name] + ([] if on else [name])
        return await core.update_community(operator("operator"), community_id, {"plugins_disabled": sorted(off)})

    c = with_core(run)
    typer.echo(f"{name} is {'on' if on else 'off'} in {c.name} ({c.id}).")


@plugins_app.command("enable")
def plugins_enable(name: str, community: Annotated[str, typer.Option(help="Community id.")]) -> None:
    """Turn a plugin on in one Community (plugins are on everywhere unless turned off)."""
    _switch(name, community, True)


@plugins_app.command("disable")
def plugins_disable(name: str, community: Annotated[str, typer.Option(help="Community id.")]) -> None:
    """Turn a plugin off in one Community: its commands are refused there and it sees none of its events."""
    _switch(name, community, False)


@app.command()
def audit(space: str, limit: Annotated[int, typer.Option(help="How many entries, newest first.")] = 50,
          actor: Annotated[str | None, typer.Option("--by", help="Only this account's actions.")] = None,
          as_json: JsonOpt = False) -> None:
    """The moderation audit log of a Space: who did what to whom, when and why."""
    if not 1 <= limit <= 1000:
        fail("--limit must be between 1 and 1000", 2, as_json, {"code": "cli.bad_option", "option": "--limit"})
    if actor is not None and not actor.strip():
        fail("--by needs an account id", 2, as_json, {"code": "cli.bad_option", "option": "--by"})

    async def run(core: Any) -> list[dict[str, Any]]:
        from plugins.manager import read_report

        await core.view(space)  # a clear error for an unknown Space
        return await read_report(core, "moderation", "audit", space_id=space, limit=limit, actor=actor)

    entries = with_core(run, as_json)
    if as_json:
        typer.echo(json.dumps(entries))
        return
    if not entries:
        typer.echo("No moderation actions recorded for this Space.")
    for e in entries:
        whom = f" -> {e['whom_name']}" if e.get("whom") else ""
        why = f"  ({e['why']})" if e.get("why") else ""
        typer.echo(f"{e['at'][:19]}  {e['who_name']}: {e['what']}{whom}{why}")


def main() -> None:
    """Run the CLI; with --json, even a usage error (a mistyped option) is printed as JSON."""
    if "--json" not in sys.argv[1:]:
        app()
        return
    from typer.exceptions import Abort, TyperException

    try:
        code = app(standalone_mode=False)
    except TyperException as e:  # usage errors: unknown option, a value of the wrong type
        typer.echo(json.dumps({"error": {"message": e.format_message(), "code": "cli.usage"}}))
        sys.exit(e.exit_code)
    except Abort:
        typer.echo(json.dumps({"error": {"message": "aborted", "code": "cli.aborted"}}))
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
