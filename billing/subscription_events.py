"""Stripe's subscription and invoice events applied to Super Follows, in any order, once each.

billing/webhooks.py verifies the signature, records the event id in the same transaction (a
replay is a duplicate and changes nothing) and hands these kinds here:

- ``customer.subscription.created|updated|deleted`` carry the whole subscription: its status,
  price (the tier), paid period and ``cancel_at_period_end``. The newest event wins: an event
  older (by Stripe's ``created``) than the last one applied to that subscription changes nothing
  (``Subscription.apply``), so a late ``created`` cannot revive an ended subscription;
- ``invoice.paid`` / ``invoice.payment_failed`` record the period's payment (a failed invoice
  paid on Stripe's retry becomes paid; a refunded one stays refunded) and, when newer than the
  state applied, move the status: paid -> active with the invoice's period, failed -> past_due
  (only a subscription that was active: a first payment that fails opens nothing).

A subscription we have not seen yet is created from the metadata Checkout put on it
(``account_id``, ``tier_id``, ``creator_id``); its tier is read from the price it bills, so an
upgrade made on Stripe's side is followed.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any
from weakref import WeakKeyDictionary

from billing.subscription_effects import let_go, redraw_badges
from core import events as ev
from core.errors import NotFound
from core.ids import new_id
from core.model.subscription import (
    PaymentStatus,
    ProviderState,
    Subscription,
    SubscriptionPayment,
    SubscriptionProvider,
    SubscriptionStatus,
)
from core.ports import UnitOfWork

log = logging.getLogger(__name__)

SUBSCRIPTION_EVENTS = frozenset({"customer.subscription.created", "customer.subscription.updated",
                                 "customer.subscription.deleted", "invoice.paid", "invoice.payment_failed"})
_STATUS = {"active": SubscriptionStatus.ACTIVE, "trialing": SubscriptionStatus.ACTIVE,
           "past_due": SubscriptionStatus.PAST_DUE, "incomplete": SubscriptionStatus.INCOMPLETE,
           "paused": SubscriptionStatus.INCOMPLETE, "unpaid": SubscriptionStatus.ENDED,
           "canceled": SubscriptionStatus.ENDED, "incomplete_expired": SubscriptionStatus.ENDED}
STRIPE = SubscriptionProvider.STRIPE


def _ts(v: Any) -> datetime | None:
    return datetime.fromtimestamp(v, UTC) if isinstance(v, int) and not isinstance(v, bool) else None


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _first_item(obj: dict[str, Any]) -> dict[str, Any]:
    data = _dict(obj.get("items")).get("data")
    return _dict(data[0]) if isinstance(data, list) and data else {}


def _price_of(obj: dict[str, Any]) -> str | None:
    item = _first_item(obj)
    for holder in (_dict(item.get("price")), _dict(item.get("plan")), _dict(obj.get("plan"))):
        if isinstance(holder.get("id"), str):
            return str(holder["id"])
    return None


def _period_end(obj: dict[str, Any]) -> datetime | None:
    """Stripe moved ``current_period_end`` from the subscription to its items (API 2025-03-31)."""
    return _ts(obj.get("current_period_end")) or _ts(_first_item(obj).get("current_period_end"))


def _invoice_subscription(inv: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The subscription an invoice bills and its metadata, from either API shape."""
    details = _dict(_dict(inv.get("parent")).get("subscription_details"))
    sub = details.get("subscription") or inv.get("subscription")
    meta = _dict(details.get("metadata")) or _dict(_dict(inv.get("subscription_details")).get("metadata"))
    if isinstance(sub, dict):
        sub = sub.get("id")
    return (sub if isinstance(sub, str) else None), meta


