"""The web's pages: home (live, upcoming, replays, search), a Space's page in every state, profiles.

Rendered with Jinja2 (autoescaped) from ``spacebridge/templates``; one stylesheet and one small
script under ``/assets/`` (the CSP allows no inline script). A live Space's page is the room itself
(``adapters/webrtc/static/room.html`` with the share-preview tags added to its head), so the room's
page and its script stay one thing. Links in share previews and calendar files use the
instance's public URL, never the request's Host. Buttons that need an account post forms handled
in ``web_page_actions``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from adapters.webrtc import STATIC as ROOM_STATIC
from core.errors import DomainError, NotFound
from core.model.accounts import Account
from core.model.space import Space, SpaceState, Visibility
from spacebridge import web_page_actions, web_subscribe
from spacebridge.instance import Instance
from spacebridge.web_calendar import space_ics
from spacebridge.web_common import (
    NO_STORE,
    TEMPLATES,
    base_ctx,
    error_text,
    instance,
    money,
    render,
    site_url,
    viewer,
    when_text,
)

__all__ = ["ASSETS", "NO_STORE", "TEMPLATES", "error_text", "money", "render", "setup", "viewer"]

ASSETS = Path(__file__).parent / "static"
HOME_LIMIT = 24
REPLAYS_ON_HOME = 12
MAX_QUERY = 100


@dataclass(frozen=True)
class Card:
    """One Space as a card: what the lists on every page show."""

    space: Space
    host_name: str
    listeners: int | None = None
    replay_url: str | None = None
    reminded: bool = False


async def recordings(p: Instance, space_id: str | None = None, *,
                     base: str = "") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Finished recordings and clips (the recording plugin's records, each with the ``url`` of its
    replay page), newest first; none if the plugin is not running here. ``base``: the site address
    the page's browser used (``site_url``), else the plugin's own public URL."""
    loaded = p.plugins.plugins.get("recording")
    if loaded is None:
        return [], []
    ctx = loaded[1]

    def link(path: str) -> str:
        url = ctx.url(path)
        return base.rstrip("/") + url[len(ctx.public_url):] if base else url

    recs = [{**e.value, "url": link(f"/r/{e.value['id']}")} for e in await ctx.store.scan("rec:", limit=10_000)
            if e.value.get("state") == "done" and (space_id is None or e.value.get("space_id") == space_id)]
    recs.sort(key=lambda r: str(r.get("ended_at") or r.get("started_at") or ""), reverse=True)
    clips: list[dict[str, Any]] = []
    if space_id is not None:
        clips = [{**e.value, "url": link(f"/c/{e.value['id']}")} for e in await ctx.store.scan("clip:", limit=10_000)
                 if e.value.get("space_id") == space_id]
        clips.sort(key=lambda c: str(c.get("created_at", "")), reverse=True)
    return recs, clips


def _replay_links(recs: list[dict[str, Any]]) -> dict[str, str]:
    """Space id -> its newest replay's page."""
    out: dict[str, str] = {}
    for r in recs:
        out.setdefault(str(r.get("space_id")), str(r["url"]))
    return out


async def _cards(p: Instance, spaces: list[Space], *, account: Account | None = None,
                 counts: bool = False, replays: dict[str, str] | None = None) -> list[Card]:
    names = await p.core.queries.display_names([s.host_id for s in spaces])
    out = []
    for s in spaces:
        listeners = (await p.core.view(s.id)).listener_count if counts else None
        reminded = (account is not None and s.state == SpaceState.SCHEDULED
                    and (await p.core.queries.relation(account.id, space_id=s.id)).reminded)
        out.append(Card(space=s, host_name=names[s.host_id], listeners=listeners,
                        replay_url=(replays or {}).get(s.id), reminded=reminded))
    return out


