"""What every web page module shares: rendering, who is looking, the base template context, safe
redirects and money wording. Its own module so that pages, page actions and the studio import it
rather than one another (tests/unit/test_import_cycles.py)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from core.errors import DomainError
from core.messages import describe
from core.model.accounts import Account
from spacebridge.instance import INSTANCE, Instance
from spacebridge.web_security import allowed_origins, origin_of
from spacebridge.web_session import csrf_token, current_account

__all__ = ["NO_STORE", "TEMPLATES", "base_ctx", "error_text", "instance", "money", "render", "safe_next", "site_url",
           "viewer", "when_text"]

TEMPLATES = Path(__file__).parent / "templates"
NO_STORE = {"Cache-Control": "no-store"}


def instance(request: web.Request) -> Instance:
    return request.app[INSTANCE]


def site_url(request: web.Request) -> str:
    """Where links built for this web client point (share, Checkout's return, Connect's return,
    Open Graph, calendar files): the configured public URL, else the address the browser used.

    Never ``settings.base_url()``: that is the configured port (``serve --port 0`` listens elsewhere)
    and host (a browser on ``localhost`` would come back to ``127.0.0.1`` without its cookie). The
    browser's address counts only where it is one this instance serves its pages on (the origins its
    sockets accept: the bound address under any loopback name, ``SPACEBRIDGE_ALLOWED_ORIGINS``); a
    forged ``Host`` header gets the instance's own address, never a link to another site."""
    p = instance(request)
    public = p.settings.public_url.strip().rstrip("/")
    if public:
        return public
    used = origin_of(f"{request.scheme}://{request.host}")
    if used is not None and used in allowed_origins(public, p.bound_url, p.settings.allowed_origins):
        return used
    return p.url or p.settings.base_url()  # an app not started by serve has no bound address


def render(name: str, request: web.Request, ctx: dict[str, Any], *, status: int = 200) -> web.Response:
    """A page from the templates, never cached (it shows who is signed in and live state)."""
    response = aiohttp_jinja2.render_template(name, request, ctx, status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


async def viewer(request: web.Request) -> tuple[Account | None, str]:
    """The signed-in person (or None) and, for them, the session's CSRF token for forms. No cookie
    is made for someone who is not signed in."""
    try:
        account = await current_account(request)
    except RuntimeError:  # the session middleware is not installed (an app built without it)
        return None, ""
    return account, (await csrf_token(request) if account is not None else "")


def when_text(when: datetime | None) -> str:
    return when.strftime("%a %d %b %Y, %H:%M UTC") if when else ""


def money(price_minor: int, currency: str) -> str:
    """A price for people: XTR (Telegram Stars) has no minor unit, so 250 is "250 Stars", not 2.50."""
    if currency.upper() == "XTR":
        return f"{price_minor:,} Star{'' if price_minor == 1 else 's'}"
    symbols = {"usd": "$", "eur": "€", "gbp": "£"}
    amount = f"{price_minor / 100:,.2f}"
    sym = symbols.get(currency.lower())
    return f"{sym}{amount}" if sym else f"{amount} {currency.upper()}"


def safe_next(target: str, fallback: str) -> str:
    """Only a path on this site (never ``//host`` or a scheme): redirects cannot leave the site."""
    return target if target.startswith("/") and not target.startswith(("//", "/\\")) else fallback


def base_ctx(request: web.Request, account: Account | None, csrf: str, **extra: Any) -> dict[str, Any]:
    return {"account": account, "csrf": csrf, "here": request.path_qs, "site_url": site_url(request),
            "when_text": when_text, "money": money, **extra}


def error_text(e: DomainError) -> str:
    return describe(e)
