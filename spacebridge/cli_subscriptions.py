"""``spacebridge billing tiers|subscribe|subscriptions|subscription|subscribers-only``: Super Follows
from the shell (docs/subscriptions.md). Creators act with ``--as`` (their own tiers, Spaces and
subscribers only); a buyer subscribes, cancels, resumes and changes tier as themselves."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from core.model.accounts import Actor
from core.model.space import Space
from core.model.subscription import SubscriberAccess, Subscription, Tier
from spacebridge.cli_support import (
    AsOpt,
    AsOptional,
    JsonOpt,
    check_as,
    fail,
    known,
    link_base,
    space_dict,
    with_core,
    with_platform,
)

tiers_app = typer.Typer(help="A creator's subscription tiers (Super Follows).", no_args_is_help=True)
subscription_app = typer.Typer(help="Change one subscription: cancel, resume, change tier, refund.",
                               no_args_is_help=True)


def tier_dict(t: Tier) -> dict[str, Any]:
    return {"id": t.id, "creator_id": t.creator_id, "name": t.name, "price_minor": t.price_minor,
            "currency": t.currency, "perks": t.perks, "archived": t.archived, "stripe_price": t.stripe_price,
            "stars": t.stars}


def sub_dict(s: Subscription) -> dict[str, Any]:
    return {"id": s.id, "account_id": s.account_id, "creator_id": s.creator_id, "tier_id": s.tier_id,
            "provider": s.provider.value, "provider_ref": s.provider_ref, "status": s.status.value,
            "current_period_end": s.current_period_end.isoformat() if s.current_period_end else None,
            "cancel_at_period_end": s.cancel_at_period_end, "prior_tier_id": s.prior_tier_id,
            "prior_tier_until": s.prior_tier_until.isoformat() if s.prior_tier_until else None}


def _money(minor: int, currency: str) -> str:
    return f"{minor} XTR" if currency == "XTR" else f"{minor / 100:.2f} {currency}"


def _sales(platform: Any) -> Any:
    from billing.subscriptions import SubscriptionSales

    return SubscriptionSales(platform.core, platform.stripe, link_base(platform.settings),
                             fee_bps=platform.settings.platform_fee_bps)


@tiers_app.command("create")
def tiers_create(as_: AsOpt, name: Annotated[str, typer.Option(help="The tier's name.")],
                 price: Annotated[int, typer.Option(help="Monthly price in minor units (cents).")],
                 currency: Annotated[str, typer.Option(help="ISO currency, the same for all your tiers.")] = "eur",
                 perks: Annotated[str, typer.Option(help="What subscribers get.")] = "",
                 as_json: JsonOpt = False) -> None:
    """Put a new tier on sale for --as (at most 3); with Stripe configured its Product and Price are made."""
    check_as(as_, as_json)

    async def go(platform: Any) -> Tier:
        await known(platform.core, as_)
        tier: Tier = await _sales(platform).create_tier(Actor(account_id=as_, platform="web"), name, price,
                                                       currency, perks)
        return tier

    t = with_platform(go, as_json)
    typer.echo(json.dumps(tier_dict(t)) if as_json else f"{t.id}  {t.name}  {_money(t.price_minor, t.currency)}/month")


@tiers_app.command("list")
def tiers_list(creator: Annotated[str, typer.Option(help="The creator's account id.")],
               archived: Annotated[bool, typer.Option("--archived", help="Include tiers taken off sale.")] = False,
               as_json: JsonOpt = False) -> None:
    """A creator's tiers, cheapest first."""
    tiers = with_core(lambda core: core.memberships.tiers(creator, archived=archived), as_json)
    if as_json:
        typer.echo(json.dumps([tier_dict(t) for t in tiers]))
        return
    for t in tiers:
        typer.echo(f"{t.id}  {t.name}  {_money(t.price_minor, t.currency)}/month"
                   f"{f'  or {t.stars} XTR' if t.stars else ''}"
                   f"{'  (archived)' if t.archived else ''}{'  ' + t.perks if t.perks else ''}")


@tiers_app.command("stars")
def tiers_stars(tier_id: str, as_: AsOpt,
                stars: Annotated[int | None, typer.Option(help="Monthly price in Telegram Stars (1 to 10000).")] = None,
                off: Annotated[bool, typer.Option("--off", help="Stop selling it in Stars.")] = False,
                as_json: JsonOpt = False) -> None:
    """Sell one of --as's tiers on Telegram too, as a Stars subscription (renewed every 30 days)."""
    check_as(as_, as_json)
    if (stars is None) == (not off):
        fail("give --stars N or --off", 2, as_json)
    t = with_core(lambda core: core.memberships.set_stars(Actor(account_id=as_, platform="web"), tier_id,
                                                          None if off else stars), as_json)
    typer.echo(json.dumps(tier_dict(t)) if as_json else
               f"{t.id}  {t.name}  {f'{t.stars} XTR/month on Telegram' if t.stars else 'not sold in Stars'}")


@tiers_app.command("archive")
def tiers_archive(tier_id: str, as_: AsOpt, as_json: JsonOpt = False) -> None:
    """Take one of --as's tiers off sale; its subscribers keep what they paid for."""
    check_as(as_, as_json)
    t = with_core(lambda core: core.memberships.archive_tier(Actor(account_id=as_, platform="web"), tier_id),
                  as_json)
    typer.echo(json.dumps(tier_dict(t)) if as_json else f"{t.id} archived")


