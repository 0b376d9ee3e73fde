"""The host's console on a running instance (SQLite): create, schedule, reschedule, ticket terms and
cancel through its forms; refusals (no session, no CSRF token, another host's Space, the core's
rules) change nothing; analytics recorded from a live Space; the admins' communities page."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import timedelta
from html import unescape
from urllib.parse import unquote

import aiohttp

from core.model.accounts import Account, Actor
from core.model.space import Space, SpaceState
from spacebridge.app import Instance
from spacebridge.web_session import COOKIE_NAME, session_key

CSRF = "studio-csrf-token"


async def cookie(p: Instance, account: Account) -> dict[str, str]:
    """A session cookie as the sign-in page would set it (the instance's key, the account's epoch)."""
    async with p.core.uow() as uow:
        epoch = await uow.passkeys.epoch(account.id)
    data = {"created": int(time.time()), "session": {"account_id": account.id, "epoch": epoch, "csrf": CSRF}}
    return {COOKIE_NAME: session_key(p.settings.resolved_secret()).encrypt(json.dumps(data).encode()).decode()}


async def call(p: Instance, method: str, path: str, who: Account | None = None,
               data: dict[str, str] | None = None) -> tuple[int, str, str]:
    """(status, body, Location) of one request as ``who`` (a browser's form post)."""
    cookies = await cookie(p, who) if who else None
    async with aiohttp.ClientSession(cookies=cookies) as http, \
            http.request(method, p.url + path, data=data, allow_redirects=False,
                         headers={"Accept": "text/html"}) as r:
        return r.status, unescape(await r.text()), r.headers.get("Location", "")


async def admin_host(p: Instance, name: str = "Hana", *, tickets: bool = True) -> Account:
    """An instance admin: named in the web community's moderators, so the host rules let them host
    (and sell tickets, where the instance allows tickets)."""
    acc = await p.core.ensure_account("web", name.lower(), name)
    web = await p.core.web_community()
    await p.core.update_community(Actor(account_id=acc.id, is_operator=True), web.id,
                                  {"moderator_identities": [*web.settings.moderator_identities, acc.id],
                                   "ticketing_allowed": tickets})
    return acc


def when(p: Instance, **delta: float) -> str:
    return (p.core.now() + timedelta(**delta)).strftime("%Y-%m-%dT%H:%M")


async def test_signed_out_goes_to_sign_in_and_posts_change_nothing(platform: Instance) -> None:
    status, _, where = await call(platform, "GET", "/studio")
    assert status == 303 and unquote(where) == "/signin?next=/studio"
    status, _, where = await call(platform, "POST", "/studio/spaces", data={"title": "x", "start": "now"})
    assert status == 303 and where.startswith("/signin?")
    assert await platform.core.list_spaces(states=("live", "scheduled")) == []


async def test_host_schedules_with_a_ticket_and_it_shows_on_the_home_page(platform: Instance) -> None:
    hana = await admin_host(platform)
    status, html, _ = await call(platform, "GET", "/studio", hana)
    assert status == 200 and "Your studio" in html and 'name="csrf" value="' + CSRF in html
    status, _, where = await call(platform, "POST", "/studio/spaces", hana, {
        "csrf": CSRF, "title": "Studio-made AMA", "topics": "rust, web", "start": "later",
        "when": when(platform, hours=5), "visibility": "public", "price": "12.50", "currency": "usd",
        "capacity": "40"})
    assert status == 303 and where.startswith("/studio/s/"), (status, where)
    space = (await platform.core.view(where.rsplit("/", 1)[1])).space
    assert space.state == SpaceState.SCHEDULED and space.host_id == hana.id and space.topics == ["rust", "web"]
    assert space.ticketing is not None and space.ticketing.price_minor == 1250
    assert space.ticketing.currency == "USD" and space.ticketing.capacity == 40
    status, html, _ = await call(platform, "GET", where, hana)
    assert status == 200 and "Studio-made AMA" in html and "$12.50 · 40 seats" in html
    _, home, _ = await call(platform, "GET", "/")
    assert f'href="/s/{space.id}"' in home and "Studio-made AMA" in home
    _, listing, _ = await call(platform, "GET", "/studio", hana)
    assert f'href="/studio/s/{space.id}"' in listing


async def test_start_now_opens_the_room(platform: Instance) -> None:
    hana = await admin_host(platform)
    status, _, where = await call(platform, "POST", "/studio/spaces", hana,
                                  {"csrf": CSRF, "title": "Right now", "start": "now"})
    assert status == 303 and where.startswith("/s/")
    assert (await platform.core.view(where[3:])).space.state == SpaceState.LIVE


async def test_missing_or_wrong_csrf_is_refused_and_creates_nothing(platform: Instance) -> None:
    hana = await admin_host(platform)
    for token in ("", "not-the-token"):
        status, html, _ = await call(platform, "POST", "/studio/spaces", hana,
                                     {"csrf": token, "title": "Forged", "start": "now"})
        assert status == 403 and "did not come from this site" in html
    assert await platform.core.list_spaces(states=("live", "scheduled")) == []


async def test_the_cores_rules_refuse_with_their_words(platform: Instance) -> None:
    newbie = await platform.core.ensure_account("web", "newbie", "Newbie")
    status, html, _ = await call(platform, "GET", "/studio", newbie)
    assert status == 200 and "You cannot do that here yet" in html
    status, html, _ = await call(platform, "POST", "/studio/spaces", newbie,
                                 {"csrf": CSRF, "title": "Mine", "start": "later", "when": when(platform, hours=2)})
    assert status == 403 and "You cannot do that here yet" in html and 'value="Mine"' in html
    hana = await admin_host(platform)
    status, html, _ = await call(platform, "POST", "/studio/spaces", hana,
                                 {"csrf": CSRF, "title": "Too far", "start": "later", "when": when(platform, days=45)})
    assert status == 400 and "30 days" in html
    status, html, _ = await call(platform, "POST", "/studio/spaces", hana,
                                 {"csrf": CSRF, "title": "Paid now", "start": "now", "price": "5"})
    assert status == 400 and "Only a scheduled Space can sell tickets" in html
    await admin_host(platform, tickets=False)
    status, html, _ = await call(platform, "POST", "/studio/spaces", hana, {
        "csrf": CSRF, "title": "Paid later", "start": "later", "when": when(platform, hours=2), "price": "5"})
    assert status == 403 and "Paid later" in html
    assert await platform.core.list_spaces(states=("live", "scheduled")) == []


async def _scheduled(p: Instance, host: Account, title: str = "Planned") -> Space:
    return await p.core.create_space(Actor(account_id=host.id), title, start_at=p.core.now() + timedelta(hours=3))


async def test_reschedule_ticketing_and_cancel_with_confirmation(platform: Instance) -> None:
    hana = await admin_host(platform)
    space = await _scheduled(platform, hana)
    base = f"/studio/s/{space.id}"
    status, _, where = await call(platform, "POST", base + "/reschedule", hana,
                                  {"csrf": CSRF, "when": when(platform, days=2)})
    assert status == 303 and where.startswith(base)
    moved = (await platform.core.view(space.id)).space
    assert moved.scheduled_for == (platform.core.now() + timedelta(days=2)).replace(second=0, microsecond=0)
    status, html, _ = await call(platform, "POST", base + "/reschedule", hana,
                                 {"csrf": CSRF, "when": when(platform, days=40)})
    assert status == 400 and "30 days" in html
    assert (await platform.core.view(space.id)).space.scheduled_for == moved.scheduled_for

    status, _, _ = await call(platform, "POST", base + "/ticketing", hana,
                              {"csrf": CSRF, "price": "9", "currency": "eur", "capacity": ""})
    assert status == 303
    t = (await platform.core.view(space.id)).space.ticketing
    assert t is not None and (t.price_minor, t.currency, t.capacity) == (900, "EUR", None)
    status, html, _ = await call(platform, "POST", base + "/ticketing", hana,
                                 {"csrf": CSRF, "price": "abc", "currency": "eur"})
    assert status == 400 and (await platform.core.view(space.id)).space.ticketing == t
    await call(platform, "POST", base + "/ticketing", hana, {"csrf": CSRF, "free": "1"})
    assert (await platform.core.view(space.id)).space.ticketing is None

    status, html, _ = await call(platform, "GET", base + "/cancel", hana)
    assert status == 200 and "Cancel “Planned”?" in html and "Yes, I am sure" in html
    status, html, _ = await call(platform, "POST", base + "/cancel", hana, {"csrf": CSRF})
    assert status == 400 and "Tick the box" in html
    assert (await platform.core.view(space.id)).space.state == SpaceState.SCHEDULED
    status, _, _ = await call(platform, "POST", base + "/cancel", hana, {"csrf": CSRF, "confirm": "yes"})
    assert status == 303 and (await platform.core.view(space.id)).space.state == SpaceState.CANCELLED


async def test_another_hosts_space_is_not_found_and_unchanged(platform: Instance) -> None:
    hana = await admin_host(platform)
    omar = await admin_host(platform, "Omar")
    space = await _scheduled(platform, hana)
    base = f"/studio/s/{space.id}"
    assert (await call(platform, "GET", base, omar))[0] == 404
    assert (await call(platform, "GET", base + "/cancel", omar))[0] == 404
    for path, data in (("/reschedule", {"when": when(platform, days=3)}), ("/cancel", {"confirm": "yes"}),
                       ("/ticketing", {"price": "3", "currency": "eur"})):
        status, _, _ = await call(platform, "POST", base + path, omar, {"csrf": CSRF, **data})
        assert status == 404, path
    after = (await platform.core.view(space.id)).space
    assert after.state == SpaceState.SCHEDULED and after.scheduled_for == space.scheduled_for
    assert after.ticketing is None
    assert (await call(platform, "GET", "/studio/s/nope", hana))[0] == 404


async def test_admins_see_communities_and_their_rules_others_are_refused(platform: Instance) -> None:
    hana = await admin_host(platform)
    await platform.core.ensure_community("discord", "4242", "Jazz Guild")
    status, html, _ = await call(platform, "GET", "/studio/admin", hana)
    assert status == 200 and "Jazz Guild" in html and "This instance" in html
    assert re.search(r"<td>discord</td>\s*<td>at least \d+ followers</td>", html), html
    other = await platform.core.ensure_account("web", "other", "Other")
    status, _, _ = await call(platform, "GET", "/studio/admin", other)
    assert status == 403
    _, html, _ = await call(platform, "GET", "/studio", other)
    assert "/studio/admin" not in html


async def test_analytics_record_listeners_reactions_hands_and_comments(platform: Instance) -> None:
    hana = await admin_host(platform)
    core = platform.core
    space = await core.create_space(Actor(account_id=hana.id), "Counted")
    fans = [await core.ensure_account("web", f"fan{i}", f"Fan {i}") for i in range(3)]
    for f in fans:
        await core.join(Actor(account_id=f.id), space.id)
    await core.react(Actor(account_id=fans[0].id), space.id, "🔥")
    await core.react(Actor(account_id=fans[1].id), space.id, "👏")
    await core.raise_hand(Actor(account_id=fans[2].id), space.id)
    await core.comment(Actor(account_id=fans[1].id), space.id, "Hello from the web")
    await core.leave(Actor(account_id=fans[0].id), space.id)

    deadline = time.monotonic() + 20
    while True:  # the recorder writes from the bus, after each command commits
        status, html, _ = await call(platform, "GET", f"/studio/s/{space.id}", hana)
        figures = dict(re.findall(r'data-figure="(\w+)">([^<]*)<', html))
        if figures.get("comments") == "1" and figures.get("reactions") == "2" and figures.get("hands") == "1":
            break
        assert time.monotonic() < deadline, figures
        await asyncio.sleep(0.05)
    assert status == 200 and figures["peak"] == "3" and figures["total"] == "3"
    assert float(figures["minutes"]) >= 0
    assert '<svg viewBox="0 0 640 230" role="img"' in html and "Listeners over time as a table" in html
    async with core.uow() as uow:
        spans = await uow.analytics.spans(space.id)
    assert sorted((s.account_id, s.ended_at is None) for s in spans) == sorted(
        [(fans[0].id, False), (fans[1].id, True), (fans[2].id, True)])
    await core.end_space(Actor(account_id=hana.id), space.id)
    deadline = time.monotonic() + 20
    while True:
        async with core.uow() as uow:
            if all(s.ended_at is not None for s in await uow.analytics.spans(space.id)):
                break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
