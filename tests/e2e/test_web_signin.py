"""Accounts on the web in Chromium: passkeys (a CDP virtual authenticator), sessions, CSRF, and the
lasting ``/s/ID`` address (tokens minted from the session, guests on public live Spaces)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from core.clock import SystemClock
from core.model.accounts import Actor
from spacebridge.app import Instance, build, start, stop
from spacebridge.config import load_settings
from tests.support.netguard import CHROMIUM_FLAGS
from tests.support.netguard.plugin import ICE_ALLOWED

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
         "--autoplay-policy=no-user-gesture-required", *CHROMIUM_FLAGS]
AUTHENTICATOR = {"protocol": "ctap2", "transport": "internal", "hasResidentKey": True, "hasUserVerification": True,
                 "isUserVerified": True, "automaticPresenceSimulation": True}


class ShiftedClock(SystemClock):
    """The real time plus an offset a test moves forward (tokens and challenges run out for real)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture(autouse=True)
def chromium_present() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing; .ci/run must install it")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does)")


@pytest.fixture
def clock() -> ShiftedClock:
    return ShiftedClock()


@pytest.fixture
async def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: ShiftedClock) -> AsyncIterator[Instance]:
    """An instance on a free port with a clock the test can move; pages are opened as ``localhost``
    (WebAuthn refuses IP addresses as a relying party)."""
    from tests.support.loopback import LOOPBACK, ensure_loopback_alias

    ensure_loopback_alias()
    monkeypatch.setenv("SPACEBRIDGE_DATA_DIR", str(tmp_path))
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'p.sqlite3'}", ice_announce=[LOOPBACK],
                             job_workers=0)
    p = await build(settings, clock=clock)
    await start(p, "127.0.0.1", 0)
    yield p
    await stop(p)


def local(url: str) -> str:
    return url.replace("://127.0.0.1:", "://localhost:")


async def passkey_context(browser: Any) -> Any:
    """A browser profile with its own virtual passkey authenticator (resident keys, verified user)."""
    ctx = await browser.new_context()
    page = await ctx.new_page()
    cdp = await ctx.new_cdp_session(page)
    await cdp.send("WebAuthn.enable", {"enableUI": False})
    await cdp.send("WebAuthn.addVirtualAuthenticator", {"options": AUTHENTICATOR})
    return ctx


async def sign_up(page: Any, base: str, name: str) -> None:
    await page.goto(f"{base}/signin")
    await page.get_by_label("Display name").fill(name)
    await page.get_by_role("button", name="Create account with a passkey").click()
    await page.wait_for_selector(f"#account-name:has-text('{name}')", timeout=15_000)


async def session_cookie(ctx: Any) -> dict[str, Any]:
    return next(c for c in await ctx.cookies() if c["name"] == "spacebridge_session")


