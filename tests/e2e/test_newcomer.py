"""A newcomer in Chromium: opens the home page, finds a scheduled Space, is sent to sign in by
Remind me, signs up with a passkey, lands back on the Space, sets the reminder, follows the host
and sees the follower on the host's profile; the calendar file downloads. The sign-in and account
pages pass axe-core (light and dark) with no serious or critical violation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from core.model.accounts import Actor
from spacebridge.app import Instance
from tests.e2e.test_pages import _serious
from tests.e2e.test_web_signin import (
    AUTHENTICATOR,
    CHROMIUM,
    FLAGS,
    chromium_present,
    clock,
    local,
    passkey_context,
    site,
)

__all__ = ["chromium_present", "clock", "site"]  # fixtures: Chromium present, an instance on localhost


async def test_newcomer_finds_a_space_signs_up_gets_a_reminder_and_follows(site: Instance) -> None:
    from playwright.async_api import async_playwright

    core, base = site.core, local(site.url)
    hana = await core.ensure_account("web", "hana", "Hana Host")
    space = await core.create_space(Actor(account_id=hana.id, is_community_admin=True), "Jazz tomorrow",
                                    start_at=core.now() + timedelta(days=1))
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        ctx = await passkey_context(browser)
        page = ctx.pages[0]
        await page.goto(f"{base}/")
        await page.get_by_role("link", name="Jazz tomorrow", exact=True).click()
        await page.wait_for_url(f"{base}/s/{space.id}")
        assert await page.locator("h1").inner_text() == "Jazz tomorrow"
        # the calendar file is there before signing in
        async with page.expect_download() as download:
            await page.get_by_role("link", name="Add to calendar", exact=True).click()
        ics = (await download.value).suggested_filename
        assert ics.endswith(".ics")
        # Remind me needs an account: sign up with a passkey, then back to the Space
        await page.get_by_role("link", name="Sign in to get a reminder").click()
        await page.get_by_label("Display name").fill("Nia Newcomer")
        await page.get_by_role("button", name="Create account with a passkey").click()
        await page.wait_for_url(f"{base}/s/{space.id}", timeout=15_000)
        await page.get_by_role("button", name="Remind me").click()
        await page.get_by_role("button", name="Reminder set ✓").wait_for()
        assert await page.get_by_role("button", name="Reminder set ✓").get_attribute("aria-pressed") == "true"
        await page.get_by_role("button", name="Follow Hana Host").click()
        await page.get_by_role("button", name="Following Hana Host ✓").wait_for()
        # the host's profile counts her; a reload keeps both (they are the account's, not the page's)
        await page.goto(f"{base}/u/{hana.id}")
        assert await page.locator(".followers").inner_text() == "1 follower"
        assert await page.get_by_role("button", name="Following ✓").count() == 1
        await page.goto(f"{base}/s/{space.id}")
        assert await page.get_by_role("button", name="Reminder set ✓").count() == 1
        me = (await (await page.request.get(f"{base}/api/me")).json())["account"]
        assert me["display_name"] == "Nia Newcomer"
        await browser.close()


async def page_with_passkeys(browser: Any, scheme: str) -> Any:
    """A page in the given colour scheme whose browser profile has a virtual passkey authenticator."""
    ctx = await browser.new_context(color_scheme=scheme)
    page = await ctx.new_page()
    cdp = await ctx.new_cdp_session(page)
    await cdp.send("WebAuthn.enable", {"enableUI": False})
    await cdp.send("WebAuthn.addVirtualAuthenticator", {"options": AUTHENTICATOR})
    return page


async def test_sign_in_and_account_pages_pass_axe(site: Instance) -> None:
    from axe_playwright_python.async_playwright import Axe
    from playwright.async_api import async_playwright

    base, axe = local(site.url), Axe()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        for scheme in ("light", "dark"):
            page = await page_with_passkeys(browser, scheme)
            await page.goto(f"{base}/signin")
            problems = _serious(await axe.run(page))
            assert not problems, (scheme, "sign-in", problems)
            await page.get_by_label("Display name").fill(f"Axe {scheme}")
            await page.get_by_role("button", name="Create account with a passkey").click()
            await page.wait_for_selector(f"#account-name:has-text('Axe {scheme}')", timeout=15_000)
            problems = _serious(await axe.run(page))
            assert not problems, (scheme, "account", problems)
        await browser.close()
