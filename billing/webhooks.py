"""Stripe webhooks: verify the signature and its age, apply each event once, in any order.

Every ledger step is idempotent and monotonic (held -> paid -> refunded; nothing goes back), so a
replayed event changes nothing and a late "payment failed" cannot undo a payment that succeeded.
An event's id is recorded in the same transaction as the change it makes, and two deliveries of
one event at once apply it once (the second finds the id taken). Events that arrive together are
applied in one transaction; if that fails, each is applied again on its own, so only the event
that fails gets a 500 (and Stripe's retry) and its neighbours succeed.

Refused before anything is read into the ledger: bodies over 256 KiB (announced or chunked), bad
or missing signatures, signatures older than the tolerance or dated beyond it in the future, and
events whose ``data.object`` is not an object.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import stripe
from aiohttp import web

from billing.ledger import Batch, Ledger
from billing.stripe_gateway import StripeGateway
from billing.subscription_events import SUBSCRIPTION_EVENTS, SubscriptionEvents
from core.errors import DomainError
from core.ports import UnitOfWork
from core.services import GroupCommit

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE_S = 300
MAX_BODY = 256 * 1024
REFUND_EVENTS = ("charge.refunded", "refund.created", "refund.updated")
# Every kind ``_apply`` acts on or must remember (a declined card is recorded, then left alone). Any
# other kind (balance.available, charge.succeeded ...) changes nothing, so it is answered without a
# transaction: half the events of a card sale cost no database write.
ACTED_ON = frozenset({"payment_intent.succeeded", "checkout.session.completed", "payment_intent.payment_failed",
                      "payment_intent.canceled", "checkout.session.expired", "account.updated", *REFUND_EVENTS,
                      *SUBSCRIPTION_EVENTS})


class WebhookRejected(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class EventFailed(DomainError):
    """An event that could not be applied on its own (a bug or an outage); Stripe will retry it."""

    kind = "webhook"


def _ticket_of(event: dict[str, Any]) -> Any:
    """The ticket an event names in its metadata or Checkout reference (unchecked), if any."""
    obj = event["data"]["object"]
    meta = obj.get("metadata")
    return (meta.get("ticket_id") if isinstance(meta, dict) else None) or obj.get("client_reference_id")


class StripeWebhooks:
    """``gateway``: told of ``account.updated`` events, so a creator's payout account that gains or
    loses the ``transfers`` capability is believed at once, not after its readiness expires.
    ``subscriptions``: where Super Follows' events go (billing/subscription_events.py)."""

    def __init__(self, ledger: Ledger, secret: str, tolerance_s: int = DEFAULT_TOLERANCE_S,
                 gateway: StripeGateway | None = None, subscriptions: SubscriptionEvents | None = None) -> None:
        self.ledger = ledger
        self.subscriptions = subscriptions or SubscriptionEvents(ledger.fee_bps)
        self.gateway = gateway
        self.secret = secret
        self.tolerance_s = tolerance_s
        self._events: GroupCommit[dict[str, Any], str] = GroupCommit(self._apply_batch, max_batch=200)

    def verify(self, payload: bytes, signature: str | None) -> dict[str, Any]:
        if not signature:
            raise WebhookRejected("webhook.no_signature", "missing Stripe-Signature header")
        try:
            text = payload.decode("utf-8")
            stripe.WebhookSignature.verify_header(text, signature, self.secret, self.tolerance_s)
        except UnicodeDecodeError:
            raise WebhookRejected("webhook.bad_body", "body is not UTF-8") from None
        except stripe.SignatureVerificationError as e:
            code = "webhook.stale" if "tolerance" in str(e) else "webhook.bad_signature"
            raise WebhookRejected(code, str(e)) from None
        stamps = [p[2:] for p in signature.split(",") if p.strip().startswith("t=")]
        if not stamps or not stamps[0].strip().isdigit():
            raise WebhookRejected("webhook.bad_signature", "no timestamp in Stripe-Signature")
        if int(stamps[0]) > time.time() + self.tolerance_s:  # Stripe's library checks only the past
            raise WebhookRejected("webhook.from_future", "the signature is dated in the future")
        try:
            event = json.loads(text)
            if not isinstance(event, dict) or not event.get("id") or not event.get("type"):
                raise ValueError("not an event")
            data = event.get("data")
            if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
                raise ValueError("data.object is not an object")
            if not isinstance(event["id"], str) or not isinstance(event["type"], str):
                raise ValueError("id and type must be strings")
        except ValueError as e:
            raise WebhookRejected("webhook.bad_body", f"body is not a Stripe event ({e})") from None
        return event

    async def apply(self, event: dict[str, Any]) -> str:
        """Returns "processed", "duplicate" or "ignored", once the outcome is committed. Events that
        arrive together (a sale's worth of payments) are applied in one transaction."""
        if event["type"] not in ACTED_ON:
            return "ignored"
        return await self._events.submit(event)

    async def _apply_batch(self, events: list[dict[str, Any]]) -> list[str | DomainError]:
        try:
            outcomes: list[str | DomainError] = list(await self._apply_together(events))
        except Exception:
            if len(events) == 1:
                log.exception("stripe event %s (%s) failed; Stripe will deliver it again",
                              events[0].get("id"), events[0].get("type"))
                return [EventFailed("webhook.failed", event_id=str(events[0].get("id")))]
            outcomes = []
            for event in events:  # one bad event must not fail its neighbours: apply each alone
                outcomes.extend(await self._apply_batch([event]))
            return outcomes
        if "processed" in outcomes:
            self.ledger.core.wake_jobs()  # a payment that could not be a seat queued its refund
        return outcomes

    async def _apply_together(self, events: list[dict[str, Any]]) -> list[str]:
        async def op(uow: UnitOfWork) -> list[str]:
            fresh = await self.ledger.first_times(uow, "stripe", [(str(e["id"]), str(e["type"])[:64]) for e in events])
            named = [t for e in events if str(e["id"]) in fresh and isinstance(t := _ticket_of(e), str)]
            batch = Batch(buyers=await self.ledger.buyers_of(uow, named))
            out = []
            for event in events:
                if str(event["id"]) in fresh:
                    fresh.discard(str(event["id"]))  # the same event twice in one batch: applied once
                    out.append(await self._apply_one(uow, event, batch))
                else:
                    out.append("duplicate")
            return out

        return await self.ledger.core.run(op)

    async def _apply_one(self, uow: UnitOfWork, event: dict[str, Any], batch: Batch) -> str:
        kind = str(event["type"])
        obj: dict[str, Any] = event["data"]["object"]
        if kind in SUBSCRIPTION_EVENTS:
            return await self.subscriptions.apply_in(uow, event, self.ledger.core.now())
        if obj.get("mode") == "subscription":  # a subscription's Checkout: its subscription's events count
            return "ignored"
        if kind == "account.updated":
            if self.gateway is None or not isinstance(obj.get("id"), str):
                return "ignored"
            self.gateway.forget_account(obj["id"])  # its capabilities may have changed either way
            return "processed"
        meta = obj.get("metadata")
        ticket_id = (meta.get("ticket_id") if isinstance(meta, dict) else None) or obj.get("client_reference_id")
        if kind in REFUND_EVENTS and isinstance(obj.get("payment_intent"), str):
            t = await self.ledger.by_ref_in(uow, obj["payment_intent"])  # the payment refunded, not the buyer's seat
            if t is None and await self.subscriptions.refunded_in(uow, kind, obj):
                return "processed"  # a subscription's period, refunded (from Stripe's dashboard, say)
            ticket_id = t.id if t else ticket_id
        elif not ticket_id and isinstance(obj.get("payment_intent"), str):
            t = await self.ledger.by_ref_in(uow, obj["payment_intent"])
            ticket_id = t.id if t else None
        if ticket_id is not None and not isinstance(ticket_id, str):
            return "ignored"
        if not ticket_id:
            return "ignored"
        try:
            return await self._apply(uow, kind, obj, str(ticket_id), batch)
        except DomainError as e:  # refused before it changed anything: recorded, not retried
            log.warning("stripe event %s (%s) for ticket %s refused: %s", event["id"], kind, ticket_id, e.code)
            return "ignored"

    async def _apply(self, uow: UnitOfWork, kind: str, obj: dict[str, Any], ticket_id: str, batch: Batch) -> str:
        ledger = self.ledger
        if kind == "payment_intent.succeeded":
            await ledger.settle_in(uow, ticket_id, paid=True, provider_ref=obj.get("id"),
                                   amount_minor=obj.get("amount"), currency=obj.get("currency"), batch=batch)
        elif kind == "checkout.session.completed":
            if obj.get("payment_status") != "paid":
                return "ignored"
            await ledger.settle_in(uow, ticket_id, paid=True, provider_ref=obj.get("payment_intent") or obj.get("id"),
                                   amount_minor=obj.get("amount_total"), currency=obj.get("currency"), batch=batch)
        elif kind == "payment_intent.payment_failed":
            return "ignored"  # the buyer may retry the same PaymentIntent while the hold lasts
        elif kind in ("payment_intent.canceled", "checkout.session.expired"):
            await ledger.settle_in(uow, ticket_id, paid=False, batch=batch)
        elif kind in REFUND_EVENTS:
            if kind != "charge.refunded" and obj.get("status") not in ("succeeded", "pending"):
                return "ignored"
            await ledger.mark_refunded_in(uow, ticket_id, batch)
        else:
            return "ignored"
        return "processed"

    async def handle(self, request: web.Request) -> web.Response:
        too_large = web.json_response({"error": {"code": "webhook.too_large",
                                                 "message": f"the body is over {MAX_BODY} bytes"}}, status=413)
        if request.content_length is not None and request.content_length > MAX_BODY:
            return too_large
        payload = b""
        while chunk := await request.content.read(64 * 1024):  # a chunked body has no length to trust
            payload += chunk
            if len(payload) > MAX_BODY:
                return too_large
        try:
            event = self.verify(payload, request.headers.get("Stripe-Signature"))
        except WebhookRejected as e:
            return web.json_response({"error": {"code": e.code, "message": str(e)}}, status=400)
        try:
            outcome = await self.apply(event)
        except EventFailed as e:
            return web.json_response({"error": {"code": e.code, "message": "not applied; deliver it again"}},
                                     status=500)
        return web.json_response({"received": True, "outcome": outcome})
