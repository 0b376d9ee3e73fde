"""A strict Stripe front for tests: every request is checked as real Stripe would check it.

localstripe (and ``FakeStripe`` in front of it) accepts requests that Stripe refuses, so a bug in
how we call Stripe would pass every test and fail every sale in production. ``StrictStripe`` sits
where stripe-python is pointed and refuses, with Stripe-shaped 400 errors, before anything reaches
the fake:

- anything Stripe's API reference does not allow: an unknown operation or parameter (at any depth),
  a missing required one, a non-integer integer, a non-boolean boolean, a value outside an enum.
  The source is Stripe's OpenAPI description as stripe-python ships it: the request-parameter
  TypedDicts generated from it under ``stripe/params/`` (stripe==16.1.0 in requirements.lock;
  ``SOURCE`` below), walked at test time. Those types widen every enum with ``|str`` for forward
  compatibility; the ``Literal`` choices are the enum Stripe checks, so only they are accepted;
- the documented rules the project depends on:
  * Checkout Sessions: ``expires_at`` from 30 minutes to 24 hours after creation;
  * destination charges (``transfer_data[destination]``) only to an account whose ``transfers``
    capability is active, and ``application_fee_amount`` only with a destination;
  * Checkout in ``subscription`` mode (Super Follows): a price on every line, no
    ``payment_intent_data``, ``subscription_data[application_fee_percent]`` (0 to 100) only with
    ``subscription_data[transfer_data][destination]``, which needs ``transfers`` active as above;
  * a Plan names its product and amount;
  * an idempotency key reused with different parameters is an ``idempotency_error``;
  * refunds of a destination charge carry ``reverse_transfer=true`` and
    ``refund_application_fee=true`` (Stripe's default leaves the creator's transfer and the
    platform's fee in place and takes the refund from the platform's balance: this is the
    project's rule, checked here so a refund that leaves money with the creator fails a test);
- a PaymentIntent declined once may be confirmed again with a new payment method (Stripe allows
  it). That one is not checked here but taught to the localstripe process (``_LAUNCH`` in
  ``tests/support/stripe_fake.py``): it is a state change, not a request Stripe refuses, and the
  confirm comes from the buyer's browser (Stripe.js, ``FakeStripe.pay_intent``) straight to
  localstripe, never through our server or this front, so only localstripe can honour it.

Every refusal is recorded in ``refused`` so a test can assert that nothing was refused.
"""

from __future__ import annotations

import re
import sys
import time
import types
import typing
from decimal import Decimal, InvalidOperation
from importlib.metadata import version
from typing import Any, ForwardRef, Literal, Union

import typing_extensions
from aiohttp import web
from stripe import params as sp
from stripe._request_options import RequestOptions
from stripe._stripe_object import UntypedStripeObject
from stripe.params import checkout as spc

from tests.support.stripe_fake import FakeStripe, parse_form

SOURCE = {"package": "stripe", "version": version("stripe"), "what": "stripe/params: request-parameter TypedDicts "
          "generated from Stripe's OpenAPI description (github.com/stripe/openapi)"}
CHECKOUT_MIN_S, CHECKOUT_MAX_S = 30 * 60, 24 * 3600

# Every Stripe operation the project (or a test reading Stripe's ledger back) calls: method, path,
# Stripe's operation id (names the rule below, if any), and stripe-python's parameter type for it.
OPERATIONS: list[tuple[str, str, str, type]] = [
    ("GET", "/v1/accounts/{account}", "GetAccountsAccount", sp.AccountRetrieveParams),
    ("GET", "/v1/application_fees", "GetApplicationFees", sp.ApplicationFeeListParams),
    ("GET", "/v1/charges", "GetCharges", sp.ChargeListParams),
    ("GET", "/v1/checkout/sessions/{session}", "GetCheckoutSessionsSession", spc.SessionRetrieveParams),
    ("GET", "/v1/payment_intents", "GetPaymentIntents", sp.PaymentIntentListParams),
    ("GET", "/v1/payment_intents/{intent}", "GetPaymentIntentsIntent", sp.PaymentIntentRetrieveParams),
    ("GET", "/v1/refunds", "GetRefunds", sp.RefundListParams),
    ("GET", "/v1/transfers", "GetTransfers", sp.TransferListParams),
    ("POST", "/v1/account_links", "PostAccountLinks", sp.AccountLinkCreateParams),
    ("POST", "/v1/accounts", "PostAccounts", sp.AccountCreateParams),
    ("POST", "/v1/checkout/sessions", "PostCheckoutSessions", spc.SessionCreateParams),
    ("POST", "/v1/checkout/sessions/{session}/expire", "PostCheckoutSessionsSessionExpire",
     spc.SessionExpireParams),
    ("POST", "/v1/payment_intents", "PostPaymentIntents", sp.PaymentIntentCreateParams),
    ("POST", "/v1/payment_intents/{intent}/cancel", "PostPaymentIntentsIntentCancel", sp.PaymentIntentCancelParams),
    ("POST", "/v1/refunds", "PostRefunds", sp.RefundCreateParams),
    # Super Follows (billing/subscriptions.py)
    ("POST", "/v1/products", "PostProducts", sp.ProductCreateParams),
    ("POST", "/v1/plans", "PostPlans", sp.PlanCreateParams),
    ("GET", "/v1/subscriptions/{subscription_exposed_id}", "GetSubscriptionsSubscriptionExposedId",
     sp.SubscriptionRetrieveParams),
    ("POST", "/v1/subscriptions/{subscription_exposed_id}", "PostSubscriptionsSubscriptionExposedId",
     sp.SubscriptionUpdateParams),
    ("DELETE", "/v1/subscriptions/{subscription_exposed_id}", "DeleteSubscriptionsSubscriptionExposedId",
     sp.SubscriptionCancelParams),
]
_OPTIONS = frozenset(RequestOptions.__annotations__)  # client-side options (headers), never form fields


