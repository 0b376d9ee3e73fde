"""In-memory repositories for what billing and the web keep through the unit of work: the tickets
ledger (``core.ports.TicketLedger``), web sign-in (``Passkeys``), the console's analytics and
Super Follows (``Subscriptions``).

They follow the SQL repositories in core/storage/ where a caller can tell: tickets handed out are the
unit of work's own objects, refreshed from what was saved each time they are read, and a change not
saved is not seen by queries; a one-time value is spent once; an open listening stretch is not
opened twice. They work on the unit of work's copy of ``State`` (tests/support/fake_uow.py), so
leaving without a commit changes nothing.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from core.model.accounts import MAX_PASSKEYS, Passkey
from core.model.analytics import Sale, Span
from core.model.subscription import Subscription, SubscriptionPayment
from core.model.subscription import Tier as SubTier
from core.model.ticket import PaidTicket, Provider, Ticket, TicketStatus
from core.ports import DuplicateKey

if TYPE_CHECKING:
    from tests.support.fake_uow import State


@dataclass
class SpanRecord:
    space_id: str
    account_id: str
    started_at: datetime
    ended_at: datetime | None


class FakeTicketLedger:
    """``uow.tickets``: core's reads and the ledger's holds, payments and refunds."""

    def __init__(self, st: State) -> None:
        self.st = st
        self._mine: dict[str, Ticket] = {}  # the tickets this unit of work handed out

    def _own(self, stored: Ticket) -> Ticket:
        """This unit of work's Ticket for ``stored``, brought up to date with what was saved."""
        t = self._mine.get(stored.id)
        if t is None:
            t = self._mine[stored.id] = copy.copy(stored)
        else:
            t.status, t.hold_expires_at, t.provider_ref = stored.status, stored.hold_expires_at, stored.provider_ref
            t.updated_at, t.fee_minor = stored.updated_at, stored.fee_minor
        return t

    def _paid(self, space_id: str) -> list[Ticket]:
        return sorted((t for t in self.st.tickets.values() if t.space_id == space_id and t.status == TicketStatus.PAID),
                      key=lambda t: t.id)

    # ---- core's reads ------------------------------------------------------------------------------
    async def has_paid(self, space_id: str, account_id: str) -> bool:
        return any(t.account_id == account_id for t in self._paid(space_id))

    async def mark_refundable(self, space_id: str) -> None:
        self.st.refundable |= {t.id for t in self._paid(space_id)}

    async def paid_ids(self, space_id: str) -> list[str]:
        return [t.id for t in self._paid(space_id)]

    async def paid_among(self, space_id: str, account_ids: Sequence[str]) -> set[str]:
        return {t.account_id for t in self._paid(space_id)} & set(account_ids)

    async def holders(self, space_id: str, after: str = "", limit: int = 1000) -> list[str]:
        return sorted(t.account_id for t in self._paid(space_id) if t.account_id > after)[:limit]

    # ---- the ledger's side -------------------------------------------------------------------------
    async def lock_space(self, space_id: str) -> bool:
        return False  # one unit of work at a time: nothing read before the lock can be stale

    async def get(self, ticket_id: str, *, reload: bool = False) -> Ticket | None:
        stored = self.st.tickets.get(ticket_id)
        return None if stored is None else self._own(stored)

    async def get_many(self, ticket_ids: Collection[str]) -> list[Ticket]:
        return [self._own(self.st.tickets[i]) for i in ticket_ids if i in self.st.tickets]

    async def seats_taken(self, space_id: str, now: datetime, unreferenced_after: datetime) -> int:
        return sum(1 for t in self.st.tickets.values() if t.space_id == space_id and (
            t.status == TicketStatus.PAID
            or (t.status == TicketStatus.HELD and t.hold_expires_at is not None and t.hold_expires_at > now
                and (t.provider != Provider.STRIPE or t.provider_ref is not None
                     or t.created_at > unreferenced_after))))

    async def live_of(self, space_ids: Collection[str], account_ids: Collection[str], *,
                      reload: bool = False) -> list[Ticket]:
        return [self._own(t) for t in list(self.st.tickets.values()) if t.space_id in space_ids
                and t.account_id in account_ids and t.status in (TicketStatus.HELD, TicketStatus.PAID)]

    async def in_space(self, space_id: str) -> list[Ticket]:
        return [self._own(t) for t in list(self.st.tickets.values()) if t.space_id == space_id]

    async def by_ref(self, provider_ref: str) -> list[Ticket]:
        return [self._own(t) for t in list(self.st.tickets.values()) if t.provider_ref == provider_ref]

    async def ref_recorded(self, provider_ref: str) -> bool:
        return any(t.provider_ref == provider_ref and (t.status in (TicketStatus.PAID, TicketStatus.REFUNDED)
                                                       or t.hold_expires_at is None)
                   for t in self.st.tickets.values())

    async def paid_of(self, space_id: str, account_id: str) -> PaidTicket | None:
        t = next((t for t in self._paid(space_id) if t.account_id == account_id), None)
        return None if t is None else PaidTicket(self._own(t), t.id in self.st.refundable)

    async def add_many(self, tickets: Sequence[Ticket]) -> None:
        for t in tickets:
            if t.id in self.st.tickets:
                raise DuplicateKey(f"ticket {t.id}")
            self.st.tickets[t.id] = copy.copy(t)
            self._mine[t.id] = t

    async def save(self, t: Ticket) -> None:
        if t.id in self.st.tickets:
            self.st.tickets[t.id] = replace(self.st.tickets[t.id], status=TicketStatus(t.status),
                                            hold_expires_at=t.hold_expires_at, provider_ref=t.provider_ref,
                                            updated_at=t.updated_at)

    async def attach_refs(self, refs: Iterable[tuple[str, str]], now: datetime) -> None:
        for ticket_id, ref in refs:
            if ticket_id in self.st.tickets:
                self.st.tickets[ticket_id] = replace(self.st.tickets[ticket_id], provider_ref=ref, updated_at=now)

    async def first_times(self, provider: str, events: Iterable[tuple[str, str]], now: datetime) -> set[str]:
        fresh = {event_id for event_id, _ in events if (provider, event_id) not in self.st.processed_events}
        self.st.processed_events |= {(provider, event_id) for event_id in fresh}
        return fresh