async def home(request: web.Request) -> web.Response:
    """Live now, upcoming and recent replays, each a card linking to its Space; ``?q=`` searches titles."""
    p = instance(request)
    account, csrf = await viewer(request)
    q = " ".join(request.query.get("q", "").split())[:MAX_QUERY]
    live = await p.core.list_spaces(states=("live",), include_unlisted=False, title_contains=q, limit=HOME_LIMIT)
    upcoming = await p.core.list_spaces(states=("scheduled",), include_unlisted=False, title_contains=q,
                                        limit=HOME_LIMIT)
    replay_of = _replay_links((await recordings(p, base=site_url(request)))[0])
    ended: list[Space] = []
    for space_id in replay_of:
        if len(ended) >= REPLAYS_ON_HOME:
            break
        try:
            s = (await p.core.view(space_id)).space
        except NotFound:
            continue
        if (s.state == SpaceState.ENDED and s.visibility == Visibility.PUBLIC
                and q.lower() in s.title.lower()):
            ended.append(s)
    ctx = base_ctx(request, account, csrf, q=q,
                live=await _cards(p, live, counts=True),
                upcoming=await _cards(p, upcoming, account=account),
                replays=await _cards(p, ended, replays=replay_of))
    return render("home.html", request, ctx)


def _description(space: Space, host_name: str) -> str:
    state = {SpaceState.LIVE: "Live now", SpaceState.SCHEDULED: f"Starts {when_text(space.scheduled_for)}",
             SpaceState.ENDED: "Ended", SpaceState.CANCELLED: "Cancelled"}[space.state]
    topics = f" Topics: {', '.join(space.topics)}." if space.topics else ""
    return f"{state} · a live audio Space hosted by {host_name}.{topics}"


async def not_found(request: web.Request, what: str) -> web.Response:
    account, csrf = await viewer(request)
    return render("not_found.html", request, base_ctx(request, account, csrf, what=what), status=404)


_room_cache: dict[str, tuple[float, str]] = {}


def _room_html() -> str:
    """room.html as it is on disk (re-read when it changes)."""
    path = ROOM_STATIC / "room.html"
    mtime = path.stat().st_mtime
    cached = _room_cache.get("room")
    if cached is None or cached[0] != mtime:
        cached = (mtime, path.read_text())
        _room_cache["room"] = cached
    return cached[1]


async def _needs_ticket(p: Instance, space: Space, account: Account | None) -> bool:
    """A live ticketed Space that this person may not enter for want of a ticket: its page (price,
    Buy a ticket, or Sign in to buy) instead of a room that could only say "needs a ticket". Any
    other refusal (a block, ...) is the room's to say, as before."""
    if space.ticketing is None:
        return False
    if account is None:
        return True
    try:
        await p.core.run(lambda uow: p.core.ctx.check_access(uow, space, account.id))
    except DomainError as e:
        return e.code == "ticket.required"
    return False


async def space_page(request: web.Request) -> web.Response:
    """``/s/ID``, the Space's one public address: the room while live, else its page for that state.
    An unlisted Space is reachable by whoever holds its link but never listed, searched or indexed."""
    p = instance(request)
    space_id = request.match_info["space_id"]
    try:
        view = await p.core.view(space_id)
    except NotFound:
        return await not_found(request, "Space")
    s = view.space
    if "paid" in request.query:  # back from Stripe Checkout: wait for the payment if it is still on its way

        landing = await web_page_actions.paid_landing(request, s)
        if landing is not None:
            return landing
    url = f"{site_url(request)}/s/{s.id}"
    meta = {"og_title": s.title, "og_description": _description(s, view.host_name), "og_url": url,
            "og_type": "website", "noindex": s.visibility == Visibility.UNLISTED}
    account, csrf = await viewer(request)
    gated = await web_subscribe.gate(p, s, account)
    # ?room=1: pages.js found a personal link's token in the address (#t=...), which the server never
    # sees; the room's socket checks that token, so the room is served whatever the session says
    if s.state == SpaceState.LIVE and (request.query.get("room") == "1"
                                       or (gated is None and not await _needs_ticket(p, s, account))):
        head = jinja2_env(request).get_template("_meta.html").render(**meta)
        html = _room_html().replace("</head>", head + "</head>", 1)
        return web.Response(text=html, content_type="text/html", headers=NO_STORE)
    relation = await p.core.queries.relation(account.id, host_id=s.host_id, space_id=s.id) if account else None
    recs, clips = await recordings(p, s.id, base=site_url(request)) if s.state == SpaceState.ENDED else ([], [])
    locked = await web_subscribe.replay_lock(p, s, account) if recs or clips else None
    free = await web_subscribe.free_tier(p, s, account)
    discount = await web_subscribe.discount_tier(p, s, account)
    ctx = base_ctx(request, account, csrf, space=s, host_name=view.host_name, url=url, relation=relation,
                replays=recs, clips=clips, gate=gated[0] if gated else None, gate_tier=gated[1] if gated else None,
                gate_text=error_text(gated[0]) if gated else "", free_tier=free[0], free_in=free[1],
                discount_tier=discount[0], discounted=discount[1],
                replay_tier=locked,
                billing=p.stripe is not None, self_hosted=account is not None and account.id == s.host_id, **meta)
    return render("space.html", request, ctx, status=403 if gated and s.state == SpaceState.LIVE else 200)


