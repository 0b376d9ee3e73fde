"""Accounts on the web: passkey sign-up and sign-in (WebAuthn), sign out, sign out everywhere.

The endpoints are in docs/web-accounts.md. Every POST is CSRF-checked (``web_session.check_csrf``).
A passkey ceremony's challenge lives in the encrypted session cookie for ``CHALLENGE_TTL_S`` and is
used once; the relying party is the public URL's host (or, without one, the host the browser asked
for, whose origin the browser itself vouches for in the signed client data).

Signing up while signed in adds the new passkey to the signed-in account (a second device or
method links to the same person); signing in with another account's passkey switches to it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp_session
import jinja2
from aiohttp import web
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from core import events as ev
from core.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, RateLimited, Unavailable
from core.messages import describe
from core.model.accounts import Account, Actor, Identity
from core.ports import DuplicateKey, UnitOfWork
from core.storage.passkeys import MAX_PASSKEYS, Passkey
from spacebridge.instance import INSTANCE, Instance
from spacebridge.web_security import policy
from spacebridge.web_session import (
    check_csrf,
    csrf_token,
    current_account,
    end_session,
    start_session,
)

__all__ = ["CHALLENGE_TTL_S", "TEXT", "account_json", "error_response", "first_run_token", "json_api", "no_store",
           "render_signin", "safe_next", "setup", "sign_in_identity"]

CHALLENGE_TTL_S = 5 * 60
TEMPLATES = Path(__file__).parent / "templates"
_CRED_ID = re.compile(r"^[A-Za-z0-9_-]{16,1400}$")
_env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                          undefined=jinja2.StrictUndefined)

# sentences for this module's own refusal codes (core.messages has the core's)
TEXT = {
    "auth.required": "Sign in to do that.",
    "auth.sign_in_to_join": "Sign in to join this Space (guests may listen only to public live Spaces "
                            "without tickets).",
    "passkey.challenge_expired": "That passkey request has expired. Try again.",
    "passkey.invalid": "The passkey's answer could not be verified. Try again.",
    "passkey.unknown": "This passkey is not registered on this site. Sign up first, or use another passkey.",
    "passkey.taken": "This passkey is already registered.",
    "passkey.too_many": "This account has the most passkeys it may have ({max}).",
    "request.bad_json": "The request body must be a JSON object.",
    "account.name_length": "Choose a display name of 1 to {max} characters.",
    "account.identity_taken": "This {platform_name} account already belongs to another Spacebridge account "
                              "({other}). Sign out and sign in with {platform_name} to use that one; to join the "
                              "two, link them with a link code from the bots (/link).",
    "oauth.not_configured": "Sign in with {platform_name} is not set up on this site.",
    "oauth.state": "That sign-in attempt has expired or did not start in this browser. Try again.",
    "oauth.denied": "Discord did not sign you in ({reason}). Try again if you meant to.",
    "oauth.failed": "Discord did not confirm the sign-in ({reason}). Try again.",
    "login.code_expired": "That sign-in code has expired or was used. Ask for a new one.",
    "login.code_invalid": "That sign-in code is not valid.",
    "telegram.widget_invalid": "The Telegram sign-in data did not verify. Try again.",
    "telegram.widget_stale": "That Telegram sign-in is too old. Try again.",
    "first_run.invalid": "That first-run link is not this instance's. Use the one `spacebridge serve` printed.",
    "first_run.done": "This instance has its admin already: sign in, or sign up as a new member.",
    "first_run.welcome": "Welcome to your new Spacebridge. Create your account with a passkey below: it becomes "
                         "this instance's admin, who may host Spaces and sees the studio's admin view.",
}
PLATFORM_NAMES = {"discord": "Discord", "telegram": "Telegram", "web": "Spacebridge"}
_STATUS: list[tuple[type[DomainError], int]] = [
    (NotFound, 404), (Forbidden, 403), (Conflict, 409), (Invalid, 400), (RateLimited, 429), (Unavailable, 503)]


def error_response(e: DomainError) -> web.Response:
    """``{"error": {"code", "message", ...data}}`` with the status the error's kind means."""
    status = next((s for kind, s in _STATUS if isinstance(e, kind)), 400)
    return web.json_response({"error": {**e.as_dict(), "message": describe(e, TEXT)}}, status=status,
                             headers={"Cache-Control": "no-store"})


