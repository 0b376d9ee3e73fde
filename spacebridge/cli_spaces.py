"""``spacebridge space ...`` and ``spacebridge follow``: create, run and look at Spaces as an operator
or as an account."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

import typer

from core.model.accounts import Actor
from core.model.space import Space
from core.timeparse import parse_when
from spacebridge.cli_support import (
    AsOpt,
    AsOptional,
    JsonOpt,
    check_as,
    fail,
    known,
    link_base,
    load_settings_or_exit,
    operator,
    print_space,
    space_dict,
    with_core,
)

space_app = typer.Typer(help="Create and run Spaces.", no_args_is_help=True)


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
            community: str | None, override: bool, as_json: bool, tier: str | None = None,
            early_access: int = 0) -> None:
    check_as(as_, as_json)

    async def go(core: Any) -> Space:
        from core.model.subscription import SubscriberAccess

        when: datetime | None = parse_when(at, core.now()) if at else None
        actor = Actor(account_id=as_, platform="web", is_operator=override)
        if tier is not None:  # refused before the Space exists: a bad tier changes nothing
            core.memberships.check_access_rule(as_, SubscriberAccess(tier, early_access),
                                               await core.memberships.tier(tier))
        space: Space = await core.create_space(actor, title, start_at=when, topics=topic or [],
                                               visibility="unlisted" if unlisted else "public",
                                               community_id=community)
        if tier is not None:
            space = await core.memberships.set_subscriber_access(actor, space.id, SubscriberAccess(tier, early_access))
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
                   override: OverrideOpt = False, as_json: JsonOpt = False,
                   tier: Annotated[str | None, typer.Option(
                       help="Subscribers only: the lowest of your tiers let in (docs/subscriptions.md).")] = None,
                   early_access: Annotated[int, typer.Option(
                       help="With --tier: subscribers first, everyone this many minutes after the start.")] = 0,
                   ) -> None:
    """Schedule a Space up to 30 days ahead."""
    _create(title, as_, at, topic, unlisted, community, override, as_json, tier, early_access)


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
    link has no account and only listens to a public Space that sells no tickets. A speaker link to a
    live Space also invites the account to speak (they accept in the room)."""
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
        if as_ is None and view.space.subscribers is not None:  # nor a subscription (unless it opened to all)
            from dataclasses import replace

            from core.model.space import SpaceState
            from core.services import access_error

            refused = access_error(replace(view.space, state=SpaceState.LIVE), "", blocked=False, paid=False,
                                   now=core.now())
            if refused is not None:
                raise refused
        invited = False
        if role == "speaker" and as_ is not None and view.space.state.value == "live" \
                and view.space.role_of(as_) is None and as_ not in view.space.invited:
            # the operator asks them to speak on the host's behalf: the room shows them "Accept
            # invitation" (a link alone puts nobody on stage; this is what the host's Invite makes)
            await core.invite(operator(view.space.host_id), space_id, as_)
            invited = True
        token = JoinTokens(settings.resolved_secret()).issue(space_id, as_, role, core.now(), ttl_s=ttl)
        return {"space_id": space_id, "account_id": as_, "role": role, "token": token, "invited": invited,
                "url": f"{link_base(settings)}/s/{space_id}#t={token}", "expires_in_s": ttl}

    out = with_core(go, as_json)
    typer.echo(json.dumps(out) if as_json else out["url"])


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``spacebridge`` command."""
    app.add_typer(space_app, name="space")
    app.command()(follow)
