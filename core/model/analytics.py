"""What the host's console reports about a Space: stretches of listening and seats sold.

Plain values the analytics repository (``core.ports.Analytics``) hands out; the figures are worked
out in ``spacebridge/studio_stats.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["Sale", "Span"]


@dataclass(frozen=True)
class Span:
    """One stretch of one person listening; ``ended_at`` empty while it lasts."""

    account_id: str
    started_at: datetime
    ended_at: datetime | None


@dataclass(frozen=True)
class Sale:
    """A seat sold (paid, or paid and refunded since); payments that never became a seat are not sales."""

    ticket_id: str
    account_id: str
    status: str
    amount_minor: int
    currency: str
    provider: str
    paid_at: datetime