def _pattern(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\{\w+\}", r"[^/]+", path) + "$")


class Refusal(Exception):
    def __init__(self, message: str, code: str, param: str | None = None, kind: str = "invalid_request_error",
                 status: int = 400) -> None:
        super().__init__(message)
        self.code, self.param, self.kind, self.status = code, param, kind, status


def _resolve(tp: Any, ns: dict[str, Any]) -> Any:
    """A generated annotation with its forward references (strings) evaluated in its module."""
    if isinstance(tp, str):
        return _resolve(eval(tp, ns), ns)  # stripe-python's own annotation text, in its own module
    if isinstance(tp, ForwardRef):
        return _resolve(tp.__forward_arg__, ns)
    origin = typing.get_origin(tp)
    if origin in (typing.NotRequired, typing.Required, typing_extensions.NotRequired, typing_extensions.Required):
        return _resolve(typing.get_args(tp)[0], ns)
    return tp


def _fields(td: Any) -> tuple[dict[str, Any], frozenset[str], dict[str, Any]]:
    """A parameter TypedDict's fields (without request options), its required keys and its module."""
    ns = vars(sys.modules[td.__module__])
    fields = {k: v for k, v in td.__annotations__.items() if k not in _OPTIONS}
    return fields, frozenset(td.__required_keys__) - _OPTIONS, ns


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and (typing.is_typeddict(tp) or typing_extensions.is_typeddict(tp))


def _check_value(name: str, value: Any, tp: Any, ns: dict[str, Any]) -> None:
    """``value`` (form-decoded: strings, dicts, lists) against a stripe-python parameter type."""
    tp = _resolve(tp, ns)
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = [_resolve(a, ns) for a in typing.get_args(tp)]
        choices = [v for o in options if typing.get_origin(o) is Literal for v in typing.get_args(o)]
        if any(c != "" for c in choices):  # an enum (the generator adds ``|str`` to every one)
            options = [o for o in options if o is not str]
        errors: list[Refusal] = []  # from the structured options: they say what was wrong inside
        for option in options:
            try:
                _check_value(name, value, option, ns)
                return
            except Refusal as e:
                if typing.get_origin(option) is not Literal:
                    errors.append(e)
        if errors:
            raise errors[0]
        raise Refusal(f"Invalid {name}: must be one of {', '.join(map(str, choices))}", "parameter_invalid_string",
                      name)
    if origin is Literal:
        if value not in [str(c) for c in typing.get_args(tp)]:
            raise Refusal(f"Invalid {name}: must be one of {', '.join(map(str, typing.get_args(tp)))}",
                          "parameter_invalid_string", name)
    elif tp is Any or tp is UntypedStripeObject or origin is UntypedStripeObject:
        return
    elif tp is bool:
        if value not in ("true", "false"):
            raise Refusal(f"Invalid boolean: {value}", "parameter_invalid", name)
    elif tp is int:
        if not isinstance(value, str) or not re.fullmatch(r"-?\d+", value):
            raise Refusal(f"Invalid integer: {value}", "parameter_invalid_integer", name)
    elif tp is Decimal or tp is float:
        try:
            Decimal(value if isinstance(value, str) else "x")
        except InvalidOperation:
            raise Refusal(f"Invalid decimal: {value}", "parameter_invalid", name) from None
    elif tp is str:
        if not isinstance(value, str):
            raise Refusal(f"Invalid string: {name} must be a string", "parameter_invalid_string", name)
    elif origin in (list, typing.List):  # noqa: UP006 - the generated code's spelling
        if not isinstance(value, list):
            raise Refusal(f"Invalid array: {name}", "parameter_invalid", name)
        (item,) = typing.get_args(tp)
        for i, v in enumerate(value):
            _check_value(f"{name}[{i}]", v, item, ns)
    elif origin in (dict, typing.Dict):  # noqa: UP006
        if value == "":
            return  # Stripe's way of emptying a hash (metadata="")
        if not isinstance(value, dict):
            raise Refusal(f"Invalid object: {name}", "parameter_invalid", name)
        _, item = typing.get_args(tp)
        for k, v in value.items():
            _check_value(f"{name}[{k}]", v, item, ns)
    elif _is_typeddict(tp):
        if not isinstance(value, dict):
            raise Refusal(f"Invalid object: {name}", "parameter_invalid", name)
        _check_object(name, value, tp)
    else:
        raise Refusal(f"{name}: no rule for {tp!r} (extend tests/support/stripe_strict.py)", "parameter_invalid",
                      name)


def _check_object(prefix: str, form: dict[str, Any], td: Any) -> None:
    fields, required, ns = _fields(td)
    for key in sorted(required):
        if key not in form:
            full = f"{prefix}[{key}]" if prefix else key
            raise Refusal(f"Missing required param: {full}.", "parameter_missing", full)
    for key, value in form.items():
        full = f"{prefix}[{key}]" if prefix else key
        if key not in fields:
            raise Refusal(f"Received unknown parameter: {full}", "parameter_unknown", full)
        _check_value(full, value, fields[key], ns)


class StrictStripe(FakeStripe):
    """``FakeStripe`` behind the checks above; refusals are answered here and never reach the fake."""

    def __init__(self, localstripe: str, **kwargs: Any) -> None:
        super().__init__(localstripe=localstripe, **kwargs)
        self.source: dict[str, str] = dict(SOURCE)
        self.operations = [(m, _pattern(path), op_id, params) for m, path, op_id, params in OPERATIONS]
        self.refused: list[dict[str, Any]] = []
        self._keys: dict[tuple[str, str], str] = {}

    async def route(self, request: web.Request) -> web.StreamResponse:
        body = await request.text()
        try:
            self.check(request.method, request.path, request.query_string, body,
                       request.headers.get("Idempotency-Key"))
        except Refusal as e:
            self.refused.append({"method": request.method, "path": request.path, "code": e.code,
                                 "message": str(e), "param": e.param})
            return web.json_response({"error": {"type": e.kind, "message": str(e), "code": e.code,
                                                "param": e.param}}, status=e.status)
        return await super().route(request)

    def check(self, method: str, path: str, query: str, body: str, key: str | None) -> None:
        """Refuse what Stripe would refuse (raises ``Refusal``); ``query`` and ``body`` are form-encoded."""
        op = next(((op_id, params) for m, pat, op_id, params in self.operations
                   if m == method and pat.match(path)), None)
        if op is None:
            raise Refusal(f"Unrecognized request URL ({method}: {path}).", "resource_missing",
                          status=404)
        op_id, params = op
        form = parse_form(query if method == "GET" else body)
        _check_object("", form, params)
        if method == "GET":
            return
        if key is not None:
            seen = self._keys.setdefault((path, key), body)
            if seen != body:
                raise Refusal("Keys for idempotent requests can only be used with the same parameters they "
                              "were first used with. Try using a key other than "
                              f"'{key}' if you meant to execute a different request.",
                              "idempotency_key_in_use", kind="idempotency_error")
        rule = getattr(self, "_rule_" + op_id, None)
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
        if form.get("mode") == "subscription":
            self._subscription_checkout(form)

    def _subscription_checkout(self, form: dict[str, Any]) -> None:
        """Checkout in subscription mode: the price (a recurring one) goes by id, no one-off
        ``payment_intent_data``, and Connect fields sit in ``subscription_data`` under the same rules
        as a destination charge (``application_fee_percent`` only with a destination)."""
        if "payment_intent_data" in form:
            raise Refusal("You can not pass `payment_intent_data` in `subscription` mode.", "parameter_invalid",
                          "payment_intent_data")
        for i, item in enumerate(form.get("line_items") or []):
            if not item.get("price"):
                raise Refusal("A recurring price is required in `subscription` mode.", "parameter_missing",
                              f"line_items[{i}][price]")
        data = form.get("subscription_data") or {}
        if data.get("application_fee_percent") is not None:
            fee = Decimal(str(data["application_fee_percent"]))
            if not 0 <= fee <= 100:
                raise Refusal("application_fee_percent must be between 0 and 100.", "parameter_invalid",
                              "subscription_data[application_fee_percent]")
            if not (data.get("transfer_data") or {}).get("destination"):
                raise Refusal("Can only apply an application_fee_percent with a destination "
                              "(`subscription_data[transfer_data][destination]`) or a Stripe-Account header.",
                              "parameter_invalid", "subscription_data[application_fee_percent]")
        self._destination({"transfer_data": data.get("transfer_data")}, "subscription_data")

    def _rule_PostPlans(self, form: dict[str, Any]) -> None:
        if not form.get("product"):
            raise Refusal("Missing required param: product.", "parameter_missing", "product")
        if form.get("amount") is None and form.get("amount_decimal") is None:
            raise Refusal("Missing required param: amount.", "parameter_missing", "amount")

    def _rule_PostRefunds(self, form: dict[str, Any]) -> None:
        intent = form.get("payment_intent")
        if intent in self.fees and (self.fees[intent] or {}).get("transfer_data"):
            for flag in ("reverse_transfer", "refund_application_fee"):
                if form.get(flag) != "true":
                    raise Refusal(f"Refunding destination charge {intent} without {flag}=true leaves the money "
                                  "with the creator and the platform pays the refund (project rule).",
                                  "parameter_missing", flag)
