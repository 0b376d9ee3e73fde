"""The web's pages in Chromium: axe-core finds no serious or critical problem on any page (light and
dark), every control is on screen and usable on a 390x844 phone, the keyboard reaches everything
from the skip link, and searching from the header finds a Space by its title."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from core.model.accounts import Actor
from core.model.space import Ticketing
from spacebridge.app import Instance
from tests.e2e.test_browser_room import CHROMIUM, FLAGS, chromium_present

__all__ = ["chromium_present"]  # the fixture that fails (CI) or skips without Chromium

# Every control's centre, scrolled into view: on screen, inside the width, and not covered by anything.
REACHABLE_JS = """() => {
  const bad = [];
  for (const el of document.querySelectorAll('a[href], button, input:not([type=hidden]), [tabindex]')) {
    if (el.classList.contains('skip') || el.tagName === 'MAIN') continue;
    el.scrollIntoView({block: 'center'});
    const r = el.getBoundingClientRect();
    if (!r.width || !r.height) { bad.push(['invisible', el.outerHTML.slice(0, 80)]); continue; }
    if (r.left < 0 || r.right > innerWidth + 0.5) { bad.push(['outside', el.outerHTML.slice(0, 80)]); continue; }
    const top = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
    if (!top || !(el === top || el.contains(top))) bad.push(['covered', el.outerHTML.slice(0, 80)]);
  }
  return {bad, scrollWidth: document.documentElement.scrollWidth};
}"""


async def _world(platform: Instance) -> dict[str, str]:
    core = platform.core
    hana = await core.ensure_account("web", "hana", "Hana Host")
    admin = Actor(account_id=hana.id, is_community_admin=True)
    now = core.now()
    live = await core.create_space(admin, "Morning jazz talk", topics=["music"])
    soon = await core.create_space(admin, "Async Rust, a very long title that has to wrap on a small phone screen",
                                   start_at=now + timedelta(hours=3), topics=["rust", "async"])
    paid = await core.create_space(admin, "Paid masterclass", start_at=now + timedelta(days=2))
    await core.set_ticketing(Actor(account_id=hana.id, is_operator=True), paid.id,
                             Ticketing(price_minor=1500, currency="eur", capacity=50))
    past = await core.create_space(admin, "Yesterday's chat")
    await core.end_space(Actor(account_id=hana.id), past.id)
    return {"home": "/", "search": "/?q=jazz", "live": f"/s/{live.id}", "scheduled": f"/s/{soon.id}",
            "ticketed": f"/s/{paid.id}", "ended": f"/s/{past.id}", "profile": f"/u/{hana.id}",
            "missing": "/s/nosuchspace00", "soon_id": soon.id}


def _serious(results: Any) -> list[str]:
    return [f"{v['id']}: {v['help']} ({len(v['nodes'])} nodes: {v['nodes'][0]['html'][:120]})"
            for v in results.response["violations"] if v.get("impact") in ("serious", "critical")]


async def test_every_page_passes_axe_in_light_and_dark(platform: Instance) -> None:
    from axe_playwright_python.async_playwright import Axe
    from playwright.async_api import async_playwright

    pages = await _world(platform)
    pages.pop("soon_id")
    axe = Axe()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        for scheme in ("light", "dark"):
            page = await (await browser.new_context(color_scheme=scheme)).new_page()
            for name, path in pages.items():
                response = await page.goto(platform.url + path)
                assert response is not None and response.status == (404 if name == "missing" else 200), name
                if name == "live":
                    await page.wait_for_function(  # the room has drawn itself (joined, or said why not)
                        "() => document.getElementById('title').textContent !== 'Joining…'"
                        " || document.getElementById('status').textContent !== ''")
                problems = _serious(await axe.run(page))
                assert not problems, (scheme, name, problems)
        await browser.close()


async def test_phone_screens_keyboard_and_search(platform: Instance, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    pages = await _world(platform)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        phone = await (await browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                                 has_touch=True)).new_page()
        for name in ("home", "scheduled", "ticketed", "ended", "profile", "missing"):
            await phone.goto(platform.url + pages[name])
            await phone.screenshot(path=str(tmp_path / f"{name}-390x844.png"), full_page=True)
            found = await phone.evaluate(REACHABLE_JS)
            assert not found["bad"], (name, found["bad"])
            assert found["scrollWidth"] <= 390, (name, found["scrollWidth"])  # no sideways scrolling

        page = await (await browser.new_context()).new_page()
        await page.goto(platform.url + pages["scheduled"])
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
        await page.keyboard.press("Enter")
        assert await page.evaluate("document.activeElement.id") == "main"
        reached: list[str] = []
        for _ in range(12):
            await page.keyboard.press("Tab")
            reached.append(await page.evaluate("document.activeElement.textContent.trim()"))
        assert "Sign in to get a reminder" in reached and "Add to calendar" in reached, reached
        assert "Sign in to follow Hana Host" in reached, reached
        countdown = page.locator("[data-countdown]")
        await countdown.filter(has_text="Starts in 2 h 59 min").or_(
            countdown.filter(has_text="Starts in 3 h 0 min")).wait_for()

        await page.goto(platform.url + "/")
        await page.get_by_label("Search Spaces by title").fill("jazz")
        await page.keyboard.press("Enter")
        await page.wait_for_selector("h1:has-text('Spaces matching “jazz”')")
        assert await page.get_by_role("link", name="Morning jazz talk").count() == 1
        assert await page.get_by_role("link", name="Paid masterclass").count() == 0
        await page.get_by_role("link", name="Morning jazz talk").click()
        await page.wait_for_url(f"**{pages['live']}")
        await page.wait_for_selector("#title")  # the room
        await browser.close()
