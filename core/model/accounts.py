"""Accounts, the Identities that link them to platforms, and Communities."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from core.errors import Invalid

PLATFORMS = ("discord", "telegram", "web")
LINK_CODE_TTL_S = 600
MAX_PASSKEYS = 20  # per account: enough for every device a person owns, bounded against abuse


class Tier(StrEnum):
    FREE = "free"
    PAID = "paid"


def check_platform(platform: str) -> str:
    if platform not in PLATFORMS:
        raise Invalid("platform.unknown", platform=platform, known=list(PLATFORMS))
    return platform


@dataclass
class Account:
    id: str
    display_name: str
    created_at: datetime
    tier: Tier = Tier.FREE


@dataclass
class Identity:
    """One account on one platform. ``reachable`` is false once the platform says we cannot DM them."""

    platform: str
    external_id: str
    account_id: str
    display_name: str
    created_at: datetime
    dm_opt_in: bool = True
    reachable: bool = True


@dataclass
class LinkCode:
    code: str
    account_id: str
    issued_on: str
    expires_at: datetime
    used_at: datetime | None = None


@dataclass(frozen=True)
class Passkey:
    """A WebAuthn credential that signs one account in on the web (``credential_id`` is base64url,
    as browsers send it)."""

    credential_id: str
    account_id: str
    public_key: bytes
    sign_count: int
    transports: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True)
class Actor:
    """Who is calling a command, as the adapter vouches for it.

    ``platform_roles`` are the platform's role ids (Discord role ids, ``"admin"`` for Telegram chat
    admins); ``is_operator`` is someone with shell access to this instance (the CLI).
    """

    account_id: str
    platform: str = "web"
    platform_roles: frozenset[str] = field(default_factory=frozenset)
    is_community_admin: bool = False
    is_operator: bool = False

    @property
    def is_admin(self) -> bool:
        return self.is_operator or self.is_community_admin
