"""Super Follows on Telegram: /subscribe sends a Stars subscription invoice (30 days, renewed by
Telegram), its pre-checkout and payments (first and renewals) are applied by
``billing.stars_subscriptions``, and /unsubscribe cancels the renewal with
``editUserStarSubscription``. A tier without a Stars price is sold on the creator's web page.

A creator manages their own tiers in private chat with the bot: /tiers, /tier_create, /tier_archive
and /tier_stars (``adapters.chat.tiers``: the studio's and the CLI's calls and refusals)."""

from __future__ import annotations

import logging
from html import escape

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, LabeledPrice, Message, PreCheckoutQuery, Update
from telegram.constants import ChatType
from telegram.error import BadRequest
from telegram.ext import ContextTypes

from adapters.chat import tiers as chat_tiers
from adapters.chat.wording import HTML
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

    # ---- a creator's own tiers (private chat) ----------------------------------------------------
    TIER_CREATE_USAGE = '/tier_create NAME PRICE CURRENCY [PERKS...] (a name of several words in quotes; ' \
                        'PRICE a month, e.g. 4.50)'

    def _private(self, update: Update) -> Message:
        """The message, if it came in private chat: a creator's tiers are nobody else's business."""
        msg = update.effective_message
        assert msg is not None
        if msg.chat.type != ChatType.PRIVATE:
            raise Conflict("telegram.dm_first", link=f"https://t.me/{self.username}")
        return msg

    @staticmethod
    def _words(msg: Message, usage: str, *, keep_rest_after: int = 0) -> list[str]:
        """The words after the command; a name in quotes is one word. With ``keep_rest_after`` N, the
        text after the first N words is kept as typed, as one last word (perks, apostrophes and all)."""
        rest = (msg.text or "").split(None, 1)
        text = rest[1].strip() if len(rest) > 1 else ""
        words: list[str] = []
        while text and (not keep_rest_after or len(words) < keep_rest_after):
            if text[0] in "\"'“”":
                close = next((i for i, c in enumerate(text[1:], 1) if c in "\"'“”"), -1)
                if close < 0:
                    raise Invalid("telegram.usage", usage=usage)
                words.append(text[1:close])
                text = text[close + 1:].strip()
            else:
                word, _, text = text.partition(" ")
                words.append(word)
                text = text.strip()
        return words + ([text] if text else [])

    async def cmd_tiers(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor, args: list[str]) -> None:
        """/tiers: the caller's tiers, with their Stars price, subscribers now, and whether archived."""
        msg = self._private(update)
        await self._reply(msg, await chat_tiers.listing(self.core, actor.account_id, HTML,
                                                        how="Make one with " + escape(self.TIER_CREATE_USAGE)))

    async def cmd_tier_create(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor,
                              args: list[str]) -> None:
        """/tier_create NAME PRICE CURRENCY [PERKS...]: a new tier on sale (the studio's call)."""
        msg = self._private(update)
        words = self._words(msg, self.TIER_CREATE_USAGE, keep_rest_after=3)
        if len(words) < 3:
            raise Invalid("telegram.usage", usage=self.TIER_CREATE_USAGE)
        tier = await chat_tiers.create(self.core, getattr(self.stripe_sales, "gateway", None), self.public_url,
                                       self.ledger.fee_bps, actor, words[0], words[1], words[2], " ".join(words[3:]))
        await self._reply(msg, chat_tiers.created(tier, HTML, stars_how=f"Sell it in Stars too: /tier_stars "
                                                                       f"{tier.id} STARS"))

    async def cmd_tier_archive(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor,
                               args: list[str]) -> None:
        """/tier_archive TIER: off sale; its subscribers keep what they paid for."""
        msg = self._private(update)
        words = self._words(msg, "/tier_archive TIER")
        if not words:
            raise Invalid("telegram.usage", usage="/tier_archive TIER (its id or name)")
        await self._reply(msg, chat_tiers.archived(await chat_tiers.archive(self.core, actor, " ".join(words)), HTML))

    async def cmd_tier_stars(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor,
                             args: list[str]) -> None:
        """/tier_stars TIER STARS (or off): the tier's monthly price in Telegram Stars."""
        msg = self._private(update)
        words = self._words(msg, "/tier_stars TIER STARS")
        if len(words) < 2:
            raise Invalid("telegram.usage", usage="/tier_stars TIER STARS (1 to 10000, or off)")
        tier = await chat_tiers.set_stars(self.core, actor, " ".join(words[:-1]), words[-1])
        await self._reply(msg, chat_tiers.starred(tier, HTML))
