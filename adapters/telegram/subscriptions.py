"""Super Follows on Telegram: /subscribe sends a Stars subscription invoice (30 days, renewed by
Telegram), its pre-checkout and payments (first and renewals) are applied by
``billing.stars_subscriptions``, and /unsubscribe cancels the renewal with
``editUserStarSubscription``. A tier without a Stars price is sold on the creator's web page."""

from __future__ import annotations

import logging
from html import escape

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, LabeledPrice, Message, PreCheckoutQuery, Update
from telegram.error import BadRequest
from telegram.ext import ContextTypes

from adapters.telegram.base import PLATFORM, TelegramBase, say
from billing.stars_subscriptions import StarsSubscriptions
from core.errors import Conflict, DomainError, Invalid
from core.model.accounts import Actor
from core.model.subscription import STARS_PERIOD_S

log = logging.getLogger(__name__)


class SubscriptionsMixin(TelegramBase):
    stars_subs: StarsSubscriptions

    async def cmd_subscribe(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor,
                            args: list[str]) -> None:
        """/subscribe TIER or /subscribe SPACE: a Stars subscription invoice link for that tier."""
        msg = update.effective_message
        assert msg is not None
        if not args:
            raise Invalid("telegram.usage", usage="/subscribe TIER (or a Space for subscribers)")
        try:
            offer = await self.stars_subs.offer(actor, args[0])
        except Conflict as e:
            if e.code != "tier.no_stars":
                raise
            tier = await self.stars_subs.tier_for(args[0])
            await self._reply(msg, f"<b>{escape(tier.name)}</b> is sold on the creator's page:",
                              markup=InlineKeyboardMarkup([[InlineKeyboardButton(
                                  "Subscribe", url=f"{self.public_url}/u/{tier.creator_id}")]]))
            return
        tier = offer.tier
        assert tier.stars is not None
        creator = await self.core.account(tier.creator_id)
        link = await self.app.bot.create_invoice_link(
            title=f"{tier.name} · {creator.display_name}"[:32], payload=offer.payload, currency="XTR",
            description=(tier.perks or f"A monthly subscription to {creator.display_name} on Spacebridge.")[:255],
            prices=[LabeledPrice(tier.name[:32], tier.stars)], subscription_period=STARS_PERIOD_S)
        await self._reply(msg, f"⭐ <b>{escape(tier.name)}</b>: {tier.stars} Stars every 30 days, renewed until "
                               "you cancel (/unsubscribe).",
                          markup=InlineKeyboardMarkup([[InlineKeyboardButton("Subscribe", url=link)]]))

    async def cmd_unsubscribe(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor,
                              args: list[str]) -> None:
        """/unsubscribe: your subscriptions; /unsubscribe ID: stop a Stars subscription renewing."""
        msg = update.effective_message
        assert msg is not None
        if not args:
            await self._list_subscriptions(msg, actor)
            return
        sub, user_id, charge = await self.stars_subs.to_cancel(actor, args[0])
        try:
            await self.app.bot.edit_user_star_subscription(user_id, charge, is_canceled=True)
        except BadRequest as e:
            log.warning("editUserStarSubscription refused for %s: %s", sub.id, e)
            raise Conflict("subscription.over", subscription_id=sub.id) from None
        sub = await self.stars_subs.canceled(sub)
        end = sub.current_period_end.strftime("%Y-%m-%d") if sub.current_period_end else "the period's end"
        await self._reply(msg, f"Cancelled: it will not renew, and it stays open until {end}.", html=False)

    async def cancel_star_subscription(self, user_id: int, first_charge_id: str) -> None:
        """Stop a Stars subscription renewing (a creator's refund: billing/stars_refunds.py); one
        already stopped counts as done, so the job may run again."""
        try:
            await self.app.bot.edit_user_star_subscription(user_id, first_charge_id, is_canceled=True)
        except BadRequest as e:
            if "NOT_MODIFIED" not in str(e).upper():
                raise

    async def _list_subscriptions(self, msg: Message, actor: Actor) -> None:
        now = self.core.now()
        subs = [s for s in await self.core.memberships.subscriptions_of(actor.account_id) if s.grants(now)]
        if not subs:
            await self._reply(msg, "You have no subscriptions. /subscribe TIER to start one.", html=False)
            return
        lines = []
        for s in subs:
            tier = await self.core.memberships.tier(s.tier_id)
            end = s.current_period_end.strftime("%Y-%m-%d") if s.current_period_end else "-"
            what = "ends" if s.cancel_at_period_end else "renews"
            lines.append(f"{s.id}  {tier.name}  ({s.provider.value}, {what} {end})")
        await self._reply(msg, "Your subscriptions (/unsubscribe ID to cancel one):\n" + "\n".join(lines),
                          html=False)

    async def subscription_pre_checkout(self, q: PreCheckoutQuery) -> None:
        try:
            account = await self.core.ensure_account(PLATFORM, str(q.from_user.id), q.from_user.full_name)
            await self.stars_subs.check(account.id, q.invoice_payload, q.currency, q.total_amount)
        except DomainError as e:
            await q.answer(ok=False, error_message=say(e)[:200])
            return
        await q.answer(ok=True)

    async def subscription_paid(self, msg: Message) -> None:
        sp = msg.successful_payment
        assert sp is not None and msg.from_user is not None
        account = await self.core.ensure_account(PLATFORM, str(msg.from_user.id), msg.from_user.full_name)
        try:
            done = await self.stars_subs.paid(account.id, msg.from_user.id, sp.invoice_payload,
                                              sp.telegram_payment_charge_id, sp.total_amount, sp.currency, msg.date,
                                              sp.subscription_expiration_date)
        except DomainError as e:
            log.error("Stars subscription payment %s could not be applied: %s", sp.telegram_payment_charge_id, e)
            await self._reply(msg, "⚠️ " + say(e), html=False)
            return
        end = done.subscription.current_period_end
        until = end.strftime("%Y-%m-%d") if end else "the period's end"
        first = not sp.is_recurring or sp.is_first_recurring
        text = (f"⭐ Welcome to <b>{escape(done.tier.name)}</b>! Subscribed until {until}, renewed every 30 days."
                if first else f"⭐ <b>{escape(done.tier.name)}</b> renewed until {until}.")
        await self._reply(msg, text)
