"""Subscribing from a creator's profile page in Chromium, against localstripe behind the strict Stripe
front (Stripe Billing's gaps filled by tests/support/stripe_subscriptions.py): a guest is asked to sign
in, a signed-in fan who does not subscribe sees the live subscriber-only Space's page naming the tier
that opens it (not a room that can only refuse), subscribes on the profile through Checkout in
subscription mode, comes back to a profile that says they are subscribed, and then the Space's
address is the room, where they hear the host."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web

from core.model.accounts import Actor
from core.model.subscription import SubscriberAccess, SubscriptionStatus
from tests.e2e.test_browser_room import CHROMIUM, FLAGS, LEVEL_JS, chromium_present
from tests.e2e.test_buy_in_page import HostedCheckout
from tests.e2e.test_pages import _serious
from tests.e2e.test_studio import _browser_cookie
from tests.integration.web.test_studio import admin_host
from tests.integration.web.test_studio_money import SECRET, Paid
from tests.support.stripe_site import stripe_site

__all__ = ["chromium_present"]  # the fixture that skips (or fails in CI) without Chromium


class HostedSubscribe(HostedCheckout):
    """Checkout's hosted page for a session in subscription mode too: it names the plan's monthly
    price and a Subscribe button; subscribing makes the customer and the subscription (Stripe's
    signed events go to the webhook) and sends the browser to the session's ``success_url``."""

    async def route(self, request: web.Request) -> web.StreamResponse:
        m = re.fullmatch(r"/pay/(cs_test_\w+)", request.path)
        sess = self.sessions.get(m.group(1)) if m else None
        if sess is None or sess.get("mode") != "subscription":
            return await super().route(request)
        if sess["status"] != "open":
            return web.Response(status=404, text="This Checkout session is not open.")
        if request.method == "POST":
            await self.subs.complete(sess["id"])
            raise web.HTTPSeeOther(sess["success_url"])
        return web.Response(content_type="text/html", text=(
            f"<!doctype html><title>Checkout</title><h1>Subscribe to {html.escape(sess['_price'])}</h1>"
            '<form method="post"><button type="submit">Subscribe</button></form>'))


@pytest.fixture
async def paid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Paid]:
    from tests.support.loopback import LOOPBACK, ensure_loopback_alias

    ensure_loopback_alias()
    async with stripe_site(tmp_path, monkeypatch, HostedSubscribe, SECRET, localstripe_webhooks=False,
                           ice_announce=[LOOPBACK], platform_fee_bps=1000) as (p, fake):
        yield Paid(p, fake)


