"""Stripe Connect onboarding from the studio in Chromium, against localstripe behind the strict
Stripe front (issue 17): the host sets up payouts, leaves Stripe's onboarding half-way and comes
back to a page that says Stripe is not done; a buyer meanwhile is told tickets are not on sale and
nothing is charged; the host's used onboarding link sends them through the refresh page to a new
one; once they finish, the return page says they are set, and the next sale is a destination
charge to the host's account (the fee kept) bought through Checkout.

The browser calls the instance ``localhost`` while it listens on 127.0.0.1 off its configured port,
so Stripe's return, refresh and Checkout success URLs must be that address (where the cookie is)."""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from core.model.accounts import Actor
from core.model.space import Ticketing
from core.model.ticket import TicketStatus
from tests.e2e.test_browser_room import CHROMIUM, FLAGS, chromium_present
from tests.e2e.test_buy_in_page import HostedCheckout
from tests.e2e.test_pages import _serious
from tests.integration.web.test_studio import admin_host, cookie
from tests.integration.web.test_studio_money import SECRET, Paid
from tests.support.stripe_site import stripe_site

__all__ = ["chromium_present"]  # the fixture that skips (or fails in CI) without Chromium


class HostedConnect(HostedCheckout):
    """Checkout's hosted page plus Connect onboarding's, which localstripe lacks. As Stripe does,
    every Account Link is its own single-use address that carries the ``return_url`` and
    ``refresh_url`` it was made with: opening it again sends the browser to ``refresh_url``; on the
    page, "Agree and submit" finishes onboarding (charges enabled, capabilities active) and "Save
    and return later" leaves it unfinished, both ending at ``return_url``."""

    def __init__(self, localstripe: str, **kwargs: Any) -> None:
        super().__init__(localstripe, **kwargs)
        self.links: dict[str, dict[str, Any]] = {}

    async def route(self, request: web.Request) -> web.StreamResponse:
        m = re.fullmatch(r"/connect/onboarding/(acct_\w+)/(\w+)", request.path)
        if m is not None:
            return await self._onboarding(request, m.group(1), m.group(2))
        response = await super().route(request)
        if request.method == "POST" and request.path == "/v1/account_links" and response.status == 200:
            form = self.requests[-1]["form"]
            assert isinstance(response, web.Response) and isinstance(response.body, bytes)
            body = json.loads(response.body)
            key = f"l{len(self.links)}"
            self.links[key] = {"account": form["account"], "return_url": form["return_url"],
                               "refresh_url": form["refresh_url"], "opened": False}
            body["url"] = f"{self.base}/connect/onboarding/{form['account']}/{key}"
            return web.json_response(body)
        return response

    async def _onboarding(self, request: web.Request, acct: str, key: str) -> web.StreamResponse:
        link = self.links.get(key)
        if link is None or link["account"] != acct:
            return web.Response(status=404, text="No such account link.")
        if request.method == "POST":
            if (await request.post()).get("action") == "submit":
                self.finish_onboarding(acct)
            raise web.HTTPSeeOther(link["return_url"])
        if link["opened"]:  # single use: Stripe sends the browser to the refresh URL for a new link
            raise web.HTTPSeeOther(link["refresh_url"])
        link["opened"] = True
        return web.Response(content_type="text/html", text=(
            f"<!doctype html><title>Stripe Express</title><h1>Set up payouts for {html.escape(acct)}</h1>"
            '<form method="post"><button name="action" value="submit">Agree and submit</button>'
            '<button name="action" value="later">Save and return later</button></form>'))


@pytest.fixture
async def paid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Paid]:
    """An instance selling tickets through the strict front (with Stripe's hosted pages) over localstripe."""
    async with stripe_site(tmp_path, monkeypatch, HostedConnect, SECRET, platform_fee_bps=1000) as (p, fake):
        yield Paid(p, fake)


