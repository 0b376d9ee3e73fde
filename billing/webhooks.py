"""Stripe webhooks: verify the signature and its age, apply each event once, in any order.

Every ledger step is idempotent and monotonic (held -> paid -> refunded; nothing goes back), so a
replayed event changes nothing and a late "payment failed" cannot undo a payment that succeeded.
An event's id is recorded in the same transaction as the change it makes, and two deliveries of
one event at once apply it once (the second finds the id taken). A failure other than a refusal
fails the whole batch it was in: each delivery gets a 500 and Stripe delivers it again.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import stripe
from aiohttp import web

from billing.ledger import Ledger
from core.errors import DomainError
from core.services import GroupCommit
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
        try:
            event = json.loads(text)
            if not isinstance(event, dict) or not event.get("id") or not event.get("type"):
                raise ValueError("not an event")
        except ValueError:
            raise WebhookRejected("webhook.bad_body", "body is not a Stripe event") from None
        return event

    async def apply(self, event: dict[str, Any]) -> str:
        """Returns "processed", "duplicate" or "ignored", once the outcome is committed. Events that
        arrive together (a sale's worth of payments) are applied in one transaction."""
        return await self._events.submit(event)

    async def _apply_batch(self, events: list[dict[str, Any]]) -> list[str]:
        async def op(uow: UnitOfWork) -> list[str]:
            fresh = await self.ledger.first_times(uow, "stripe", [(str(e["id"]), str(e["type"])[:64]) for e in events])
            taken: dict[str, int] = {}
            out = []
            for event in events:
                if str(event["id"]) in fresh:
                    fresh.discard(str(event["id"]))  # the same event twice in one batch: applied once
                    out.append(await self._apply_one(uow, event, taken))
                else:
                    out.append("duplicate")
            return out

        outcomes = await self.ledger.core.run(op)
        if "processed" in outcomes:
            self.ledger.core.wake_jobs()  # a payment for a seat we could not keep queued its refund
        return outcomes

    async def _apply_one(self, uow: UnitOfWork, event: dict[str, Any], taken: dict[str, int]) -> str:
        kind = str(event["type"])
        obj = (event.get("data") or {}).get("object") or {}
        ticket_id = (obj.get("metadata") or {}).get("ticket_id") or obj.get("client_reference_id")
        if not ticket_id and obj.get("payment_intent"):
            t = await self.ledger.by_ref_in(uow, str(obj["payment_intent"]))
            ticket_id = t.id if t else None
        if not ticket_id:
            return "ignored"
        try:
            return await self._apply(uow, kind, obj, str(ticket_id), taken)
        except DomainError as e:  # refused before it changed anything: recorded, not retried
            log.warning("stripe event %s (%s) for ticket %s refused: %s", event["id"], kind, ticket_id, e.code)
            return "ignored"

    async def _apply(self, uow: UnitOfWork, kind: str, obj: dict[str, Any], ticket_id: str,
                     taken: dict[str, int]) -> str:
        ledger = self.ledger
        if kind == "payment_intent.succeeded":
            await ledger.settle_in(uow, ticket_id, paid=True, provider_ref=obj.get("id"),
                                   amount_minor=obj.get("amount"), currency=obj.get("currency"), taken=taken)
        elif kind == "checkout.session.completed":
            if obj.get("payment_status") != "paid":
                return "ignored"
            await ledger.settle_in(uow, ticket_id, paid=True, provider_ref=obj.get("payment_intent") or obj.get("id"),
                                   amount_minor=obj.get("amount_total"), currency=obj.get("currency"), taken=taken)
        elif kind in ("payment_intent.payment_failed", "payment_intent.canceled", "checkout.session.expired"):
            await ledger.settle_in(uow, ticket_id, paid=False, taken=taken)
        elif kind in ("charge.refunded", "refund.created", "refund.updated"):
            if kind != "charge.refunded" and obj.get("status") not in ("succeeded", "pending"):
                return "ignored"
            await ledger.mark_refunded_in(uow, ticket_id, taken)
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
