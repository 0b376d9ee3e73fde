"""What a browser is told and allowed: security headers on every response, WebSocket origins, unlisted Spaces.

A real instance on a free port (with the Telegram bot against the fake Bot API, so the Mini App page
exists) answers real HTTP requests and WebSocket handshakes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from core.model.accounts import Actor
from spacebridge.app import Instance, build, start, stop
from spacebridge.config import load_settings
from tests.support.telegram_fake import FakeBotAPI

EXTRA_ORIGIN = "https://rooms.example.org"


@pytest.fixture
async def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Instance]:
    monkeypatch.setenv("SPACEBRIDGE_DATA_DIR", str(tmp_path))
    fake = await FakeBotAPI().start()
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'w.sqlite3'}", job_workers=0,
                             telegram_bot_token=fake.token, telegram_api_base=fake.base_url,
                             allowed_origins=f"{EXTRA_ORIGIN}/")
    p = await build(settings)
    await start(p, "127.0.0.1", 0)
    try:
        yield p
    finally:
        await stop(p)
        await fake.stop()


async def _space(p: Instance, *, unlisted: bool) -> str:
    host = await p.core.create_account("Host")
    space = await p.core.create_space(Actor(account_id=host.id, platform="web", is_operator=True),
                                      "Secret plans" if unlisted else "Open chat",
                                      visibility="unlisted" if unlisted else "public")
    return space.id


ROUTES = [  # (method, path, status) for each family: pages, static files, API, errors, plugins, webhooks
    ("GET", "/", 200), ("GET", "/s/{space}", 200), ("GET", "/static/room.js", 200), ("GET", "/static/room.css", 200),
    ("GET", "/tg/static/app.js", 200), ("GET", "/api/spaces", 200), ("GET", "/api/spaces/{space}", 200),
    ("GET", "/api/spaces/nosuchspace", 404), ("GET", "/healthz", 200), ("GET", "/no/such/page", 404),
    ("GET", "/static/nothing.js", 404), ("GET", "/p/recording/r/replay.js", 200),
    ("GET", "/p/recording/r/norecording", 404),
    ("GET", "/hls/abc-0123456789abcdef0123/index.m3u8", 404), ("POST", "/webhooks/stripe", 503),
    ("POST", "/internal/media/{space}/offer", 403), ("GET", "/ws/{space}", 400),
]


async def test_every_response_carries_the_security_headers(site: Instance) -> None:
    space = await _space(site, unlisted=False)
    async with aiohttp.ClientSession() as http:
        for method, path, status in [*ROUTES, ("GET", "/tg/app", 200)]:
            async with http.request(method, site.bound_url + path.format(space=space)) as r:
                assert r.status == status, (path, r.status, await r.text())
                csp = r.headers.get("Content-Security-Policy", "")
                assert "script-src 'self'" in csp and "object-src 'none'" in csp, (path, csp)
                assert "media-src 'self' blob:" in csp and f"ws://{r.url.host}:{r.url.port}" in csp, (path, csp)
                assert r.headers.get("X-Content-Type-Options") == "nosniff", path
                assert r.headers.get("Referrer-Policy") == "no-referrer", path
                assert "microphone=(self)" in r.headers.get("Permissions-Policy", ""), path
                framed = path == "/tg/app" or path.startswith("/s/")
                if framed:  # the Mini App, and the room it opens, live in Telegram's web clients' iframes
                    assert "frame-ancestors https://web.telegram.org" in csp and "X-Frame-Options" not in r.headers
                else:
                    assert "frame-ancestors 'none'" in csp and r.headers.get("X-Frame-Options") == "DENY", path


async def test_pages_run_no_inline_script(site: Instance) -> None:
    """script-src 'self' would silently break an inline script: every page loads its code from a file."""
    space = await _space(site, unlisted=False)
    async with aiohttp.ClientSession() as http:
        for path in ("/", f"/s/{space}", "/tg/app"):
            async with http.get(site.bound_url + path) as r:
                page = await r.text()
            assert "<script>" not in page and " on" not in page.split("<body", 1)[-1].split(">", 1)[0], path
    from plugins.recording import STATIC

    assert "<script>" not in (STATIC / "replay.html").read_text()


async def _handshake(url: str, origin: str | None) -> int:
    headers = {"Origin": origin} if origin is not None else {}
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(url, headers=headers) as ws:
                await ws.close()
                return 101
        except aiohttp.WSServerHandshakeError as e:
            return e.status


async def test_websocket_origins(site: Instance) -> None:
    space = await _space(site, unlisted=False)
    port = site.bound_url.rsplit(":", 1)[1]
    ws = site.bound_url.replace("http://", "ws://") + f"/ws/{space}"
    before = (await site.core.view(space)).listener_count
    for refused in ("http://evil.example", f"http://127.0.0.1:{int(port) + 1}", f"https://127.0.0.1:{port}",
                    "null", "https://rooms.example.org.evil.example", "not a url"):
        assert await _handshake(ws, refused) == 403, refused
    assert (await site.core.view(space)).listener_count == before  # a refused page joined no one
    for allowed in (site.bound_url, f"http://localhost:{port}", EXTRA_ORIGIN, "HTTPS://Rooms.Example.Org:443", None):
        assert await _handshake(ws, allowed) == 101, allowed
    async with aiohttp.ClientSession() as http:  # the refusal says what to do
        async with http.get(ws.replace("ws://", "http://"), headers={
                "Origin": "http://evil.example", "Upgrade": "websocket", "Connection": "Upgrade",
                "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as r:
            assert r.status == 403 and "SPACEBRIDGE_ALLOWED_ORIGINS" in await r.text()


async def test_public_url_is_an_allowed_origin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPACEBRIDGE_DATA_DIR", str(tmp_path))
    p = await build(load_settings(database_url=f"sqlite:///{tmp_path / 'o.sqlite3'}", job_workers=0,
                                  public_url="https://spaces.example.com/"))
    await start(p, "127.0.0.1", 0)
    try:
        space = await _space(p, unlisted=False)
        ws = p.bound_url.replace("http://", "ws://") + f"/ws/{space}"
        assert await _handshake(ws, "https://spaces.example.com") == 101
        assert await _handshake(ws, "http://spaces.example.com") == 403
    finally:
        await stop(p)


async def test_unlisted_space_is_found_only_with_its_link(site: Instance) -> None:
    unlisted, public = await _space(site, unlisted=True), await _space(site, unlisted=False)
    other = await _space(site, unlisted=True)
    host = (await site.core.view(unlisted)).space.host_id
    now = site.core.now()
    good = site.tokens.issue(unlisted, host, "listener", now)
    guest = site.tokens.issue(unlisted, None, "guest", now)
    wrong_space = site.tokens.issue(other, host, "listener", now)
    expired = site.tokens.issue(unlisted, host, "listener", now, ttl_s=-60)
    api = site.bound_url + "/api/spaces"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{api}/nosuchspace") as r:
            assert r.status == 404
            unknown = (await r.json())["error"]
        for query in ("", "?t=", f"?t={wrong_space}", f"?t={expired}", "?t=garbage.token", f"?t={good}x"):
            async with http.get(f"{api}/{unlisted}{query}") as r:
                assert r.status == 404, query
                err = (await r.json())["error"]
                # word for word what an id that does not exist gets: an id cannot be probed
                assert {**err, "space_id": "x", "message": err["message"].replace(unlisted, "x")} == \
                    {**unknown, "space_id": "x", "message": unknown["message"].replace("nosuchspace", "x")}
        for token in (good, guest):
            async with http.get(f"{api}/{unlisted}", params={"t": token}) as r:
                assert r.status == 200 and (await r.json())["title"] == "Secret plans"
        async with http.get(f"{api}/{public}") as r:
            assert r.status == 200
        async with http.get(api) as r:
            listed = {s["id"] for s in (await r.json())["spaces"]}
        assert public in listed and unlisted not in listed and other not in listed
        async with http.get(site.bound_url + "/") as r:
            assert "Open chat" in (page := await r.text()) and "Secret plans" not in page


CSP_WATCH = """window.__csp = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));"""


async def test_room_page_in_chromium_breaks_no_policy(platform: Instance) -> None:
    """CSP violations break a page silently: the room is used for real and must report none."""
    import shutil

    from tests.e2e.test_browser_room import CHROMIUM, FLAGS

    if shutil.which(CHROMIUM) is None:
        pytest.skip("Debian's chromium is not installed")
    from playwright.async_api import ConsoleMessage, async_playwright

    core = platform.core
    host = await core.ensure_account("web", "csp-host", "Cleo Host")
    space = await core.create_space(Actor(account_id=host.id, is_community_admin=True), "Policy Space")
    url = f"{platform.url}/s/{space.id}#t={platform.tokens.issue(space.id, host.id, 'speaker', core.now())}"
    console: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = await (await browser.new_context()).new_page()

            def seen(m: ConsoleMessage) -> None:
                console.append(m.text)

            page.on("console", seen)
            await page.add_init_script(CSP_WATCH)
            await page.goto(url)
            await page.wait_for_selector("text=Policy Space")
            await page.wait_for_selector("#stage li.speaking[aria-label^='Cleo Host']", timeout=15_000)  # media up
            violations = await page.evaluate("window.__csp")
            for path in ("/", "/static/room.css"):
                await page.goto(platform.url + path)
            violations += await page.evaluate("window.__csp")
        finally:
            await browser.close()
    assert violations == [] and not [t for t in console if "Content Security Policy" in t], (violations, console)
