"""The web room's "⭐ Subscribers first" tool (issue 19): a moderator sees it once a paying subscriber of
the host has a hand up, pressing it puts that hand first in the page's queue (and "#1" names it), and
pressing it again puts the queue back in the order the hands went up."""

from __future__ import annotations

from core.model.accounts import Actor
from core.model.subscription import SubscriptionStatus
from spacebridge.app import Instance
from tests.e2e.test_browser_room import CHROMIUM, FLAGS, chromium_present  # noqa: F401 - the autouse skip
from tests.integration.test_subscriber_badge import _subscribe

QUEUE = "() => [...document.querySelectorAll('#queue li .who')].map(w => w.textContent).join(' | ')"
TOOL = "#tools button[data-key='subscriber_priority']"


async def test_a_moderator_puts_subscribers_first_from_the_room(platform: Instance) -> None:
    from playwright.async_api import async_playwright

    core = platform.core
    host_acc = await core.ensure_account("web", "host", "Hana Host")
    host = Actor(account_id=host_acc.id, is_community_admin=True)
    space = await core.create_space(host, "Members first")
    tier = await core.memberships.create_tier(host, "Basic", 300, "eur")
    ann = Actor(account_id=(await core.ensure_account("web", "ann", "Ann")).id)
    sub = Actor(account_id=(await core.ensure_account("web", "sub", "Sue")).id)
    await _subscribe(core, tier, sub.account_id, SubscriptionStatus.ACTIVE)
    url = f"{platform.url}/s/{space.id}#t={platform.tokens.issue(space.id, host_acc.id, 'speaker', core.now())}"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = await (await browser.new_context()).new_page()
        await page.goto(url)
        await page.wait_for_selector("#tools button[data-key='pin']", timeout=10_000)
        for who in (ann, sub):
            await core.join(who, space.id)
            await core.raise_hand(who, space.id)
        await page.wait_for_function(f"() => ({QUEUE})() === 'Ann | Sue · subscriber'", timeout=10_000)
        tool = page.locator(TOOL)
        await tool.wait_for(timeout=10_000)  # a subscriber's hand is up: the tool is offered
        assert await tool.text_content() == "⭐ Subscribers first"
        assert await tool.get_attribute("aria-pressed") == "false"
        await tool.click()
        await page.wait_for_function(f"() => ({QUEUE})() === 'Sue · subscriber | Ann'", timeout=10_000)
        await page.wait_for_selector(f"{TOOL}[aria-pressed='true']", timeout=10_000)
        view = await core.view(space.id)
        assert view.space.subscriber_priority and view.as_dict()["queue"] == [sub.account_id, ann.account_id]
        await page.locator(TOOL).click()  # off again: raise order
        await page.wait_for_function(f"() => ({QUEUE})() === 'Ann | Sue · subscriber'", timeout=10_000)
        assert not (await core.view(space.id)).space.subscriber_priority
        await browser.close()
