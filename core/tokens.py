"""Join tokens: signed, short-lived, bound to a Space, an Account and a role.

Compact ``payload.signature`` in URL-safe base64 (HMAC-SHA256). Every refusal is a ``Forbidden`` with
a stable code the web room turns into "this link has expired" and the like.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime

from core.errors import Forbidden, Invalid

DEFAULT_TTL_S = 15 * 60
_B64 = re.compile(r"[A-Za-z0-9_-]+")
MAX_TOKEN_LEN = 1024
ROLES = ("listener", "speaker", "guest")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class JoinGrant:
    space_id: str
    account_id: str | None  # None for a guest listener of a public Space
    role: str
    expires_at: int


class JoinTokens:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise Invalid("token.weak_secret", min_bytes=16)
        self._key = hashlib.sha256(b"spacebridge-join\x00" + secret).digest()

    def issue(self, space_id: str, account_id: str | None, role: str, now: datetime,
              ttl_s: int = DEFAULT_TTL_S) -> str:
        if role not in ROLES:
            raise Invalid("token.bad_role", role=role, allowed=list(ROLES))
        if (role == "guest") != (account_id is None):
            raise Invalid("token.guest_mismatch")
        body = json.dumps({"s": space_id, "a": account_id, "r": role, "e": int(now.timestamp()) + ttl_s},
                          separators=(",", ":")).encode()
        return f"{_b64(body)}.{_b64(self._sign(body))}"

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:24]

    def verify(self, token: str, now: datetime, space_id: str | None = None) -> JoinGrant:
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LEN or token.count(".") != 1:
            raise Forbidden("token.malformed")
        body_s, sig_s = token.split(".")
        if not _B64.fullmatch(body_s) or not _B64.fullmatch(sig_s):
            raise Forbidden("token.malformed")
        try:
            body, sig = _unb64(body_s), _unb64(sig_s)
        except (ValueError, TypeError):
            raise Forbidden("token.malformed") from None
        if not hmac.compare_digest(sig, self._sign(body)):
            raise Forbidden("token.bad_signature")
        try:
            d = json.loads(body)
            grant = JoinGrant(space_id=str(d["s"]), account_id=d["a"], role=str(d["r"]), expires_at=int(d["e"]))
        except (ValueError, KeyError, TypeError):
            raise Forbidden("token.malformed") from None
        if grant.expires_at < now.timestamp():
            raise Forbidden("token.expired", space_id=grant.space_id)
        if space_id is not None and grant.space_id != space_id:
            raise Forbidden("token.wrong_space", space_id=space_id)
        return grant
