"""Stripe webhooks: verify the signature and its age, apply each event once, in any order.

Every ledger step is idempotent and monotonic (held -> paid -> refunded; nothing goes back), so a
replayed event changes nothing and a late "payment failed" cannot undo a payment that succeeded.
Event ids are recorded after the change so a crash in between only means one harmless replay.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import stripe
from aiohttp import web

from billing.ledger import Ledger
from core.errors import DomainError
from core.storage.uow import UnitOfWork

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE_S = 300
MAX_BODY = 256 * 1024


class WebhookRejected(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class StripeWebhooks:
    def __init__(self, ledger: Ledger, secret: str, tolerance_s: int = DEFAULT_TOLERANCE_S) -> None:
        self.ledger = ledger
        self.secret = secret
        self.tolerance_s = tolerance_s

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
        try:
            event = json.loads(text)
            if not isinstance(event, dict) or not event.get("id") or not event.get("type"):
                raise ValueError("not an event")
        except ValueError:
            raise WebhookRejected("webhook.bad_body", "body is not a Stripe event") from None
        return event

    async def apply(self, event: dict[str, Any]) -> str:
        """Returns "processed", "duplicate" or "ignored"."""
        async with self.ledger.core.uow() as uow:
            from core.storage.tables import ProcessedEventRow

            if await uow.session.get(ProcessedEventRow, ("stripe", event["id"])) is not None:
                return "duplicate"
        kind = event["type"]
        obj = (event.get("data") or {}).get("object") or {}
        outcome = "ignored"
        ticket_id = (obj.get("metadata") or {}).get("ticket_id") or obj.get("client_reference_id")
        if not ticket_id and obj.get("payment_intent"):
            t = await self.ledger.by_ref(str(obj["payment_intent"]))
            ticket_id = t.id if t else None
        if ticket_id:
            try:
                outcome = await self._apply(kind, obj, ticket_id)
            except DomainError as e:
                log.warning("stripe event %s (%s) for ticket %s refused: %s", event["id"], kind, ticket_id, e.code)
                outcome = "ignored"

        async def mark(uow: UnitOfWork) -> None:
            await self.ledger.first_time(uow, "stripe", event["id"], kind[:64])

        await self.ledger.core.run(mark)
        return outcome

    async def _apply(self, kind: str, obj: dict[str, Any], ticket_id: str) -> str:
        if kind == "payment_intent.succeeded":
            await self.ledger.settle(ticket_id, paid=True, provider_ref=obj.get("id"),
                                     amount_minor=obj.get("amount"), currency=obj.get("currency"))
        elif kind == "checkout.session.completed":
            if obj.get("payment_status") != "paid":
                return "ignored"
            await self.ledger.settle(ticket_id, paid=True, provider_ref=obj.get("payment_intent") or obj.get("id"),
                                     amount_minor=obj.get("amount_total"), currency=obj.get("currency"))
        elif kind in ("payment_intent.payment_failed", "payment_intent.canceled", "checkout.session.expired"):
            await self.ledger.settle(ticket_id, paid=False)
        elif kind in ("charge.refunded", "refund.created", "refund.updated"):
            if kind != "charge.refunded" and obj.get("status") not in ("succeeded", "pending"):
                return "ignored"
            await self.ledger.mark_refunded(ticket_id)
        else:
            return "ignored"
        return "processed"

    async def handle(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.json_response({"error": {"code": "webhook.too_large"}}, status=413)
        payload = await request.read()
        try:
            event = self.verify(payload, request.headers.get("Stripe-Signature"))
        except WebhookRejected as e:
            return web.json_response({"error": {"code": e.code, "message": str(e)}}, status=400)
        return web.json_response({"received": True, "outcome": await self.apply(event)})
