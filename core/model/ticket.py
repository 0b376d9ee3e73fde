"""A Ticket: the paid right of one Account to join one ticketed Space."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class TicketStatus(StrEnum):
    HELD = "held"  # a seat kept while the buyer pays; frees itself at hold_expires_at
    PAID = "paid"
    REFUNDED = "refunded"
    VOID = "void"  # hold released or expired, payment failed


class Provider(StrEnum):
    STRIPE = "stripe"
    TELEGRAM_STARS = "telegram_stars"


@dataclass
class Ticket:
    id: str
    space_id: str
    account_id: str
    status: TicketStatus
    provider: Provider
    amount_minor: int
    currency: str
    hold_expires_at: datetime | None
    provider_ref: str | None
    created_at: datetime
    updated_at: datetime
    fee_minor: int = 0

    def holds_seat(self, now: datetime) -> bool:
        if self.status == TicketStatus.PAID:
            return True
        return self.status == TicketStatus.HELD and self.hold_expires_at is not None and self.hold_expires_at > now


@dataclass(frozen=True)
class PaidTicket:
    """A buyer's paid ticket and whether the host's change to the Space lets them ask for a refund."""

    ticket: Ticket
    refundable: bool
