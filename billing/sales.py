"""Selling a ticket: hold a seat, then open a payment for it with Stripe (card form or checkout link)."""

from __future__ import annotations

from dataclasses import dataclass

from billing.ledger import Ledger
from billing.stripe_gateway import BillingError, StripeGateway
from core.model.accounts import Actor
from core.model.ticket import Ticket


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

    async def _hold(self, actor: Actor, space_id: str, destination: str | None) -> tuple[Ticket, str | None]:
        """A seat, and where the money goes: a destination charge to the host's Connect account when
        they finished onboarding (read with the hold)."""
        held = await self.ledger.hold_to_pay(actor, space_id, "stripe")
        return held.ticket, destination or held.payout_account

    async def buy_with_card(self, actor: Actor, space_id: str, destination: str | None = None) -> Purchase:
        gw = self._require()
        ticket, destination = await self._hold(actor, space_id, destination)
        try:
            intent, secret = await gw.create_payment_intent(ticket, destination)
        except BillingError:
            await self.ledger.settle(ticket.id, paid=False)  # give the seat back at once
            raise
        await self.ledger.attach_ref(ticket.id, intent)
        return Purchase(ticket, intent, client_secret=secret)

    async def buy_with_checkout(self, actor: Actor, space_id: str, title: str,
                                destination: str | None = None) -> Purchase:
        gw = self._require()
        ticket, destination = await self._hold(actor, space_id, destination)
        try:
            session, url = await gw.create_checkout_session(
                ticket, title, f"{self.base_url}/s/{space_id}?paid={ticket.id}", f"{self.base_url}/s/{space_id}",
                destination)
        except BillingError:
            await self.ledger.settle(ticket.id, paid=False)
            raise
        await self.ledger.attach_ref(ticket.id, session)
        return Purchase(ticket, session, url=url)