class SubscriptionEvents:
    def __init__(self, fee_bps: int = 0) -> None:
        self.fee_bps = fee_bps
        # Tiers read once per transaction: a webhook batch renews many subscriptions of few tiers, and
        # each event would otherwise read its tier and its creator's prices again (two of its ~8 queries).
        self._tier_reads: WeakKeyDictionary[UnitOfWork, dict[tuple[str, str], Any]] = WeakKeyDictionary()

    def _memo(self, uow: UnitOfWork) -> dict[tuple[str, str], Any]:
        memo = self._tier_reads.get(uow)
        if memo is None:
            memo = self._tier_reads[uow] = {}
        return memo

    def fee_for(self, amount_minor: int) -> int:
        return (amount_minor * self.fee_bps + 5_000) // 10_000

    async def apply_in(self, uow: UnitOfWork, event: dict[str, Any], now: datetime) -> str:
        """Apply one (first-time) event in the webhook's transaction: "processed" or "ignored"."""
        kind = str(event["type"])
        obj: dict[str, Any] = event["data"]["object"]
        at = _ts(event.get("created")) or now
        event_id = str(event["id"])
        if kind.startswith("customer.subscription."):
            return await self._subscription(uow, obj, at, event_id, now, deleted=kind.endswith(".deleted"),
                                            created=kind.endswith(".created"))
        return await self._invoice(uow, kind, obj, at, event_id, now)

    async def _tier_of(self, uow: UnitOfWork, price: str | None, meta: dict[str, Any]) -> str | None:
        if price is not None:
            memo = self._memo(uow)
            if ("price", price) not in memo:
                t = await uow.subscriptions.tier_by_price(price)
                memo[("price", price)] = t.id if t is not None else None
            if memo[("price", price)] is not None:
                return str(memo[("price", price)])
        tier_id = meta.get("tier_id")
        if isinstance(tier_id, str) and await uow.subscriptions.tier(tier_id) is not None:
            return tier_id
        return None

    async def _load(self, uow: UnitOfWork, ref: str, meta: dict[str, Any], tier_id: str | None,
                    now: datetime) -> Subscription | None:
        """Our row for Stripe's subscription ``ref``, made from Checkout's metadata the first time."""
        sub = await uow.subscriptions.by_ref(STRIPE.value, ref, for_update=True)
        if sub is not None or tier_id is None:
            return sub
        account = meta.get("account_id")
        tier = await uow.subscriptions.tier(tier_id)
        if not isinstance(account, str) or tier is None:
            return None
        try:
            await uow.accounts.get(account)
        except NotFound:  # an account since deleted (or never ours): recorded as seen, nothing to open
            return None
        sub = Subscription(id=new_id(), account_id=account, creator_id=tier.creator_id, tier_id=tier_id,
                           provider=STRIPE, provider_ref=ref, status=SubscriptionStatus.INCOMPLETE,
                           current_period_end=None, cancel_at_period_end=False, created_at=now, updated_at=now)
        await uow.subscriptions.add(sub)
        for early in await uow.subscriptions.payments_of(ref):  # an invoice that arrived before it
            if early.creator_id is None:
                early.creator_id = sub.creator_id
                await uow.subscriptions.put_payment(early)
        return sub

    async def _prices(self, uow: UnitOfWork, creator_id: str) -> dict[str, int]:
        memo = self._memo(uow)
        if ("prices", creator_id) not in memo:
            memo[("prices", creator_id)] = {
                t.id: t.price_minor for t in await uow.subscriptions.tiers_of(creator_id, archived=True)}
        return dict(memo[("prices", creator_id)])

    async def _subscription(self, uow: UnitOfWork, obj: dict[str, Any], at: datetime, event_id: str, now: datetime,
                            *, deleted: bool, created: bool) -> str:
        ref, meta = obj.get("id"), _dict(obj.get("metadata"))
        if not isinstance(ref, str):
            return "ignored"
        tier_id = await self._tier_of(uow, _price_of(obj), meta)
        sub = await self._load(uow, ref, meta, tier_id, now)
        if sub is None:
            log.warning("stripe subscription %s names no tier or account of ours; ignored", ref)
            return "ignored"
        status = SubscriptionStatus.ENDED if deleted else _STATUS.get(str(obj.get("status")))
        if status is None:
            return "ignored"
        state = ProviderState(status=status, tier_id=tier_id or sub.tier_id, current_period_end=_period_end(obj),
                              cancel_at_period_end=bool(obj.get("cancel_at_period_end")), first=created)
        await self._apply(uow, sub, state, at, event_id, now)
        return "processed"

    async def _apply(self, uow: UnitOfWork, sub: Subscription, state: ProviderState, at: datetime, event_id: str,
                     now: datetime) -> None:
        opened = sub.tiers_open(now)
        if not sub.apply(state, at, event_id, now, await self._prices(uow, sub.creator_id)):
            return
        await uow.subscriptions.save(sub)
        uow.emit(ev.SubscriptionUpdated(account_id=sub.account_id, creator_id=sub.creator_id, subscription_id=sub.id,
                                        status=sub.status.value, at=now))
        if opened - sub.tiers_open(now):
            await let_go(uow, sub, now)
        if opened != sub.tiers_open(now):
            await redraw_badges(uow, sub, now)

    async def refunded_in(self, uow: UnitOfWork, kind: str, obj: dict[str, Any]) -> bool:
        """A refund of a subscription period's payment (``charge.refunded``, ``refund.*``): the period
        counts as refunded once all of it was given back. False if the payment is not a period's."""
        paid = await uow.subscriptions.payment_by_ref(STRIPE.value, str(obj["payment_intent"]))
        if paid is None:
            return False
        if kind == "charge.refunded":
            given = obj.get("amount_refunded")
        else:
            given = obj.get("amount") if obj.get("status") in ("succeeded", "pending") else 0
        if isinstance(given, int) and given >= paid.amount_minor and paid.status == PaymentStatus.PAID:
            paid.status = PaymentStatus.REFUNDED
            await uow.subscriptions.put_payment(paid)
        return True

    async def _invoice(self, uow: UnitOfWork, kind: str, inv: dict[str, Any], at: datetime, event_id: str,
                       now: datetime) -> str:
        ref, meta = _invoice_subscription(inv)
        invoice_id = inv.get("id")
        if ref is None or not isinstance(invoice_id, str):
            return "ignored"  # not a subscription's invoice
        lines = _dict(inv.get("lines")).get("data")
        line = _dict(lines[0]) if isinstance(lines, list) and lines else {}
        tier_id = await self._tier_of(uow, _price_of({"items": {"data": [line]}}) or _price_of(line), meta)
        sub = await self._load(uow, ref, meta, tier_id, now)
        paid = kind == "invoice.paid"
        amount = inv.get("amount_paid") if paid else inv.get("amount_due")
        amount = amount if isinstance(amount, int) else 0
        pi = inv.get("payment_intent")
        record = await uow.subscriptions.payment(STRIPE.value, invoice_id)
        if record is None:
            record = SubscriptionPayment(
                provider=STRIPE, invoice_ref=invoice_id, subscription_ref=ref,
                creator_id=sub.creator_id if sub else None, amount_minor=amount,
                currency=str(inv.get("currency") or "").upper(), fee_minor=0, status=PaymentStatus.FAILED, at=at)
        if paid and record.status == PaymentStatus.FAILED:
            record.status, record.amount_minor, record.at = PaymentStatus.PAID, amount, at
            record.fee_minor = self.fee_for(amount)
            record.payment_ref = pi if isinstance(pi, str) else record.payment_ref
        elif not paid and record.status == PaymentStatus.FAILED:
            record.failures += 1
        await uow.subscriptions.put_payment(record)
        if sub is None:
            return "processed"
        period_end = _ts(_dict(line.get("period")).get("end"))
        if paid and sub.status != SubscriptionStatus.ENDED:
            status = SubscriptionStatus.CANCELED if sub.status == SubscriptionStatus.CANCELED else (
                SubscriptionStatus.ACTIVE)
            state = ProviderState(status, sub.tier_id, period_end, sub.cancel_at_period_end)
        elif not paid and sub.status == SubscriptionStatus.ACTIVE:
            state = ProviderState(SubscriptionStatus.PAST_DUE, sub.tier_id, None, sub.cancel_at_period_end)
        else:
            return "processed"
        await self._apply(uow, sub, state, at, event_id, now)
        return "processed"