def json_api(handler: Callable[[web.Request], Awaitable[web.Response]]) -> Callable[[web.Request],
                                                                                     Awaitable[web.Response]]:
    """A CSRF-checked JSON endpoint whose domain refusals become ``error_response``s."""
    async def wrapped(request: web.Request) -> web.Response:
        await check_csrf(request)
        try:
            return await handler(request)
        except DomainError as e:
            return error_response(e)
    return wrapped


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = await request.json()
    except ValueError:
        raise Invalid("request.bad_json") from None
    if not isinstance(data, dict):
        raise Invalid("request.bad_json")
    return data


def _instance(request: web.Request) -> Instance:
    return request.app[INSTANCE]


def relying_party(request: web.Request) -> tuple[str, str]:
    """(RP id, expected origin): the public URL's, else the address the browser used."""
    public = _instance(request).settings.public_url.strip()
    if public:
        u = urlsplit(public)
        return u.hostname or "", f"{u.scheme}://{u.netloc}"
    return request.url.host or "", f"{request.scheme}://{request.host}"


async def _keep_challenge(request: web.Request, kind: str, challenge: bytes, **extra: Any) -> None:
    session = await aiohttp_session.get_session(request)
    expires = _instance(request).core.now().timestamp() + CHALLENGE_TTL_S
    session["passkey"] = {"kind": kind, "challenge": bytes_to_base64url(challenge), "expires": expires, **extra}


async def _take_challenge(request: web.Request, kind: str) -> dict[str, Any]:
    """The pending ceremony's state, removed (a challenge is answered once); refused once expired.

    Removing it from the cookie is not enough (an older copy of the cookie still holds it), so the
    challenge is also spent in storage: a second answer to it, from any copy, is refused."""
    session = await aiohttp_session.get_session(request)
    pending = session.pop("passkey", None)
    core = _instance(request).core
    if (not isinstance(pending, dict) or pending.get("kind") != kind
            or float(pending.get("expires", 0)) < core.now().timestamp()):
        raise Invalid("passkey.challenge_expired", ttl_s=CHALLENGE_TTL_S)
    async with core.uow() as uow:
        fresh = await uow.passkeys.spend(f"passkey:{pending.get('challenge')}", core.now(), CHALLENGE_TTL_S)
        await uow.commit()
    if not fresh:
        raise Invalid("passkey.challenge_expired", ttl_s=CHALLENGE_TTL_S)
    return pending


def account_json(account: Account | None) -> dict[str, Any] | None:
    return None if account is None else {"id": account.id, "display_name": account.display_name}


def no_store(data: dict[str, Any]) -> web.Response:
    return web.json_response(data, headers={"Cache-Control": "no-store"})


# ---- passkey sign-up ------------------------------------------------------------------------------
@json_api
async def register_options(request: web.Request) -> web.Response:
    body = await _body(request)
    account = await current_account(request)
    rp_id, _ = relying_party(request)
    exclude: list[PublicKeyCredentialDescriptor] = []
    if account is None:
        name = str(body.get("display_name", "")).strip()
        if not 1 <= len(name) <= 200:
            raise Invalid("account.name_length", max=200)
        user_id = secrets.token_bytes(16)
    else:
        name = account.display_name
        user_id = account.id.encode()
        async with _instance(request).core.uow() as uow:
            have = await uow.passkeys.for_account(account.id)
        if len(have) >= MAX_PASSKEYS:
            raise Conflict("passkey.too_many", max=MAX_PASSKEYS)
        exclude = [PublicKeyCredentialDescriptor(id=base64url_to_bytes(p.credential_id)) for p in have]
    options = generate_registration_options(
        rp_id=rp_id, rp_name="Spacebridge", user_id=user_id, user_name=name, user_display_name=name,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED, user_verification=UserVerificationRequirement.PREFERRED),
        exclude_credentials=exclude)
    await _keep_challenge(request, "register", options.challenge, name=name,
                          account=account.id if account else None)
    return web.Response(text=options_to_json(options), content_type="application/json",
                        headers={"Cache-Control": "no-store"})


