"""What the studio's pages share: the signed-in guard, the form reader, the template context and
"is this Space mine". Its own module so ``web_studio`` and ``web_studio_money`` import it rather than
one another (tests/unit/test_import_cycles.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from core.errors import NotFound
from core.model.accounts import Account, Actor
from core.model.space import Space
from spacebridge.instance import INSTANCE, Instance
from spacebridge.web_common import base_ctx, viewer
from spacebridge.web_session import check_csrf

__all__ = ["MAX_FIELD", "Handler", "actor", "form", "instance_of", "is_instance_admin", "own_space", "query",
           "signed_in", "studio_ctx"]

Handler = Callable[[web.Request, Account], Awaitable[web.StreamResponse]]
MAX_FIELD = 500


def instance_of(request: web.Request) -> Instance:
    return request.app[INSTANCE]


def actor(account: Account) -> Actor:
    return Actor(account_id=account.id, platform="web")


def signed_in(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Only for a signed-in person; a form post must also carry this session's CSRF token."""
    async def wrapped(request: web.Request) -> web.StreamResponse:
        account, _ = await viewer(request)
        if account is None:
            target = request.path if request.method != "GET" else request.path_qs
            raise web.HTTPSeeOther("/signin?" + query(next=target))
        if request.method == "POST":
            await check_csrf(request)
        return await handler(request, account)

    return wrapped


async def form(request: web.Request) -> dict[str, str]:
    return {k: v.strip()[:MAX_FIELD] for k, v in (await request.post()).items() if isinstance(v, str)}


async def studio_ctx(request: web.Request, account: Account, **extra: Any) -> dict[str, Any]:
    _, csrf = await viewer(request)
    return base_ctx(request, account, csrf, is_admin=await is_instance_admin(instance_of(request), account.id), **extra)


async def is_instance_admin(p: Instance, account_id: str) -> bool:
    """The core's one definition (core/usecases/context.py ``is_instance_admin``), also used by the
    host rules and the CLI."""
    admin: bool = await p.core.is_instance_admin(account_id)
    return admin


async def own_space(request: web.Request, account: Account) -> Space:
    """The Space in the URL if the caller hosts it; otherwise 404 (another host's Space is not shown)."""
    try:
        space = (await instance_of(request).core.view(request.match_info["space_id"])).space
    except NotFound:
        raise web.HTTPNotFound(text="There is no such Space in your studio.") from None
    if space.host_id != account.id:
        raise web.HTTPNotFound(text="There is no such Space in your studio.")
    return space


def query(**values: str) -> str:
    return urlencode(values)
