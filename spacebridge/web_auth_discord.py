"""Sign in with Discord: OAuth2's authorization-code flow with PKCE, ``identify`` scope only.

``POST /signin/discord`` (a CSRF-checked form) keeps a random ``state`` and PKCE ``code_verifier``
in the encrypted session cookie and sends the browser to Discord's consent page. Discord comes back
to ``GET /signin/discord/callback?code&state``: the state must be this browser's, fresh (10 minutes)
and unused (spent in storage, so a copied cookie cannot use it twice); the code is exchanged with
the client secret and the verifier, and ``/users/@me`` says who the person is. They are signed in as
the account that Discord user belongs to (made on first sight), or, when signed in already, the
Discord user is linked to that account (``web_auth.sign_in_identity``). docs/web-accounts.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Any
from urllib.parse import urlencode

import aiohttp
import aiohttp_session
from aiohttp import web

from core.errors import DomainError, Forbidden, Invalid, Unavailable
from core.messages import describe
from spacebridge.instance import INSTANCE, Instance
from spacebridge.web_auth import TEXT, relying_party, render_signin, safe_next, sign_in_identity
from spacebridge.web_session import check_csrf, current_account

__all__ = ["DISCORD_API", "STATE_TTL_S", "setup"]

DISCORD_API = "https://discord.com/api/v10"
STATE_TTL_S = 10 * 60  # as long as Discord keeps an authorization code
_SESSION_KEY = "discord_oauth"
_TIMEOUT = aiohttp.ClientTimeout(total=15)


def _endpoints(p: Instance) -> tuple[str, str, str]:
    """(authorize page, token endpoint, current user): from ``discord_api_base`` (a fake's too)."""
    api = (p.settings.discord_api_base or DISCORD_API).rstrip("/")
    site = api.split("/api", 1)[0]
    return f"{site}/oauth2/authorize", f"{api}/oauth2/token", f"{api}/users/@me"


def redirect_uri(request: web.Request) -> str:
    """Where Discord sends the browser back: the public URL's callback, else the address this
    browser used (as the passkey relying party), so the session cookie comes back with it: a
    browser on ``localhost`` sent back to ``127.0.0.1`` would arrive signed out."""
    _, origin = relying_party(request)
    return f"{origin}/signin/discord/callback"


def _configured(p: Instance) -> tuple[str, str]:
    s = p.settings
    secret = s.discord_client_secret.get_secret_value() if s.discord_client_secret else ""
    if not (s.discord_client_id and secret):
        raise Unavailable("oauth.not_configured", platform_name="Discord")
    return s.discord_client_id, secret


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def _refused(request: web.Request, e: DomainError, status: int) -> web.Response:
    return await render_signin(request, error=describe(e, TEXT), status=status)


async def start(request: web.Request) -> web.Response:
    """Send the browser to Discord's consent page, remembering the state and verifier."""
    await check_csrf(request)
    p: Instance = request.app[INSTANCE]
    try:
        client_id, _ = _configured(p)
    except Unavailable as e:
        return await _refused(request, e, 503)
    form = await request.post()
    nxt = form.get("next", "")
    account = await current_account(request)
    state, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(64)
    session = await aiohttp_session.get_session(request)
    session[_SESSION_KEY] = {"state": state, "verifier": verifier,
                             "expires": p.core.now().timestamp() + STATE_TTL_S,
                             "next": safe_next(nxt if isinstance(nxt, str) else ""),
                             "account": account.id if account else None, "redirect_uri": redirect_uri(request)}
    authorize, _, _ = _endpoints(p)
    challenge = _b64(hashlib.sha256(verifier.encode()).digest())
    query = urlencode({"response_type": "code", "client_id": client_id, "scope": "identify", "state": state,
                       "redirect_uri": redirect_uri(request), "code_challenge": challenge,
                       "code_challenge_method": "S256"})
    raise web.HTTPSeeOther(f"{authorize}?{query}")


async def _pending(request: web.Request, p: Instance) -> dict[str, Any]:
    """This browser's attempt, removed from the cookie and spent in storage; ``oauth.state`` when
    the state is missing, another's, expired, already used, or the person signed in or out since."""
    session = await aiohttp_session.get_session(request)
    pending = session.pop(_SESSION_KEY, None)
    given = request.query.get("state", "")
    now = p.core.now()
    if (not isinstance(pending, dict) or not given or not isinstance(pending.get("state"), str)
            or not hmac.compare_digest(pending["state"], given)
            or float(pending.get("expires", 0)) < now.timestamp()):
        raise Invalid("oauth.state")
    account = await current_account(request)
    if (account.id if account else None) != pending.get("account"):
        raise Invalid("oauth.state")
    async with p.core.uow() as uow:
        fresh = await uow.passkeys.spend(f"discord-state:{given}", now, STATE_TTL_S)
        await uow.commit()
    if not fresh:
        raise Invalid("oauth.state")
    return pending


async def _discord_user(p: Instance, code: str, verifier: str, back: str) -> dict[str, Any]:
    """Exchange the code (client secret + PKCE verifier) and ask Discord who the token is for."""
    client_id, secret = _configured(p)
    _, token_url, me_url = _endpoints(p)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": back,
            "code_verifier": verifier}
    try:
        async with aiohttp.ClientSession(timeout=_TIMEOUT) as http:
            async with http.post(token_url, data=form, headers={
                    "Accept": "application/json", "Authorization": aiohttp.encode_basic_auth(client_id, secret)}) as r:
                token = await r.json(content_type=None)
                if r.status != 200 or not isinstance(token, dict) or not token.get("access_token"):
                    reason = token.get("error", r.status) if isinstance(token, dict) else r.status
                    raise Forbidden("oauth.failed", reason=str(reason))
            async with http.get(me_url, headers={"Authorization": f"Bearer {token['access_token']}"}) as r:
                user = await r.json(content_type=None)
                if r.status != 200 or not isinstance(user, dict) or not str(user.get("id", "")).isdigit():
                    raise Forbidden("oauth.failed", reason=f"users/@me answered {r.status}")
    except (aiohttp.ClientError, TimeoutError, ValueError):
        raise Unavailable("oauth.failed", reason="Discord could not be reached") from None
    return user


async def callback(request: web.Request) -> web.Response:
    """Discord's redirect back: check the state, exchange the code, sign in (or link)."""
    p: Instance = request.app[INSTANCE]
    try:
        pending = await _pending(request, p)
        if "error" in request.query:  # the person pressed Cancel on Discord, or Discord refused
            reason = request.query.get("error_description") or request.query["error"]
            raise Forbidden("oauth.denied", reason=reason[:200])
        code = request.query.get("code", "")
        if not code or len(code) > 200:
            raise Invalid("oauth.failed", reason="no code")
        user = await _discord_user(p, code, str(pending["verifier"]), str(pending["redirect_uri"]))
        name = str(user.get("global_name") or user.get("username") or user["id"])
        await sign_in_identity(request, "discord", str(user["id"]), name)
    except DomainError as e:
        status = 503 if isinstance(e, Unavailable) else 409 if e.code == "account.identity_taken" else 400
        return await _refused(request, e, status)
    raise web.HTTPSeeOther(str(pending.get("next") or "/signin"))  # the account page lists what is linked


def setup(app: web.Application) -> None:
    app.router.add_post("/signin/discord", start)
    app.router.add_get("/signin/discord/callback", callback)