def first_run_token(secret: bytes) -> str:
    """The token of ``serve``'s first-run link (``/signin?first_run=TOKEN``), derived from the instance
    secret. It names the account signed up with it the instance's admin only while there is none, so
    it works once: after that the page says the instance has its admin."""
    digest = hmac.new(secret, b"spacebridge first-run admin", hashlib.sha256).digest()[:18]
    return base64.urlsafe_b64encode(digest).decode()


async def _first_run(request: web.Request, token: str) -> web.Response:
    """The first-run link: checked, then remembered in the session until the passkey sign-up ends."""
    p = _instance(request)
    if not hmac.compare_digest(token.encode(), first_run_token(p.settings.resolved_secret()).encode()):
        return await render_signin(request, error=TEXT["first_run.invalid"], status=403)
    if (await p.core.web_community()).settings.moderator_identities:
        return await render_signin(request, notice=TEXT["first_run.done"])
    session = await aiohttp_session.get_session(request)
    session["first_run"] = True
    return await render_signin(request, notice=TEXT["first_run.welcome"])


@json_api
async def register_verify(request: web.Request) -> web.Response:
    body = await _body(request)
    pending = await _take_challenge(request, "register")
    account = await current_account(request)
    if (account.id if account else None) != pending.get("account"):  # signed in or out meanwhile
        raise Invalid("passkey.challenge_expired", ttl_s=CHALLENGE_TTL_S)
    rp_id, origin = relying_party(request)
    credential = body.get("credential")
    try:
        verified = verify_registration_response(
            credential=credential if isinstance(credential, dict) else {}, expected_rp_id=rp_id,
            expected_challenge=base64url_to_bytes(pending["challenge"]), expected_origin=origin)
    except (WebAuthnException, ValueError, KeyError, TypeError):
        raise Invalid("passkey.invalid") from None
    p = _instance(request)
    cred_id = bytes_to_base64url(verified.credential_id)
    async with p.core.uow() as uow:
        if await uow.passkeys.get(cred_id) is not None:
            raise Conflict("passkey.taken")
    if account is None:
        account = await p.core.create_account(str(pending.get("name", "")))
    response = credential.get("response") if isinstance(credential, dict) else None
    transports = response.get("transports", []) if isinstance(response, dict) else []
    async with p.core.uow() as uow:
        await uow.passkeys.add(Passkey(
            credential_id=cred_id, account_id=account.id, public_key=verified.credential_public_key,
            sign_count=verified.sign_count, created_at=p.core.now(), last_used_at=None,
            transports=tuple(str(t)[:20] for t in transports if isinstance(t, str))[:8]))
        await uow.commit()
    if (await aiohttp_session.get_session(request)).pop("first_run", False):  # opened serve's first-run link
        await p.core.make_instance_admin(Actor(account_id=account.id, platform="web"), account.id, first=True)
    await start_session(request, account)
    return no_store({"account": account_json(account), "csrf": await csrf_token(request)})


# ---- passkey sign-in ------------------------------------------------------------------------------
@json_api
async def signin_options(request: web.Request) -> web.Response:
    rp_id, _ = relying_party(request)
    options = generate_authentication_options(rp_id=rp_id, user_verification=UserVerificationRequirement.PREFERRED)
    await _keep_challenge(request, "signin", options.challenge)
    return web.Response(text=options_to_json(options), content_type="application/json",
                        headers={"Cache-Control": "no-store"})


