"""Buying a ticket from the page in Chromium, against localstripe behind the strict Stripe front: a
live ticketed Space's address shows its price and Buy a ticket (not a room that can only refuse),
the form post goes to Stripe Checkout, the customer pays there, Checkout sends the browser back to
the success URL, the page waits for the payment's webhook and becomes the room, where the buyer
hears the host."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web

from core.model.accounts import Actor
from core.model.space import Ticketing
from tests.e2e.test_browser_room import CHROMIUM, FLAGS, LEVEL_JS, chromium_present
from tests.e2e.test_pages import _serious
from tests.e2e.test_studio import _browser_cookie
from tests.integration.web.test_studio import admin_host
from tests.integration.web.test_studio_money import SECRET, Paid
from tests.support.stripe_site import stripe_site
from tests.support.stripe_strict import StrictStripe

__all__ = ["chromium_present"]  # the fixture that skips (or fails in CI) without Chromium


class HostedCheckout(StrictStripe):
    """The strict Stripe front plus Checkout's hosted payment page, which localstripe lacks: the
    session's ``url`` shows the amount and a Pay button; paying completes the session (a real
    localstripe PaymentIntent, the signed ``checkout.session.completed``) and sends the browser to
    the session's ``success_url``, as Checkout does. The page is Stripe's web UI, not its API, so
    it is served beside the API's checks rather than through them."""

    async def route(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/favicon.ico":
            return web.Response(status=404)
        m = re.fullmatch(r"/pay/(cs_test_\w+)", request.path)
        if m is None:
            return await super().route(request)
        sess = self.sessions.get(m.group(1))
        if sess is None or sess["status"] != "open":
            return web.Response(status=404, text="This Checkout session is not open.")
        if request.method == "POST":
            await self.complete_session(sess["id"])
            raise web.HTTPSeeOther(sess["success_url"])
        amount = f"{sess['amount_total'] / 100:.2f} {sess['currency'].upper()}"
        return web.Response(content_type="text/html", text=(
            f"<!doctype html><title>Checkout</title><h1>Pay {html.escape(amount)}</h1>"
            f'<form method="post"><button type="submit">Pay {html.escape(amount)}</button></form>'))


@pytest.fixture
async def paid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Paid]:
    """An instance selling tickets through the strict front (with its hosted page) and localstripe."""
    from tests.support.loopback import LOOPBACK, ensure_loopback_alias

    ensure_loopback_alias()
    async with stripe_site(tmp_path, monkeypatch, HostedCheckout, SECRET, ice_announce=[LOOPBACK]) as (p, fake):
        yield Paid(p, fake)


async def test_buy_a_ticket_in_the_page_and_land_in_the_room(paid: Paid) -> None:
    from axe_playwright_python.async_playwright import Axe
    from playwright.async_api import async_playwright

    p, fake = paid.p, paid.fake
    hana = await admin_host(p)
    host = Actor(account_id=hana.id)
    space = await p.core.create_space(host, "Paid live show", start_at=p.core.now() + timedelta(hours=1))
    await p.core.set_ticketing(host, space.id, Ticketing(price_minor=700, currency="eur", capacity=10))
    await p.core.start_space(host, space.id)
    fan = await p.core.ensure_account("web", "fan", "Fan")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        host_ctx = await browser.new_context()
        await host_ctx.add_cookies(await _browser_cookie(p, hana))
        host_page = await host_ctx.new_page()
        await host_page.goto(f"{p.url}/s/{space.id}")  # the host's own Space: the room, no ticket
        await host_page.wait_for_selector("#stage li[aria-label^='Hana']", timeout=20_000)

        # not signed in: the price, and a way to sign in to buy
        guest = await (await browser.new_context()).new_page()
        await guest.goto(f"{p.url}/s/{space.id}")
        assert await guest.locator(".price").inner_text() == "€7.00 · 10 seats"
        assert await guest.get_by_role("link", name="Sign in to buy a ticket").count() == 1

        fan_ctx = await browser.new_context()
        await fan_ctx.add_cookies(await _browser_cookie(p, fan))
        page = await fan_ctx.new_page()
        await page.goto(f"{p.url}/s/{space.id}")
        assert await page.get_by_role("heading", name="Live now").count() == 1
        problems = _serious(await Axe().run(page))
        assert not problems, problems
        await page.get_by_role("button", name="Buy a ticket · €7.00").click()
        await page.wait_for_url(f"{fake.base}/pay/cs_*")  # Stripe Checkout's hosted page
        # the customer pays; Checkout sends the browser back to the success URL on this site,
        # whose page waits for the payment's webhook if it has not come yet, then is the room
        await page.get_by_role("button", name="Pay 7.00 EUR").click()
        await page.wait_for_url(re.compile(rf"{re.escape(p.url)}/s/{space.id}\?paid=\w+"))
        await page.wait_for_selector("#stage li[aria-label^='Hana']", timeout=30_000)  # the room
        await page.wait_for_function("document.getElementById('audio').srcObject !== null", timeout=20_000)
        level = 0.0
        for _ in range(30):  # the fake microphone beeps: measure until a beep is heard
            level = await page.evaluate(LEVEL_JS)
            if level > 0.01:
                break
        assert level > 0.01, f"the buyer does not hear the host (peak {level})"
        await browser.close()