def subscribe(tier_id: str, as_: AsOpt, as_json: JsonOpt = False) -> None:
    """A Stripe Checkout link for --as to subscribe to a tier (monthly, renewed until cancelled)."""
    check_as(as_, as_json)

    async def go(platform: Any) -> dict[str, Any]:
        await known(platform.core, as_)
        c = await _sales(platform).checkout(Actor(account_id=as_, platform="web"), tier_id)
        return {"tier_id": c.tier.id, "session_id": c.session_id, "url": c.url}

    out = with_platform(go, as_json)
    typer.echo(json.dumps(out) if as_json else out["url"])


def subscriptions(as_: AsOpt, subscribers: Annotated[bool, typer.Option(
        "--subscribers", help="The subscriptions to --as's tiers (as a creator) instead of --as's own.")] = False,
                  as_json: JsonOpt = False) -> None:
    """--as's subscriptions (or, with --subscribers, who subscribes to --as)."""
    check_as(as_, as_json)

    async def go(core: Any) -> list[Subscription]:
        await known(core, as_)
        if not subscribers:
            return list(await core.memberships.subscriptions_of(as_))
        async with core.uow() as uow:
            return list(await uow.subscriptions.of_creator(as_))

    subs = with_core(go, as_json)
    if as_json:
        typer.echo(json.dumps([sub_dict(s) for s in subs]))
        return
    if not subs:
        typer.echo("no subscriptions")
    for s in subs:
        end = s.current_period_end.isoformat() if s.current_period_end else "-"
        who = s.account_id if subscribers else s.creator_id
        typer.echo(f"{s.id}  {who}  tier {s.tier_id}  {s.status.value}  until {end}")


def _change(as_: str, as_json: bool, what: str, **kw: Any) -> None:
    check_as(as_, as_json)

    async def go(platform: Any) -> Subscription:
        sales, actor = _sales(platform), Actor(account_id=as_, platform="web")
        if what == "refund":
            sub: Subscription = await sales.refund_current(actor, kw["subscription_id"])
        elif what == "change":
            sub = await sales.change_tier(actor, kw["subscription_id"], kw["tier_id"])
        else:
            sub = await sales.cancel(actor, kw["subscription_id"], resume=what == "resume")
        return sub

    s = with_platform(go, as_json)
    if s.provider.value == "telegram":  # only a refund gets this far (billing/stars_refunds.py)
        out = {"subscription_id": s.id, "requested": what, "status": s.status.value, "queued": True,
               "note": "ended now; the Telegram bot refunds the Stars and stops the renewal (a running serve)"}
        typer.echo(json.dumps(out) if as_json else
                   f"{what} of {s.id}: ended now; the Stars refund is queued for the Telegram bot")
        return
    out = {"subscription_id": s.id, "requested": what,
           "note": "Stripe confirms it with a webhook; `billing subscriptions` shows the result"}
    typer.echo(json.dumps(out) if as_json else f"{what} of {s.id} sent to Stripe")


@subscription_app.command("cancel")
def sub_cancel(subscription_id: str, as_: AsOpt, as_json: JsonOpt = False) -> None:
    """Cancel --as's subscription at the end of the paid period (access lasts until then)."""
    _change(as_, as_json, "cancel", subscription_id=subscription_id)


@subscription_app.command("resume")
def sub_resume(subscription_id: str, as_: AsOpt, as_json: JsonOpt = False) -> None:
    """Take back a cancellation before the period ends."""
    _change(as_, as_json, "resume", subscription_id=subscription_id)


@subscription_app.command("change")
def sub_change(subscription_id: str, as_: AsOpt, tier: Annotated[str, typer.Option(help="The new tier's id.")],
               as_json: JsonOpt = False) -> None:
    """Upgrade (prorated, charged now) or downgrade (from the next renewal; the higher tier stays until then)."""
    _change(as_, as_json, "change", subscription_id=subscription_id, tier_id=tier)


@subscription_app.command("refund")
def sub_refund(subscription_id: str, as_: AsOpt, as_json: JsonOpt = False) -> None:
    """As the creator (--as): refund a subscriber's current period and end the subscription now."""
    _change(as_, as_json, "refund", subscription_id=subscription_id)


def subscribers_only(space_id: str, tier: Annotated[str | None, typer.Option(help="Lowest tier let in.")] = None,
                     early_access: Annotated[int, typer.Option(
                         help="Minutes subscribers have before everyone may join (0: subscribers only).")] = 0,
                     off: Annotated[bool, typer.Option("--off", help="Open the Space to everyone again.")] = False,
                     as_: AsOptional = None, as_json: JsonOpt = False) -> None:
    """Make a scheduled Space subscribers-only, or subscribers-first with --early-access."""
    check_as(as_, as_json)
    if not off and tier is None:
        fail("give --tier (or --off)", 2, as_json)

    async def go(core: Any) -> Space:
        actor_id = as_ or (await core.view(space_id)).space.host_id
        actor = Actor(account_id=actor_id, platform="web", is_operator=as_ is None)
        rule = None if off or tier is None else SubscriberAccess(tier, early_access)
        space: Space = await core.memberships.set_subscriber_access(actor, space_id, rule)
        return space

    s = with_core(go, as_json)
    rule = s.subscribers
    if as_json:
        typer.echo(json.dumps(space_dict(s)))
    elif rule is None:
        typer.echo("open to everyone")
    else:
        typer.echo(f"subscribers at tier {rule.tier_id} or above"
                   + (f" first, everyone {rule.early_minutes} min after the start" if rule.early_minutes else " only"))


def attach(billing_app: typer.Typer) -> None:
    """Add Super Follows' commands to ``spacebridge billing``."""
    billing_app.add_typer(tiers_app, name="tiers")
    billing_app.add_typer(subscription_app, name="subscription")
    billing_app.command("subscribe")(subscribe)
    billing_app.command("subscriptions")(subscriptions)
    billing_app.command("subscribers-only")(subscribers_only)