@json_api
async def signin_verify(request: web.Request) -> web.Response:
    body = await _body(request)
    pending = await _take_challenge(request, "signin")
    credential = body.get("credential")
    if not isinstance(credential, dict):
        raise Invalid("passkey.invalid")
    cred_id = credential.get("id")
    if not isinstance(cred_id, str) or not _CRED_ID.match(cred_id):
        raise Invalid("passkey.invalid")
    p = _instance(request)
    async with p.core.uow() as uow:
        passkey = await uow.passkeys.get(cred_id)
    if passkey is None:
        raise Invalid("passkey.unknown")
    rp_id, origin = relying_party(request)
    try:
        verified = verify_authentication_response(
            credential=credential, expected_challenge=base64url_to_bytes(pending["challenge"]),
            expected_rp_id=rp_id, expected_origin=origin, credential_public_key=passkey.public_key,
            credential_current_sign_count=passkey.sign_count)
    except (WebAuthnException, ValueError, KeyError, TypeError):
        raise Invalid("passkey.invalid") from None
    async with p.core.uow() as uow:
        await uow.passkeys.used(cred_id, verified.new_sign_count, p.core.now())
        await uow.commit()
    account = await p.core.account(passkey.account_id)
    await start_session(request, account)
    return no_store({"account": account_json(account), "csrf": await csrf_token(request)})


# ---- platform identities (Discord, Telegram) ----------------------------------------------------
async def sign_in_identity(request: web.Request, platform: str, external_id: str, name: str) -> tuple[Account, bool]:
    """Sign in as the account a platform user (proven by Discord or Telegram) belongs to, made on
    first sight; or, when this browser is signed in already, link that user to the signed-in
    account. Returns (account, linked now). An identity that belongs to another account is refused
    (``account.identity_taken``): joining two accounts is the link code's merge, which both sides
    ask for, never a side effect of signing in."""
    core = _instance(request).core
    current = await current_account(request)
    if current is None:
        account = await core.ensure_account(platform, external_id, name)
        await start_session(request, account)
        return account, False
    async with core.uow() as uow:
        ident = await uow.accounts.identity(platform, external_id)
        if ident is None:
            try:
                await uow.accounts.add_identity(Identity(platform=platform, external_id=external_id,
                                                         account_id=current.id, display_name=name[:200] or external_id,
                                                         created_at=core.now()))
                await uow.commit()
            except DuplicateKey:
                ident = await _identity(request, platform, external_id)
            else:
                return current, True
    if ident is not None and ident.account_id != current.id:
        if await _fold_in(request, ident, current):
            return current, True
        other = await core.account(ident.account_id)
        raise Conflict("account.identity_taken", platform=platform, platform_name=PLATFORM_NAMES[platform],
                       other=other.display_name)
    return current, False


async def _fold_in(request: web.Request, ident: Identity, into: Account) -> bool:
    """Link a platform user whose account has no other way in (the bot made it on their first
    message, or they only ever used that chat app) by merging that account into the signed-in one,
    as the bots' link code does: this browser asked, and the platform user just proved themselves,
    so both sides agreed. Their follows, tickets and history move. An account with another
    identity or a passkey is someone's in its own right: False, and the caller refuses."""
    core = _instance(request).core

    async def op(uow: UnitOfWork) -> bool:
        mine = await uow.accounts.identities(ident.account_id)
        if [(i.platform, i.external_id) for i in mine] != [(ident.platform, ident.external_id)] \
                or await uow.passkeys.for_account(ident.account_id):
            return False
        await uow.accounts.merge_into(ident.account_id, into.id)
        uow.emit(ev.IdentityLinked(account_id=into.id, platform=ident.platform, external_id=ident.external_id,
                                   at=core.now()))
        return True

    return await core.run(op)


async def _identity(request: web.Request, platform: str, external_id: str) -> Identity | None:
    async with _instance(request).core.uow() as uow:
        return await uow.accounts.identity(platform, external_id)


