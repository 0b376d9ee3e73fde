"""Stripe through the official ``stripe`` library: PaymentIntents, Checkout Sessions, refunds and
Connect Express onboarding. Every call carries an idempotency key derived from our own ids, and
Stripe's errors are translated once, here, into ``BillingError`` codes the adapters can word.

Rules from Stripe's documentation this module keeps (tests/support/stripe_strict.py enforces them):
a Checkout Session's ``expires_at`` is 30 minutes to 24 hours after its creation; a destination
charge goes only to an account whose ``transfers`` capability is active; refunding a destination
charge reverses the transfer and the application fee, so the creator, not the platform, pays it back.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import stripe

from core.errors import DomainError
from core.model.ticket import Ticket

# Stripe accepts a Checkout Session's expires_at from 30 minutes to 24 hours after it is created.
CHECKOUT_MIN = timedelta(minutes=30)
CHECKOUT_MAX = timedelta(hours=24)
# A payout account Stripe said was ready is believed for this long before asking again.
READY_TTL_S = 300.0


class BillingError(DomainError):
    kind = "billing"


def _translate(e: stripe.StripeError) -> BillingError:
    detail = (e.user_message or str(e))[:300]
    if isinstance(e, stripe.CardError):
        return BillingError("payment.card_declined", detail=detail, decline_code=getattr(e, "code", None))
    if isinstance(e, stripe.AuthenticationError | stripe.PermissionError):
        return BillingError("billing.bad_key", detail=detail)
    if isinstance(e, stripe.APIConnectionError | stripe.RateLimitError):
        return BillingError("billing.unavailable", detail=detail)
    if isinstance(e, stripe.IdempotencyError):
        return BillingError("billing.idempotency_conflict", detail=detail)
    return BillingError("billing.provider_refused", detail=detail)


class StripeGateway:
    """The ``PaymentGateway`` port for Stripe, plus what selling and payouts need."""

    provider = "stripe"

    def __init__(self, api_key: str, *, api_base: str | None = None, fee_bps: int = 0) -> None:
        self.fee_bps = fee_bps
        self._ready_until: dict[str, float] = {}
        self._http = stripe.AIOHTTPClient()
        self.client = stripe.StripeClient(
            api_key, base_addresses={"api": api_base, "connect": api_base} if api_base else None,
            http_client=self._http, max_network_retries=2)

    async def close(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    def fee_for(self, amount_minor: int) -> int:
        return (amount_minor * self.fee_bps + 5_000) // 10_000

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except stripe.StripeError as e:
            raise _translate(e) from e

    def _destination(self, ticket: Ticket, destination: str | None) -> dict[str, Any]:
        if not destination:
            return {}
        return {"application_fee_amount": self.fee_for(ticket.amount_minor),
                "transfer_data": {"destination": destination}}

    async def create_payment_intent(self, ticket: Ticket, destination: str | None = None) -> tuple[str, str]:
        """For the web room's own card form: returns (intent id, client secret)."""
        params: dict[str, Any] = {
            "amount": ticket.amount_minor, "currency": ticket.currency.lower(),
            "metadata": {"ticket_id": ticket.id, "space_id": ticket.space_id, "account_id": ticket.account_id},
            **self._destination(ticket, destination),
        }
        # The sale's hot path: the raw request skips building a StripeObject tree from the reply just
        # to read two fields (about 0.2 ms of CPU per sale; errors still raise stripe.StripeError).
        resp = await self._call(self.client.raw_request_async(
            "post", "/v1/payment_intents", **params, idempotency_key=f"pi:{ticket.id}"))
        return str(resp.data["id"]), str(resp.data["client_secret"])

    async def create_checkout_session(self, ticket: Ticket, title: str, success_url: str, cancel_url: str,
                                      destination: str | None = None) -> tuple[str, str]:
        """For chat adapters: a hosted payment page link. Returns (session id, url)."""
        meta = {"ticket_id": ticket.id, "space_id": ticket.space_id, "account_id": ticket.account_id}
        params: dict[str, Any] = {
            "mode": "payment", "success_url": success_url, "cancel_url": cancel_url,
            "client_reference_id": ticket.id, "metadata": meta,
            "line_items": [{"quantity": 1, "price_data": {
                "currency": ticket.currency.lower(), "unit_amount": ticket.amount_minor,
                "product_data": {"name": f"Ticket: {title}"[:250]}}}],
            "payment_intent_data": {"metadata": meta, **self._destination(ticket, destination)},
        }
        if ticket.hold_expires_at is not None:  # the session lives exactly as long as the seat's hold
            now = time.time()
            expires = int(ticket.hold_expires_at.timestamp())
            if not now + CHECKOUT_MIN.total_seconds() <= expires <= now + CHECKOUT_MAX.total_seconds():
                raise BillingError("billing.bad_hold", minutes=int((expires - now) // 60),
                                   allowed="30 minutes to 24 hours")
            params["expires_at"] = expires
        key = f"cs:{ticket.id}:{params.get('expires_at', '')}"  # a lengthened hold is a new session
        s = await self._call(self.client.v1.checkout.sessions.create_async(
            params=params, options={"idempotency_key": key}))  # type: ignore[arg-type]
        return str(s.id), str(s.url)

    async def refund(self, provider_ref: str, amount_minor: int, idempotency_key: str, reason: str) -> str:
        """Give a payment back. A destination charge's refund also reverses the creator's transfer and
        the platform's fee (Stripe's default takes it all from the platform's balance)."""
        intent = provider_ref
        if provider_ref.startswith("cs_"):
            session = await self._call(self.client.v1.checkout.sessions.retrieve_async(provider_ref))
            if not session.payment_intent:
                raise BillingError("billing.nothing_to_refund", ref=provider_ref)
            intent = str(session.payment_intent)
        pi = (await self._call(self.client.v1.payment_intents.retrieve_async(intent))).to_dict()
        params: dict[str, Any] = {"payment_intent": intent, "amount": amount_minor,
                                  "metadata": {"reason": reason[:200]}}
        if pi.get("transfer_data"):
            params["reverse_transfer"] = True
            params["refund_application_fee"] = True
        if reason in ("duplicate", "fraudulent", "requested_by_customer"):
            params["reason"] = reason
        r = await self._call(self.client.v1.refunds.create_async(
            params=params, options={"idempotency_key": idempotency_key}))  # type: ignore[arg-type]
        return str(r.id)

    async def create_connect_account(self, creator_account_id: str, email: str | None = None) -> str:
        params: dict[str, Any] = {"type": "express", "metadata": {"spacebridge_account": creator_account_id},
                                  "capabilities": {"card_payments": {"requested": True},
                                                   "transfers": {"requested": True}}}
        if email:
            params["email"] = email
        acct = await self._call(self.client.v1.accounts.create_async(
            params=params, options={"idempotency_key": f"acct:{creator_account_id}"}))  # type: ignore[arg-type]
        return str(acct.id)

    async def account_link(self, connect_account: str, refresh_url: str, return_url: str) -> str:
        link = await self._call(self.client.v1.account_links.create_async(params={
            "account": connect_account, "refresh_url": refresh_url, "return_url": return_url,
            "type": "account_onboarding"}))
        return str(link.url)

    async def account_ready(self, connect_account: str, *, fresh: bool = False) -> bool:
        """Can this Connect account take destination charges now: charges enabled and the
        ``transfers`` capability active? A yes is remembered for a few minutes (a sale asks), and
        forgotten as soon as Stripe says the account changed (``forget_account``)."""
        if not fresh and self._ready_until.get(connect_account, 0.0) > time.monotonic():
            return True
        acct = (await self._call(self.client.v1.accounts.retrieve_async(connect_account))).to_dict()
        caps = acct.get("capabilities") or {}
        ready = bool(acct.get("charges_enabled")) and caps.get("transfers") == "active"
        if ready:
            self._ready_until[connect_account] = time.monotonic() + READY_TTL_S
        else:
            self._ready_until.pop(connect_account, None)
        return ready

    def forget_account(self, connect_account: str) -> None:
        """Stripe sent ``account.updated`` (a capability became active or inactive): the next sale
        asks Stripe again. Forgetting, rather than believing the event's copy, is right whatever
        order Stripe delivers the events in."""
        self._ready_until.pop(connect_account, None)
