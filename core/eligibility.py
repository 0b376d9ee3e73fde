"""Who may host (and sell tickets): composable rules a Community configures.

Rules are pydantic models so a Community's settings round-trip through JSON, the CLI and chat set-up
commands with clear validation errors. Evaluating a rule returns what failed and what is missing
("needs 600 followers, has 212"), never just "no".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_FOLLOWER_THRESHOLD = 600


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Followers(_Rule):
    kind: Literal["followers"] = "followers"
    min: int = Field(DEFAULT_FOLLOWER_THRESHOLD, ge=0)


class PlatformRole(_Rule):
    """Has any of these platform roles (ids supplied by the adapter, e.g. Discord role ids)."""

    kind: Literal["platform_role"] = "platform_role"
    any_of: list[str] = Field(min_length=1)


class PaidTier(_Rule):
    kind: Literal["paid_tier"] = "paid_tier"


class Attended(_Rule):
    kind: Literal["attended"] = "attended"
    min: int = Field(ge=1)


class AllowList(_Rule):
    kind: Literal["allow_list"] = "allow_list"
    accounts: list[str] = Field(min_length=1)


class AllOf(_Rule):
    kind: Literal["all"] = "all"
    rules: list[Rule] = Field(min_length=1)


class AnyOf(_Rule):
    kind: Literal["any"] = "any"
    rules: list[Rule] = Field(min_length=1)


class Nobody(_Rule):
    """Only admins (with override) may: for communities that want hand-picked hosts."""

    kind: Literal["nobody"] = "nobody"


class Everyone(_Rule):
    kind: Literal["everyone"] = "everyone"


Rule = Annotated[
    Followers | PlatformRole | PaidTier | Attended | AllowList | AllOf | AnyOf | Nobody | Everyone,
    Field(discriminator="kind"),
]
AllOf.model_rebuild()
AnyOf.model_rebuild()


@dataclass(frozen=True)
class HostFacts:
    """What the rules look at, gathered by the service from storage and the adapter."""

    account_id: str
    followers: int
    platform_roles: frozenset[str]
    paid: bool
    attended: int
    is_admin: bool


@dataclass(frozen=True)
class Failure:
    rule: str
    needed: object
    has: object

    def as_dict(self) -> dict[str, object]:
        return {"rule": self.rule, "needed": self.needed, "has": self.has}


def evaluate(rule: Rule, facts: HostFacts) -> list[Failure]:
    """Empty list when the rule passes; otherwise every unmet requirement."""
    match rule:
        case Followers(min=n):
            return [] if facts.followers >= n else [Failure("followers", n, facts.followers)]
        case PlatformRole(any_of=roles):
            if facts.platform_roles & set(roles):
                return []
            return [Failure("platform_role", sorted(roles), sorted(facts.platform_roles))]
        case PaidTier():
            return [] if facts.paid else [Failure("paid_tier", "paid", "free")]
        case Attended(min=n):
            return [] if facts.attended >= n else [Failure("attended", n, facts.attended)]
        case AllowList(accounts=accounts):
            return [] if facts.account_id in accounts else [Failure("allow_list", "listed", "not listed")]
        case AllOf(rules=rules):
            return [f for r in rules for f in evaluate(r, facts)]
        case AnyOf(rules=rules):
            failures: list[Failure] = []
            for r in rules:
                got = evaluate(r, facts)
                if not got:
                    return []
                failures.extend(got)
            return failures
        case Nobody():
            return [Failure("admins_only", "admin", "not admin")]
        case Everyone():
            return []
    raise AssertionError(f"unhandled rule {rule!r}")


def check(rule: Rule, facts: HostFacts, admin_override: bool = True) -> list[Failure]:
    if admin_override and facts.is_admin:
        return []
    return evaluate(rule, facts)