class FakePasskeys:
    """``uow.passkeys``: credentials, web session epochs and spent one-time values."""

    def __init__(self, st: State) -> None:
        self.st = st

    async def get(self, credential_id: str) -> Passkey | None:
        return self.st.passkeys.get(credential_id)

    async def for_account(self, account_id: str) -> list[Passkey]:
        return sorted((p for p in self.st.passkeys.values() if p.account_id == account_id),
                      key=lambda p: p.created_at)[:MAX_PASSKEYS]

    async def add(self, p: Passkey) -> None:
        if p.credential_id in self.st.passkeys:
            raise DuplicateKey(f"passkey {p.credential_id}")
        self.st.passkeys[p.credential_id] = p

    async def used(self, credential_id: str, sign_count: int, now: datetime) -> None:
        if credential_id in self.st.passkeys:
            self.st.passkeys[credential_id] = replace(self.st.passkeys[credential_id], sign_count=sign_count,
                                                      last_used_at=now)

    async def epoch(self, account_id: str) -> int:
        return self.st.epochs.get(account_id, 0)

    async def bump_epoch(self, account_id: str) -> int:
        self.st.epochs[account_id] = self.st.epochs.get(account_id, 0) + 1
        return self.st.epochs[account_id]

    async def spend(self, value: str, now: datetime, ttl_s: float) -> bool:
        cutoff = now - timedelta(seconds=ttl_s)
        self.st.spent = {k: at for k, at in self.st.spent.items() if at >= cutoff}
        digest = hashlib.sha256(value.encode()).hexdigest()
        if digest in self.st.spent:
            return False
        self.st.spent[digest] = now
        return True


class FakeAnalytics:
    """``uow.analytics``: listening stretches, per-Space counters and the seats sold."""

    def __init__(self, st: State) -> None:
        self.st = st

    async def open_span(self, space_id: str, account_id: str, at: datetime) -> bool:
        if any(s.space_id == space_id and s.account_id == account_id and s.ended_at is None for s in self.st.spans):
            return False
        self.st.spans.append(SpanRecord(space_id, account_id, at, None))
        return True

    async def close_spans(self, space_id: str, at: datetime, account_id: str | None = None) -> int:
        open_ = [s for s in self.st.spans if s.space_id == space_id and s.ended_at is None
                 and (account_id is None or s.account_id == account_id)]
        for s in open_:
            s.ended_at = at
        return len(open_)

    async def bump(self, space_id: str, name: str, by: int = 1) -> None:
        self.st.tallies[(space_id, name)] = self.st.tallies.get((space_id, name), 0) + by

    async def spans(self, space_id: str, limit: int = 100_000) -> list[Span]:
        mine = sorted((s for s in self.st.spans if s.space_id == space_id), key=lambda s: s.started_at)
        return [Span(s.account_id, s.started_at, s.ended_at) for s in mine[:limit]]

    async def tallies(self, space_id: str) -> dict[str, int]:
        return {name: n for (sp, name), n in self.st.tallies.items() if sp == space_id}

    async def sales(self, space_id: str, limit: int = 1000) -> list[Sale]:
        sold = sorted((t for t in self.st.tickets.values() if t.space_id == space_id and t.hold_expires_at is not None
                       and t.status in (TicketStatus.PAID, TicketStatus.REFUNDED)),
                      key=lambda t: t.updated_at, reverse=True)
        return [Sale(t.id, t.account_id, t.status.value, t.amount_minor, t.currency,
                     t.provider.value, t.updated_at) for t in sold[:limit]]


