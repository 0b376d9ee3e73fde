"""``spacebridge billing ...``: ticket sales, refunds and creator payouts."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from core.messages import describe
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
    space_dict,
    with_core,
    with_platform,
)

billing_app = typer.Typer(help="Ticket sales, subscriptions (Super Follows) and creator payouts.", no_args_is_help=True)


# ---- billing -------------------------------------------------------------------------------------

@billing_app.command("report")
def billing_report(space_id: Annotated[str | None, typer.Argument(help="A ticketed Space.")] = None,
                   creator: Annotated[str | None, typer.Option(
                       help="A creator's subscriptions instead: subscribers per tier, MRR, churn, failed payments."
                   )] = None, as_json: JsonOpt = False) -> None:
    """What a ticketed Space sold (tickets, refunds, gross, platform fees, the creator's net), or with
    --creator what their subscriptions bring."""
    from billing.ledger import Ledger

    if (space_id is None) == (creator is None):
        fail("give a Space id or --creator", 2, as_json)
    if creator is not None:
        _subscription_report(creator, as_json)
        return
    assert space_id is not None
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


def _subscription_report(creator: str, as_json: bool) -> None:
    from billing.subscription_report import creator_report

    r = with_core(lambda core: creator_report(core, creator), as_json)
    if as_json:
        typer.echo(json.dumps(r.as_dict()))
        return

    def money(minor: int) -> str:
        return f"{minor / 100:.2f} {r.currency}".strip()

    for t in r.tiers:
        typer.echo(f"{t.name}: {t.active} subscriber(s) at {money(t.price_minor)}{' (archived)' if t.archived else ''}")
    typer.echo(f"active {r.active}  MRR {money(r.mrr_minor)}  churned (30 days) {r.churned_30d} "
               f"({r.churn_rate:.0%})  failed payments (30 days) {r.failed_payments_30d}")
    typer.echo(f"gross {money(r.gross_minor)}  refunded {money(r.refunded_minor)}  fees {money(r.fees_minor)}  "
               f"net {money(r.net_minor)}")
    if r.stars_gross:
        typer.echo(f"Stars (Telegram): gross {r.stars_gross} XTR  refunded {r.stars_refunded} XTR  "
                   f"fees {r.stars_fees} XTR  net {r.stars_net} XTR (owed to the creator)")


@billing_app.command("ticketing")
def billing_ticketing(
    space_id: str,
    price: Annotated[int | None, typer.Option(help="Price in minor units (cents; Stars for XTR).")] = None,
    currency: Annotated[str, typer.Option(help="ISO currency, or XTR for Telegram Stars.")] = "eur",
    capacity: Annotated[int | None, typer.Option(help="Seats (default: unlimited).")] = None,
    sales_start: Annotated[str | None, typer.Option(help="When sales open (ISO time or +2h).")] = None,
    sales_end: Annotated[str | None, typer.Option(help="When sales close.")] = None,
    off: Annotated[bool, typer.Option("--off", help="Make the Space free again.")] = False,
    free_tier: Annotated[str | None, typer.Option(
        "--free-tier", help="Your subscribers at or above this tier of yours join without a ticket.")] = None,
    discount: Annotated[int | None, typer.Option(
        "--subscriber-discount", help="Percent off (1-99) for your subscribers at or above --discount-tier; "
        "without --price, added to the Space's present terms.")] = None,
    discount_tier: Annotated[str | None, typer.Option(
        "--discount-tier", help="The tier of yours whose subscribers (and those above) get the discount.")] = None,
    no_discount: Annotated[bool, typer.Option(
        "--no-subscriber-discount", help="Take the subscriber discount off, keeping the rest of the terms.")] = False,
    as_: AsOptional = None, as_json: JsonOpt = False,
) -> None:
    """Make a scheduled Space ticketed (or free again with --off); --subscriber-discount gives your
    subscribers a lower price."""
    from core.model.space import Ticketing

    check_as(as_, as_json)
    amend = price is None and not off and (discount is not None or discount_tier is not None or no_discount)
    if not off and price is None and not amend:
        fail("give --price (or --off)", 2, as_json)
    if amend and free_tier is not None:
        fail("--free-tier is part of the terms: give --price with it", 2, as_json)
    if no_discount and (discount is not None or discount_tier is not None or price is not None or off):
        fail("--no-subscriber-discount goes alone (a new --price without the discount flags drops it too)", 2,
             as_json)

    async def go(core: Any) -> Space:
        actor_id = as_ or (await core.view(space_id)).space.host_id
        actor = Actor(account_id=actor_id, platform="web", is_operator=as_ is None)
        if amend:
            amended: Space = await core.community_cases.set_ticket_discount(
                actor, space_id, None if no_discount else discount_tier, None if no_discount else discount)
            return amended
        terms = None if off else Ticketing(
            price_minor=int(price or 0), currency=currency, capacity=capacity,
            sales_start=parse_when(sales_start, core.now()) if sales_start else None,
            sales_end=parse_when(sales_end, core.now()) if sales_end else None, free_tier_id=free_tier,
            discount_tier_id=discount_tier, discount_percent=discount)
        space: Space = await core.set_ticketing(actor, space_id, terms)
        return space

    space = with_core(go, as_json)
    t = space.ticketing
    if as_json:
        typer.echo(json.dumps({**space_dict(space), "ticketing": None if t is None else
                               {"price_minor": t.price_minor, "currency": t.currency, "capacity": t.capacity,
                                "free_tier_id": t.free_tier_id, "discount_tier_id": t.discount_tier_id,
                                "discount_percent": t.discount_percent,
                                "subscriber_price_minor": t.subscriber_price()}}))
    elif t is None:
        typer.echo("free")
    else:
        line = f"{t.price_minor} {t.currency}, capacity {t.capacity or 'unlimited'}"
        if t.free_tier_id:
            line += f"; free for subscribers at {t.free_tier_id} or above"
        if t.discount_tier_id:
            line += (f"; {t.subscriber_price()} {t.currency} ({t.discount_percent}% off) for subscribers "
                     f"at {t.discount_tier_id} or above")
        typer.echo(line)


@billing_app.command("buy")
def billing_buy(space_id: str, as_: AsOpt,
                checkout: Annotated[bool, typer.Option("--checkout", help="A hosted checkout link.")] = False,
                as_json: JsonOpt = False) -> None:
    """Hold a seat for --as and open a payment: a PaymentIntent (card form) or a checkout link."""
    from billing.sales import TicketSales

    check_as(as_, as_json)

    async def go(platform: Any) -> dict[str, Any]:
        await known(platform.core, as_)
        sales = TicketSales(platform.ledger, platform.stripe, link_base(platform.settings))
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
        base = link_base(platform.settings)
        url = await platform.stripe.account_link(acct, f"{base}/connect/refresh", f"{base}/connect/done")
        ready = await platform.stripe.account_ready(acct, fresh=True)
        return {"account_id": as_, "stripe_account": acct, "onboarding_url": url, "ready": ready,
                "message": None if ready else describe(BillingError("billing.payouts_not_ready"))}

    out = with_platform(go, as_json)
    typer.echo(json.dumps(out) if as_json else out["onboarding_url"])
    if not as_json and out["message"]:
        typer.echo(out["message"], err=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``spacebridge`` command."""
    from spacebridge import cli_subscriptions

    cli_subscriptions.attach(billing_app)  # Super Follows: tiers, subscribe, subscriptions ...
    app.add_typer(billing_app, name="billing")
