"""Stripe for tests: localstripe, plus a small front server for what localstripe lacks.

localstripe (PyPI) implements PaymentIntents, PaymentMethods, charges, refunds and signed webhooks.
The front server speaks Stripe's wire format (form-encoded bracket parameters in, JSON objects
and ``{"error": {...}}`` out) and covers, on its own:

- ``Idempotency-Key`` on every POST: a repeated key returns the first response, as Stripe does;
- Checkout Sessions (create, retrieve, and a test-only "customer paid" action that pays a real
  localstripe PaymentIntent and sends a signed ``checkout.session.completed``);
- Connect: ``/v1/accounts`` (Express, capabilities ``inactive`` until the test calls
  ``finish_onboarding``) and ``/v1/account_links``;
- destination charges: ``application_fee_amount`` and ``transfer_data[destination]`` on
  PaymentIntents and Checkout's ``payment_intent_data``, recorded and echoed back (localstripe
  refuses those parameters); what Stripe would then hold is listed at ``/v1/transfers`` (amount
  less fee, with reversals) and ``/v1/application_fees`` (with fee refunds), computed from
  localstripe's PaymentIntents; refunds' ``reverse_transfer``/``refund_application_fee``/``reason``
  are recorded and left out of what localstripe is sent.

tests/support/stripe_strict.py puts Stripe's own request checks in front of all this.

Everything else is passed through to localstripe unchanged. Every request is recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.support.stripe_subscriptions import FakeSubscriptions


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_form(body: str) -> dict[str, Any]:
    """Stripe's bracket notation (``a[b][0][c]=1``) back into nested dicts and lists."""
    from urllib.parse import parse_qsl

    out: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        parts = re.findall(r"[^\[\]]+", key)
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    result: dict[str, Any] = _lists(out)
    return result


def _lists(node: Any) -> Any:
    if isinstance(node, dict):
        if node and all(k.isdigit() for k in node):
            return [_lists(node[k]) for k in sorted(node, key=int)]
        return {k: _lists(v) for k, v in node.items()}
    return node


def sign(payload: bytes, secret: str, ts: int | None = None) -> str:
    ts = int(time.time()) if ts is None else ts
    sig = hmac.new(secret.encode(), b"%d." % ts + payload, hashlib.sha256).hexdigest()
    return f"t={ts},v1={sig}"


def error(status: int, kind: str, message: str, code: str | None = None) -> web.Response:
    return web.json_response({"error": {"type": kind, "message": message, "code": code}}, status=status)


