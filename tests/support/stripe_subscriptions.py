"""Stripe Billing in front of localstripe: what it lacks for Super Follows, done as Stripe does it.

localstripe implements Products, Plans, Customers, Subscriptions and Invoices (each invoice paid by a
real PaymentIntent), but not Checkout in subscription mode, ``price`` on subscription items (a Plan
id *is* a Price id to Stripe), ``proration_behavior``, Connect fields on subscriptions, or the
``customer.subscription.updated`` / ``invoice.paid`` events. ``FakeSubscriptions`` fills exactly
those gaps, following Stripe's API reference:

- ``POST /v1/checkout/sessions`` with ``mode=subscription``: a session whose completion
  (``complete``: the buyer pays on the hosted page) makes a localstripe Customer with the card as
  its default payment method and a Subscription on the session's price, which localstripe
  invoices and charges; ``subscription_data[metadata]`` lands on the subscription and
  ``subscription_data[transfer_data|application_fee_percent]`` are kept beside it;
- ``POST /v1/subscriptions/{id}``: ``items[][price]`` is passed as ``plan``; ``proration_behavior``
  is recorded; ``always_invoice`` creates and pays the proration invoice at once;
- every change sends Stripe's signed events to the webhook URL: ``checkout.session.completed``,
  ``customer.subscription.created|updated|deleted`` and ``invoice.paid`` (with
  ``parent.subscription_details.metadata``, the subscription's metadata, as Stripe includes it).
"""

from __future__ import annotations

import json
import secrets
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from tests.support.stripe_fake import FakeStripe


