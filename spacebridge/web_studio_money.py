"""The host's console, money: Stripe Connect payouts (start, return, refresh), sales and refunds.

Payouts follow ``spacebridge billing connect``: the creator's Express account is made once and kept
(``Ledger.set_payout_account``); onboarding is Stripe's own page, which sends the creator back to
``/studio/payouts/return`` (done, or left half-way) or ``/studio/payouts/refresh`` (the link ran out:
a new one is made). Ticket sales go to the creator's account only once Stripe says it can take them
(``StripeGateway.account_ready``); until then sales are refused with ``billing.payouts_not_ready``
(billing/sales.py), and the console says so.

A refund is the billing's durable ``ticket.refund`` job (billing/refunds.py): Stripe is asked with
the ticket's idempotency key, then the seat is revoked. The host confirms on a page of its own first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from billing.stripe_gateway import BillingError
from core.errors import DomainError, NotFound
from core.messages import describe
from core.model.accounts import Account
from core.model.space import Space
from core.model.ticket import TicketStatus
from core.ports import NewJob, UnitOfWork
from spacebridge.instance import INSTANCE, Instance
from spacebridge.web_common import money, render, site_url
from spacebridge.web_studio_common import form, own_space, studio_ctx

__all__ = ["payout_state", "sales_rows", "setup"]

Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _p(request: web.Request) -> Instance:
    return request.app[INSTANCE]


async def payout_state(p: Instance, account_id: str, *, fresh: bool = False) -> dict[str, Any]:
    """Where the creator's payouts stand: ``started`` (an account exists), ``ready`` (Stripe says
    it can take charges now), and the words the console shows."""
    acct = await p.ledger.payout_account(account_id)
    if p.stripe is None:
        return {"started": acct is not None, "ready": False, "text": "Ticket sales are off on this instance."}
    if acct is None:
        return {"started": False, "ready": False,
                "text": "Not set up: your tickets are sold on the instance's own Stripe account."}
    try:
        ready = await p.stripe.account_ready(acct, fresh=fresh)
    except BillingError as e:
        return {"started": True, "ready": False, "text": describe(e)}
    text = ("Ready: ticket money goes to your Stripe account." if ready else
            describe(BillingError("billing.payouts_not_ready")) + " Finish Stripe's onboarding to sell tickets.")
    return {"started": True, "ready": ready, "text": text}


async def onboarding_link(p: Instance, account: Account, base: str) -> str:
    """A fresh onboarding link for the creator's Express account (made on first use); Stripe sends the
    creator back to ``base`` (``site_url``: the address their browser used, holding their session)."""
    assert p.stripe is not None
    acct = await p.ledger.payout_account(account.id)
    if acct is None:
        acct = await p.stripe.create_connect_account(account.id, None)
        await p.ledger.set_payout_account(account.id, acct)
    return await p.stripe.account_link(acct, f"{base}/studio/payouts/refresh", f"{base}/studio/payouts/return")


async def payouts_page(request: web.Request, account: Account, *, returned: bool = False,
                       error: str = "", status: int = 200) -> web.Response:
    p = _p(request)
    state = await payout_state(p, account.id, fresh=True)
    ctx = await studio_ctx(request, account, payouts=state, returned=returned, error=error,
                           billing=p.stripe is not None)
    return render("studio/payouts.html", request, ctx, status=status)


async def payouts(request: web.Request, account: Account) -> web.StreamResponse:
    return await payouts_page(request, account)


async def start_onboarding(request: web.Request, account: Account) -> web.StreamResponse:
    """``POST /studio/payouts``: off to Stripe's onboarding."""
    p = _p(request)
    if p.stripe is None:
        return await payouts_page(request, account, error="Ticket sales are off on this instance.", status=409)
    try:
        url = await onboarding_link(p, account, site_url(request))
    except DomainError as e:
        return await payouts_page(request, account, error=describe(e), status=502)
    raise web.HTTPSeeOther(url)


async def onboarding_return(request: web.Request, account: Account) -> web.StreamResponse:
    """Stripe sends the creator back here, done or not: show what Stripe now says."""
    return await payouts_page(request, account, returned=True)


