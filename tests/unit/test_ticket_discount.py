"""The subscriber price: the ticket's price less the discount, rounded half up to a whole minor unit
(a whole Star), never under 1 and never over the full price; no discount, no subscriber price."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from core.model.space import Ticketing
from core.model.values import MAX_DISCOUNT, MIN_DISCOUNT


def test_examples() -> None:
    def price(minor: int, percent: int) -> int | None:
        return Ticketing(minor, "EUR", None, discount_tier_id="t", discount_percent=percent).subscriber_price()

    assert price(2000, 25) == 1500
    assert price(250, 33) == 168  # 167.5 Stars: half up
    assert price(999, 25) == 749  # 749.25
    assert price(1, 99) == 1 and price(50, 99) == 1  # at least one Star / cent
    assert Ticketing(2000, "EUR", None).subscriber_price() is None


@given(st.integers(1, 10**9), st.integers(MIN_DISCOUNT, MAX_DISCOUNT))
def test_between_one_and_the_price(minor: int, percent: int) -> None:
    p = Ticketing(minor, "XTR", None, discount_tier_id="t", discount_percent=percent).subscriber_price()
    assert p is not None and 1 <= p <= minor
    assert abs(p * 100 - minor * (100 - percent)) <= 50 or p == 1
