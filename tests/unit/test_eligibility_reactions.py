from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from core import eligibility as el
from core.errors import DomainError, Invalid, RateLimited
from core.messages import describe
from core.reactions import ReactionBook, validate_emoji


def facts(**kw: object) -> el.HostFacts:
    base: dict[str, object] = dict(account_id="a", followers=0, platform_roles=frozenset(), paid=False,
                                   attended=0, is_admin=False)
    base.update(kw)
    return el.HostFacts(**base)  # type: ignore[arg-type]


def test_follower_threshold_says_what_is_missing() -> None:
    failures = el.check(el.Followers(), facts(followers=212))
    err = DomainError("eligibility.failed", failures=[f.as_dict() for f in failures])
    assert describe(err) == "You cannot do that here yet: needs 600 followers, has 212."
    assert el.check(el.Followers(), facts(followers=600)) == []


def test_composed_rules_from_json() -> None:
    rule = TypeAdapter(el.Rule).validate_python({"kind": "any", "rules": [
        {"kind": "followers", "min": 100},
        {"kind": "all", "rules": [{"kind": "platform_role", "any_of": ["r1"]}, {"kind": "attended", "min": 2}]},
    ]})
    assert el.check(rule, facts(followers=150)) == []
    assert el.check(rule, facts(platform_roles=frozenset({"r1"}), attended=2)) == []
    failed = el.check(rule, facts(platform_roles=frozenset({"r1"}), attended=1))
    assert {f.rule for f in failed} == {"followers", "attended"}
    assert el.check(rule, facts(is_admin=True)) == []
    assert el.check(rule, facts(is_admin=True), admin_override=False) != []


def test_bad_rule_json_is_refused() -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(el.Rule).validate_python({"kind": "followers", "min": -1})
    with pytest.raises(ValidationError):
        TypeAdapter(el.Rule).validate_python({"kind": "karma"})


@pytest.mark.parametrize("ok", ["👍", "👍🏽", "🇺🇦", "👨‍👩‍👧", "❤️", "#️⃣"])
def test_single_emoji_accepted(ok: str) -> None:
    assert validate_emoji(ok) == ok


@pytest.mark.parametrize("bad", ["", "a", "👍👍", "hi 👍", ":)", "x" * 100])
def test_non_emoji_refused(bad: str) -> None:
    with pytest.raises(Invalid, match="reaction.not_an_emoji"):
        validate_emoji(bad)


def test_rate_limit_and_windows() -> None:
    book = ReactionBook(rate_per_s=5, burst=10)
    for _ in range(10):
        book.record("s", "a", "👍", now=100.0)
    with pytest.raises(RateLimited) as e:
        book.record("s", "a", "👍", now=100.0)
    assert e.value.data["retry_after_s"] > 0
    book.record("s", "b", "💜", now=100.0)  # others unaffected
    book.record("s", "a", "👍", now=100.3)  # refilled
    assert book.tallies("s", 60, now=101.0) == {"👍": 11, "💜": 1}
    assert book.tallies("s", 60, now=200.0) == {}
    assert book.totals("s") == {"👍": 11, "💜": 1}
