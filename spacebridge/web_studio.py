"""The host's console, ``/studio``: create, schedule, reschedule and cancel Spaces, ticket terms,
analytics, and the instance admins' view of communities and their host rules.

Signed-in people only (others are sent to ``/signin?next=``). Every form is CSRF-checked and calls
the core's own use case as ``Actor(account, platform="web")``, so who may host, how far ahead, and
who may change a Space are the core's rules, the same as on every other surface. A Space that is not
the caller's is answered as if it did not exist (404) and nothing changes. A refusal from the core
re-renders the form with the core's words (status 4xx) and changes nothing. Money (payouts, sales,
refunds, the Checkout return) is in ``web_studio_money``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from core.errors import DomainError, Forbidden, Invalid
from core.messages import describe
from core.model.accounts import Account
from core.model.space import Space, SpaceState, Ticketing
from core.model.values import MAX_DISCOUNT, MIN_DISCOUNT
from core.timeparse import parse_when
from spacebridge import web_studio_money, web_studio_subs
from spacebridge.instance import INSTANCE
from spacebridge.studio_stats import ActivityRecorder, space_stats
from spacebridge.web_common import error_text, render
from spacebridge.web_studio_common import (
    actor,
    form,
    instance_of,
    is_instance_admin,
    own_space,
    query,
    signed_in,
    studio_ctx,
)
from spacebridge.web_studio_money import payout_state, sales_rows

__all__ = ["is_instance_admin", "setup"]

def parse_start(text: str, now: datetime) -> datetime:
    """A ``datetime-local`` value (taken as UTC, as the form says) or anything ``parse_when`` reads."""
    try:
        naive = datetime.fromisoformat(text)
    except ValueError:
        return parse_when(text, now)
    return naive.replace(tzinfo=UTC) if naive.tzinfo is None else naive.astimezone(UTC)


def parse_ticketing(f: dict[str, str]) -> Ticketing | None:
    """Price (in major units, "12.50") and capacity from the form; empty price: free."""
    price = f.get("price", "")
    if not price:
        return None
    stars = (f.get("currency") or "").lower() == "xtr"  # Stars have no minor unit: the price is whole Stars
    try:
        minor = int(price) if stars else round(float(price) * 100)
    except ValueError:
        raise Invalid("ticket.bad_price", price=price) from None
    cap = f.get("capacity", "")
    try:
        capacity = int(cap) if cap else None
    except ValueError:
        raise Invalid("ticket.bad_capacity", capacity=cap) from None
    off = f.get("discount", "").strip().rstrip("%")
    try:
        percent = int(off) if off else None
    except ValueError:
        raise Invalid("ticket.bad_discount", percent=off, min=MIN_DISCOUNT, max=MAX_DISCOUNT) from None
    return Ticketing(price_minor=minor, currency=(f.get("currency") or "eur").lower(), capacity=capacity,
                     free_tier_id=f.get("free_tier") or None, discount_percent=percent,
                     discount_tier_id=f.get("discount_tier") or None)


# ---- pages ---------------------------------------------------------------------------------------

async def dashboard(request: web.Request, account: Account, *, error: str = "", values: dict[str, str] | None = None,
                    status: int = 200) -> web.Response:
    """``/studio``: my live, upcoming and past Spaces, a form for a new one, and payouts' state."""
    p = instance_of(request)

    mine = await p.core.list_spaces(states=("live", "scheduled", "ended", "cancelled"), host_id=account.id,
                                    limit=200, newest_first=True)
    failures = await p.core.check_host_eligibility(actor(account))
    ctx = await studio_ctx(request, account, error=error, values=values or {},
                           live=[s for s in mine if s.state == SpaceState.LIVE],
                           upcoming=sorted([s for s in mine if s.state == SpaceState.SCHEDULED],
                                           key=lambda s: s.scheduled_for or s.created_at),
                           past=[s for s in mine if s.state in (SpaceState.ENDED, SpaceState.CANCELLED)],
                           may_host=not failures, host_refusal=describe(
                               Forbidden("eligibility.failed", failures=[x.as_dict() for x in failures])),
                           payouts=await payout_state(p, account.id), billing=p.stripe is not None,
                           tiers=await web_studio_subs.tiers_for_form(p.core, account.id))
    return render("studio/home.html", request, ctx, status=status)


