"""Tickets on Telegram (subscription invoices: adapters/telegram/subscriptions.py): sold in Stars
(an invoice by DM, checked before checkout, settled when paid,
refunded through the Bot API as the ``telegram_stars`` ``PaymentGateway``), or through Stripe
Checkout for Spaces priced in money. Refunds a person asks for go through the table (/refund)."""

from __future__ import annotations

import logging
from html import escape

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, LabeledPrice, Update
from telegram.constants import ChatType
from telegram.error import BadRequest, Forbidden
from telegram.ext import ContextTypes

from adapters.telegram.base import PLATFORM, say
from adapters.telegram.subscriptions import SubscriptionsMixin
from billing.stars_subscriptions import is_subscription_payload
from core.commands import BUILTIN_TABLE, check_state
from core.errors import Conflict, DomainError, Invalid, NotFound
from core.model.accounts import Actor
from core.model.ticket import Provider, TicketStatus

log = logging.getLogger(__name__)


class PaymentsMixin(SubscriptionsMixin):
    async def cmd_ticket(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor, args: list[str]) -> None:
        msg = update.effective_message
        user = update.effective_user
        assert msg is not None and user is not None
        space = await self._space(update, args, "ticket", states=("live", "scheduled"), actor=actor)
        ticket_command = BUILTIN_TABLE.get("ticket")
        if ticket_command is not None:  # the table's rules first, as on every surface; then Stars or Checkout
            check_state(ticket_command, space)
        t = space.ticketing
        if t is None:
            raise Conflict("ticket.not_ticketed", space_id=space.id)
        if t.currency.upper() != "XTR":
            if self.stripe_sales is None:
                raise Conflict("billing.off", hint="this Space is priced in " + t.currency.upper())
            purchase = await self.stripe_sales.buy_with_checkout(actor, space.id, space.title)
            paying = purchase.ticket.amount_minor
            note = (f"; your subscriber price is {paying / 100:.2f} {t.currency.upper()} instead of "
                    f"{t.price_minor / 100:.2f}" if paying != t.price_minor else "")
            await self._reply(msg, f"🎟 Pay for <b>{escape(space.title)}</b> here (the seat is yours for "
                                   f"{int(self.ledger.checkout_hold_for.total_seconds() // 60)} min{note}):",
                              markup=InlineKeyboardMarkup([[InlineKeyboardButton("Pay", url=purchase.url)]]))
            return
        ticket = await self.ledger.hold(actor, space.id, Provider.TELEGRAM_STARS.value)
        try:
            await self.app.bot.send_invoice(
                chat_id=user.id, title=space.title[:32], payload=ticket.id, currency="XTR",
                description=f"A ticket to the live Space “{space.title[:200]}” hosted on Spacebridge."[:255],
                prices=[LabeledPrice("Ticket" if ticket.amount_minor == t.price_minor else "Ticket (subscriber price)",
                                     ticket.amount_minor)], provider_token="")
        except Forbidden:
            await self.ledger.settle(ticket.id, paid=False)
            raise Conflict("telegram.dm_first", link=f"https://t.me/{self.username}?start=ticket") from None
        if msg.chat.type != ChatType.PRIVATE:
            await self._reply(msg, "🎟 I sent you the invoice in a private chat.", html=False)

    async def on_pre_checkout(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Must be answered within 10 s: checks only our own ledger, never a remote call."""
        q = update.pre_checkout_query
        if q is None:
            return
        if is_subscription_payload(q.invoice_payload):
            await self.subscription_pre_checkout(q)
            return
        try:
            ticket = await self.ledger.get(q.invoice_payload)
            now = self.core.now()
            if ticket.provider != Provider.TELEGRAM_STARS or q.currency != "XTR":
                raise Invalid("ticket.bad_provider", provider=q.currency, allowed=["XTR"])
            if q.total_amount != ticket.amount_minor:
                raise Invalid("ticket.amount_mismatch", expected=ticket.amount_minor, got=q.total_amount)
            account = await self.core.ensure_account(PLATFORM, str(q.from_user.id), q.from_user.full_name)
            if account.id != ticket.account_id:
                raise NotFound("ticket.not_found", ticket_id=ticket.id)
            if ticket.status == TicketStatus.PAID:
                raise Conflict("ticket.already_paid", space_id=ticket.space_id, ticket_id=ticket.id)
            if not ticket.holds_seat(now):
                raise Conflict("ticket.hold_expired", space_id=ticket.space_id)
            space = (await self.core.view(ticket.space_id)).space
            if not space.is_open:
                raise Conflict("space.closed", space_id=space.id, state=space.state.value)
        except DomainError as e:
            await q.answer(ok=False, error_message=say(e)[:200])
            return
        await q.answer(ok=True)

    async def on_paid(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        msg = update.effective_message
        if msg is None or msg.successful_payment is None or msg.from_user is None:
            return
        sp = msg.successful_payment
        if is_subscription_payload(sp.invoice_payload):
            await self.subscription_paid(msg)
            return
        try:
            ticket = await self.ledger.settle(sp.invoice_payload, paid=True,
                                              provider_ref=f"{msg.from_user.id}:{sp.telegram_payment_charge_id}",
                                              amount_minor=sp.total_amount, currency=sp.currency)
        except DomainError as e:
            log.error("Stars payment %s could not be settled: %s", sp.telegram_payment_charge_id, e)
            await self._reply(msg, "⚠️ " + say(e), html=False)
            return
        if ticket.status == TicketStatus.PAID:
            view = await self.core.view(ticket.space_id)
            await self._reply(msg, f"🎟 Ticket confirmed for <b>{escape(view.space.title)}</b>. "
                                   "I'll DM you when it goes live.")
        else:
            await self._reply(msg, "The seat was no longer available, so your Stars are being refunded.", html=False)

    async def refund(self, provider_ref: str, amount_minor: int, idempotency_key: str, reason: str) -> str:
        """``PaymentGateway`` for Stars; a charge already refunded counts as done (the job may re-run)."""
        user_id, _, charge = provider_ref.partition(":")
        if not user_id.isdigit() or not charge:
            raise Invalid("ticket.bad_ref", provider_ref=provider_ref)
        try:
            await self.app.bot.refund_star_payment(int(user_id), charge)
        except BadRequest as e:
            if "ALREADY_REFUNDED" not in str(e).upper():
                raise
        return f"stars-refund:{charge}"
