"""Sign in with Discord and with Telegram from the sign-in page in Chromium, against the local fakes
(the fake Discord's OAuth2 consent page, the fake Bot API delivering ``/start login_CODE`` to the
real bot), and a chat app linked to an account made with a passkey. What is checked is what the
person sees on the page: who they are signed in as and which chat apps are linked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from spacebridge.app import Instance, build, start, stop
from spacebridge.config import load_settings
from tests.e2e.test_web_signin import CHROMIUM, FLAGS, chromium_present, local, passkey_context, sign_up
from tests.support.discord_fake import FakeDiscord
from tests.support.telegram_fake import FakeBotAPI

__all__ = ["chromium_present"]  # the fixture that skips (or fails in CI) without Chromium

SECRET = "oauth-client-secret-for-tests"
ALICE, BOB = 300000000000000001, 300000000000000002  # Discord users
TESS, TOM = 555, 556  # Telegram users


@dataclass
class Site:
    p: Instance
    discord: FakeDiscord
    telegram: FakeBotAPI

    @property
    def base(self) -> str:
        """The address the browser uses: ``localhost`` (passkeys refuse IP addresses)."""
        return local(self.p.url.rstrip("/"))


@pytest.fixture
async def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Site]:
    discord, telegram = await FakeDiscord().start(), await FakeBotAPI().start()
    discord.users[ALICE] = {"id": str(ALICE), "username": "alice", "global_name": "Alice", "discriminator": "0",
                            "avatar": None}
    discord.users[BOB] = {"id": str(BOB), "username": "bob", "global_name": "Bob", "discriminator": "0",
                          "avatar": None}
    monkeypatch.setenv("SPACEBRIDGE_DATA_DIR", str(tmp_path))
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'c.sqlite3'}", job_workers=0,
                             discord_api_base=discord.api_base, discord_client_id=str(100000000000000001),
                             discord_client_secret=SECRET, telegram_bot_token=telegram.token,
                             telegram_api_base=telegram.base_url, telegram_bot_username="spacebridge_bot",
                             telegram_login_widget=True)
    p = await build(settings)
    await start(p, "127.0.0.1", 0)
    # no public URL: Discord must send the browser back to the address it used (localhost)
    discord.oauth_app(SECRET, [f"{local(p.url.rstrip('/'))}/signin/discord/callback"])
    yield Site(p, discord, telegram)
    await stop(p)
    await telegram.stop()
    await discord.stop()


async def linked(page: Any) -> str:
    return str(await page.locator("#linked").inner_text())


async def test_sign_in_with_discord_then_link_discord_to_a_passkey_account(site: Site) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        # Alice has no account: the sign-in page -> Discord's consent page -> back, signed in
        site.discord.consent(ALICE)
        page = await (await browser.new_context()).new_page()
        await page.goto(f"{site.base}/signin")
        await page.get_by_role("button", name="Sign in with Discord").click()
        await page.wait_for_selector("#account-name:has-text('Alice')", timeout=15_000)
        assert page.url == f"{site.base}/signin"
        assert await linked(page) == "Linked: Discord."
        assert site.discord.oauth_requests[-1]["redirect_uri"] == f"{site.base}/signin/discord/callback"
        alice = (await (await page.request.get(f"{site.base}/api/me")).json())["account"]

        # Bea signs up with a passkey, then links her Discord account (Bob's user) from the same page
        ctx = await passkey_context(browser)
        bea = ctx.pages[0]
        await sign_up(bea, site.base, "Bea")
        assert await linked(bea) == "Linked: no chat apps yet."
        site.discord.consent(BOB)
        await bea.get_by_role("button", name="Link Discord").click()
        await bea.wait_for_selector("#linked:has-text('Linked: Discord.')", timeout=15_000)
        assert await bea.locator("#account-name").inner_text() == "Bea"  # still her account, not a new one
        assert await bea.get_by_role("button", name="Link Discord").count() == 0
        me = (await (await bea.request.get(f"{site.base}/api/me")).json())["account"]
        assert me["id"] != alice["id"]

        # signed out, Discord alone now signs in to that same account; so does her passkey
        await bea.get_by_role("button", name="Sign out", exact=True).click()
        await bea.get_by_role("button", name="Sign in with Discord").click()
        await bea.wait_for_selector("#account-name:has-text('Bea')", timeout=15_000)
        assert (await (await bea.request.get(f"{site.base}/api/me")).json())["account"] == me
        await bea.get_by_role("button", name="Sign out", exact=True).click()
        await bea.get_by_role("button", name="Sign in with a passkey").click()
        await bea.wait_for_selector("#account-name:has-text('Bea')", timeout=15_000)
        assert await linked(bea) == "Linked: Discord."
        await browser.close()


async def start_telegram(page: Any, site: Site, button: str) -> str:
    """Press the Telegram button and read the code the page shows; the deep link carries it."""
    await page.get_by_role("button", name=button).click()
    command = page.locator("#telegram-command")
    await command.wait_for(state="visible", timeout=15_000)
    text = str(await command.inner_text())
    assert text.startswith("/start login_")
    code = text.removeprefix("/start login_")
    assert await page.locator("#telegram-link").get_attribute("href") == \
        f"https://t.me/spacebridge_bot?start=login_{code}"
    assert code in await page.locator("#auth-status").inner_text()
    return code


async def test_sign_in_with_telegram_then_link_telegram_to_a_passkey_account(site: Site) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = await (await browser.new_context()).new_page()
        await page.goto(f"{site.base}/signin")
        code = await start_telegram(page, site, "Sign in with Telegram")
        # Tess presses Start in Telegram: the bot gets /start login_CODE and confirms it
        mark = len(site.telegram.calls)
        await site.telegram.send_text(TESS, TESS, f"/start login_{code}", name="Tess")
        assert "Confirmed" in str((await site.telegram.reply_to(TESS, mark)).params["text"])
        # the page, on its own poll, is signed in: nobody reloads it
        await page.wait_for_selector("#account-name:has-text('Tess')", timeout=20_000)
        assert await linked(page) == "Linked: Telegram."

        ctx = await passkey_context(browser)
        una = ctx.pages[0]
        await sign_up(una, site.base, "Una")
        code = await start_telegram(una, site, "Link Telegram")
        mark = len(site.telegram.calls)
        await site.telegram.send_text(TOM, TOM, f"/start login_{code}", name="Tom")
        assert "Confirmed" in str((await site.telegram.reply_to(TOM, mark)).params["text"])
        await una.wait_for_selector("#linked:has-text('Linked: Telegram.')", timeout=20_000)
        assert await una.locator("#account-name").inner_text() == "Una"
        una_me = (await (await una.request.get(f"{site.base}/api/me")).json())["account"]
        tess_me = (await (await page.request.get(f"{site.base}/api/me")).json())["account"]
        assert una_me["id"] != tess_me["id"]
        # the bot now knows Tom as Una: his Telegram identity belongs to her account
        assert (await site.p.core.ensure_account("telegram", str(TOM), "Tom")).id == una_me["id"]
        await browser.close()


# Every CSP violation and every failed load (a script Chromium may fetch but cannot reach here: no
# name but localhost resolves), recorded from the first line of the page on.
WATCH = """window.__csp = []; window.__failed = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
document.addEventListener('error',
  (e) => { if (e.target && e.target.src) window.__failed.push(e.target.src); }, true);"""


async def test_the_login_widget_may_load_on_the_sign_in_page(site: Site) -> None:
    """With the Login Widget configured the page embeds Telegram's script, which loads its frame:
    the page's policy lets both in (the fetch itself fails here, offline, which is the point: the
    browser tried instead of refusing it)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = await (await browser.new_context()).new_page()
        await page.add_init_script(WATCH)
        response = await page.goto(f"{site.base}/signin")
        assert response is not None
        csp = (await response.all_headers())["content-security-policy"]
        assert "script-src 'self' https://telegram.org" in csp and "frame-src 'self' https://oauth.telegram.org" in csp
        for _ in range(100):  # polled: the page's policy forbids wait_for_function's eval
            if await page.evaluate("window.__failed.length + window.__csp.length"):
                break
            await page.wait_for_timeout(100)
        assert await page.evaluate("window.__csp") == []
        assert await page.evaluate("window.__failed") == ["https://telegram.org/js/telegram-widget.js?22"]
        await browser.close()