async def create(request: web.Request, account: Account) -> web.StreamResponse:
    """``POST /studio/spaces``: start now or schedule (``when``), then ticket terms if priced."""
    p = instance_of(request)
    f = await form(request)
    try:
        start_at = parse_start(f["when"], p.core.now()) if f.get("start") != "now" and f.get("when") else None
        if f.get("start") != "now" and start_at is None:
            raise Invalid("space.when_required")
        terms = parse_ticketing(f)
        if terms is not None and start_at is None:
            raise Invalid("studio.ticket_needs_schedule")
        if terms is not None and not (await p.core.web_community()).settings.ticketing_allowed:
            raise Forbidden("ticket.not_allowed_here")  # asked before anything is made
        rule = web_studio_subs.parse_rule(f)
        if rule is not None and start_at is None:
            raise Invalid("studio.tier_needs_schedule")
        await web_studio_subs.check_rule(p.core, account.id, rule)  # a bad tier: nothing is made
        topics = [t for t in (x.strip() for x in f.get("topics", "").split(",")) if t]
        space = await p.core.create_space(actor(account), f.get("title", ""), start_at=start_at, topics=topics,
                                          visibility=f.get("visibility", "public"))
    except DomainError as e:
        return await dashboard(request, account, error=_words(e), values=f, status=_status(e))
    if terms is not None or rule is not None:
        try:
            if terms is not None:
                await p.core.set_ticketing(actor(account), space.id, terms)
            await web_studio_subs.apply_rule(p.core, account, space, rule)
        except DomainError as e:  # the ticket rules said no: take the new Space back, so the form changed nothing
            await p.core.cancel_space(actor(account), space.id)
            return await dashboard(request, account, error=_words(e), values=f, status=_status(e))
    raise web.HTTPSeeOther(f"/s/{space.id}" if space.state == SpaceState.LIVE else f"/studio/s/{space.id}")


def _words(e: DomainError) -> str:
    custom = {"space.when_required": "Choose when it starts, or pick Start now.",
              "studio.confirm_required": "Tick the box to confirm.",
              "studio.ticket_needs_schedule": "Only a scheduled Space can sell tickets: choose when it starts.",
              "studio.tier_needs_schedule": "Only a scheduled Space can be for subscribers: choose when it starts."}
    return custom.get(e.code, error_text(e))


def _status(e: DomainError) -> int:
    return 400 if isinstance(e, Invalid) else 403 if isinstance(e, Forbidden) else 409


async def manage(request: web.Request, account: Account, *, error: str = "", status: int = 200) -> web.Response:
    """``/studio/s/ID``: one of my Spaces: its state, reschedule, ticket terms, sales, analytics."""
    p = instance_of(request)
    space = await own_space(request, account)

    stats = await space_stats(p.core, p.ledger, space)
    ctx = await studio_ctx(request, account, space=space, stats=stats, error=error or request.query.get("error", ""),
                           done=request.query.get("done", ""), sales=await sales_rows(p, space),
                           billing=p.stripe is not None, now=p.core.now(),
                           tiers=await web_studio_subs.tiers_for_form(p.core, account.id))
    return render("studio/space.html", request, ctx, status=status)


async def _change(request: web.Request, account: Account,
                  change: Callable[[Space, dict[str, str]], Awaitable[object]], done: str) -> web.StreamResponse:
    space = await own_space(request, account)
    f = await form(request)
    try:
        await change(space, f)
    except DomainError as e:
        return await manage(request, account, error=_words(e), status=_status(e))
    raise web.HTTPSeeOther(f"/studio/s/{space.id}?" + query(done=done))