@dataclass
class FakeStripe:
    localstripe: str
    webhook_url: str | None = None
    webhook_secret: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    fees: dict[str, dict[str, Any]] = field(default_factory=dict)
    refund_flags: dict[str, dict[str, Any]] = field(default_factory=dict)  # refund id -> flags it was sent
    _idem: dict[tuple[str, str], tuple[int, bytes]] = field(default_factory=dict)
    base: str = ""
    http: aiohttp.ClientSession | None = None  # kept open by a caller that pays many intents
    subs: FakeSubscriptions = field(init=False)  # Stripe Billing over localstripe (stripe_subscriptions.py)

    def __post_init__(self) -> None:
        self.subs = FakeSubscriptions(self)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self.route)
        return app

    async def route(self, request: web.Request) -> web.StreamResponse:
        body = await request.text()
        form = parse_form(body) if request.method == "POST" else dict(request.query)
        self.requests.append({"method": request.method, "path": request.path, "form": form,
                              "idempotency_key": request.headers.get("Idempotency-Key")})
        if not request.headers.get("Authorization", "").startswith("Bearer sk_"):
            return error(401, "invalid_request_error", "Invalid API Key provided")
        key = request.headers.get("Idempotency-Key")
        if request.method == "POST" and key and (request.path, key) in self._idem:
            status, raw = self._idem[(request.path, key)]
            return web.Response(status=status, body=raw, content_type="application/json",
                                headers={"Idempotent-Replayed": "true"})
        resp = await self._dispatch(request, form, body)
        if request.method == "POST" and key and resp.status < 500:
            self._idem[(request.path, key)] = (resp.status, resp.body)  # type: ignore[assignment]
        return resp

    async def _dispatch(self, request: web.Request, form: dict[str, Any], body: str) -> web.Response:
        p, m = request.path, request.method
        if (billing := await self.subs.dispatch(m, p, form, body)) is not None:
            return billing
        if p == "/v1/checkout/sessions" and m == "POST":
            return await self._create_session(form)
        if (s := re.fullmatch(r"/v1/checkout/sessions/([\w]+)", p)) and m == "GET":
            sess = self.sessions.get(s.group(1))
            return web.json_response(sess) if sess else error(404, "invalid_request_error", "No such session")
        if p == "/v1/accounts" and m == "POST":
            acct = {"id": f"acct_{secrets.token_hex(8)}", "object": "account", "type": form.get("type", "express"),
                    "email": form.get("email"), "metadata": form.get("metadata", {}), "charges_enabled": False,
                    "payouts_enabled": False, "details_submitted": False,
                    "capabilities": {k: "inactive" for k in (form.get("capabilities") or {})}}
            self.accounts[acct["id"]] = acct
            return web.json_response(acct)
        if (a := re.fullmatch(r"/v1/accounts/(acct_\w+)", p)) and m == "GET":
            found = self.accounts.get(a.group(1))
            return web.json_response(found) if found else error(404, "invalid_request_error", "No such account")
        if p == "/v1/account_links" and m == "POST":
            if form.get("account") not in self.accounts:
                return error(400, "invalid_request_error", "No such account", "resource_missing")
            return web.json_response({"object": "account_link", "created": int(time.time()),
                                      "expires_at": int(time.time()) + 300,
                                      "url": f"{self.base}/connect/onboarding/{form['account']}"})
        if p == "/v1/payment_intents" and m == "POST":
            return await self._create_intent(form, body)
        if (i := re.fullmatch(r"/v1/payment_intents/(pi_\w+)", p)) and m == "GET":
            resp = await self._proxy(m, request.path_qs, body)
            if resp.status == 200:
                obj = json.loads(resp.body)  # type: ignore[arg-type]
                obj.update(self.fees.get(i.group(1)) or {"application_fee_amount": None, "transfer_data": None})
                return web.json_response(obj)
            return resp
        if p == "/v1/refunds" and m == "POST":
            return await self._refund(form, body)
        if p == "/v1/transfers" and m == "GET":
            return web.json_response({"object": "list", "data": await self.transfers(), "has_more": False})
        if p == "/v1/application_fees" and m == "GET":
            return web.json_response({"object": "list", "data": await self.application_fees(),
                                      "has_more": False})
        return await self._proxy(request.method, request.path_qs, body)

    def finish_onboarding(self, account: str) -> None:
        """The creator finished Stripe's onboarding: charges enabled, every requested capability active."""
        acct = self.accounts[account]
        acct.update(charges_enabled=True, payouts_enabled=True, details_submitted=True,
                    capabilities={k: "active" for k in acct["capabilities"]})

    async def _refund(self, form: dict[str, Any], body: str) -> web.Response:
        flags = {k: form.get(k) for k in ("reverse_transfer", "refund_application_fee", "reason")}
        kept = "&".join(part for part in body.split("&")
                        if not part.startswith(("reverse_transfer=", "refund_application_fee=", "reason=")))
        resp = await self._proxy("POST", "/v1/refunds", kept)
        if resp.status == 200:
            obj = json.loads(resp.body)  # type: ignore[arg-type]
            self.refund_flags[obj["id"]] = {**flags, "payment_intent": obj.get("payment_intent"),
                                            "amount": obj.get("amount")}
        return resp

    async def _intent(self, intent_id: str) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.get(
                f"{self.localstripe}/v1/payment_intents/{intent_id}",
                headers={"Authorization": "Bearer sk_test_localstripe"}) as r:
            out: dict[str, Any] = await r.json()
            return out

    def _refunded(self, intent_id: str, flag: str) -> int:
        return sum(int(f["amount"]) for f in self.refund_flags.values()
                   if f["payment_intent"] == intent_id and f.get(flag) == "true")

    async def transfers(self) -> list[dict[str, Any]]:
        """What Stripe would have transferred for each paid destination charge, less reversals."""
        out = []
        for pi, extra in self.fees.items():
            dest = (extra.get("transfer_data") or {}).get("destination")
            if dest is None or (intent := await self._intent(pi)).get("status") != "succeeded":
                continue
            fee = int(extra.get("application_fee_amount") or 0)
            amount = int(intent["amount"]) - fee
            # a full refund with reverse_transfer reverses the whole transfer; a partial one, in proportion
            reversed_ = min(amount, self._refunded(pi, "reverse_transfer") * amount // int(intent["amount"]))
            out.append({"id": f"tr_{pi[3:]}", "object": "transfer", "amount": amount, "currency": intent["currency"],
                        "destination": dest, "source_transaction": intent.get("latest_charge"),
                        "amount_reversed": reversed_, "reversed": reversed_ == amount})
        return out

    async def application_fees(self) -> list[dict[str, Any]]:
        out = []
        for pi, extra in self.fees.items():
            fee = extra.get("application_fee_amount")
            if fee is None or (intent := await self._intent(pi)).get("status") != "succeeded":
                continue
            refunded = min(int(fee), self._refunded(pi, "refund_application_fee") * int(fee) // int(intent["amount"]))
            out.append({"id": f"fee_{pi[3:]}", "object": "application_fee", "amount": int(fee),
                        "amount_refunded": refunded, "refunded": refunded == int(fee), "currency": intent["currency"],
                        "account": (extra.get("transfer_data") or {}).get("destination")})
        return out

    async def _proxy(self, method: str, path: str, body: str) -> web.Response:
        async with aiohttp.ClientSession() as http, http.request(
                method, self.localstripe + path, data=body.encode(),
                headers={"Authorization": "Bearer sk_test_localstripe",
                         "Content-Type": "application/x-www-form-urlencoded"}) as r:
            return web.Response(status=r.status, body=await r.read(), content_type="application/json")

    async def _create_intent(self, form: dict[str, Any], body: str) -> web.Response:
        fee = form.get("application_fee_amount")
        dest = (form.get("transfer_data") or {}).get("destination")
        if dest is not None and dest not in self.accounts:
            return error(400, "invalid_request_error", f"No such destination: '{dest}'", "resource_missing")
        kept = "&".join(part for part in body.split("&")
                        if not part.startswith(("application_fee_amount=", "transfer_data")))
        resp = await self._proxy("POST", "/v1/payment_intents", kept)
        if resp.status == 200 and (fee is not None or dest is not None):
            obj = json.loads(resp.body)  # type: ignore[arg-type]
            extra = {"application_fee_amount": int(fee) if fee is not None else None,
                     "transfer_data": {"destination": dest} if dest else None}
            self.fees[obj["id"]] = extra
            obj.update(extra)
            return web.json_response(obj)
        return resp

    async def _create_session(self, form: dict[str, Any]) -> web.Response:
        items = form.get("line_items") or []
        if form.get("mode") != "payment" or not items or not form.get("success_url"):
            return error(400, "invalid_request_error", "mode=payment, line_items and success_url are required")
        price = items[0]["price_data"]
        pid = form.get("payment_intent_data") or {}
        dest = (pid.get("transfer_data") or {}).get("destination")
        if dest is not None and dest not in self.accounts:
            return error(400, "invalid_request_error", f"No such destination: '{dest}'", "resource_missing")
        sid = f"cs_test_{secrets.token_hex(12)}"
        sess = {"id": sid, "object": "checkout.session", "mode": "payment", "status": "open",
                "payment_status": "unpaid", "url": f"{self.base}/pay/{sid}", "payment_intent": None,
                "amount_total": int(price["unit_amount"]) * int(items[0].get("quantity", 1)),
                "currency": price["currency"], "metadata": form.get("metadata", {}),
                "client_reference_id": form.get("client_reference_id"),
                "expires_at": int(form["expires_at"]) if form.get("expires_at") else int(time.time()) + 86400,
                "success_url": form["success_url"], "cancel_url": form.get("cancel_url"),
                "_payment_intent_data": pid}
        self.sessions[sid] = sess
        return web.json_response({k: v for k, v in sess.items() if not k.startswith("_")})

    async def complete_session(self, sid: str) -> dict[str, Any]:
        """The customer pays on the hosted page: a real localstripe PaymentIntent is paid, and the
        signed ``checkout.session.completed`` goes to the webhook URL."""
        sess = self.sessions[sid]
        meta = {f"metadata[{k}]": v for k, v in (sess["_payment_intent_data"].get("metadata") or {}).items()}
        pi = await self._post_ls("/v1/payment_intents", {"amount": str(sess["amount_total"]),
                                                         "currency": sess["currency"], **meta})
        pid = sess["_payment_intent_data"]
        if pid.get("transfer_data") or pid.get("application_fee_amount") is not None:
            fee = pid.get("application_fee_amount")
            self.fees[pi["id"]] = {"application_fee_amount": int(fee) if fee is not None else None,
                                   "transfer_data": pid.get("transfer_data")}
        await self.pay_intent(pi["id"])
        sess.update(status="complete", payment_status="paid", payment_intent=pi["id"])
        await self.send_event("checkout.session.completed", {k: v for k, v in sess.items() if not k.startswith("_")})
        return sess

    async def expire_session(self, sid: str) -> dict[str, Any]:
        """Checkout gave up on the session (it reached ``expires_at``): signed ``checkout.session.expired``."""
        sess = self.sessions[sid]
        sess.update(status="expired")
        await self.send_event("checkout.session.expired", {k: v for k, v in sess.items() if not k.startswith("_")})
        return sess

    async def pay_intent(self, intent_id: str, card: str = "4242424242424242") -> dict[str, Any]:
        """What Stripe.js does in the buyer's browser: attach a card to the intent and confirm it.
        Returns the confirmed intent, or ``{"error": ...}`` when localstripe declines the card."""
        pm = await self._post_ls("/v1/payment_methods", {"type": "card", "card[number]": card,
                                                         "card[exp_month]": "12", "card[exp_year]": "2034",
                                                         "card[cvc]": "123"})
        await self._post_ls(f"/v1/payment_intents/{intent_id}", {"payment_method": str(pm["id"])})
        try:
            return await self._post_ls(f"/v1/payment_intents/{intent_id}/confirm", {})
        except RuntimeError as e:
            return {"error": str(e)}

    async def _post_ls(self, path: str, data: dict[str, str]) -> dict[str, Any]:
        if self.http is None:
            async with aiohttp.ClientSession() as http:
                return await self._post_with(http, path, data)
        return await self._post_with(self.http, path, data)

    async def _post_with(self, http: aiohttp.ClientSession, path: str, data: dict[str, str]) -> dict[str, Any]:
        async with http.post(self.localstripe + path, data=data,
                             headers={"Authorization": "Bearer sk_test_localstripe"}) as r:
            out: dict[str, Any] = await r.json()
            if r.status >= 400:
                raise RuntimeError(f"localstripe {path}: {out}")
            return out

    def event(self, kind: str, obj: dict[str, Any], event_id: str | None = None) -> bytes:
        return json.dumps({"id": event_id or f"evt_{secrets.token_hex(12)}", "object": "event", "type": kind,
                           "created": int(time.time()), "data": {"object": obj}, "api_version": "2025-01-01"}).encode()

    async def send_event(self, kind: str, obj: dict[str, Any], *, event_id: str | None = None,
                         payload: bytes | None = None, signature: str | None = None) -> tuple[int, dict[str, Any]]:
        assert self.webhook_url
        payload = payload or self.event(kind, obj, event_id)
        headers = {"Content-Type": "application/json",
                   "Stripe-Signature": signature or sign(payload, self.webhook_secret)}
        async with aiohttp.ClientSession() as http, http.post(self.webhook_url, data=payload, headers=headers) as r:
            return r.status, await r.json()


# localstripe pickles its whole store to /tmp/localstripe.pickle on every write, so each request
# costs time in proportion to everything stored so far (24 purchases/s after 300). Benchmarks of our
# purchase path start it with that snapshot off; the API it serves is unchanged.
_NO_SNAPSHOT = "r.Store.dump_to_disk = lambda self: None\n"
# Stripe lets a buyer retry a declined PaymentIntent: a new payment method, then confirm again (the
# failed charge stays on record). localstripe keeps the failed charge as the intent's last one and
# refuses the second confirm, so its process gets Stripe's rule: a new payment method on an intent
# whose last charge failed starts a new attempt.
_LAUNCH = """import sys, localstripe.resources as r, localstripe.server as s
{snapshot}
_update = r.PaymentIntent._api_update.__func__
def _retry(cls, id, **data):
    obj = cls._api_retrieve(id)
    if 'payment_method' in data and obj.latest_charge is not None and obj.latest_charge.status == 'failed':
        obj.latest_charge = None
    return _update(cls, id, **data)
r.PaymentIntent._api_update = classmethod(_retry)
sys.argv[0] = 'localstripe'
s.start()
"""


class LocalStripe:
    """localstripe in its own process on a free port, starting empty (``--from-scratch``: by
    default it reloads a store shared by every instance on the machine). ``snapshot=False`` skips
    its per-write store dump (see ``_NO_SNAPSHOT``)."""

    def __init__(self, *, snapshot: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.snapshot = snapshot
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        how = ["-c", _LAUNCH.format(snapshot="" if self.snapshot else _NO_SNAPSHOT)]
        self.proc = subprocess.Popen([sys.executable, *how, "--port", str(self.port), "--from-scratch"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"localstripe exited with {self.proc.returncode} (port {self.port} taken?)")
            try:
                async with aiohttp.ClientSession() as http, http.get(f"{self.url}/v1/customers",
                                                                     headers={"Authorization": "Bearer sk_test_x"}):
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.2)
        raise RuntimeError("localstripe did not start")

    async def send_webhooks_to(self, url: str, secret: str) -> None:
        async with aiohttp.ClientSession() as http, http.post(f"{self.url}/_config/webhooks/spacebridge",
                                                               data={"url": url, "secret": secret}) as r:
            assert r.status == 200

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