async def _until(check: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_host_onboards_with_stripe_and_sales_wait_for_it(paid: Paid) -> None:
    from axe_playwright_python.async_playwright import Axe
    from playwright.async_api import async_playwright

    p, fake = paid.p, paid.fake
    site = p.url.replace("://127.0.0.1:", "://localhost:")
    assert p.settings.base_url() != p.url  # the configured port is not the one listening
    hana = await admin_host(p)
    host = Actor(account_id=hana.id)
    space = await p.core.create_space(host, "Paid talk", start_at=p.core.now() + timedelta(hours=2))
    await p.core.set_ticketing(host, space.id, Ticketing(price_minor=700, currency="eur", capacity=10))
    fan = await p.core.ensure_account("web", "fan", "Fan")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        host_ctx = await browser.new_context()
        await host_ctx.add_cookies([{"name": k, "value": v, "url": site} for k, v in (await cookie(p, hana)).items()])
        page = await host_ctx.new_page()
        await page.goto(f"{site}/studio")
        assert "Not set up" in await page.locator(".payout-state").inner_text()
        await page.get_by_role("link", name="Manage payouts").click()
        await page.wait_for_url(f"{site}/studio/payouts")
        assert not _serious(await Axe().run(page))
        await page.get_by_role("button", name="Set up payouts with Stripe").click()
        await page.wait_for_url(f"{fake.base}/connect/onboarding/acct_*/*")  # Stripe's onboarding
        first_link = page.url
        acct = await p.ledger.payout_account(hana.id)
        assert acct is not None and first_link.split("/")[-2] == acct

        # half-way: back on the return page, which asks Stripe and says it is not done
        await page.get_by_role("button", name="Save and return later").click()
        await page.wait_for_url(f"{site}/studio/payouts/return")
        assert await page.get_by_role("status").inner_text() == "Stripe has not finished checking your account yet."
        assert await page.locator(".payout-state").get_attribute("data-ready") == "no"
        assert "Finish Stripe's onboarding to sell tickets." in await page.locator(".payout-state").inner_text()

        # a buyer now: refused in words, and Stripe is asked for no Checkout session
        fan_ctx = await browser.new_context()
        await fan_ctx.add_cookies([{"name": k, "value": v, "url": site} for k, v in (await cookie(p, fan)).items()])
        buyer = await fan_ctx.new_page()
        await buyer.goto(f"{site}/s/{space.id}")
        await buyer.get_by_role("button", name="Buy a ticket · €7.00").click()
        alert = await buyer.get_by_role("alert").inner_text()
        assert alert.startswith("Tickets are not on sale yet: the host has not finished setting up payouts"), alert
        assert fake.sessions == {}

        visited: list[str] = []
        page.on("request", lambda r: visited.append(r.url))
        # the used link again: Stripe sends the host to the refresh page, which makes a new link
        await page.goto(first_link)
        await page.wait_for_url(f"{fake.base}/connect/onboarding/{acct}/*")
        assert page.url != first_link and f"{site}/studio/payouts/refresh" in visited
        await page.get_by_role("button", name="Agree and submit").click()
        await page.wait_for_url(f"{site}/studio/payouts/return")
        assert await page.get_by_role("status").inner_text() == "You are all set."
        assert await page.locator(".payout-state").get_attribute("data-ready") == "yes"
        assert await page.get_by_role("button", name="Update your Stripe details").count() == 1
        await page.goto(f"{site}/studio")
        assert await page.locator(".payout-state").inner_text() == "Ready: ticket money goes to your Stripe account."

        # now the sale goes through Checkout as a destination charge to the host, less the fee
        await buyer.goto(f"{site}/s/{space.id}")
        await buyer.get_by_role("button", name="Buy a ticket · €7.00").click()
        await buyer.wait_for_url(f"{fake.base}/pay/cs_*")
        session = fake.sessions[buyer.url.rsplit("/", 1)[1]]
        assert session["success_url"].startswith(f"{site}/s/{space.id}?paid=")
        await buyer.get_by_role("button", name="Pay 7.00 EUR").click()
        await buyer.wait_for_url(re.compile(rf"{re.escape(site)}/s/{space.id}\?paid=\w+"))
        ticket_id = buyer.url.rsplit("=", 1)[1]

        async def settled() -> bool:
            return (await p.ledger.get(ticket_id)).status == TicketStatus.PAID

        await _until(settled, "the ticket was never paid")
        assert [(t["destination"], t["amount"]) for t in await fake.transfers()] == [(acct, 630)]
        await browser.close()
