from __future__ import annotations

from datetime import timedelta

import pytest

from core.clock import FrozenClock
from core.errors import Forbidden, Invalid
from core.tokens import JoinTokens


def test_round_trip_and_binding() -> None:
    clock = FrozenClock()
    tokens = JoinTokens(b"s" * 32)
    t = tokens.issue("space1", "acc1", "speaker", clock.now(), ttl_s=60)
    g = tokens.verify(t, clock.now(), space_id="space1")
    assert (g.space_id, g.account_id, g.role) == ("space1", "acc1", "speaker")
    with pytest.raises(Forbidden, match="token.wrong_space"):
        tokens.verify(t, clock.now(), space_id="space2")
    clock.advance(seconds=61)
    with pytest.raises(Forbidden, match="token.expired"):
        tokens.verify(t, clock.now())


@pytest.mark.parametrize("bad", ["", "abc", "a.b.c", "!!!.???", "x" * 5000])
def test_malformed(bad: str) -> None:
    with pytest.raises(Forbidden, match="token.malformed"):
        JoinTokens(b"k" * 32).verify(bad, FrozenClock().now())


def test_forged_and_tampered() -> None:
    now = FrozenClock().now()
    real = JoinTokens(b"real-secret-0123456789")
    forged = JoinTokens(b"other-secret-0123456789").issue("s", "a", "speaker", now)
    with pytest.raises(Forbidden, match="token.bad_signature"):
        real.verify(forged, now)
    body, sig = real.issue("s", "a", "listener", now).split(".")
    tampered_body = real.issue("s", "a", "speaker", now).split(".")[0]
    with pytest.raises(Forbidden, match="token.bad_signature"):
        real.verify(f"{tampered_body}.{sig}", now)
    with pytest.raises(Invalid, match="token.bad_role"):
        real.issue("s", "a", "host", now)
    assert real.verify(f"{body}.{sig}", now + timedelta(minutes=1)).role == "listener"
