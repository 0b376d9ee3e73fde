"""The web's pages on a running instance (SQLite): home, search, a Space's page in each state, the
calendar file, share previews, profiles, and the Follow / Remind me buttons with a real session."""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from html.parser import HTMLParser

import aiohttp

from core.model.accounts import Account, Actor
from core.model.space import Space, Ticketing
from spacebridge.app import Instance
from spacebridge.web_session import COOKIE_NAME, session_key

CSRF = "test-csrf-token"


class Meta(HTMLParser):
    """The page's <meta> tags by property/name, and every <a href>."""

    def __init__(self) -> None:
        super().__init__()
        self.meta: dict[str, str] = {}
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "meta" and (a.get("property") or a.get("name")):
            self.meta[str(a.get("property") or a.get("name"))] = str(a.get("content"))
        if tag == "a" and a.get("href"):
            self.links.append(str(a["href"]))


def parse(html: str) -> Meta:
    m = Meta()
    m.feed(html)
    return m


async def get(p: Instance, path: str, cookies: dict[str, str] | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, str, aiohttp.ClientResponse]:
    async with aiohttp.ClientSession(cookies=cookies) as http, \
            http.get(p.url + path, headers=headers, allow_redirects=False) as r:
        return r.status, await r.text(), r


async def signed_in(p: Instance, account: Account) -> dict[str, str]:
    """A session cookie as the sign-in page would set it (the instance's key, the account's epoch)."""
    async with p.core.uow() as uow:
        epoch = await uow.passkeys.epoch(account.id)
    data = {"created": int(time.time()), "session": {"account_id": account.id, "epoch": epoch, "csrf": CSRF}}
    token = session_key(p.settings.resolved_secret()).encrypt(json.dumps(data).encode()).decode()
    return {COOKIE_NAME: token}


async def world(p: Instance) -> dict[str, Space | Account]:
    core = p.core
    hana = await core.ensure_account("web", "hana", "Hana <Host>")
    admin = Actor(account_id=hana.id, is_community_admin=True)
    now = core.now()
    live = await core.create_space(admin, "Morning jazz talk", topics=["music"])
    soon = await core.create_space(admin, "Rust, async; and you", start_at=now + timedelta(hours=3),
                                   topics=["rust", "async"])
    paid = await core.create_space(admin, "Paid masterclass", start_at=now + timedelta(days=2))
    await core.set_ticketing(Actor(account_id=hana.id, is_operator=True), paid.id,
                             Ticketing(price_minor=1500, currency="eur", capacity=50))
    hidden = await core.create_space(admin, "Secret jazz rehearsal", start_at=now + timedelta(hours=5),
                                     visibility="unlisted")
    return {"hana": hana, "live": live, "soon": soon, "paid": paid, "hidden": hidden}


async def test_home_lists_live_and_upcoming_as_links_and_searches_titles(platform: Instance) -> None:
    w = await world(platform)
    status, html, _ = await get(platform, "/")
    assert status == 200
    links = parse(html).links
    for key in ("live", "soon", "paid"):
        assert f"/s/{w[key].id}" in links
    assert f"/s/{w['soon'].id}.ics" in links
    assert f"/s/{w['hidden'].id}" not in links and "Secret jazz" not in html  # unlisted: never listed
    assert "Hana &lt;Host&gt;" in html and "<Host>" not in html  # escaped
    assert "Sign in to get a reminder" in html and "/signin?next=" in html

    status, html, _ = await get(platform, "/?q=JAZZ")
    links = parse(html).links
    assert f"/s/{w['live'].id}" in links and f"/s/{w['soon'].id}" not in links
    assert "Secret jazz" not in html
    status, html, _ = await get(platform, "/?q=%25")  # a LIKE wildcard is taken literally
    assert status == 200 and f"/s/{w['live'].id}" not in parse(html).links


async def test_scheduled_page_calendar_and_preview_use_the_public_url(platform: Instance) -> None:
    w = await world(platform)
    soon = w["soon"]
    assert isinstance(soon, Space) and soon.scheduled_for is not None
    status, html, _ = await get(platform, f"/s/{soon.id}", headers={"Host": "evil.example"})
    assert status == 200
    page = parse(html)
    assert page.meta["og:url"] == f"{platform.url}/s/{soon.id}"
    assert page.meta["og:title"] == "Rust, async; and you" and page.meta["twitter:title"] == "Rust, async; and you"
    assert "Hana <Host>" in page.meta["og:description"] and page.meta["twitter:card"] == "summary"
    assert f"data-countdown=\"{soon.scheduled_for.isoformat()}\"" in html
    assert "Sign in to get a reminder" in html and "Add to calendar" in html and "Sign in to follow" in html

    status, body, r = await get(platform, f"/s/{soon.id}.ics")
    assert status == 200 and r.content_type == "text/calendar"
    assert body.count("\r\n") == body.count("\n")  # CRLF only
    unfolded = body.replace("\r\n ", "")
    fields = dict(line.split(":", 1) for line in unfolded.split("\r\n") if line)
    assert fields["DTSTART"] == soon.scheduled_for.strftime("%Y%m%dT%H%M%SZ")
    assert fields["DTEND"] == (soon.scheduled_for + timedelta(hours=1)).strftime("%Y%m%dT%H%M%SZ")
    assert fields["SUMMARY"] == "Rust\\, async\\; and you"
    assert fields["UID"].startswith(f"space-{soon.id}@")
    assert fields["URL"] == f"{platform.url}/s/{soon.id}" and fields["VERSION"] == "2.0"
    assert all(len(line.encode()) <= 75 for line in body.split("\r\n"))
    assert (await get(platform, f"/s/{w['live'].id}.ics"))[0] == 404  # only a scheduled Space has one

    status, html, _ = await get(platform, f"/s/{w['paid'].id}")
    assert "€15.00" in html and "50 seats" in html
    assert "Ticket sales are not open on this instance yet." in html  # no Stripe configured here


