"""``spacebridge account|community|plugins ...`` and ``spacebridge audit``: the instance's accounts,
communities, plugins and moderation log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from spacebridge.cli_support import (
    JsonOpt,
    fail,
    load_settings_or_exit,
    operator,
    with_core,
)

account_app = typer.Typer(help="Accounts and their platform identities.", no_args_is_help=True)
community_app = typer.Typer(help="Communities (Discord guilds, Telegram chats, this instance).",
                            no_args_is_help=True)
plugins_app = typer.Typer(help="Installed plugins (entry-point group spacebridge.plugins).", no_args_is_help=True)


# ---- accounts ------------------------------------------------------------------------------------
@account_app.command("create")
def account_create(name: str,
                   admin: Annotated[bool, typer.Option("--admin", help="Make it an instance admin: it may host "
                                                        "and sees the studio's admin view.")] = False,
                   as_json: JsonOpt = False) -> None:
    """Create a web account (for operators running Spaces from the shell); prints its id."""
    async def go(core: Any) -> dict[str, Any]:
        acc = await core.create_account(name)
        if admin:
            await core.make_instance_admin(operator(acc.id), acc.id)
        return {"id": acc.id, "display_name": acc.display_name, "admin": admin}

    out = with_core(go, as_json)
    typer.echo(json.dumps(out) if as_json else out["id"])


@account_app.command("show")
def account_show(account_id: str, as_json: JsonOpt = False) -> None:
    async def go(core: Any) -> dict[str, Any]:
        acc = await core.account(account_id)
        ids = await core.identities(account_id)
        return {"id": acc.id, "display_name": acc.display_name, "tier": acc.tier.value,
                "admin": await core.is_instance_admin(account_id),
                "followers": await core.follower_count(account_id),
                "identities": [{"platform": i.platform, "external_id": i.external_id, "reachable": i.reachable}
                               for i in ids]}

    info = with_core(go, as_json)
    if as_json:
        typer.echo(json.dumps(info))
    else:
        admin = "  instance admin" if info["admin"] else ""
        typer.echo(f"{info['id']}  {info['display_name']}  tier={info['tier']}  followers={info['followers']}{admin}")
        for i in info["identities"]:
            typer.echo(f"  {i['platform']}:{i['external_id']}{'' if i['reachable'] else ' (unreachable)'}")


@account_app.command("tier")
def account_tier(account_id: str, tier: Annotated[str, typer.Argument(help="free or paid")],
                 as_json: JsonOpt = False) -> None:
    from core.model.accounts import Tier

    try:
        t = Tier(tier)
    except ValueError:
        fail("tier must be free or paid", 2, as_json, {"code": "cli.bad_argument", "argument": "tier"})
    with_core(lambda core: core.set_tier(operator(account_id), account_id, t), as_json)
    typer.echo(json.dumps({"id": account_id, "tier": t.value}) if as_json else f"{account_id} is now {t.value}")


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
def community_show(community_id: str, as_json: JsonOpt = False) -> None:
    """The community and its settings, as JSON (``--json`` prints it on one line)."""
    c = with_core(lambda core: core.community(community_id), as_json)
    typer.echo(json.dumps({"id": c.id, "platform": c.platform, "external_id": c.external_id, "name": c.name,
                           "settings": c.settings.model_dump(mode="json")}, indent=None if as_json else 2))


SET_HELP = 'KEY=JSON pairs, e.g. host_rule=\'{"kind":"followers","min":100}\''


@community_app.command("set")
def community_set(community_id: str,
                  settings: Annotated[list[str], typer.Argument(help=SET_HELP)],
                  as_json: JsonOpt = False) -> None:
    """Change community settings (validated as a whole; nothing changes if any value is wrong)."""
    changes: dict[str, Any] = {}
    for item in settings:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            fail(f"expected KEY=VALUE, got {item[:80]!r}", 2, as_json)
        try:
            changes[key] = json.loads(raw)
        except json.JSONDecodeError:
            changes[key] = raw
        except RecursionError:
            fail(f"the value of {key[:40]} is nested too deeply", 2, as_json)
    c = with_core(lambda core: core.update_community(operator("operator"), community_id, changes), as_json)
    typer.echo(json.dumps(c.settings.model_dump(mode="json"), indent=None if as_json else 2))


# ---- plugins -----------------------------------------------------------------------------------


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


def _switch(name: str, community_id: str, on: bool, as_json: bool) -> None:
    from plugins.manager import discover

    if name not in {ep.name for ep in discover()}:
        fail(f"no installed plugin is called {name!r} (see `spacebridge plugins list`)", 2, as_json,
             {"code": "cli.bad_argument", "argument": "name"})

    async def run(core: Any) -> Any:
        c = await core.community(community_id)
        off = [n for n in c.settings.plugins_disabled if n != name] + ([] if on else [name])
        return await core.update_community(operator("operator"), community_id, {"plugins_disabled": sorted(off)})

    c = with_core(run, as_json)
    typer.echo(json.dumps({"plugin": name, "community_id": c.id, "on": on}) if as_json else
               f"{name} is {'on' if on else 'off'} in {c.name} ({c.id}).")


@plugins_app.command("enable")
def plugins_enable(name: str, community: Annotated[str, typer.Option(help="Community id.")],
                   as_json: JsonOpt = False) -> None:
    """Turn a plugin on in one Community (plugins are on everywhere unless turned off)."""
    _switch(name, community, True, as_json)


@plugins_app.command("disable")
def plugins_disable(name: str, community: Annotated[str, typer.Option(help="Community id.")],
                    as_json: JsonOpt = False) -> None:
    """Turn a plugin off in one Community: its commands are refused there and it sees none of its events."""
    _switch(name, community, False, as_json)


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


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``spacebridge`` command."""
    app.add_typer(account_app, name="account")
    app.add_typer(community_app, name="community")
    app.add_typer(plugins_app, name="plugins")
    app.command()(audit)