async def test_subscribe_on_the_profile_then_join_the_subscriber_only_space(paid: Paid) -> None:
    from axe_playwright_python.async_playwright import Axe
    from playwright.async_api import async_playwright

    from billing.subscriptions import SubscriptionSales

    p, fake = paid.p, paid.fake
    hana = await admin_host(p)
    host = Actor(account_id=hana.id)
    sales = SubscriptionSales(p.core, p.stripe, p.url, fee_bps=1000)
    await sales.create_tier(host, "Supporter", 500, "eur", "Members-only Spaces")
    inner = await sales.create_tier(host, "Inner circle", 1500, "eur", "Monthly AMA with Hana")
    space = await p.core.create_space(host, "Inner circle AMA", start_at=p.core.now() + timedelta(hours=1))
    await p.core.memberships.set_subscriber_access(host, space.id, SubscriberAccess(inner.id))
    await p.core.start_space(host, space.id)
    fan = await p.core.ensure_account("web", "fan", "Fan")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        host_ctx = await browser.new_context()
        await host_ctx.add_cookies(await _browser_cookie(p, hana))
        host_page = await host_ctx.new_page()
        await host_page.goto(f"{p.url}/s/{space.id}")  # the host's own Space: the room
        await host_page.wait_for_selector("#stage li[aria-label^='Hana']", timeout=20_000)

        guest = await (await browser.new_context()).new_page()
        await guest.goto(f"{p.url}/s/{space.id}")
        assert "sign in and subscribe" in await guest.get_by_role("alert").inner_text()
        assert await guest.get_by_role("link", name="Sign in to subscribe").count() == 1
        await guest.goto(f"{p.url}/u/{hana.id}")
        assert await guest.get_by_role("heading", name="Inner circle", exact=True).count() == 1
        assert await guest.get_by_role("link", name="Sign in to subscribe").count() == 2

        fan_ctx = await browser.new_context()
        await fan_ctx.add_cookies(await _browser_cookie(p, fan))
        page = await fan_ctx.new_page()
        await page.goto(f"{p.url}/s/{space.id}")  # not a subscriber: the page says which tier opens it
        rule = await page.locator(".tier-rule").inner_text()
        assert "Inner circle (€15.00/month) or above" in rule, rule
        assert "subscribe to join" in await page.get_by_role("alert").inner_text()
        problems = _serious(await Axe().run(page))
        assert not problems, problems
        await page.get_by_role("link", name="Subscribe to Hana").click()
        await page.wait_for_url(re.compile(rf"/u/{hana.id}#tiers$"))
        assert await page.locator(".perks").all_inner_texts() == ["Members-only Spaces", "Monthly AMA with Hana"]
        problems = _serious(await Axe().run(page))
        assert not problems, problems
        await page.get_by_role("button", name="Subscribe · €15.00/month").click()
        await page.wait_for_url(f"{fake.base}/pay/cs_*")  # Stripe Checkout's hosted page
        await page.get_by_role("button", name="Subscribe").click()
        await page.wait_for_url(re.compile(rf"{re.escape(p.url)}/u/{hana.id}\?subscribed={inner.id}"))
        status = page.locator(".sub-status")
        await status.filter(has_text="You're subscribed: Inner circle").wait_for(timeout=20_000)
        subs = await p.core.memberships.subscriptions_of(fan.id)
        assert [(s.tier_id, s.status) for s in subs] == [(inner.id, SubscriptionStatus.ACTIVE)]
        assert await page.get_by_role("button", name=re.compile("^Subscribe")).count() == 0  # one per creator

        await page.goto(f"{p.url}/s/{space.id}")  # now the room, which admits the subscriber
        await page.wait_for_selector("#stage li[aria-label^='Hana']", timeout=30_000)
        await page.wait_for_function("document.getElementById('audio').srcObject !== null", timeout=20_000)
        level = 0.0
        for _ in range(30):  # the fake microphone beeps: measure until a beep is heard
            level = await page.evaluate(LEVEL_JS)
            if level > 0.01:
                break
        assert level > 0.01, f"the subscriber does not hear the host (peak {level})"
        # the subscriber's raised hand reaches the host's queue with the subscriber badge
        await page.get_by_role("button", name="✋ Raise hand").click()
        await host_page.locator("#queue li").filter(has_text="subscriber").wait_for(timeout=20_000)
        await browser.close()


async def test_the_creator_makes_and_archives_tiers_with_the_keyboard(paid: Paid) -> None:
    from axe_playwright_python.async_playwright import Axe
    from playwright.async_api import async_playwright

    p = paid.p
    hana = await admin_host(p)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        for scheme in ("light", "dark"):
            ctx = await browser.new_context(color_scheme=scheme)
            await ctx.add_cookies(await _browser_cookie(p, hana))
            page = await ctx.new_page()
            await page.goto(f"{p.url}/studio")
            await page.get_by_role("navigation", name="Studio").get_by_role("link", name="Subscriptions").click()
            await page.wait_for_url(f"{p.url}/studio/subscriptions")
            if scheme == "light":  # typed and submitted with the keyboard alone
                await page.get_by_label("Name", exact=True).focus()
                await page.keyboard.type("Supporter")
                await page.keyboard.press("Tab")
                await page.keyboard.type("4.50")
                await page.keyboard.press("Tab")  # the currency: EUR already
                await page.keyboard.press("Tab")
                await page.keyboard.type("Members-only Spaces")
                await page.keyboard.press("Tab")
                await page.keyboard.press("Enter")
                await page.get_by_role("status").filter(has_text="Supporter is on sale.").wait_for()
            row = page.get_by_role("row", name=re.compile("^Supporter"))
            assert "€4.50/month" in await row.inner_text()
            problems = _serious(await Axe().run(page))
            assert not problems, (scheme, problems)
        await page.get_by_role("button", name="Take Supporter off sale").focus()
        await page.keyboard.press("Enter")
        await page.get_by_role("status").filter(has_text="Supporter is off sale.").wait_for()
        await browser.close()
    tiers = await p.core.memberships.tiers(hana.id, archived=True)
    assert [(t.name, t.price_minor, t.perks, t.archived) for t in tiers] == [
        ("Supporter", 450, "Members-only Spaces", True)]