class FakeSubscriptions:
    """``uow.subscriptions``: tiers, subscriptions and their payments, as core/storage/subscriptions.py
    keeps them (one subscription per provider reference; tiers cheapest first; copies handed out, so a
    change is seen only once saved)."""

    def __init__(self, st: State) -> None:
        self.st = st

    async def add_tier(self, t: SubTier) -> None:
        if t.id in self.st.sub_tiers:
            raise DuplicateKey(t.id)
        self.st.sub_tiers[t.id] = copy.copy(t)

    async def tier(self, tier_id: str) -> SubTier | None:
        t = self.st.sub_tiers.get(tier_id)
        return None if t is None else copy.copy(t)

    async def tiers_of(self, creator_id: str, *, archived: bool = False) -> list[SubTier]:
        mine = [t for t in self.st.sub_tiers.values() if t.creator_id == creator_id and (archived or not t.archived)]
        return [copy.copy(t) for t in sorted(mine, key=lambda t: (t.price_minor, t.id))]

    async def tier_by_price(self, stripe_price: str) -> SubTier | None:
        t = next((t for t in self.st.sub_tiers.values() if t.stripe_price == stripe_price), None)
        return None if t is None else copy.copy(t)

    async def save_tier(self, t: SubTier) -> None:
        if t.id in self.st.sub_tiers:
            self.st.sub_tiers[t.id] = copy.copy(t)

    async def by_ref(self, provider: str, provider_ref: str, *, for_update: bool = False) -> Subscription | None:
        s = next((s for s in self.st.subscriptions.values()
                  if s.provider.value == provider and s.provider_ref == provider_ref), None)
        return None if s is None else copy.copy(s)

    async def add(self, sub: Subscription) -> None:
        if sub.id in self.st.subscriptions or await self.by_ref(sub.provider.value, sub.provider_ref):
            raise DuplicateKey(sub.provider_ref)
        self.st.subscriptions[sub.id] = copy.copy(sub)

    async def save(self, sub: Subscription) -> None:
        if sub.id in self.st.subscriptions:
            self.st.subscriptions[sub.id] = copy.copy(sub)

    async def of_account(self, account_id: str) -> list[Subscription]:
        mine = [s for s in self.st.subscriptions.values() if s.account_id == account_id]
        return [copy.copy(s) for s in sorted(mine, key=lambda s: s.created_at)]

    async def of_creator(self, creator_id: str) -> list[Subscription]:
        mine = [s for s in self.st.subscriptions.values() if s.creator_id == creator_id]
        return [copy.copy(s) for s in sorted(mine, key=lambda s: s.created_at)]

    async def reaching(self, creator_id: str, tier_id: str, account_ids: Collection[str],
                       now: datetime) -> set[str]:
        required = self.st.sub_tiers.get(tier_id)
        if required is None:
            return set()
        prices = {t.id: t.price_minor for t in self.st.sub_tiers.values() if t.creator_id == creator_id}
        wanted = set(account_ids)
        return {s.account_id for s in self.st.subscriptions.values()
                if s.creator_id == creator_id and s.account_id in wanted
                and any(prices.get(t, -1) >= required.price_minor for t in s.tiers_open(now))}

    async def payment(self, provider: str, invoice_ref: str) -> SubscriptionPayment | None:
        p = self.st.sub_payments.get((provider, invoice_ref))
        return None if p is None else copy.copy(p)

    async def payment_by_ref(self, provider: str, payment_ref: str) -> SubscriptionPayment | None:
        p = next((p for (prov, _), p in self.st.sub_payments.items()
                  if prov == provider and p.payment_ref == payment_ref), None)
        return None if p is None else copy.copy(p)

    async def put_payment(self, p: SubscriptionPayment) -> None:
        self.st.sub_payments[(p.provider.value, p.invoice_ref)] = copy.copy(p)

    async def payments_of(self, subscription_ref: str) -> list[SubscriptionPayment]:
        mine = [p for p in self.st.sub_payments.values() if p.subscription_ref == subscription_ref]
        return [copy.copy(p) for p in sorted(mine, key=lambda p: p.at)]

    async def creator_payments(self, creator_id: str) -> list[SubscriptionPayment]:
        return [copy.copy(p) for p in self.st.sub_payments.values() if p.creator_id == creator_id]
