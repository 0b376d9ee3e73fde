"""What a subscription opens and which provider event wins, as a subscriber and a creator meet them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.errors import Forbidden, Invalid
from core.model.space import Space, SpaceState
from core.model.subscription import (
    GRACE,
    ProviderState,
    SubscriberAccess,
    Subscription,
    SubscriptionProvider,
    SubscriptionStatus,
    Tier,
)
from core.usecases.context import access_error

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PRICES = {"basic": 500, "gold": 1500}
S = SubscriptionStatus


def sub(status: S = S.ACTIVE, tier: str = "gold", end: datetime | None = T0 + timedelta(days=30)) -> Subscription:
    return Subscription(id="s1", account_id="fan", creator_id="host", tier_id=tier,
                        provider=SubscriptionProvider.STRIPE, provider_ref="sub_1", status=status,
                        current_period_end=end, cancel_at_period_end=False,
                        created_at=T0, updated_at=T0)


def state(status: S, tier: str = "gold", end: datetime | None = T0 + timedelta(days=30),
          cancel: bool = False) -> ProviderState:
    return ProviderState(status, tier, end, cancel)


def test_what_each_state_opens_and_until_when() -> None:
    end = T0 + timedelta(days=30)
    assert sub(S.ACTIVE).grants(end + GRACE - timedelta(seconds=1)) and not sub(S.ACTIVE).grants(end + GRACE)
    assert sub(S.PAST_DUE).grants(end + timedelta(days=1)) and not sub(S.PAST_DUE).grants(end + GRACE)
    assert sub(S.CANCELED).grants(end - timedelta(seconds=1)) and not sub(S.CANCELED).grants(end)
    assert not sub(S.ENDED).grants(T0) and not sub(S.INCOMPLETE).grants(T0)


def test_an_older_event_never_rolls_the_state_back() -> None:
    s = sub(S.INCOMPLETE)
    assert s.apply(state(S.ENDED), T0 + timedelta(seconds=20), "evt_deleted", T0, PRICES)
    assert not s.apply(state(S.ACTIVE), T0 + timedelta(seconds=10), "evt_created", T0, PRICES)  # late, older
    assert s.status == S.ENDED and s.event_id == "evt_deleted"
    # the same second: an ended subscription is not revived by a same-second event, the reverse applies
    assert not s.apply(state(S.ACTIVE), T0 + timedelta(seconds=20), "evt_same", T0, PRICES)
    fresh = sub(S.ACTIVE)
    fresh.apply(state(S.ACTIVE), T0, "evt_a", T0, PRICES)
    assert fresh.apply(state(S.ENDED), T0, "evt_b", T0, PRICES) and fresh.status == S.ENDED


def test_a_late_created_event_never_overrides_a_same_second_update() -> None:
    s = sub(S.INCOMPLETE)
    assert s.apply(state(S.ACTIVE, cancel=True), T0, "evt_updated", T0, PRICES)  # arrived first
    created = ProviderState(S.ACTIVE, "gold", T0 + timedelta(days=30), False, first=True)
    assert not s.apply(created, T0, "evt_created", T0, PRICES)
    assert (s.status, s.cancel_at_period_end) == (S.CANCELED, True)


def test_cancel_at_period_end_reads_as_canceled_and_resume_as_active() -> None:
    s = sub()
    s.apply(state(S.ACTIVE, cancel=True), T0, "e1", T0, PRICES)
    assert (s.status, s.cancel_at_period_end) == (S.CANCELED, True)
    s.apply(state(S.ACTIVE), T0 + timedelta(seconds=1), "e2", T0, PRICES)
    assert (s.status, s.cancel_at_period_end) == (S.ACTIVE, False)


def test_a_downgrade_keeps_the_higher_tier_until_the_paid_period_ends_an_upgrade_counts_at_once() -> None:
    end = T0 + timedelta(days=30)
    s = sub(tier="gold", end=end)
    s.apply(state(S.ACTIVE, tier="basic", end=end), T0, "down", T0, PRICES)
    assert s.tiers_open(end - timedelta(seconds=1)) == {"basic", "gold"}
    assert s.tiers_open(end) == {"basic"}
    s.apply(state(S.ACTIVE, tier="gold", end=end), T0 + timedelta(seconds=1), "up", T0, PRICES)
    assert s.tiers_open(T0) == {"gold"} and s.prior_tier_id is None


def test_the_access_rule_for_subscribers_only_and_subscribers_first() -> None:
    space = Space.create(host_id="host", title="Members", now=T0, start_at=T0 + timedelta(hours=1))
    space.set_subscriber_access("host", SubscriberAccess("gold", 10))
    space.start("host", T0)
    assert space.state == SpaceState.LIVE
    early = access_error(space, "fan", blocked=False, paid=False, subscribed=False, now=T0 + timedelta(minutes=5))
    assert early is not None and early.code == "subscription.early_access"
    assert access_error(space, "fan", False, False, False, T0 + timedelta(minutes=10)) is None
    assert access_error(space, "fan", False, False, True, T0) is None
    guest = access_error(space, "", False, False, now=T0)
    assert guest is not None and guest.code == "subscription.sign_in"
    assert access_error(space, "host", False, False, now=T0) is None  # the host is always in
    only = Space.create(host_id="host", title="Only", now=T0)
    only.set_subscriber_access("host", SubscriberAccess("gold"))
    only.start("host", T0)
    refused = access_error(only, "fan", False, False, False, T0 + timedelta(days=1))
    assert refused is not None and refused.code == "subscription.required" and refused.data["tier_id"] == "gold"


def test_who_may_set_the_rule_and_what_a_tier_may_be() -> None:
    space = Space.create(host_id="host", title="Members", now=T0)
    with pytest.raises(Forbidden):
        space.set_subscriber_access("fan", SubscriberAccess("gold"))
    with pytest.raises(Invalid, match="subscription.bad_early_minutes"):
        space.set_subscriber_access("host", SubscriberAccess("gold", -1))
    assert space.subscribers is None
    for bad, code in ((("", 500, "eur"), "tier.name_length"), (("Gold", 0, "eur"), "tier.bad_price"),
                      (("Gold", 500, "euro"), "tier.bad_currency")):
        with pytest.raises(Invalid) as e:
            Tier.validate(*bad, "")
        assert e.value.code == code
