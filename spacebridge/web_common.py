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
from spacebridge.web_session import csrf_token, current_account

__all__ = ["NO_STORE", "TEMPLATES", "base_ctx", "error_text", "instance", "money", "render", "safe_next", "viewer",
           "when_text"]

TEMPLATES = Path(__file__).parent / "templates"
NO_STORE = {"Cache-Control": "no-store"}


def instance(request: web.Request) -> Instance:
    return request.app[INSTANCE]


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
    symbols = {"usd": "$", "eur": "€", "gbp": "£"}
    amount = f"{price_minor / 100:,.2f}"
    sym = symbols.get(currency.lower())
    return f"{sym}{amount}" if sym else f"{amount} {currency.upper()}"


def safe_next(target: str, fallback: str) -> str:
    """Only a path on this site (never ``//host`` or a scheme): redirects cannot leave the site."""
    return target if target.startswith("/") and not target.startswith(("//", "/\\")) else fallback


def base_ctx(request: web.Request, account: Account | None, csrf: str, **extra: Any) -> dict[str, Any]:
    p = instance(request)
    return {"account": account, "csrf": csrf, "here": request.path_qs, "site_url": p.url,
            "when_text": when_text, "money": money, **extra}


def error_text(e: DomainError) -> str:
    return describe(e)
