"""The pages' buttons that need an account: Follow, Remind me and Buy a ticket.

Each is a plain form post (works without script) checked for the session's CSRF token, calling the
core's own use case (``follow``, ``set_reminder``) or the command table's ticket port (Stripe
Checkout, whose success URL comes back through ``paid_landing``). Not signed in: a redirect to
``/signin?next=`` the page. A refusal from the core (the host blocked you, the Space started
meanwhile) comes back as a page that says so and changes nothing. A ``fetch`` that asks for JSON
gets JSON instead of a redirect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from core.errors import DomainError, NotFound
from core.model.accounts import Actor
from core.model.space import Space
from core.model.ticket import TicketStatus
from spacebridge.instance import INSTANCE
from spacebridge.web_common import NO_STORE, base_ctx, error_text, render, safe_next, site_url, viewer
from spacebridge.web_session import check_csrf

__all__ = ["setup"]


def _wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


async def _form(request: web.Request) -> dict[str, str]:
    return {k: v for k, v in (await request.post()).items() if isinstance(v, str)}


def _signin(next_path: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther("/signin?" + urlencode({"next": next_path}))


async def _refused(request: web.Request, e: DomainError, back: str) -> web.Response:

    message = error_text(e)
    if _wants_json(request):
        return web.json_response({"error": {**e.as_dict(), "message": message}}, status=409, headers=NO_STORE)
    account, csrf = await viewer(request)
    return render("refused.html", request, base_ctx(request, account, csrf, message=message, back=back), status=409)


async def _toggle(request: web.Request, back: str, missing: str,
                  act: Callable[[Actor, bool], Awaitable[dict[str, Any]]]) -> web.StreamResponse:
    """A signed-in person's on/off button (form: ``csrf``, ``on`` = 1 or 0, ``next``): the sign-in page
    for anyone else, the core's refusal in its own words, JSON for the page's script."""
    form = await _form(request)
    account, _ = await viewer(request)
    next_path = safe_next(form.get("next", back), back)
    if account is None:
        raise _signin(next_path)
    await check_csrf(request)
    try:
        shown = await act(Actor(account_id=account.id, platform="web"), form.get("on") != "0")
    except NotFound:
        raise web.HTTPNotFound(text=missing) from None
    except DomainError as e:
        return await _refused(request, e, next_path)
    if _wants_json(request):
        return web.json_response(shown, headers=NO_STORE)
    raise web.HTTPSeeOther(next_path)


async def follow(request: web.Request) -> web.StreamResponse:
    """``POST /u/ID/follow``: follow or unfollow the host."""
    host_id = request.match_info["account_id"]
    core = request.app[INSTANCE].core

    async def act(actor: Actor, on: bool) -> dict[str, Any]:
        return {"following": on, "followers": await core.follow(actor, host_id, on)}

    return await _toggle(request, f"/u/{host_id}", "There is no such person.", act)


async def remind(request: web.Request) -> web.StreamResponse:
    """``POST /s/ID/remind``: a reminder when the Space starts, or none."""
    space_id = request.match_info["space_id"]
    core = request.app[INSTANCE].core

    async def act(actor: Actor, on: bool) -> dict[str, Any]:
        await core.set_reminder(actor, space_id, on)
        return {"reminded": on}

    return await _toggle(request, f"/s/{space_id}", "There is no such Space.", act)


async def buy(request: web.Request) -> web.StreamResponse:
    """``POST /s/ID/ticket`` (form: ``csrf``): off to Stripe Checkout for this Space's ticket."""
    from spacebridge.ticket_desk import command_ports

    space_id = request.match_info["space_id"]
    back = f"/s/{space_id}"
    account, _ = await viewer(request)
    if account is None:
        raise _signin(back)
    await check_csrf(request)
    desk = command_ports(request.app[INSTANCE], site_url(request)).tickets
    if desk is None:
        raise web.HTTPServiceUnavailable(text="Ticket sales are off on this instance.")
    try:
        result = await desk.ticket(Actor(account_id=account.id, platform="web"), space_id)
    except NotFound:
        raise web.HTTPNotFound(text="There is no such Space.") from None
    except DomainError as e:
        return await _refused(request, e, back)
    url = str(result.get("url") or back)
    if _wants_json(request):
        return web.json_response({"url": url}, headers=NO_STORE)
    raise web.HTTPSeeOther(url)


async def paid_landing(request: web.Request, space: Space) -> web.Response | None:
    """Stripe Checkout's success URL, ``/s/ID?paid=TICKET``: the buyer lands on the Space's page.

    Once the payment's webhook has settled the ticket this is the ordinary page (None): the room
    itself while live, whose join token is minted from the session and now admits the buyer. Until
    then, a page that says the payment is being confirmed and reloads itself (``/assets/studio.js``;
    a link does the same without script). A ticket that is not the signed-in buyer's is ignored."""
    account, csrf = await viewer(request)
    ticket_id = request.query.get("paid", "")
    if account is None or not ticket_id:
        return None
    try:
        ticket = await request.app[INSTANCE].ledger.get(ticket_id)
    except NotFound:
        return None
    if ticket.account_id != account.id or ticket.space_id != space.id or ticket.status == TicketStatus.PAID:
        return None
    waiting = ticket.status == TicketStatus.HELD
    return render("studio/paying.html", request,
                  base_ctx(request, account, csrf, space=space, waiting=waiting, again=request.path_qs,
                        back=f"/s/{space.id}"), status=200 if waiting else 402)


def setup(app: web.Application) -> None:
    app.router.add_post("/u/{account_id}/follow", follow)
    app.router.add_post("/s/{space_id}/remind", remind)
    app.router.add_post("/s/{space_id}/ticket", buy)
