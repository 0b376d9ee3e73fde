"""Sign in with Telegram: a one-time code the bot confirms, and (where configured) the Login Widget.

Code: ``POST /api/auth/telegram/code`` makes a code bound to this browser's session
(``core.web_login``) and answers it with a ``t.me/BOT?start=login_CODE`` deep link; the bot's
``/start login_CODE`` confirms it for that Telegram user; the page polls ``POST
/api/auth/telegram/poll`` until it is confirmed, then is signed in (or, signed in already, the
Telegram user is linked to the account). Widget: ``POST /signin/telegram/widget`` checks Telegram's
signature (HMAC-SHA256 of the sorted ``key=value`` lines, keyed with SHA256(bot token)), that
``auth_date`` is recent, and that the same signed data was not used before. docs/web-accounts.md.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

import aiohttp_session
from aiohttp import web

from core.errors import Forbidden, Invalid, Unavailable
from core.web_login import LOGIN_CODE_TTL_S, NAMESPACE, LoginCodes
from spacebridge.instance import INSTANCE, Instance
from spacebridge.web_auth import account_json, json_api, no_store, sign_in_identity
from spacebridge.web_session import csrf_token

__all__ = ["WIDGET_MAX_AGE_S", "setup", "widget_hash"]

WIDGET_MAX_AGE_S = 10 * 60  # the widget signs at the click; the page posts it at once
_SESSION_KEY = "telegram_login"
_WIDGET_FIELDS = ("id", "first_name", "last_name", "username", "photo_url", "auth_date", "hash")


def _codes(p: Instance) -> LoginCodes:
    return LoginCodes(p.core.store.kv(NAMESPACE), p.core.clock)


def _bot(p: Instance) -> tuple[str, str]:
    """(bot token, bot username) or ``oauth.not_configured``."""
    s = p.settings
    token = s.telegram_bot_token.get_secret_value() if s.telegram_bot_token else ""
    if not (token and s.telegram_bot_username):
        raise Unavailable("oauth.not_configured", platform_name="Telegram")
    return token, s.telegram_bot_username.lstrip("@")


@json_api
async def new_code(request: web.Request) -> web.Response:
    p: Instance = request.app[INSTANCE]
    _, bot = _bot(p)
    binding = secrets.token_urlsafe(24)
    code, _ = await _codes(p).issue(binding)
    session = await aiohttp_session.get_session(request)
    session[_SESSION_KEY] = {"code": code, "binding": binding}
    return no_store({"code": code, "url": f"https://t.me/{bot}?start=login_{code}", "bot": bot,
                     "expires_in_s": LOGIN_CODE_TTL_S})


@json_api
async def poll(request: web.Request) -> web.Response:
    """``{"status": "pending"}`` until the bot confirms this browser's code, then signed in."""
    p: Instance = request.app[INSTANCE]
    session = await aiohttp_session.get_session(request)
    pending = session.get(_SESSION_KEY)
    if not isinstance(pending, dict):
        raise Invalid("login.code_expired", ttl_s=LOGIN_CODE_TTL_S)
    try:
        who = await _codes(p).take(str(pending.get("code", "")), str(pending.get("binding", "")))
    except Invalid:
        session.pop(_SESSION_KEY, None)
        raise
    if who is None:
        return no_store({"status": "pending"})
    session.pop(_SESSION_KEY, None)
    account, linked = await sign_in_identity(request, who.platform, who.external_id, who.display_name)
    return no_store({"status": "linked" if linked else "signed_in", "account": account_json(account),
                     "csrf": await csrf_token(request)})


def widget_hash(data: dict[str, str], bot_token: str) -> str:
    """Telegram's signature of Login Widget data (core.telegram.org/widgets/login#checking-authorization)."""
    check = "\n".join(f"{k}={data[k]}" for k in sorted(data) if k != "hash")
    return hmac.new(hashlib.sha256(bot_token.encode()).digest(), check.encode(), hashlib.sha256).hexdigest()


@json_api
async def widget(request: web.Request) -> web.Response:
    p: Instance = request.app[INSTANCE]
    token, _ = _bot(p)
    if not p.settings.telegram_login_widget:
        raise Unavailable("oauth.not_configured", platform_name="Telegram")
    try:
        raw: Any = await request.json()
    except ValueError:
        raise Invalid("request.bad_json") from None
    if not isinstance(raw, dict):
        raise Invalid("request.bad_json")
    data = {k: str(v) for k, v in raw.items() if k in _WIDGET_FIELDS and v is not None}
    given = data.get("hash", "")
    if not given or not hmac.compare_digest(widget_hash(data, token), given):
        raise Forbidden("telegram.widget_invalid")
    now = p.core.now().timestamp()
    try:
        age = now - int(data.get("auth_date", ""))
    except ValueError:
        raise Forbidden("telegram.widget_invalid") from None
    if not -60 <= age <= WIDGET_MAX_AGE_S:
        raise Forbidden("telegram.widget_stale", max_age_s=WIDGET_MAX_AGE_S)
    if not data.get("id", "").isdigit():
        raise Forbidden("telegram.widget_invalid")
    async with p.core.uow() as uow:  # the same signed data signs in once
        fresh = await uow.passkeys.spend(f"telegram-widget:{given}", p.core.now(), WIDGET_MAX_AGE_S + 60)
        await uow.commit()
    if not fresh:
        raise Forbidden("telegram.widget_stale", max_age_s=WIDGET_MAX_AGE_S)
    name = " ".join(x for x in (data.get("first_name"), data.get("last_name")) if x) or data.get("username", "")
    account, linked = await sign_in_identity(request, "telegram", data["id"], name)
    return no_store({"status": "linked" if linked else "signed_in", "account": account_json(account),
                     "csrf": await csrf_token(request)})


def setup(app: web.Application) -> None:
    app.router.add_post("/api/auth/telegram/code", new_code)
    app.router.add_post("/api/auth/telegram/poll", poll)
    app.router.add_post("/signin/telegram/widget", widget)