async def reschedule(request: web.Request, account: Account) -> web.StreamResponse:
    core = instance_of(request).core

    async def go(space: Space, f: dict[str, str]) -> object:
        if not f.get("when"):
            raise Invalid("space.when_required")
        return await core.reschedule_space(actor(account), space.id, parse_start(f["when"], core.now()))

    return await _change(request, account, go, "Rescheduled. Reminders and ticket holders are told.")


async def ticketing(request: web.Request, account: Account) -> web.StreamResponse:
    core = instance_of(request).core

    async def go(space: Space, f: dict[str, str]) -> object:
        terms = None if f.get("free") == "1" else parse_ticketing(f)
        if terms is None and f.get("free") != "1":
            raise Invalid("ticket.bad_price", price="")
        return await core.set_ticketing(actor(account), space.id, terms)

    return await _change(request, account, go, "Ticket terms saved.")


async def cancel_page(request: web.Request, account: Account) -> web.Response:
    space = await own_space(request, account)
    return render("studio/confirm.html", request, await studio_ctx(
        request, account, space=space, action=f"/studio/s/{space.id}/cancel", button="Cancel this Space",
        question=f"Cancel “{space.title}”?",
        detail="Everyone with a reminder is told" + (", and every ticket is refunded" if space.ticketing else "")
               + ". This cannot be undone.", fields={}))


async def cancel(request: web.Request, account: Account) -> web.StreamResponse:
    core = instance_of(request).core

    async def go(space: Space, f: dict[str, str]) -> object:
        if f.get("confirm") != "yes":
            raise Invalid("studio.confirm_required")
        return await core.cancel_space(actor(account), space.id)

    return await _change(request, account, go, "Cancelled.")


async def admin(request: web.Request, account: Account) -> web.Response:
    """``/studio/admin``: every community of the instance and who may host and sell there."""
    p = instance_of(request)
    if not await is_instance_admin(p, account.id):
        raise web.HTTPForbidden(text="Only the instance's admins can see this page.")
    rows = []
    for c in await p.core.communities():
        st = c.settings
        rows.append({"c": c, "host_rule": rule_text(st.host_rule.model_dump(mode="json")),
                     "ticket_rule": rule_text(st.ticketing_rule.model_dump(mode="json")),
                     "ticketing": st.ticketing_allowed, "override": st.admin_override,
                     "moderators": len(st.moderator_identities) + len(st.moderator_roles)})
    return render("studio/admin.html", request, await studio_ctx(request, account, rows=rows))


def rule_text(rule: dict[str, Any]) -> str:
    """A host rule in words (the rules are small JSON trees: core/eligibility.py)."""
    kind = rule.get("kind")
    if kind == "followers":
        return f"at least {rule.get('min', 0)} followers"
    if kind == "everyone":
        return "everyone"
    if kind == "nobody":
        return "admins only"
    if kind in ("all", "any"):
        parts = [rule_text(r) for r in rule.get("rules", [])]
        return f" {'and' if kind == 'all' else 'or'} ".join(f"({x})" for x in parts) or kind
    return ", ".join(f"{k}: {v}" for k, v in rule.items())


def setup(app: web.Application) -> None:
    p = app[INSTANCE]
    ActivityRecorder(p.core).attach(p.bus)  # analytics: recorded once, by the process that acted
    app.router.add_get("/studio", signed_in(dashboard))
    app.router.add_post("/studio/spaces", signed_in(create))
    app.router.add_get("/studio/admin", signed_in(admin))
    app.router.add_get("/studio/s/{space_id}", signed_in(manage))
    app.router.add_post("/studio/s/{space_id}/reschedule", signed_in(reschedule))
    app.router.add_post("/studio/s/{space_id}/ticketing", signed_in(ticketing))
    app.router.add_get("/studio/s/{space_id}/cancel", signed_in(cancel_page))
    app.router.add_post("/studio/s/{space_id}/cancel", signed_in(cancel))
    web_studio_money.setup(app, signed_in)
    web_studio_subs.setup(app)