class FakeSubscriptions:
    def __init__(self, fake: FakeStripe) -> None:
        self.fake = fake
        self.connect: dict[str, dict[str, Any]] = {}  # subscription id -> transfer_data, application_fee_percent
        self.proration: list[tuple[str, str | None]] = []  # (subscription, proration_behavior) as sent

    async def dispatch(self, method: str, path: str, form: dict[str, Any], body: str) -> web.Response | None:
        from tests.support.stripe_fake import error

        if path == "/v1/checkout/sessions" and method == "POST" and form.get("mode") == "subscription":
            return self._create_session(form)
        if path.startswith("/v1/subscriptions/sub_"):
            sid = path.rsplit("/", 1)[1]
            if method == "POST":
                return await self._update(sid, form)
            if method == "DELETE":
                resp = await self.fake._proxy("DELETE", path, "")
                if resp.status == 200:
                    await self._send("customer.subscription.deleted", sid)
                return resp
            if method == "GET":
                return web.json_response(await self.subscription(sid))
        if path in ("/v1/products", "/v1/plans") and method == "POST":
            return await self.fake._proxy("POST", path, body)
        if path == "/v1/checkout/sessions" and method == "POST" and form.get("mode") not in (None, "payment"):
            return error(400, "invalid_request_error", "mode must be payment or subscription")
        return None

    def _create_session(self, form: dict[str, Any]) -> web.Response:
        from tests.support.stripe_fake import error

        items = form.get("line_items") or []
        if not items or not items[0].get("price") or not form.get("success_url"):
            return error(400, "invalid_request_error", "line_items[0][price] and success_url are required")
        sid = f"cs_test_{secrets.token_hex(12)}"
        sess = {"id": sid, "object": "checkout.session", "mode": "subscription", "status": "open",
                "payment_status": "unpaid", "url": f"{self.fake.base}/pay/{sid}", "subscription": None,
                "customer": None, "metadata": form.get("metadata", {}), "payment_intent": None,
                "client_reference_id": form.get("client_reference_id"), "amount_total": None, "currency": None,
                "expires_at": int(form["expires_at"]) if form.get("expires_at") else int(time.time()) + 86400,
                "success_url": form["success_url"], "cancel_url": form.get("cancel_url"),
                "_price": items[0]["price"], "_subscription_data": form.get("subscription_data") or {}}
        self.fake.sessions[sid] = sess
        return web.json_response({k: v for k, v in sess.items() if not k.startswith("_")})

    async def complete(self, sid: str, card: str = "4242424242424242") -> dict[str, Any]:
        """The buyer pays on Checkout's page: customer, card, subscription (invoiced and charged by
        localstripe), then Stripe's events for the session, the subscription and its invoice."""
        sess = self.fake.sessions[sid]
        post = self.fake._post_ls
        pm = await post("/v1/payment_methods", {"type": "card", "card[number]": card, "card[exp_month]": "12",
                                                "card[exp_year]": "2034", "card[cvc]": "123"})
        cus = await post("/v1/customers", {"payment_method": pm["id"],
                                           "invoice_settings[default_payment_method]": pm["id"]})
        data = sess["_subscription_data"]
        meta = {f"metadata[{k}]": str(v) for k, v in (data.get("metadata") or {}).items()}
        sub = await post("/v1/subscriptions", {"customer": cus["id"], "items[0][plan]": sess["_price"], **meta})
        self.connect[sub["id"]] = {k: data[k] for k in ("transfer_data", "application_fee_percent") if k in data}
        sess.update(status="complete", payment_status="paid", subscription=sub["id"], customer=cus["id"])
        await self.fake.send_event("checkout.session.completed",
                                   {k: v for k, v in sess.items() if not k.startswith("_")})
        await self._send("customer.subscription.created", sub["id"])
        await self.send_invoice(sub["id"])
        return sess

    async def subscription(self, sid: str) -> dict[str, Any]:
        """The subscription as Stripe shows it: items carry ``price`` (the plan) and Connect fields."""
        resp = await self.fake._proxy("GET", f"/v1/subscriptions/{sid}", "")
        obj: dict[str, Any] = json.loads(resp.body)  # type: ignore[arg-type]
        for item in (obj.get("items") or {}).get("data", []):
            item.setdefault("price", item.get("plan"))
        obj.update(self.connect.get(sid, {}))
        return obj

    async def send_invoice(self, sid: str) -> dict[str, Any]:
        """The subscription's newest invoice as ``invoice.paid`` (or ``invoice.payment_failed``)."""
        sub = await self.subscription(sid)
        resp = await self.fake._proxy("GET", f"/v1/invoices/{sub['latest_invoice']}", "")
        inv: dict[str, Any] = json.loads(resp.body)  # type: ignore[arg-type]
        inv["parent"] = {"type": "subscription_details", "subscription_details": {
            "subscription": sid, "metadata": sub.get("metadata") or {}}}
        dest = (sub.get("transfer_data") or {}).get("destination")
        if dest and inv.get("payment_intent"):  # Stripe makes each invoice's payment a destination charge
            pct = float(sub.get("application_fee_percent") or 0)
            fee = round(int(inv["amount_paid"] or inv["amount_due"]) * pct / 100)
            self.fake.fees[inv["payment_intent"]] = {"application_fee_amount": fee,
                                                     "transfer_data": {"destination": dest}}
            inv["application_fee_amount"] = fee
        await self.fake.send_event("invoice.paid" if inv.get("status") == "paid" else "invoice.payment_failed", inv)
        return inv

    async def _update(self, sid: str, form: dict[str, Any]) -> web.Response:
        behaviour = form.pop("proration_behavior", None)
        self.proration.append((sid, behaviour))
        fields: dict[str, str] = {}
        for i, item in enumerate(form.pop("items", None) or []):
            for k, v in item.items():
                fields[f"items[{i}][{'plan' if k == 'price' else k}]"] = str(v)
        for k, v in form.items():
            fields[k] = str(v).lower() if isinstance(v, bool) else str(v)
        try:
            await self.fake._post_ls(f"/v1/subscriptions/{sid}", fields)
        except RuntimeError as e:
            from tests.support.stripe_fake import error
            return error(400, "invalid_request_error", str(e))
        if behaviour == "always_invoice":  # Stripe invoices the proration now; localstripe only on request
            sub = await self.subscription(sid)
            inv = await self.fake._post_ls("/v1/invoices", {"customer": sub["customer"], "subscription": sid})
            await self.fake._post_ls(f"/v1/invoices/{inv['id']}/pay", {})
        await self._send("customer.subscription.updated", sid)
        if behaviour == "always_invoice":
            await self.send_invoice(sid)
        return web.json_response(await self.subscription(sid))

    async def _send(self, kind: str, sid: str) -> None:
        await self.fake.send_event(kind, await self.subscription(sid))
