"""Money in the browser against localstripe behind the strict Stripe front: a ticket bought from the
Space's page through Checkout lands the buyer in the room; the host sees the sale and refunds it
after a confirmation; payouts onboarding and its return page show what Stripe says."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from core.model.accounts import Actor
from core.model.space import Ticketing
from core.model.ticket import TicketStatus
from spacebridge.app import Instance
from tests.integration.web.test_studio import CSRF, admin_host, call, cookie
from tests.support.stripe_site import stripe_site
from tests.support.stripe_strict import StrictStripe

SECRET = "whsec_studio"


@dataclass
class Paid:
    p: Instance
    fake: StrictStripe


@pytest.fixture
async def paid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Paid]:
    from tests.support.loopback import LOOPBACK, ensure_loopback_alias

    ensure_loopback_alias()
    async with stripe_site(tmp_path, monkeypatch, StrictStripe, SECRET, ice_announce=[LOOPBACK]) as (p, fake):
        yield Paid(p, fake)


async def until(check: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_buy_through_checkout_lands_in_the_room_then_the_host_refunds(paid: Paid) -> None:
    p, fake = paid.p, paid.fake
    hana = await admin_host(p)
    host = Actor(account_id=hana.id)
    space = await p.core.create_space(host, "Paid live show", start_at=p.core.now() + timedelta(hours=1))
    await p.core.set_ticketing(host, space.id, Ticketing(price_minor=700, currency="eur", capacity=10))
    await p.core.start_space(host, space.id)
    fan = await p.core.ensure_account("web", "fan", "Fan")

    status, _, where = await call(p, "POST", f"/s/{space.id}/ticket", fan, {"csrf": CSRF})
    assert status == 303 and where.startswith(fake.base + "/pay/cs_"), where
    session = fake.sessions[where.rsplit("/", 1)[1]]
    success = session["success_url"]
    # back to the address this browser used (its session cookie is there), not the configured port
    assert success.startswith(f"{p.url}/s/{space.id}?paid=")
    assert session["cancel_url"].endswith(f"/s/{space.id}")
    ticket_id = success.rsplit("=", 1)[1]
    back = success[len(p.url):]

    status, html, _ = await call(p, "GET", back, fan)  # back before Stripe's webhook: it waits
    assert status == 200 and "Confirming your payment" in html and f'href="{back}"' in html
    status, html, _ = await call(p, "GET", back, hana)  # someone else's ticket: the ordinary page
    assert "Confirming your payment" not in html

    await fake.complete_session(session["id"])

    async def settled() -> bool:
        return (await p.ledger.get(ticket_id)).status == TicketStatus.PAID

    await until(settled, "the ticket was never paid")
    status, html, _ = await call(p, "GET", back, fan)
    assert status == 200 and "room.js" in html and "Confirming" not in html
    async with aiohttp.ClientSession(cookies=await cookie(p, fan)) as http, \
            http.post(f"{p.url}/api/spaces/{space.id}/join-token", headers={"X-CSRF-Token": CSRF}) as r:
        assert r.status == 200, await r.text()  # the room's first request: the buyer is let in

    status, html, _ = await call(p, "GET", f"/studio/s/{space.id}", hana)
    assert status == 200 and f'data-ticket="{ticket_id}"' in html and "Fan" in html
    assert re.search(r'data-figure="revenue">€7.00<', html), html
    status, _, _ = await call(p, "GET", f"/studio/s/{space.id}/refund/{ticket_id}", fan)
    assert status == 404  # not the fan's Space
    status, html, _ = await call(p, "GET", f"/studio/s/{space.id}/refund/{ticket_id}", hana)
    assert status == 200 and "Refund Fan's ticket?" in html
    status, _, where = await call(p, "POST", f"/studio/s/{space.id}/refund/{ticket_id}", hana, {"csrf": CSRF})
    assert status == 303 and (await p.ledger.get(ticket_id)).status == TicketStatus.PAID  # not confirmed
    status, _, _ = await call(p, "POST", f"/studio/s/{space.id}/refund/{ticket_id}", hana,
                              {"csrf": CSRF, "confirm": "yes"})
    assert status == 303

    async def refunded() -> bool:
        return (await p.ledger.get(ticket_id)).status == TicketStatus.REFUNDED

    await until(refunded, "the refund never went through")
    _, html, _ = await call(p, "GET", f"/studio/s/{space.id}", hana)
    assert "Refunded" in html


async def test_payouts_onboarding_return_and_refresh(paid: Paid) -> None:
    p, fake = paid.p, paid.fake
    hana = await admin_host(p)
    status, html, _ = await call(p, "GET", "/studio/payouts", hana)
    assert status == 200 and "Not set up" in html and "Set up payouts with Stripe" in html
    status, _, _ = await call(p, "POST", "/studio/payouts", hana, {})
    assert status == 403 and await p.ledger.payout_account(hana.id) is None  # no CSRF token: nothing made
    status, _, where = await call(p, "POST", "/studio/payouts", hana, {"csrf": CSRF})
    acct = await p.ledger.payout_account(hana.id)
    assert status == 303 and acct is not None and where == f"{fake.base}/connect/onboarding/{acct}"
    status, html, _ = await call(p, "GET", "/studio/payouts/return", hana)
    assert status == 200 and 'data-ready="no"' in html and "Continue Stripe onboarding" in html
    status, _, where = await call(p, "GET", "/studio/payouts/refresh", hana)
    assert status == 303 and where.endswith(f"/connect/onboarding/{acct}")
    assert await p.ledger.payout_account(hana.id) == acct  # the same account, a new link

    fake.finish_onboarding(acct)
    status, html, _ = await call(p, "GET", "/connect/done", hana)
    assert status == 303
    status, html, _ = await call(p, "GET", "/studio/payouts/return", hana)
    assert 'data-ready="yes"' in html and "You are all set" in html
    _, html, _ = await call(p, "GET", "/studio", hana)
    assert "Ready: ticket money goes to your Stripe account." in html
