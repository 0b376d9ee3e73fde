"""A creator's subscription tiers from chat (issue 19): list, create, archive and price in Stars, the
same on Discord (``/space tiers`` ...) and Telegram (``/tiers`` ...).

Why here: both bots make the same calls the CLI and the studio make (``SubscriptionSales.create_tier``,
``Memberships.archive_tier`` / ``set_stars`` / ``tiers``), so the rules (three tiers, one currency,
a price above zero, Stars 1 to 10000, only the creator) and their refusals (core/messages.py) are
never written twice; this module only reads what a person typed and words the answer with the
surface's ``Style``. The caller is always the chat account's own (linked) account.
"""

from __future__ import annotations

from typing import Any

from adapters.chat.wording import Style
from billing.subscription_report import creator_report
from billing.subscriptions import SubscriptionSales
from core.errors import Invalid, NotFound
from core.model.accounts import Actor
from core.model.subscription import MAX_STARS, Tier, monthly_price_minor
from core.services import Core

OFF_WORDS = frozenset({"off", "none"})


def price(minor: int, currency: str) -> str:
    """A monthly price as people read it: whole Stars for XTR, two decimals for money."""
    return f"{minor} Stars" if currency.upper() == "XTR" else f"{minor / 100:.2f} {currency.upper()}"


def _line(t: Tier, active: int | None, style: Style) -> str:
    parts = [f"{style.bold(t.name)} ({style.code(t.id)}): {style.text(price(t.price_minor, t.currency))}/month"]
    if t.stars:
        parts.append(f" or {t.stars} Stars on Telegram")
    if active is not None:
        parts.append(f" · {active} subscriber{'' if active == 1 else 's'}")
    if t.archived:
        parts.append(" · archived")
    if t.perks:
        parts.append(f"\n   {style.text(t.perks)}")
    return "".join(parts)


async def listing(core: Core, account_id: str, style: Style, *, how: str) -> str:
    """The caller's tiers, on sale first (cheapest first), then archived, each with its subscribers
    now (the creator report's ``active``, as in the studio). ``how`` says how to make one there."""
    tiers = await core.memberships.tiers(account_id, archived=True)
    if not tiers:
        return f"You sell no subscription tiers yet. {how}"
    active = {f.tier_id: f.active for f in (await creator_report(core, account_id)).tiers}
    ordered = [t for t in tiers if not t.archived] + [t for t in tiers if t.archived]
    return "⭐ Your tiers:\n" + "\n".join(f"• {_line(t, active.get(t.id), style)}" for t in ordered)


async def find(core: Core, actor: Actor, ref: str) -> Tier:
    """The tier ``ref`` names: its id, or the name of one of the caller's tiers (any case)."""
    ref = " ".join(ref.split())
    try:
        return await core.memberships.tier(ref)
    except NotFound:
        pass
    mine = [t for t in await core.memberships.tiers(actor.account_id, archived=True)
            if t.name.casefold() == ref.casefold()]
    mine.sort(key=lambda t: t.archived)  # the one on sale, if an archived tier had the same name
    if not mine:
        raise NotFound("tier.not_found", tier_id=ref[:60])
    return mine[0]


async def create(core: Core, gateway: Any, base_url: str, fee_bps: int, actor: Actor, name: str, price_text: str,
                 currency: str, perks: str) -> Tier:
    """A new tier on sale, exactly as the studio makes one (its Stripe Product and Plan too when
    Stripe is configured; otherwise at the first checkout). A refusal leaves nothing behind."""
    sales = SubscriptionSales(core, gateway, base_url, fee_bps=fee_bps)
    return await sales.create_tier(actor, name, monthly_price_minor(price_text, currency), currency, perks)


def created(t: Tier, style: Style, *, stars_how: str) -> str:
    return (f"⭐ {style.bold(t.name)} is on sale at {style.text(price(t.price_minor, t.currency))}/month "
            f"({style.code(t.id)}). {stars_how}")


async def archive(core: Core, actor: Actor, ref: str) -> Tier:
    return await core.memberships.archive_tier(actor, (await find(core, actor, ref)).id)


def archived(t: Tier, style: Style) -> str:
    return f"{style.bold(t.name)} is off sale. Its subscribers keep it until their subscriptions end."


async def set_stars(core: Core, actor: Actor, ref: str, stars_text: str) -> Tier:
    """Sell a tier in Telegram Stars at ``stars_text`` a month (``off``: stop selling it in Stars)."""
    tier = await find(core, actor, ref)
    word = stars_text.strip().lower()
    if word in OFF_WORDS:
        stars = None
    elif word.isdigit():
        stars = int(word)
    else:
        raise Invalid("tier.bad_stars", stars=stars_text[:20], max=MAX_STARS)
    return await core.memberships.set_stars(actor, tier.id, stars)


def starred(t: Tier, style: Style) -> str:
    if t.stars:
        return f"⭐ {style.bold(t.name)} is sold on Telegram too, at {t.stars} Stars every 30 days."
    return f"{style.bold(t.name)} is no longer sold in Telegram Stars (its Stars subscribers keep theirs)."
