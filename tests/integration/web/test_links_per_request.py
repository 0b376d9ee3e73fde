"""Links the server builds for a web client point where that client reached it (issue 17).

The instance here listens on a port other than the configured one (``settings.port`` is 8080, as
under ``serve --port 0`` or behind a proxy) and the client calls it ``localhost`` while it listens
on 127.0.0.1: the room socket's ``share`` links, its ``ticket`` command's Checkout return and cancel
URLs, the page's Open Graph address, its calendar file and the studio's Connect onboarding return
all name the address this client used (where its session cookie lives), never the configured one;
a forged ``Host`` gets the instance's own address."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import aiohttp

from core.model.accounts import Actor
from core.model.space import Ticketing
from tests.integration.web.test_studio import CSRF, admin_host, cookie
from tests.integration.web.test_studio_money import Paid, paid

__all__ = ["paid"]  # the fixture: an instance selling through the strict Stripe front over localstripe


def local(url: str) -> str:
    return url.replace("://127.0.0.1:", "://localhost:")


async def _command(ws: aiohttp.ClientWebSocketResponse, cid: str, name: str) -> dict[str, Any]:
    await ws.send_json({"type": "command", "id": cid, "name": name, "args": {}})
    while True:
        frame: dict[str, Any] = await ws.receive_json(timeout=20)
        if frame.get("id") == cid and frame["type"] in ("ok", "error"):
            return frame


async def test_socket_and_page_links_use_the_address_the_client_used(paid: Paid) -> None:
    p, fake = paid.p, paid.fake
    site = local(p.url)
    assert p.settings.base_url() != p.url  # configured 8080; the instance listens elsewhere
    hana = await admin_host(p)
    host = Actor(account_id=hana.id)
    space = await p.core.create_space(host, "Links", start_at=p.core.now() + timedelta(hours=1))
    fan = await p.core.ensure_account("web", "fan", "Fan")
    token = p.tokens.issue(space.id, fan.id, "listener", p.core.now())
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{site}/ws/{space.id}") as ws:
        await ws.send_json({"type": "hello", "token": token})
        assert (await ws.receive_json(timeout=20))["type"] == "welcome"  # the waiting room
        shared = await _command(ws, "s", "share")
        assert shared["type"] == "ok", shared
        assert shared["result"]["links"]["web"] == f"{site}/s/{space.id}"
        # the host prices the Space while the fan waits; the fan asks for a ticket from the room
        await p.core.set_ticketing(host, space.id, Ticketing(price_minor=500, currency="eur", capacity=5))
        offered = await _command(ws, "t", "ticket")
        assert offered["type"] == "ok", offered
        session = fake.sessions[offered["result"]["url"].rsplit("/", 1)[1]]
        assert session["success_url"].startswith(f"{site}/s/{space.id}?paid="), session["success_url"]
        assert session["cancel_url"] == f"{site}/s/{space.id}"

    async with aiohttp.ClientSession(cookies=await cookie(p, hana)) as http:
        async with http.get(f"{site}/s/{space.id}") as r:
            page = await r.text()
        assert f'<meta property="og:url" content="{site}/s/{space.id}">' in page
        async with http.get(f"{site}/s/{space.id}", headers={"Host": "evil.example"}) as r:
            forged = await r.text()  # a Host this instance does not serve on: its own address, not that one
        assert f'<meta property="og:url" content="{p.url}/s/{space.id}">' in forged
        async with http.get(f"{site}/s/{space.id}.ics") as r:
            assert f"URL:{site}/s/{space.id}" in (await r.text()).replace("\r\n ", "")
        async with http.post(f"{site}/studio/payouts", data={"csrf": CSRF}, allow_redirects=False) as r:
            assert r.status == 303, await r.text()
    link = next(q for q in reversed(fake.requests) if q["path"] == "/v1/account_links")["form"]
    assert (link["return_url"], link["refresh_url"]) == (f"{site}/studio/payouts/return",
                                                         f"{site}/studio/payouts/refresh")