async def onboarding_refresh(request: web.Request, account: Account) -> web.StreamResponse:
    """The onboarding link expired or was used: make a new one and go straight back to Stripe."""
    p = _p(request)
    if p.stripe is None or await p.ledger.payout_account(account.id) is None:
        raise web.HTTPSeeOther("/studio/payouts")
    try:
        url = await onboarding_link(p, account, site_url(request))
    except DomainError as e:
        return await payouts_page(request, account, error=describe(e), status=502)
    raise web.HTTPSeeOther(url)


async def legacy(request: web.Request) -> web.StreamResponse:
    """``/connect/done`` and ``/connect/refresh``: where links made by ``billing connect`` return."""
    tail = "return" if request.path.endswith("/done") else "refresh"
    raise web.HTTPSeeOther(f"/studio/payouts/{tail}")


# ---- sales and refunds ---------------------------------------------------------------------------

async def sales_rows(p: Instance, space: Space) -> list[dict[str, Any]]:
    """The Space's sold seats with the buyers' names."""
    async with p.core.uow() as uow:
        sales = await uow.analytics.sales(space.id)
    names = await p.core.queries.display_names([s.account_id for s in sales])
    return [{"sale": s, "name": names.get(s.account_id, s.account_id)} for s in sales]


async def _own_ticket(request: web.Request, account: Account) -> tuple[Space, Any]:
    space = await own_space(request, account)
    try:
        ticket = await _p(request).ledger.get(request.match_info["ticket_id"])
    except NotFound:
        raise web.HTTPNotFound(text="There is no such ticket for this Space.") from None
    if ticket.space_id != space.id:
        raise web.HTTPNotFound(text="There is no such ticket for this Space.")
    return space, ticket


async def refund_page(request: web.Request, account: Account) -> web.StreamResponse:
    p = _p(request)
    space, ticket = await _own_ticket(request, account)
    if ticket.status != TicketStatus.PAID:
        raise web.HTTPSeeOther(f"/studio/s/{space.id}")

    buyer = (await p.core.queries.display_names([ticket.account_id]))[ticket.account_id]
    return render("studio/confirm.html", request, await studio_ctx(
        request, account, space=space, action=f"/studio/s/{space.id}/refund/{ticket.id}",
        button=f"Refund {money(ticket.amount_minor, ticket.currency)}", question=f"Refund {buyer}'s ticket?",
        detail=f"{buyer} gets {money(ticket.amount_minor, ticket.currency)} back through Stripe and loses "
               "their seat. This cannot be undone.", fields={}))


async def refund(request: web.Request, account: Account) -> web.StreamResponse:
    """``POST /studio/s/ID/refund/TICKET`` (``confirm=yes``): queue the refund job for a paid ticket."""
    p = _p(request)
    space, ticket = await _own_ticket(request, account)
    f = await form(request)
    if f.get("confirm") != "yes":
        raise web.HTTPSeeOther(f"/studio/s/{space.id}/refund/{ticket.id}")
    if ticket.status != TicketStatus.PAID:
        raise web.HTTPSeeOther(f"/studio/s/{space.id}?" + urlencode(
            {"error": "That ticket is not paid, so there is nothing to refund."}))

    async def op(uow: UnitOfWork) -> bool:
        # the same job (and dedupe key) a cancel queues: one refund per ticket, however often asked
        return await uow.jobs.enqueue(NewJob("ticket.refund", {"ticket_id": ticket.id,
                                                               "reason": "requested_by_customer"},
                                             p.core.now(), f"refund:{ticket.id}", f"{space.id}:refunds"))

    await p.core.run(op)
    p.core.wake_jobs()
    raise web.HTTPSeeOther(f"/studio/s/{space.id}?" + urlencode(
        {"done": "Refund on its way. The seat is freed once Stripe confirms."}))


def setup(app: web.Application, signed_in: Callable[[Any], Route]) -> None:
    app.router.add_get("/studio/payouts", signed_in(payouts))
    app.router.add_post("/studio/payouts", signed_in(start_onboarding))
    app.router.add_get("/studio/payouts/return", signed_in(onboarding_return))
    app.router.add_get("/studio/payouts/refresh", signed_in(onboarding_refresh))
    app.router.add_get("/connect/done", legacy)
    app.router.add_get("/connect/refresh", legacy)
    app.router.add_get("/studio/s/{space_id}/refund/{ticket_id}", signed_in(refund_page))
    app.router.add_post("/studio/s/{space_id}/refund/{ticket_id}", signed_in(refund))
