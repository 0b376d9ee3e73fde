"""HTTP routes of the instance itself: health, a small JSON API and the landing page."""

from __future__ import annotations

import asyncio
import hmac
import re
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from yarl import URL

from adapters.webrtc import STATIC
from adapters.webrtc.hls import TOKEN_PARAM, rewrite_playlist
from core.errors import DomainError, NotFound
from core.messages import describe
from core.model.space import Visibility
from plugins.api import VIEWER
from spacebridge.doctor import check_data_dir, database_problem_now, redis_problem
from spacebridge.instance import INSTANCE, Instance


def _platform(request: web.Request) -> Instance:
    return request.app[INSTANCE]


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process and its event loop answer. Whether it can serve is /readyz."""
    p = _platform(request)
    return web.json_response({"ok": True, "database": p.engine.dialect.name})


READY_TIMEOUT_S = 2.0


async def readyz(request: web.Request) -> web.Response:
    """Readiness: each thing serving needs, checked at once with a short timeout (never hangs).

    200 when all pass, else 503; the body names every check, so a probe's log says what is wrong.
    """
    p = _platform(request)
    settings = p.settings

    async def database() -> dict[str, Any]:
        problem = await database_problem_now(p.engine, READY_TIMEOUT_S)
        return {"name": "database", "ok": problem is None, "detail": problem or p.engine.dialect.name}

    async def disk() -> dict[str, Any]:
        try:
            return await asyncio.wait_for(check_data_dir(settings), READY_TIMEOUT_S)
        except TimeoutError:
            return {"name": "data dir", "ok": False, "detail": f"no answer within {READY_TIMEOUT_S:g} s"}

    async def redis() -> dict[str, Any]:
        problem = await redis_problem(settings, timeout_s=READY_TIMEOUT_S / 2)
        return {"name": "redis", "ok": problem is None, "detail": problem or "answers"}

    probes = [database(), disk()] + ([redis()] if settings.redis_url else [])
    checks = list(await asyncio.gather(*probes))
    ok = all(c["ok"] for c in checks)
    return web.json_response({"ok": ok, "checks": checks}, status=200 if ok else 503,
                             headers={"Cache-Control": "no-store"})


async def api_spaces(request: web.Request) -> web.Response:
    p = _platform(request)
    spaces = await p.core.list_spaces(include_unlisted=False)
    return web.json_response({"spaces": [
        {"id": s.id, "title": s.title, "state": s.state.value, "host_id": s.host_id,
         "scheduled_for": s.scheduled_for.isoformat() if s.scheduled_for else None} for s in spaces]})


async def api_space(request: web.Request) -> web.Response:
    """One Space. An unlisted one is found only with a join link's token for it (``?t=``); without
    one the answer is the same as for a Space that does not exist, so ids cannot be probed."""
    p = _platform(request)
    space_id = request.match_info["space_id"]
    try:
        view = await p.core.view(space_id)
        if view.space.visibility == Visibility.UNLISTED:
            try:
                p.tokens.verify(request.query.get("t", ""), p.core.now(), space_id)
            except DomainError:
                raise NotFound("space.not_found", space_id=space_id) from None
    except DomainError as e:
        return web.json_response({"error": {**e.as_dict(), "message": describe(e)}}, status=404)
    return web.json_response(view.as_dict())


async def billing_off(request: web.Request) -> web.Response:
    return web.json_response({"error": {"code": "billing.off", "message":
                                        "Ticket sales are off: set STRIPE_API_KEY and STRIPE_WEBHOOK_SECRET."}},
                             status=503)


HLS_NAME = re.compile(r"^(index\.m3u8|init\.mp4|s\d{1,20}\.m4s)$")
HLS_KEY = re.compile(r"^[a-z0-9]{1,40}-[0-9a-f]{20}$")


def _hls_allowed(request: web.Request, key: str, name: str, token: str) -> None:
    """404 for what is not a Space's HLS file, 403 without a valid, unrevoked token for that Space
    (adapters/webrtc/hls.HlsAccess): no database, one HMAC and a dict lookup per request."""
    rooms = _platform(request).rooms
    if rooms.hls_dir is None or not HLS_KEY.match(key) or not HLS_NAME.match(name):
        raise web.HTTPNotFound()
    space_id = key.rsplit("-", 1)[0]
    if not hmac.compare_digest(rooms.hls_key(space_id), key):
        raise web.HTTPNotFound()
    if rooms.hls_access.subject(space_id, token) is None:
        raise web.HTTPForbidden(text="this HLS link has expired or is not yours; the room page gets a new one",
                                headers={"Cache-Control": "no-store"})


async def hls_file(request: web.Request) -> web.StreamResponse:
    """The HLS files the media process writes, for the holder of a valid token (``?t=``); the
    playlist comes back with that token on every segment. nginx does this in a big deployment
    (``hls_auth``, docs/deploy.md)."""
    hls_dir = _platform(request).rooms.hls_dir
    key, name = request.match_info["key"], request.match_info["name"]
    token = request.query.get(TOKEN_PARAM, "")
    _hls_allowed(request, key, name, token)
    assert hls_dir is not None
    path = hls_dir / key / name
    if not path.is_file():
        raise web.HTTPNotFound()
    if name.endswith(".m3u8"):  # changes every segment; per person (the token is in it)
        try:
            text = await asyncio.to_thread(path.read_text)
        except OSError:
            raise web.HTTPNotFound() from None
        return web.Response(text=rewrite_playlist(text, urlencode({TOKEN_PARAM: token})),
                            content_type="application/vnd.apple.mpegurl", headers={"Cache-Control": "no-cache"})
    response = web.FileResponse(path)
    # segments never change once written; private: a shared cache must not hand them to people unchecked
    response.headers["Cache-Control"] = "private, max-age=60"
    return response


async def hls_auth(request: web.Request) -> web.Response:
    """nginx's ``auth_request`` for /hls/: 204 if the original request (``X-Original-URI``) may be
    served, else 403 (or 404); nginx then serves the file itself."""
    url = URL(request.headers.get("X-Original-URI", ""))
    parts = url.path.split("/")
    if len(parts) != 4 or parts[1] != "hls":
        raise web.HTTPNotFound()
    _hls_allowed(request, parts[2], parts[3], url.query.get(TOKEN_PARAM, ""))
    return web.Response(status=204, headers={"Cache-Control": "no-store"})


async def _viewer_id(request: web.Request) -> str | None:
    from spacebridge.web_common import viewer

    account, _ = await viewer(request)
    return None if account is None else account.id


def setup(app: web.Application) -> None:
    p = app[INSTANCE]
    from adapters.webrtc.socket import Signaling
    from spacebridge import web_pages
    from spacebridge.ticket_desk import command_ports
    from spacebridge.web_common import site_url

    signaling = Signaling(p.core, p.rooms, p.tokens, plugins=p.plugins)
    # the command table's ticket/refund and share links, on the address each socket's browser used
    signaling.ports_for = lambda request: command_ports(p, site_url(request))
    app.router.add_get("/ws/{space_id}", signaling.handle)
    app[VIEWER] = _viewer_id  # who asks a plugin's page (the recording plugin's subscriber-only replays)
    for method, path, handler in p.plugins.routes:
        app.router.add_route(method, path, handler)
    web_pages.setup(app)  # /, /s/ID (the room while live), /s/ID.ics, /u/ID and their buttons
    app.router.add_static("/static/", STATIC)
    if p.stripe is not None and p.settings.stripe_webhook_secret is not None:
        from billing.webhooks import StripeWebhooks

        hooks = StripeWebhooks(p.ledger, p.settings.stripe_webhook_secret.get_secret_value(), gateway=p.stripe)
        app.router.add_post("/webhooks/stripe", hooks.handle)
    else:
        app.router.add_post("/webhooks/stripe", billing_off)
    if p.telegram is not None:
        from adapters.telegram import STATIC as TG_STATIC

        app.router.add_post("/telegram/webhook", p.telegram.handle_webhook)
        app.router.add_post("/api/telegram/webapp", p.telegram.webapp_session)

        async def mini_app(request: web.Request) -> web.FileResponse:
            return web.FileResponse(TG_STATIC / "app.html", headers={"Cache-Control": "no-store"})

        app.router.add_get("/tg/app", mini_app)
        app.router.add_static("/tg/static/", TG_STATIC)
    app.router.add_post("/internal/media/{space_id}/offer", p.rooms.internal_offer)
    app.router.add_post("/internal/media/{space_id}/leave", p.rooms.internal_leave)
    app.router.add_post("/internal/media/{space_id}/candidate", p.rooms.internal_candidate)
    app.router.add_post("/internal/media/{space_id}/hls", p.rooms.internal_hls)
    app.router.add_get("/internal/media/{space_id}/ticks", p.rooms.internal_ticks)
    app.router.add_get("/internal/media/{space_id}/speakers", p.rooms.internal.speakers)
    app.router.add_post("/internal/media/{space_id}/relay", p.rooms.internal.relay)
    app.router.add_get("/internal/media/{space_id}/packets", p.rooms.internal.packets)
    app.router.add_get("/internal/media/status", p.rooms.internal.status)
    if p.rooms.hls_dir is not None:
        p.rooms.hls_dir.mkdir(parents=True, exist_ok=True)
        app.router.add_get("/hls/{key}/{name}", hls_file)
        app.router.add_get("/hls-auth", hls_auth)  # nginx auth_request (docs/deploy.md)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/spaces", api_spaces)
    app.router.add_get("/api/spaces/{space_id}", api_space)
    from spacebridge import web_auth, web_auth_discord, web_auth_telegram, web_join

    web_auth.setup(app)  # /signin, passkeys, sign out (docs/web-accounts.md)
    web_auth_discord.setup(app)  # sign in with Discord (OAuth2)
    web_auth_telegram.setup(app)  # sign in with Telegram (deep link, Login Widget)
    web_join.setup(app)  # POST /api/spaces/{id}/join-token: lasting /s/ID addresses
    from spacebridge import web_studio

    web_studio.setup(app)  # /studio: the host's console (docs/studio.md)
