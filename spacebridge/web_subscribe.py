"""Super Follows on the web pages: a creator's tiers on their profile with Subscribe, Checkout's way
back, and the page a Space for subscribers shows to someone it does not let in.

``POST /u/ID/subscribe`` (form ``csrf``, ``tier``) goes to Stripe Checkout in subscription mode
(billing/subscriptions.py); Checkout returns to ``/u/ID?subscribed=TIER`` on the address the
browser used, where the profile says the subscription is being confirmed until Stripe's webhook
has made it, then that it is on. A live or scheduled Space whose rule refuses the viewer (not
signed in, not subscribed at its tier, or subscribers-first and not yet open) shows its page with
the tier that opens it and a way to subscribe, instead of a room that could only refuse.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import urlencode

from aiohttp import web

from core.errors import DomainError, NotFound
from core.model.accounts import Account, Actor
from core.model.space import Space, SpaceState
from core.model.subscription import Subscription, Tier
from core.usecases.context import access_error
from spacebridge.instance import Instance
from spacebridge.web_common import NO_STORE, base_ctx, error_text, instance, render, site_url, viewer
from spacebridge.web_session import check_csrf

__all__ = ["Offer", "gate", "offer", "setup"]

_GATE_CODES = ("subscription.required", "subscription.sign_in", "subscription.early_access")


@dataclass(frozen=True)
class Offer:
    """A creator's tiers on sale and, for the viewer, the subscription they hold to that creator."""

    tiers: list[Tier]
    current: Subscription | None  # one that opens something now
    current_tier: Tier | None
    on_sale: bool  # this instance sells subscriptions (Stripe is configured)


async def offer(p: Instance, creator_id: str, account: Account | None) -> Offer:
    tiers = await p.core.memberships.tiers(creator_id)
    current = None
    if account is not None:
        now = p.core.now()
        held = [s for s in await p.core.memberships.subscriptions_of(account.id)
                if s.creator_id == creator_id and s.grants(now)]
        current = held[-1] if held else None
    current_tier = None
    if current is not None:
        try:
            current_tier = await p.core.memberships.tier(current.tier_id)
        except NotFound:
            current_tier = None
    return Offer(tiers, current, current_tier, p.stripe is not None)


async def gate(p: Instance, space: Space, account: Account | None) -> tuple[DomainError, Tier | None] | None:
    """Why this Space's rule for subscribers keeps the viewer out (judged as if live while it is
    scheduled), with the tier that opens it; None when it lets them in or has no such rule. Other
    refusals (tickets, blocks) are left to their own pages."""
    if space.subscribers is None or space.state not in (SpaceState.LIVE, SpaceState.SCHEDULED):
        return None
    as_live = replace(space, state=SpaceState.LIVE)
    err: DomainError | None
    if account is None:
        err = access_error(as_live, "", blocked=False, paid=True, now=p.core.now())
    else:
        try:
            await p.core.run(lambda uow: p.core.ctx.check_access(uow, as_live, account.id))
            err = None
        except DomainError as e:
            err = e
    if err is None or err.code not in _GATE_CODES:
        return None
    try:
        tier: Tier | None = await p.core.memberships.tier(space.subscribers.tier_id)
    except NotFound:
        tier = None
    return err, tier


async def replay_lock(p: Instance, space: Space, account: Account | None) -> Tier | None:
    """The tier whose subscribers may hear this Space's replays and clips, when the viewer may not
    (the recording plugin's pages answer the same: ``Queries.may_hear_replay``); else None."""
    rule = space.subscribers
    if rule is None:
        return None
    if account is not None:
        if space.role_of(account.id) is not None:
            return None
        async with p.core.uow() as uow:
            if await uow.subscriptions.reaching(space.host_id, rule.tier_id, [account.id], p.core.now()):
                return None
    try:
        return await p.core.memberships.tier(rule.tier_id)
    except NotFound:
        return None


async def free_tier(p: Instance, space: Space, account: Account | None) -> tuple[Tier | None, bool]:
    """The tier whose subscribers join this ticketed Space without a ticket, if the host set one, and
    whether the viewer is one of them (their page then says so instead of offering a ticket)."""
    tier_id = space.ticketing.free_tier_id if space.ticketing is not None else None
    if not tier_id:
        return None, False
    try:
        tier = await p.core.memberships.tier(tier_id)
    except NotFound:
        return None, False
    if account is None:
        return tier, False
    async with p.core.uow() as uow:
        return tier, bool(await uow.subscriptions.reaching(space.host_id, tier_id, [account.id], p.core.now()))


async def discount_tier(p: Instance, space: Space, account: Account | None) -> tuple[Tier | None, bool]:
    """The tier whose subscribers (and those above) buy this Space's ticket at the subscriber price,
    if the host set one, and whether the viewer is one of them now (their Buy button shows that
    price; the sale itself reads the subscription again when the payment is made)."""
    t = space.ticketing
    if t is None or not t.discount_tier_id or t.subscriber_price() is None:
        return None, False
    try:
        tier = await p.core.memberships.tier(t.discount_tier_id)
    except NotFound:
        return None, False
    if account is None:
        return tier, False
    async with p.core.uow() as uow:
        return tier, bool(await uow.subscriptions.reaching(space.host_id, tier.id, [account.id], p.core.now()))


async def subscribe(request: web.Request) -> web.StreamResponse:
    """``POST /u/ID/subscribe`` (form ``csrf``, ``tier``): off to Stripe Checkout for that tier."""
    from billing.subscriptions import SubscriptionSales

    p = instance(request)
    creator_id = request.match_info["account_id"]
    back = f"/u/{creator_id}"
    account, _ = await viewer(request)
    if account is None:
        raise web.HTTPSeeOther("/signin?" + urlencode({"next": back}))
    await check_csrf(request)
    form = await request.post()
    tier_id = form.get("tier")
    if not isinstance(tier_id, str) or not tier_id:
        raise web.HTTPBadRequest(text="Choose a tier to subscribe to.")
    sales = SubscriptionSales(p.core, p.stripe, site_url(request), fee_bps=p.settings.platform_fee_bps)
    try:
        tier = await p.core.memberships.tier(tier_id)
        if tier.creator_id != creator_id:
            raise NotFound("tier.not_found", tier_id=tier_id)
        checkout = await sales.checkout(Actor(account_id=account.id, platform="web"), tier_id)
    except NotFound:
        raise web.HTTPNotFound(text="There is no such tier.") from None
    except DomainError as e:
        _, csrf = await viewer(request)
        return render("refused.html", request, base_ctx(request, account, csrf, message=error_text(e), back=back),
                      status=409)
    if "application/json" in request.headers.get("Accept", ""):
        return web.json_response({"url": checkout.url}, headers=NO_STORE)
    raise web.HTTPSeeOther(checkout.url)


def setup(app: web.Application) -> None:
    app.router.add_post("/u/{account_id}/subscribe", subscribe)