# ---- the session ----------------------------------------------------------------------------------
async def me(request: web.Request) -> web.Response:
    """Who this browser is signed in as, and the CSRF token its pages send with every POST."""
    account = await current_account(request)
    return no_store({"account": account_json(account), "csrf": await csrf_token(request)})


def _done(request: web.Request) -> web.Response:
    """A form post goes back to the sign-in page; a fetch gets JSON."""
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise web.HTTPSeeOther("/signin")
    return no_store({"account": None})


async def sign_out(request: web.Request) -> web.Response:
    await check_csrf(request)
    await end_session(request)
    return _done(request)


async def sign_out_everywhere(request: web.Request) -> web.Response:
    """End every session of the signed-in account, on every browser (its epoch moves on)."""
    await check_csrf(request)
    account = await current_account(request)
    if account is None:
        return error_response(Forbidden("auth.required"))
    async with _instance(request).core.uow() as uow:
        await uow.passkeys.bump_epoch(account.id)
        await uow.commit()
    await end_session(request)
    return _done(request)


async def signin_page(request: web.Request) -> web.Response:
    token = request.query.get("first_run")
    return await render_signin(request) if token is None else await _first_run(request, token)


async def render_signin(request: web.Request, *, error: str = "", notice: str = "", status: int = 200,
                        next_path: str | None = None) -> web.Response:
    """The sign-in page (or, signed in, the account page), with an optional message from a
    sign-in that just finished or failed."""
    account = await current_account(request)
    passkeys, linked = 0, set()
    if account is not None:
        async with _instance(request).core.uow() as uow:
            passkeys = len(await uow.passkeys.for_account(account.id))
            linked = {i.platform for i in await uow.accounts.identities(account.id)}
    s = _instance(request).settings
    methods = {"discord": bool(s.discord_client_id and s.discord_client_secret),
               "telegram": bool(s.telegram_bot_token and s.telegram_bot_username)}
    widget = s.telegram_bot_username.lstrip("@") if methods["telegram"] and s.telegram_login_widget else ""
    html = _env.get_template("auth/signin.html").render(
        account=account, passkeys=passkeys, csrf=await csrf_token(request), linked=linked, methods=methods,
        widget_bot=widget, error=error, notice=notice,
        next=safe_next(request.query.get("next", "") if next_path is None else next_path))
    headers = {"Cache-Control": "no-store"}
    if widget:  # Telegram's Login Widget: its script from telegram.org, its frame from oauth.telegram.org
        headers["Content-Security-Policy"] = policy(request, scripts=("https://telegram.org",),
                                                    frames=("https://oauth.telegram.org",))
    return web.Response(text=html, content_type="text/html", status=status, headers=headers)


def safe_next(target: str) -> str:
    """Where to go after signing in: a path on this site only (never another site)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else ""


async def passkey_js(request: web.Request) -> web.FileResponse:
    return web.FileResponse(TEMPLATES / "auth" / "passkey.js", headers={"Cache-Control": "no-cache"})


async def telegram_js(request: web.Request) -> web.FileResponse:
    return web.FileResponse(TEMPLATES / "auth" / "telegram.js", headers={"Cache-Control": "no-cache"})


def setup(app: web.Application) -> None:
    """Register the routes (docs/web-accounts.md); sessions must be set up already."""
    r = app.router
    r.add_get("/signin", signin_page)
    r.add_get("/auth/passkey.js", passkey_js)
    r.add_get("/api/me", me)
    r.add_post("/api/auth/passkey/register/options", register_options)
    r.add_post("/api/auth/passkey/register/verify", register_verify)
    r.add_post("/api/auth/passkey/signin/options", signin_options)
    r.add_post("/api/auth/passkey/signin/verify", signin_verify)
    r.add_post("/signout", sign_out)
    r.add_post("/signout/everywhere", sign_out_everywhere)
    r.add_get("/auth/telegram.js", telegram_js)
    # web_auth_discord and web_auth_telegram build on this module; web_routes registers them after it
