"""The web page draws its command buttons from the table (welcome.commands), for the person's role and the
Space's state and what applies now (Mute all with others on stage, Clear hands with raised hands), and
never rebuilds a button that is still wanted."""

from __future__ import annotations

from core.commands import BUILTINS, REACTIONS
from core.model.accounts import Actor
from spacebridge.app import Instance
from tests.e2e.test_browser_room import CHROMIUM, FLAGS, chromium_present  # noqa: F401 - the autouse skip


async def test_buttons_follow_the_table_role_and_state(platform: Instance) -> None:
    from playwright.async_api import async_playwright

    core = platform.core
    host_acc = await core.ensure_account("web", "host", "Hana Host")
    fan_acc = await core.ensure_account("web", "fan", "Finn Fan")
    space = await core.create_space(Actor(account_id=host_acc.id, is_community_admin=True), "Table Space")
    now = core.now()
    host_url = f"{platform.url}/s/{space.id}#t={platform.tokens.issue(space.id, host_acc.id, 'speaker', now)}"
    fan_url = f"{platform.url}/s/{space.id}#t={platform.tokens.issue(space.id, fan_acc.id, 'listener', now)}"
    core_names = [c.name for c in BUILTINS]  # plugins add their own buttons next to these
    drawn = ("names => [...document.querySelectorAll('#tools button')].map(b => b.dataset.key)"
             ".filter(n => names.includes(n)).sort().join(',')")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        host = await (await browser.new_context()).new_page()
        fan = await (await browser.new_context()).new_page()
        await host.goto(host_url)
        await host.wait_for_selector("#tools button[data-key='pin']", timeout=10_000)
        assert await host.evaluate(drawn, core_names) == "captions,pin"
        assert await host.get_by_role("button", name="⏹️ End Space").is_visible()
        await fan.goto(fan_url)
        await fan.wait_for_selector("#tools button[data-key='follow']", timeout=10_000)
        assert await fan.evaluate(drawn, core_names) == "follow"
        labels = await fan.eval_on_selector_all("#reactions button", "bs => bs.map(b => b.textContent)")
        assert tuple(labels) == REACTIONS  # the one palette, from the table
        # levels arrive many times a second while the host speaks: the buttons stay the same nodes
        await host.evaluate("() => { document.querySelector(\"#tools [data-key='pin']\").marked = true; }")
        await host.wait_for_selector("#stage li.speaking[aria-label^='Hana Host']", timeout=15_000)
        await fan.get_by_role("button", name="✋ Raise hand").click()
        await host.wait_for_selector("#tools button[data-key='clear_queue']", timeout=10_000)
        await host.get_by_role("button", name="Approve Finn Fan").click()
        await fan.wait_for_selector("#tools button[data-key='step_down']", timeout=10_000)
        await host.wait_for_selector("#tools button[data-key='mute_all']", timeout=10_000)
        assert await host.evaluate("() => document.querySelector(\"#tools [data-key='pin']\").marked === true")
        await fan.click("#tools button[data-key='step_down']")
        await fan.wait_for_selector("#stage li[aria-label^='Finn Fan']", state="detached", timeout=10_000)
        await fan.wait_for_selector("#tools button[data-key='step_down']", state="detached", timeout=10_000)
        await host.get_by_role("button", name="⏹️ End Space").click()
        await host.get_by_role("dialog").get_by_role("button", name="End Space").click()
        await fan.wait_for_selector("text=This Space has ended.", timeout=10_000)
        await browser.close()