# ---- against `spacebridge serve` ------------------------------------------------------------------
@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACEBRIDGE_", "DISCORD_", "TELEGRAM_",
                                                                      "STRIPE_"))}
    env.update(SPACEBRIDGE_DATA_DIR=str(tmp_path / "data"), SPACEBRIDGE_ICE_ALLOWED_NETWORKS=ICE_ALLOWED)
    if "SPACEBRIDGE_LOG_FILE" in os.environ:
        env["SPACEBRIDGE_LOG_FILE"] = os.environ["SPACEBRIDGE_LOG_FILE"]
    proc = subprocess.Popen([sys.executable, "-m", "spacebridge", "serve", "--port", "0"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert m, f"no URL in {line!r}"
        yield f"http://localhost:{m.group(1)}"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


async def test_passkey_sign_up_sign_out_and_sign_in_on_serve(served: str) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        ctx = await passkey_context(browser)
        page = ctx.pages[0]
        await sign_up(page, served, "Ada Lovelace")
        assert await page.locator("text=1 passkey on this account.").count() == 1
        cookie = await session_cookie(ctx)
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["secure"]  # plain http here
        await page.get_by_role("button", name="Sign out", exact=True).click()
        await page.get_by_role("button", name="Sign in with a passkey").wait_for()
        assert (await (await page.request.get(f"{served}/api/me")).json())["account"] is None
        await page.get_by_role("button", name="Sign in with a passkey").click()
        await page.wait_for_selector("#account-name:has-text('Ada Lovelace')", timeout=15_000)
        # this device's authenticator holds the account's passkey already: it is not made twice
        await page.get_by_role("button", name="Add a passkey on this device").click()
        await page.wait_for_selector("text=This device already has a passkey for this account.", timeout=15_000)
        assert await page.locator("text=1 passkey on this account.").count() == 1
        await browser.close()


# ---- lasting addresses ----------------------------------------------------------------------------
async def test_signed_in_reload_after_expiry_and_guest_listens(site: Instance, clock: ShiftedClock) -> None:
    from playwright.async_api import async_playwright

    core, base = site.core, local(site.url)
    host = await core.ensure_account("web", "host", "Hana Host")
    space = await core.create_space(Actor(account_id=host.id, is_community_admin=True), "Lasting Space")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        hctx = await browser.new_context()
        host_page = await hctx.new_page()
        host_token = site.tokens.issue(space.id, host.id, "speaker", core.now(), ttl_s=24 * 3600)
        await host_page.goto(f"{base}/s/{space.id}#t={host_token}")
        await host_page.wait_for_selector("text=Lasting Space")

        ctx = await passkey_context(browser)
        page = ctx.pages[0]
        await sign_up(page, base, "Finn Fan")
        me = (await (await page.request.get(f"{base}/api/me")).json())["account"]
        # a bot's personal link, then its 15 minutes pass: a reload still gets in, as this person
        link = site.tokens.issue(space.id, me["id"], "listener", core.now())
        await page.goto(f"{base}/s/{space.id}#t={link}")
        await page.wait_for_selector("text=Hosted by Hana Host")
        clock.offset += timedelta(minutes=20)
        await page.reload()
        # in the room as this person: their welcome came (a listener's controls), so the join was committed
        await page.get_by_role("button", name="✋ Raise hand").wait_for(timeout=20_000)
        await page.wait_for_function("() => document.getElementById('audio').srcObject !== null", timeout=20_000)
        view = await core.view(space.id)
        assert me["id"] in await core.run(lambda uow: uow.spaces.present_accounts(space.id))
        assert view.space.state.value == "live"
        assert not await page.locator("#status:has-text('expired')").count()

        # the shared address without a token, nobody signed in: a guest who listens
        guest = await (await browser.new_context()).new_page()
        await guest.goto(f"{base}/s/{space.id}")
        await guest.wait_for_selector("text=Hosted by Hana Host")
        await guest.wait_for_function("() => document.getElementById('audio').srcObject !== null", timeout=20_000)
        assert await guest.get_by_role("button", name="✋ Raise hand").is_hidden()  # guests only listen
        await browser.close()


async def test_guest_refused_where_the_space_is_not_public(site: Instance) -> None:
    from playwright.async_api import async_playwright

    core, base = site.core, local(site.url)
    host = await core.ensure_account("web", "host", "Hana Host")
    space = await core.create_space(Actor(account_id=host.id, is_community_admin=True), "Quiet",
                                    visibility="unlisted")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = await browser.new_page()
        await page.goto(f"{base}/s/{space.id}")
        await page.wait_for_selector("text=Sign in to join this Space", timeout=10_000)
        await browser.close()


# ---- refusals -------------------------------------------------------------------------------------
async def _csrf(http: aiohttp.ClientSession, base: str) -> str:
    async with http.get(f"{base}/api/me") as r:
        token: str = (await r.json())["csrf"]
        return token


async def _accounts(site: Instance) -> int:
    from sqlalchemy import func, select

    from core.storage.tables import AccountRow

    async with site.sessionmaker() as s:
        return int((await s.scalar(select(func.count()).select_from(AccountRow))) or 0)


async def test_forged_cookies_csrf_and_expired_challenges_are_refused(site: Instance, clock: ShiftedClock) -> None:
    from playwright.async_api import async_playwright

    base = local(site.url)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        ada_ctx, bob_ctx = await passkey_context(browser), await passkey_context(browser)
        await sign_up(ada_ctx.pages[0], base, "Ada")
        await sign_up(bob_ctx.pages[0], base, "Bob")
        ada, bob = await session_cookie(ada_ctx), await session_cookie(bob_ctx)
        await browser.close()

    def jar(value: str) -> aiohttp.CookieJar:
        j = aiohttp.CookieJar(unsafe=True)
        j.update_cookies({"spacebridge_session": value}, response_url=URL(base))
        return j

    async def who(value: str) -> Any:
        async with aiohttp.ClientSession(cookie_jar=jar(value)) as http, http.get(f"{base}/api/me") as r:
            return (await r.json())["account"]

    assert (await who(ada["value"]))["display_name"] == "Ada"
    tampered = ada["value"][:-6] + ("AAAAAA" if not ada["value"].endswith("AAAAAA") else "BBBBBB")
    assert await who(tampered) is None
    assert await who("gAAAAABforgedforgedforged") is None

    before = await _accounts(site)
    async with aiohttp.ClientSession(cookie_jar=jar(ada["value"])) as http:
        ada_csrf = await _csrf(http, base)
        url = f"{base}/api/auth/passkey/register/options"
        for headers in ({}, {"X-CSRF-Token": "wrong"}):
            async with http.post(url, json={"display_name": "Mallory"}, headers=headers) as r:
                assert r.status == 403 and (await r.json())["error"]["code"] == "csrf.invalid"
        async with http.post(f"{base}/signout/everywhere", data={"csrf": "nope"}) as r:
            assert r.status == 403
        # an expired challenge: options, then 6 minutes, then an answer
        async with http.post(url, json={}, headers={"X-CSRF-Token": ada_csrf}) as r:
            assert r.status == 200, await r.text()
        clock.offset += timedelta(minutes=6)
        async with http.post(f"{base}/api/auth/passkey/register/verify", json={"credential": {"id": "x"}},
                             headers={"X-CSRF-Token": ada_csrf}) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "passkey.challenge_expired"
        async with http.post(f"{base}/api/auth/passkey/signin/verify", json={"credential": {"id": "x" * 20}},
                             headers={"X-CSRF-Token": ada_csrf}) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "passkey.challenge_expired"
    async with aiohttp.ClientSession(cookie_jar=jar(bob["value"])) as http:
        # Ada's CSRF token with Bob's cookie is refused: the token is bound to its session
        async with http.post(f"{base}/signout/everywhere", headers={"X-CSRF-Token": ada_csrf}) as r:
            assert r.status == 403
    assert (await who(bob["value"]))["display_name"] == "Bob"
    assert await _accounts(site) == before

    # sign out everywhere ends Ada's other sessions (the same cookie on another device) and no one else's
    async with aiohttp.ClientSession(cookie_jar=jar(ada["value"])) as http:
        async with http.post(f"{base}/signout/everywhere", headers={"X-CSRF-Token": await _csrf(http, base)}) as r:
            assert r.status == 200 and (await r.json())["account"] is None
    assert await who(ada["value"]) is None
    assert (await who(bob["value"]))["display_name"] == "Bob"
