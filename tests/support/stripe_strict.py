"""A strict Stripe front for tests: every request is checked as real Stripe would check it.

localstripe (and ``FakeStripe`` in front of it) accepts requests that Stripe refuses, so a bug in
how we call Stripe would pass every test and fail every sale in production. ``StrictStripe`` sits
where stripe-python is pointed and refuses, with Stripe-shaped 400 errors, before anything reaches
the fake:

- anything Stripe's published OpenAPI description does not allow: an unknown operation or
  parameter, a missing required one, a non-integer integer, a non-boolean boolean, a value outside
  an enum. The description is a subset of ``openapi/spec3.json`` from github.com/stripe/openapi
  (commit and API version in ``stripe_openapi.json``'s ``source``);
- the documented rules the project depends on:
  * Checkout Sessions: ``expires_at`` from 30 minutes to 24 hours after creation;
  * destination charges (``transfer_data[destination]``) only to an account whose ``transfers``
    capability is active, and ``application_fee_amount`` only with a destination;
  * an idempotency key reused with different parameters is an ``idempotency_error``;
  * refunds of a destination charge carry ``reverse_transfer=true`` and
    ``refund_application_fee=true`` (Stripe's default leaves the creator's transfer and the
    platform's fee in place and takes the refund from the platform's balance: this is the
    project's rule, checked here so a refund that leaves money with the creator fails a test);
- a PaymentIntent declined once may be confirmed again (Stripe allows it; localstripe does too,
  and ``FakeStripe.pay_intent`` retries exactly like Stripe.js).

Every refusal is recorded in ``refused`` so a test can assert that nothing was refused.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.support.stripe_fake import FakeStripe, parse_form

SPEC_FILE = Path(__file__).with_name("stripe_openapi.json")
CHECKOUT_MIN_S, CHECKOUT_MAX_S = 30 * 60, 24 * 3600


def _load() -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(SPEC_FILE.read_text())
    return spec


def _pattern(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\{\w+\}", r"[^/]+", path) + "$")


class Refusal(Exception):
    def __init__(self, message: str, code: str, param: str | None = None, kind: str = "invalid_request_error",
                 status: int = 400) -> None:
        super().__init__(message)
        self.code, self.param, self.kind, self.status = code, param, kind, status


def _check_value(name: str, value: Any, schema: dict[str, Any]) -> None:
    """``value`` (form-decoded: strings, dicts, lists) against a simplified OpenAPI schema."""
    if "anyOf" in schema:
        errors = []
        for option in schema["anyOf"]:
            try:
                _check_value(name, value, option)
                return
            except Refusal as e:
                errors.append(e)
        raise errors[0]
    kind = schema.get("type", "object")
    if "enum" in schema and value not in schema["enum"]:
        raise Refusal(f"Invalid {name}: must be one of {', '.join(map(str, schema['enum']))}",
                      "parameter_invalid_string" if kind == "string" else "parameter_invalid", name)
    if kind == "integer":
        if not isinstance(value, str) or not re.fullmatch(r"-?\d+", value):
            raise Refusal(f"Invalid integer: {value}", "parameter_invalid_integer", name)
    elif kind == "boolean":
        if value not in ("true", "false"):
            raise Refusal(f"Invalid boolean: {value}", "parameter_invalid", name)
    elif kind == "string":
        if not isinstance(value, str):
            raise Refusal(f"Invalid string: {name} must be a string", "parameter_invalid_string", name)
    elif kind == "array":
        if not isinstance(value, list):
            raise Refusal(f"Invalid array: {name}", "parameter_invalid", name)
        for i, item in enumerate(value):
            _check_value(f"{name}[{i}]", item, schema.get("items", {}))
    elif kind == "object":
        if value == "" and not schema.get("properties"):
            return  # Stripe's way of emptying a hash (metadata="")
        if not isinstance(value, dict):
            raise Refusal(f"Invalid object: {name}", "parameter_invalid", name)
        _check_object(name, value, schema)


def _check_object(prefix: str, form: dict[str, Any], schema: dict[str, Any]) -> None:
    props: dict[str, Any] | None = schema.get("properties")
    for key in schema.get("required", []):
        if key not in form:
            full = f"{prefix}[{key}]" if prefix else key
            raise Refusal(f"Missing required param: {full}.", "parameter_missing", full)
    if props is None:
        if not schema.get("additionalProperties") and form and prefix:
            raise Refusal(f"Received unknown parameters: {', '.join(form)}", "parameter_unknown", prefix)
        return
    for key, value in form.items():
        full = f"{prefix}[{key}]" if prefix else key
        if key not in props:
            raise Refusal(f"Received unknown parameter: {full}", "parameter_unknown", full)
        _check_value(full, value, props[key])


class StrictStripe(FakeStripe):
    """``FakeStripe`` behind the checks above; refusals are answered here and never reach the fake."""

    def __init__(self, localstripe: str, **kwargs: Any) -> None:
        super().__init__(localstripe=localstripe, **kwargs)
        spec = _load()
        self.source: dict[str, Any] = spec["source"]
        self.operations = [(op.split(" ", 1)[0], _pattern(op.split(" ", 1)[1]), body)
                           for op, body in spec["operations"].items()]
        self.refused: list[dict[str, Any]] = []
        self._keys: dict[tuple[str, str], str] = {}

    async def route(self, request: web.Request) -> web.StreamResponse:
        body = await request.text()
        try:
            self.check(request.method, request.path, dict(request.query), body,
                       request.headers.get("Idempotency-Key"))
        except Refusal as e:
            self.refused.append({"method": request.method, "path": request.path, "code": e.code,
                                 "message": str(e), "param": e.param})
            return web.json_response({"error": {"type": e.kind, "message": str(e), "code": e.code,
                                                "param": e.param}}, status=e.status)
        return await super().route(request)

    def check(self, method: str, path: str, query: dict[str, str], body: str, key: str | None) -> None:
        op = next((o for m, pat, o in self.operations if m == method and pat.match(path)), None)
        if op is None:
            raise Refusal(f"Unrecognized request URL ({method}: {path}).", "resource_missing",
                          status=404)
        if method == "GET":
            for name in query:
                if name.split("[", 1)[0] not in op["query"]:
                    raise Refusal(f"Received unknown parameter: {name}", "parameter_unknown", name)
            return
        form = parse_form(body)
        _check_object("", form, {"properties": op["params"], "required": op["required"]})
        if key is not None:
            seen = self._keys.setdefault((path, key), body)
            if seen != body:
                raise Refusal("Keys for idempotent requests can only be used with the same parameters they "
                              "were first used with. Try using a key other than "
                              f"'{key}' if you meant to execute a different request.",
                              "idempotency_key_in_use", kind="idempotency_error")
        rule = getattr(self, "_rule_" + op["operationId"], None)
        if rule is not None:
            rule(form)

    def _destination(self, data: dict[str, Any], prefix: str) -> None:
        dest = (data.get("transfer_data") or {}).get("destination")
        if data.get("application_fee_amount") is not None and dest is None:
            raise Refusal("Can only apply an application_fee_amount when the PaymentIntent is attempting a direct "
                          "payment (using an OAuth key or Stripe-Account header) or destination payment (using "
                          "`transfer_data[destination]`).", "parameter_invalid", f"{prefix}application_fee_amount")
        if dest is None:
            return
        acct = self.accounts.get(dest)
        if acct is None:
            raise Refusal(f"No such destination: '{dest}'", "resource_missing",
                          f"{prefix}transfer_data[destination]")
        if (acct.get("capabilities") or {}).get("transfers") != "active":
            raise Refusal("Your destination account needs to have at least one of the following capabilities "
                          "enabled: transfers, crypto_transfers, legacy_payments",
                          "insufficient_capabilities_for_transfer", f"{prefix}transfer_data[destination]")

    def _rule_PostPaymentIntents(self, form: dict[str, Any]) -> None:
        self._destination(form, "")

    def _rule_PostCheckoutSessions(self, form: dict[str, Any]) -> None:
        if "expires_at" in form:
            left = int(form["expires_at"]) - time.time()
            if left < CHECKOUT_MIN_S - 5:  # a few seconds for the trip here
                raise Refusal("The `expires_at` timestamp must be at least 30 minutes from Checkout Session "
                              "creation.", "parameter_invalid_integer", "expires_at")
            if left > CHECKOUT_MAX_S:
                raise Refusal("The `expires_at` timestamp must be less than 24 hours from Checkout Session "
                              "creation.", "parameter_invalid_integer", "expires_at")
        self._destination(form.get("payment_intent_data") or {}, "payment_intent_data")

    def _rule_PostRefunds(self, form: dict[str, Any]) -> None:
        intent = form.get("payment_intent")
        if intent in self.fees and (self.fees[intent] or {}).get("transfer_data"):
            for flag in ("reverse_transfer", "refund_application_fee"):
                if form.get(flag) != "true":
                    raise Refusal(f"Refunding destination charge {intent} without {flag}=true leaves the money "
                                  "with the creator and the platform pays the refund (project rule).",
                                  "parameter_missing", flag)
