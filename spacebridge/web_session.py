"""Web sessions: an encrypted cookie that says who is signed in, and CSRF tokens bound to it.

The cookie (aiohttp-session's ``EncryptedCookieStorage``: Fernet, so it is both secret and
tamper-proof) holds the account id, that account's session epoch at sign-in, a random CSRF token
and short-lived passkey challenges. Its key is derived from the instance's secret (the one that
signs join tokens, ``Settings.resolved_secret``), so every process of an instance reads the same
cookies and a restart signs nobody out. It is ``HttpOnly``, ``SameSite=Lax``, and ``Secure``
when the public URL is https.

"Sign out everywhere" raises the account's epoch (``uow.passkeys.bump_epoch``); a cookie carrying
an older epoch is no longer anyone's (``current_account`` checks it on each request).

Every state-changing request (a form post, a ``fetch``) calls ``check_csrf``: the token comes
in the ``X-CSRF-Token`` header or the form field ``csrf``, and must equal the session's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

import aiohttp_session
from aiohttp import web
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from cryptography.fernet import Fernet

from core.errors import NotFound
from core.model.accounts import Account
from spacebridge.instance import INSTANCE

__all__ = ["COOKIE_NAME", "CSRF_FIELD", "CSRF_HEADER", "MAX_AGE_S", "check_csrf", "csrf_token",
           "current_account", "end_session", "setup_sessions", "start_session"]

COOKIE_NAME = "spacebridge_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
MAX_AGE_S = 30 * 24 * 3600  # a browser stays signed in for 30 days unless it signs out
_ACCOUNT_KEY = "spacebridge.account"  # request-local cache of current_account's answer
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def session_key(secret: bytes) -> Fernet:
    """The Fernet key for cookies: derived, so the join-token key and this one never coincide."""
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"spacebridge-web-session\x00" + secret).digest()))


def setup_sessions(app: web.Application, secret: bytes, *, secure: bool | None = None) -> None:
    """Install the session middleware on ``app``. ``secure`` defaults to whether the instance's
    public URL is https (a plain-http local instance would otherwise never get its cookie back)."""
    if secure is None:
        instance = app.get(INSTANCE)
        secure = instance is not None and instance.settings.public_url.lower().startswith("https://")
    storage = EncryptedCookieStorage(session_key(secret), cookie_name=COOKIE_NAME, max_age=MAX_AGE_S,
                                     httponly=True, secure=secure, samesite="Lax", path="/")
    aiohttp_session.setup(app, storage)


async def _epoch(request: web.Request, account_id: str) -> int:
    async with request.app[INSTANCE].core.uow() as uow:
        return await uow.passkeys.epoch(account_id)


async def current_account(request: web.Request) -> Account | None:
    """The signed-in person's core ``Account``, or None (no cookie, a forged or expired one, an
    account that no longer exists, or a session ended by "sign out everywhere"). Cached per request."""
    if _ACCOUNT_KEY in request:
        cached: Account | None = request[_ACCOUNT_KEY]
        return cached
    account: Account | None = None
    session = await aiohttp_session.get_session(request)
    account_id = session.get("account_id")
    if isinstance(account_id, str) and account_id:
        core = request.app[INSTANCE].core
        try:
            found = await core.account(account_id)
        except NotFound:
            found = None
        if found is not None and session.get("epoch") == await _epoch(request, account_id):
            account = found
        else:  # stale: forget it so the browser stops sending it
            _clear_identity(session)
    request[_ACCOUNT_KEY] = account
    return account


def _clear_identity(session: aiohttp_session.Session) -> None:
    for k in ("account_id", "epoch"):
        session.pop(k, None)


async def start_session(request: web.Request, account: Account) -> None:
    """Sign ``account`` in on this browser: a fresh CSRF token (the old one could have been seen
    signed out) and the account's current epoch."""
    session = await aiohttp_session.new_session(request)
    session["account_id"] = account.id
    session["epoch"] = await _epoch(request, account.id)
    session["csrf"] = secrets.token_urlsafe(32)
    request[_ACCOUNT_KEY] = account


async def end_session(request: web.Request) -> None:
    """Sign this browser out (other browsers stay signed in)."""
    session = await aiohttp_session.get_session(request)
    session.invalidate()
    request[_ACCOUNT_KEY] = None


async def csrf_token(request: web.Request) -> str:
    """This session's CSRF token (made on first use): put it in forms as ``csrf`` and in
    ``fetch`` calls as the ``X-CSRF-Token`` header."""
    session = await aiohttp_session.get_session(request)
    token = session.get("csrf")
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def _wants_html(request: web.Request) -> bool:
    return request.content_type in _FORM_TYPES and "text/html" in request.headers.get("Accept", "")


async def check_csrf(request: web.Request) -> None:
    """Refuse (403) a state-changing request whose CSRF token is missing or is not this session's.

    JSON body ``{"error": {"code": "csrf.invalid", "message": ...}}``, or a short HTML page for a
    browser's form post. Nothing has been changed when this raises."""
    session = await aiohttp_session.get_session(request)
    expected = session.get("csrf")
    given = request.headers.get(CSRF_HEADER, "")
    if not given and request.content_type in _FORM_TYPES:
        form = await request.post()
        value = form.get(CSRF_FIELD, "")
        given = value if isinstance(value, str) else ""
    if isinstance(expected, str) and expected and given and hmac.compare_digest(expected, given):
        return
    message = "This form has expired or did not come from this site. Reload the page and try again."
    if _wants_html(request):
        raise web.HTTPForbidden(text=f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Refused"
                                     f"</title></head><body><main><h1>Refused</h1><p>{message}</p>"
                                     "<p><a href='/signin'>Sign in</a></p></main></body></html>",
                                content_type="text/html", headers={"Cache-Control": "no-store"})
    body: dict[str, Any] = {"error": {"code": "csrf.invalid", "message": message}}
    raise web.HTTPForbidden(text=json.dumps(body), content_type="application/json",
                            headers={"Cache-Control": "no-store"})
