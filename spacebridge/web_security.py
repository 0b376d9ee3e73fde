"""Browser-facing protections of the web app: security headers on every response, and WebSocket origins.

Headers go on in ``on_response_prepare``, so pages, static files, the JSON API, plugin routes and
error pages all get them, whichever handler (or the router's own 404) made the response. Scripts
are same-origin only (no inline script anywhere); media may come from ``blob:`` (HLS through Media
Source); sockets connect back to the page's own host. Nothing may frame a page, except the
Telegram Mini App and the room it opens, which Telegram's web clients show in an iframe.

A browser always sends ``Origin`` with a WebSocket handshake, so a page on another site opening
our room's socket (with the visitor's cookies or a link it scraped) is refused with 403 before the
upgrade. The allowed origins are the public URL, the address serve listens on (with ``localhost``
for a loopback address) and ``SPACEBRIDGE_ALLOWED_ORIGINS``; a client that sends no ``Origin``
(a bot, a script, a native app) is not a browser page and is let through.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import ip_address
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

__all__ = ["TELEGRAM_WEB_CLIENTS", "allowed_origins", "check_origin", "form_targets", "origin_of", "policy",
           "security_headers", "setup"]

# Telegram's web clients, which show a Mini App (and the room it opens) in an iframe
TELEGRAM_WEB_CLIENTS = ("https://web.telegram.org", "https://webk.telegram.org", "https://webz.telegram.org")
FRAMED_BY_TELEGRAM = ("/tg/app", "/s/")
FORM_TARGETS: web.AppKey[Callable[[], list[str]]] = web.AppKey("form_targets")


def form_targets(discord_api_base: str, stripe_api_base: str) -> list[str]:
    """The other sites a form post on our pages may redirect to (CSP ``form-action`` covers the
    redirect too, in Chromium): Discord's consent page (Sign in with Discord), Stripe Checkout and
    Connect onboarding, and the test doubles' addresses when those are configured."""
    out = [origin_of(discord_api_base) if discord_api_base else "https://discord.com",
           "https://checkout.stripe.com", "https://connect.stripe.com"]
    if stripe_api_base:
        out.append(origin_of(stripe_api_base))
    return [o for o in dict.fromkeys(out) if o]


def policy(request: web.Request, *, scripts: tuple[str, ...] = (), frames: tuple[str, ...] = ()) -> str:
    """The Content-Security-Policy of a response; a page that embeds another site's widget (the
    sign-in page's Telegram Login Widget) names that site's script and frame origins, and sets the
    header itself (``security_headers`` keeps a handler's own)."""
    host = request.host
    targets = " ".join(request.app[FORM_TARGETS]()) if FORM_TARGETS in request.app else ""
    framers = " ".join(TELEGRAM_WEB_CLIENTS) if request.path.startswith(FRAMED_BY_TELEGRAM) else "'none'"
    return "; ".join((
        "default-src 'self'",
        " ".join(("script-src 'self'", *scripts)),
        *((" ".join(("frame-src 'self'", *frames)),) if frames else ()),
        "style-src 'self' 'unsafe-inline'",  # style attributes; scripts are what CSP must keep out
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "worker-src 'self' blob:",
        f"connect-src 'self' ws://{host} wss://{host}",  # older browsers do not count ws: as 'self'
        "object-src 'none'",
        "base-uri 'none'",
        f"form-action 'self' {targets}".rstrip(),
        f"frame-ancestors {framers}",
    ))


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the headers every response carries (a handler's own CSP is kept)."""
    h = response.headers
    h.setdefault("Content-Security-Policy", policy(request))
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "no-referrer")  # room paths and API queries stay on this site
    h.setdefault("Permissions-Policy", "microphone=(self), camera=(), geolocation=(), payment=()")
    if not request.path.startswith(FRAMED_BY_TELEGRAM):
        h.setdefault("X-Frame-Options", "DENY")  # browsers without frame-ancestors


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of ``url``, normalised (lower-case host, no default port), or None."""
    try:
        u = urlsplit(url.strip())
        port = u.port
    except ValueError:
        return None
    if u.scheme not in ("http", "https") or not u.hostname:
        return None
    default = 443 if u.scheme == "https" else 80
    host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
    return f"{u.scheme}://{host.lower()}" + (f":{port}" if port not in (None, default) else "")


def _is_loopback(hostname: str) -> bool:
    try:
        return ip_address(hostname).is_loopback
    except ValueError:
        return hostname == "localhost"


def allowed_origins(public_url: str, bound_url: str, extra: list[str]) -> set[str]:
    """The page origins whose sockets are accepted (normalised: lower-case host, no default port)."""
    out = {o for o in (origin_of(u) for u in (public_url, bound_url, *extra)) if o}
    b = urlsplit(bound_url) if bound_url else None
    if b is not None and b.hostname and _is_loopback(b.hostname):  # the same process, named another way
        for name in ("127.0.0.1", "localhost", "[::1]"):
            o = origin_of(f"{b.scheme}://{name}" + (f":{b.port}" if b.port else ""))
            if o:
                out.add(o)
    return out


def check_origin(origins: Callable[[], set[str]]) -> Middleware:
    """Middleware: a WebSocket handshake from a page on another origin gets 403 before the upgrade."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and request.headers.get("Upgrade", "").lower() == "websocket":
            if origin_of(origin) not in origins():
                raise web.HTTPForbidden(
                    text=f"This Space's socket does not accept pages from {origin[:100]}: open the room on "
                         "this site, or the operator adds the origin to SPACEBRIDGE_ALLOWED_ORIGINS.")
        return await handler(request)

    return middleware


def setup(app: web.Application, origins: Callable[[], set[str]],
          targets: Callable[[], list[str]] = list) -> None:
    app[FORM_TARGETS] = targets
    app.middlewares.append(check_origin(origins))
    app.on_response_prepare.append(security_headers)