async def space_calendar(request: web.Request) -> web.Response:
    """``/s/ID.ics``: the scheduled Space as a calendar event (404 unless it is scheduled)."""
    p = instance(request)
    try:
        view = await p.core.view(request.match_info["space_id"])
    except DomainError:
        return await not_found(request, "Space")
    s = view.space
    if s.state != SpaceState.SCHEDULED or s.scheduled_for is None:
        return await not_found(request, "scheduled Space")
    body = space_ics(s, view.host_name, f"{site_url(request)}/s/{s.id}", p.core.now())
    return web.Response(body=body.encode(), content_type="text/calendar", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="space-{s.id}.ics"',
                                 "Cache-Control": "no-cache"})


async def profile_page(request: web.Request) -> web.Response:
    """``/u/ID``: a person's name, followers, Follow, and their public live, upcoming and past Spaces."""
    p = instance(request)
    account_id = request.match_info["account_id"]
    try:
        prof = await p.core.queries.profile(account_id)
    except NotFound:
        return await not_found(request, "profile")
    account, csrf = await viewer(request)
    relation = await p.core.queries.relation(account.id, host_id=account_id) if account else None
    replay_of = _replay_links((await recordings(p, base=site_url(request)))[0])
    sub_offer = await web_subscribe.offer(p, account_id, account)
    confirming = ("subscribed" in request.query and account is not None and not is_me(account, account_id)
                  and sub_offer.current is None)
    name = prof.account.display_name
    url = f"{site_url(request)}/u/{account_id}"
    ctx = base_ctx(request, account, csrf, person=prof.account, followers=prof.followers, relation=relation,
                live=await _cards(p, prof.live, counts=True),
                upcoming=await _cards(p, prof.upcoming, account=account),
                past=await _cards(p, prof.past, replays=replay_of), url=url, og_title=f"{name} on Spacebridge",
                og_description=f"{name} hosts live audio Spaces. {prof.followers} follower"
                               f"{'' if prof.followers == 1 else 's'}, {len(prof.upcoming)} upcoming.",
                og_url=url, og_type="profile", noindex=False, is_me=is_me(account, account_id),
                offer=sub_offer, confirming=confirming, just_subscribed="subscribed" in request.query)
    return render("profile.html", request, ctx)


def is_me(account: Account | None, account_id: str) -> bool:
    return account is not None and account.id == account_id


def jinja2_env(request: web.Request) -> jinja2.Environment:
    return aiohttp_jinja2.get_env(request.app)


def setup(app: web.Application) -> None:
    """Templates (unless already set up), the assets, and the page routes (``/s/ID.ics`` before
    ``/s/ID``, which would otherwise take it)."""
    if aiohttp_jinja2.APP_KEY not in app:
        aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    app.router.add_static("/assets/", ASSETS)
    app.router.add_get("/", home)
    app.router.add_get("/s/{space_id}.ics", space_calendar)
    app.router.add_get("/s/{space_id}", space_page)
    app.router.add_get("/u/{account_id}", profile_page)
    web_page_actions.setup(app)
    web_subscribe.setup(app)
