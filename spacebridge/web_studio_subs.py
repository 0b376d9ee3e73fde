"""The host's console, Super Follows: ``/studio/subscriptions`` (tiers and their figures) and the
tier rule on the New Space form.

Tiers are made through billing's ``SubscriptionSales.create_tier`` (checked, then their Stripe
Product and Price made, then saved: a refusal anywhere leaves no tier) and archived through the
core's ``Memberships.archive_tier`` (its subscribers keep what they paid for). The figures are
``billing.subscription_report.creator_report``, the same as ``spacebridge billing report
--creator``, so the studio and the CLI never disagree.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from billing.subscription_report import creator_report
from core.errors import DomainError, Invalid, NotFound
from core.model.accounts import Account
from core.model.space import Space
from core.model.subscription import SubscriberAccess, monthly_price_minor
from core.services import Core
from spacebridge.web_common import error_text, render, site_url
from spacebridge.web_studio_common import actor, form, instance_of, query, signed_in, studio_ctx
from spacebridge.web_studio_money import payout_state

__all__ = ["apply_rule", "check_rule", "parse_rule", "setup", "tiers_for_form"]


async def page(request: web.Request, account: Account, *, error: str = "", values: dict[str, str] | None = None,
               status: int = 200) -> web.Response:
    """``GET /studio/subscriptions``: tiers on sale and archived, the New tier form, the figures."""
    p = instance_of(request)
    tiers = await p.core.memberships.tiers(account.id, archived=True)
    report = await creator_report(p.core, account.id)
    active_of = {t.tier_id: t.active for t in report.tiers}
    ctx = await studio_ctx(request, account, error=error or request.query.get("error", ""),
                           done=request.query.get("done", ""), values=values or {}, report=report,
                           on_sale=[t for t in tiers if not t.archived], archived=[t for t in tiers if t.archived],
                           active_of=active_of, payouts=await payout_state(p, account.id),
                           billing=p.stripe is not None, currency=(report.currency or "EUR"))
    return render("studio/subscriptions.html", request, ctx, status=status)


async def create_tier(request: web.Request, account: Account) -> web.StreamResponse:
    """``POST /studio/tiers``: ``name``, ``price`` (major units, per month), ``currency``, ``perks``."""
    from billing.subscriptions import SubscriptionSales

    p = instance_of(request)
    f = await form(request)
    sales = SubscriptionSales(p.core, p.stripe, site_url(request), fee_bps=p.settings.platform_fee_bps)
    try:
        tier = await sales.create_tier(actor(account), f.get("name", ""),
                                       monthly_price_minor(f.get("price", ""), f.get("currency") or "eur"),
                                       f.get("currency") or "eur", f.get("perks", ""))
    except DomainError as e:
        return await page(request, account, error=error_text(e), values=f, status=_status(e))
    raise web.HTTPSeeOther("/studio/subscriptions?" + query(done=f"{tier.name} is on sale."))


async def archive_tier(request: web.Request, account: Account) -> web.StreamResponse:
    """``POST /studio/tiers/ID/archive``: off sale. Someone else's tier answers 404 and nothing changes."""
    p = instance_of(request)
    tier_id = request.match_info["tier_id"]
    try:
        tier = await p.core.memberships.tier(tier_id)
    except NotFound:
        tier = None
    if tier is None or tier.creator_id != account.id:
        raise web.HTTPNotFound(text="There is no such tier in your studio.")
    try:
        await p.core.memberships.archive_tier(actor(account), tier_id)
    except DomainError as e:
        return await page(request, account, error=error_text(e), status=_status(e))
    raise web.HTTPSeeOther("/studio/subscriptions?" + query(
        done=f"{tier.name} is off sale. Its subscribers keep it until their subscriptions end."))


def _status(e: DomainError) -> int:
    from core.errors import Forbidden

    return 400 if isinstance(e, Invalid) else 403 if isinstance(e, Forbidden) else 409


# ---- the New Space form's rule for subscribers ---------------------------------------------------

async def tiers_for_form(core: Core, account_id: str) -> list[Any]:
    return list(await core.memberships.tiers(account_id))


def parse_rule(f: dict[str, str]) -> SubscriberAccess | None:
    """``tier`` (empty: open to everyone) and ``early_access`` (minutes; empty or 0: subscribers only)."""
    tier = f.get("tier", "")
    if not tier:
        return None
    early = f.get("early_access", "") or "0"
    try:
        minutes = int(early)
    except ValueError:
        raise Invalid("subscription.bad_early_minutes", minutes=early, max=24 * 60) from None
    return SubscriberAccess(tier, minutes)


async def check_rule(core: Core, account_id: str, rule: SubscriberAccess | None) -> None:
    """Refuse a bad rule before the Space exists, as ``space schedule --tier`` does."""
    if rule is not None:
        core.memberships.check_access_rule(account_id, rule, await core.memberships.tier(rule.tier_id))


async def apply_rule(core: Core, account: Account, space: Space, rule: SubscriberAccess | None) -> None:
    if rule is not None:
        await core.memberships.set_subscriber_access(actor(account), space.id, rule)


def setup(app: web.Application) -> None:
    app.router.add_get("/studio/subscriptions", signed_in(page))
    app.router.add_post("/studio/tiers", signed_in(create_tier))
    app.router.add_post("/studio/tiers/{tier_id}/archive", signed_in(archive_tier))
