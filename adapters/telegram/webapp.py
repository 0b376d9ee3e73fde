"""Mini App sign-in: Telegram's ``initData`` proves who opened the web room inside Telegram.

Telegram signs the launch parameters with a key derived from the bot token
(``secret = HMAC_SHA256(key="WebAppData", msg=bot_token)``, ``hash = HMAC_SHA256(secret,
data_check_string)``), so only our bot's users can present them, and ``auth_date`` bounds how
long a captured string stays useful. The page hands the string to ``POST /api/telegram/webapp``
and gets back a join token for that Telegram Identity, the same token the bots' personal links
carry.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from core.errors import Forbidden, Invalid

MAX_INIT_DATA = 4096
DEFAULT_MAX_AGE_S = 3600


@dataclass(frozen=True)
class WebAppUser:
    id: int
    name: str
    start_param: str | None
    auth_date: int


def _secret(bot_token: str) -> bytes:
    return hmac.new(b"WebAppData", bot_token.encode(), hashlib.sha256).digest()


def sign_init_data(fields: dict[str, str], bot_token: str) -> str:
    """What Telegram does when it opens a Mini App (tests and tools build valid data with it)."""
    check = "\n".join(f"{k}={v}" for k, v in sorted(fields.items()))
    digest = hmac.new(_secret(bot_token), check.encode(), hashlib.sha256).hexdigest()
    return urlencode({**fields, "hash": digest})


def validate_init_data(init_data: str, bot_token: str, now: datetime, max_age_s: int = DEFAULT_MAX_AGE_S) -> WebAppUser:
    """The user Telegram vouches for, or ``Forbidden``/``Invalid`` with the reason."""
    if not init_data or len(init_data) > MAX_INIT_DATA:
        raise Invalid("telegram.init_data_missing")
    try:
        pairs = parse_qsl(init_data, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise Invalid("telegram.init_data_malformed") from None
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise Invalid("telegram.init_data_malformed")
    given = fields.pop("hash", "")
    check = "\n".join(f"{k}={v}" for k, v in sorted(fields.items()))
    want = hmac.new(_secret(bot_token), check.encode(), hashlib.sha256).hexdigest()
    if not given or not hmac.compare_digest(want, given):
        raise Forbidden("telegram.init_data_forged")
    try:
        auth_date = int(fields["auth_date"])
        user: dict[str, Any] = json.loads(fields["user"])
        uid = int(user["id"])
    except (KeyError, ValueError, TypeError):
        raise Invalid("telegram.init_data_malformed") from None
    age = now.timestamp() - auth_date
    if age > max_age_s or age < -60:
        raise Forbidden("telegram.init_data_expired", max_age_s=max_age_s)
    name = " ".join(str(user.get(k) or "") for k in ("first_name", "last_name")).strip() or str(
        user.get("username") or uid)
    return WebAppUser(id=uid, name=name, start_param=fields.get("start_param"), auth_date=auth_date)
