"""Telegram Stars (XTR) have no minor unit: a Space priced at 250 Stars reads "250 Stars" on its web
page, and so does its subscriber price, never "2.50 XTR"; the studio's form shows and saves whole Stars."""

from __future__ import annotations

from datetime import timedelta

from core.model.accounts import Actor
from core.model.space import Ticketing
from spacebridge.app import Instance
from spacebridge.web_common import money
from tests.integration.web.test_pages import get
from tests.integration.web.test_studio import CSRF, admin_host, call


async def test_a_stars_priced_space_page_shows_whole_stars(platform: Instance) -> None:
    core = platform.core
    hana = await core.ensure_account("web", "hana", "Hana")
    host = Actor(account_id=hana.id, is_community_admin=True, is_operator=True)
    tier = await core.memberships.create_tier(host, "Gold", 500, "eur")
    paid = await core.create_space(host, "Stars masterclass", start_at=core.now() + timedelta(days=2))
    await core.set_ticketing(host, paid.id, Ticketing(price_minor=250, currency="XTR", capacity=10,
                                                      discount_tier_id=tier.id, discount_percent=33))
    status, html, _ = await get(platform, f"/s/{paid.id}")
    assert status == 200
    assert '<p class="price">250 Stars · 10 seats</p>' in html, html
    assert "168 Stars for Hana's subscribers at Gold (€5.00/month) or above (33% off)" in html
    assert "2.50" not in html and "1.68" not in html and "XTR" not in html
    assert (money(1, "XTR"), money(12_000, "xtr"), money(250, "eur")) == ("1 Star", "12,000 Stars", "€2.50")


async def test_the_studio_shows_and_saves_a_stars_price_in_whole_stars(platform: Instance) -> None:
    hana = await admin_host(platform)
    space = await platform.core.create_space(Actor(account_id=hana.id, is_operator=True), "Stars night",
                                             start_at=platform.core.now() + timedelta(days=2))
    await platform.core.set_ticketing(Actor(account_id=hana.id, is_operator=True), space.id,
                                      Ticketing(price_minor=250, currency="XTR", capacity=None))
    base = f"/studio/s/{space.id}"
    status, html, _ = await call(platform, "GET", base, hana)
    assert status == 200 and '<p class="price">250 Stars · unlimited seats</p>' in html
    assert 'name="price" type="text" inputmode="decimal" required pattern="[0-9]+([.][0-9]{1,2})?" value="250"' in html
    assert '<option value="xtr" selected>Stars</option>' in html
    # saved as shown: still 250 Stars, not 25000
    status, _, _ = await call(platform, "POST", base + "/ticketing", hana,
                              {"csrf": CSRF, "price": "250", "currency": "xtr", "capacity": ""})
    assert status == 303
    t = (await platform.core.view(space.id)).space.ticketing
    assert t is not None and (t.price_minor, t.currency.upper()) == (250, "XTR")
