"""Selling a ticket: hold a seat, then open a payment for it with Stripe (card form or checkout link).

When the host has a Stripe Connect account, the sale is a destination charge to it, and only once
Stripe says that account can take it (charges enabled, ``transfers`` active). Until then the sale
is refused with ``billing.payouts_not_ready``: the buyer is told tickets are not on sale yet, the
creator sees ``ready: false`` and the same words from ``billing connect``. (The alternative, taking
the money on the platform's account and paying it out later, would leave the platform owing
creators money it cannot transfer.) A host who never started Connect sells on the platform's account.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from billing.ledger import Ledger
from billing.stripe_gateway import BillingError, StripeGateway
from core.model.accounts import Actor
from core.model.ticket import Ticket

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Purchase:
    ticket: Ticket
    provider_ref: str
    client_secret: str | None = None
    url: str | None = None


class TicketSales:
    def __init__(self, ledger: Ledger, gateway: StripeGateway | None, base_url: str) -> None:
        self.ledger = ledger
        self.gateway = gateway
        self.base_url = base_url.rstrip("/")

    def _require(self) -> StripeGateway:
        if self.gateway is None:
            raise BillingError("billing.off", hint="set STRIPE_API_KEY and STRIPE_WEBHOOK_SECRET")
        return self.gateway

    async def _hold(self, gw: StripeGateway, actor: Actor, space_id: str, destination: str | None, *,
                    checkout: bool = False) -> tuple[Ticket, str | None]:
        """A seat, and where the money goes: a destination charge to the host's Connect account
        (read with the hold), which must be able to take it."""
        held = await self.ledger.hold_to_pay(actor, space_id, "stripe", checkout=checkout)
        destination = destination or held.payout_account
        if destination is not None:
            try:
                ready = await gw.account_ready(destination)
            except BillingError:
                await self._release(held.ticket)
                raise
            if not ready:
                await self._release(held.ticket)
                raise BillingError("billing.payouts_not_ready", space_id=space_id)
        return held.ticket, destination

    async def _release(self, ticket: Ticket) -> None:
        """Give the seat back at once (a new hold only; an existing one may still be paid)."""
        if ticket.provider_ref is None:
            await self.ledger.settle(ticket.id, paid=False)

    async def _attach(self, ticket: Ticket, ref: str) -> None:
        """Save the payment's reference. If that fails the payment still settles (its metadata names
        the ticket), and the hold stops blocking the seat after ``REF_GRACE``."""
        try:
            await self.ledger.attach_ref(ticket.id, ref)
        except Exception:
            log.exception("could not save payment %s for ticket %s; the hold lapses early", ref, ticket.id)

    async def buy_with_card(self, actor: Actor, space_id: str, destination: str | None = None) -> Purchase:
        gw = self._require()
        ticket, destination = await self._hold(gw, actor, space_id, destination)
        try:
            intent, secret = await gw.create_payment_intent(ticket, destination)
        except BillingError:
            await self._release(ticket)  # give the seat back at once
            raise
        await self._attach(ticket, intent)
        return Purchase(ticket, intent, client_secret=secret)

    async def buy_with_checkout(self, actor: Actor, space_id: str, title: str,
                                destination: str | None = None) -> Purchase:
        gw = self._require()
        ticket, destination = await self._hold(gw, actor, space_id, destination, checkout=True)
        try:
            session, url = await gw.create_checkout_session(
                ticket, title, f"{self.base_url}/s/{space_id}?paid={ticket.id}", f"{self.base_url}/s/{space_id}",
                destination)
        except BillingError:
            await self._release(ticket)
            raise
        await self._attach(ticket, session)
        return Purchase(ticket, session, url=url)