async def test_live_page_is_the_room_with_preview_tags(platform: Instance) -> None:
    w = await world(platform)
    status, html, _ = await get(platform, f"/s/{w['live'].id}")
    assert status == 200
    for needed in ('src="/static/room.js"', 'href="/static/room.css"', 'id="title"', 'id="hand"', 'id="leave"'):
        assert needed in html
    assert parse(html).meta["og:title"] == "Morning jazz talk"
    assert parse(html).meta["og:description"].startswith("Live now")


async def test_ended_unknown_unlisted_and_profile(platform: Instance) -> None:
    w = await world(platform)
    hana = w["hana"]
    await platform.core.end_space(Actor(account_id=hana.id), w["live"].id)
    status, html, _ = await get(platform, f"/s/{w['live'].id}")
    assert status == 200 and "This Space has ended" in html and "no replay" in html

    status, html, _ = await get(platform, "/s/nosuchspace00")
    assert status == 404 and "This Space doesn't exist" in html and "/assets/site.css" in html
    assert (await get(platform, "/u/nobody0000"))[0] == 404

    status, html, _ = await get(platform, f"/s/{w['hidden'].id}")  # the link holder sees it; no index
    assert status == 200 and "Secret jazz rehearsal" in html
    assert parse(html).meta["robots"] == "noindex"

    fan = await platform.core.ensure_account("web", "fan", "Finn Fan")
    await platform.core.follow(Actor(account_id=fan.id), hana.id)
    status, html, _ = await get(platform, f"/u/{hana.id}", headers={"Host": "evil.example"})
    page = parse(html)
    assert status == 200 and "Hana &lt;Host&gt;" in html
    assert re.search(r"<strong>1</strong> follower\b", html)
    assert page.meta["og:url"] == f"{platform.url}/u/{hana.id}" and page.meta["og:type"] == "profile"
    assert f"/s/{w['soon'].id}" in page.links and f"/s/{w['live'].id}" in page.links  # upcoming and past
    assert f"/s/{w['hidden'].id}" not in page.links
    assert "Sign in to follow" in html


async def test_follow_and_remind_buttons_with_a_session(platform: Instance) -> None:
    w = await world(platform)
    hana, soon = w["hana"], w["soon"]
    fan = await platform.core.ensure_account("web", "fan", "Finn Fan")
    cookies = await signed_in(platform, fan)
    status, html, _ = await get(platform, f"/u/{hana.id}", cookies)
    assert status == 200
    assert f'value="{CSRF}"' in html and ">Follow<" in html and "Finn Fan" in html

    async with aiohttp.ClientSession(cookies=cookies) as http:
        async with http.post(f"{platform.url}/u/{hana.id}/follow", data={"on": "1", "next": "//evil.example/"},
                             allow_redirects=False) as r:  # no CSRF token: refused, nothing changes
            assert r.status == 403
        assert await platform.core.follower_count(hana.id) == 0
        async with http.post(f"{platform.url}/u/{hana.id}/follow",
                             data={"csrf": CSRF, "on": "1", "next": "//evil.example/"}, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == f"/u/{hana.id}"  # never off-site
        assert await platform.core.follower_count(hana.id) == 1
        async with http.post(f"{platform.url}/s/{soon.id}/remind", data={"csrf": CSRF, "on": "1"},
                             allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == f"/s/{soon.id}"
        async with http.post(f"{platform.url}/s/{w['live'].id}/remind", data={"csrf": CSRF, "on": "1"},
                             headers={"Accept": "text/html"}, allow_redirects=False) as r:
            assert r.status == 409 and "didn't go through" in await r.text()  # a live Space has no reminder
    _, html, _ = await get(platform, f"/s/{soon.id}", cookies)
    assert "Reminder set ✓" in html and "Following Hana &lt;Host&gt; ✓" in html
    assert (await platform.core.queries.relation(fan.id, space_id=soon.id)).reminded

    async with aiohttp.ClientSession() as http, http.post(f"{platform.url}/u/{hana.id}/follow",
                                                         data={"on": "0"}, allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"].startswith("/signin?next=")
    assert await platform.core.follower_count(hana.id) == 1


async def test_recorded_space_shows_its_replay_on_its_page_and_home(platform: Instance) -> None:
    w = await world(platform)
    hana, live = w["hana"], w["live"]
    host = Actor(account_id=hana.id)
    reply = await platform.plugins.invoke("record", host, live.id, {"action": "start"}, "web")
    assert reply.url is not None
    stopped = await platform.plugins.invoke("record", host, live.id, {"action": "stop"}, "web")
    rec_path = reply.url.removeprefix(platform.url)  # /p/recording/r/ID: the plugin names it
    assert stopped.url == reply.url
    await platform.core.end_space(host, live.id)
    _, html, _ = await get(platform, f"/s/{live.id}")
    assert "This Space has ended" in html and f'href="{reply.url}"' in html and "Play the replay" in html
    _, html, _ = await get(platform, "/")
    assert f"/s/{live.id}" in parse(html).links and f'href="{reply.url}"' in html  # under Recent replays
    assert (await get(platform, rec_path))[0] == 200  # the replay it links to plays
