"""One-time sign-in codes a chat app confirms: the web page shows ``CODE`` (and a ``t.me`` deep
link ``/start login_CODE``); the person's bot confirms it for their platform user; the page that
asked, and only that browser, then signs in as that user.

Kept in the database's key-value store (namespace ``spacebridge.web-login``) so the web process and
the bot process may be different processes. A code lives ``LOGIN_CODE_TTL_S``, is confirmed once
and taken once (the first ``take`` deletes it). It is bound to a random ``binding`` the browser's
encrypted session cookie holds: a person who sees the code on someone's screen cannot use it from
another browser.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.clock import Clock
from core.errors import Invalid
from core.ids import new_code
from core.model.accounts import check_platform
from core.ports import KeyValues

__all__ = ["LOGIN_CODE_TTL_S", "NAMESPACE", "Confirmed", "LoginCodes", "normal_code"]

LOGIN_CODE_TTL_S = 5 * 60
NAMESPACE = "spacebridge.web-login"
_PREFIX = "code:"


@dataclass(frozen=True)
class Confirmed:
    """Who confirmed a code: the platform user the browser signs in as."""

    platform: str
    external_id: str
    display_name: str


def normal_code(code: object) -> str:
    """The code as stored (upper case, 6 to 16 letters and digits), or ``login.code_invalid``."""
    text = code.strip().upper() if isinstance(code, str) else ""
    if not (6 <= len(text) <= 16 and text.isascii() and text.isalnum()):
        raise Invalid("login.code_invalid")
    return text


class LoginCodes:
    """Issue (web), confirm (bot) and take (web) sign-in codes."""

    def __init__(self, kv: KeyValues, clock: Clock) -> None:
        self.kv, self.clock = kv, clock

    def _expired(self, value: dict[str, object], now: datetime) -> bool:
        expires = value.get("expires")
        return not isinstance(expires, (int, float)) or expires < now.timestamp()

    async def issue(self, binding: str) -> tuple[str, datetime]:
        """A fresh code for the browser holding ``binding``, and when it expires. Expired codes
        are pruned here, so the namespace stays small."""
        now = self.clock.now()
        for entry in await self.kv.scan(_PREFIX, limit=200):
            if self._expired(entry.value, now):
                await self.kv.delete(entry.key)
        code = new_code(8)
        expires = now + timedelta(seconds=LOGIN_CODE_TTL_S)
        await self.kv.put(_PREFIX + code, {"binding": binding, "expires": expires.timestamp()})
        return code, expires

    async def confirm(self, code: str, platform: str, external_id: str, display_name: str) -> None:
        """The chat app's user says "this is me": ``login.code_invalid`` when the code is unknown,
        expired, or confirmed already (by anyone)."""
        check_platform(platform)
        key = _PREFIX + normal_code(code)
        value = await self.kv.get(key)
        if value is None or self._expired(value, self.clock.now()) or "external_id" in value:
            raise Invalid("login.code_invalid", ttl_s=LOGIN_CODE_TTL_S)
        await self.kv.put(key, {**value, "platform": platform, "external_id": external_id,
                                "display_name": display_name[:200]})

    async def take(self, code: str, binding: str) -> Confirmed | None:
        """None while nobody has confirmed ``code``; once confirmed, who did (the code is deleted:
        only the first taker gets it). ``login.code_expired`` when it ran out, was taken, or belongs
        to another browser."""
        key = _PREFIX + normal_code(code)
        value = await self.kv.get(key)
        stored = value.get("binding") if value is not None else None
        if (value is None or not isinstance(stored, str) or not hmac.compare_digest(stored, binding)
                or self._expired(value, self.clock.now())):
            raise Invalid("login.code_expired", ttl_s=LOGIN_CODE_TTL_S)
        if "external_id" not in value:
            return None
        if not await self.kv.delete(key):  # another request of this browser took it first
            raise Invalid("login.code_expired", ttl_s=LOGIN_CODE_TTL_S)
        return Confirmed(platform=str(value["platform"]), external_id=str(value["external_id"]),
                         display_name=str(value.get("display_name", "")))
