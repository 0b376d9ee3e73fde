"""Recording in Chromium: the indicator and the opt-out offered in the web room, and the replay page
playing the recording with captions and reactions at their moments."""

from __future__ import annotations

import asyncio

from core.model.accounts import Actor
from spacebridge.app import Instance
from tests.e2e.test_browser_room import CHROMIUM, FLAGS, chromium_present

__all__ = ["chromium_present"]  # the fixture that fails (CI) or skips without Chromium


async def test_recording_indicator_opt_out_and_replay_in_chromium(platform: Instance) -> None:
    from playwright.async_api import async_playwright

    core = platform.core
    hana = await core.ensure_account("web", "hana", "Hana Host")
    sam = await core.ensure_account("web", "sam", "Sam Speaker")
    host = Actor(account_id=hana.id)
    space = await core.create_space(Actor(account_id=hana.id, is_community_admin=True), "Replayed")
    await core.join(Actor(account_id=sam.id), space.id)
    await core.promote(host, space.id, sam.id, "speaker")
    await core.set_captions(host, space.id, True)
    now = core.now()
    sam_url = f"{platform.url}/s/{space.id}#t={platform.tokens.issue(space.id, sam.id, 'speaker', now)}"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = await (await browser.new_context()).new_page()
        await page.goto(sam_url)
        await page.wait_for_selector("text=Replayed")
        await page.get_by_role("button", name="Clip 30 s").wait_for()  # a plugin's button, for anyone

        reply = await platform.plugins.invoke("record", host, space.id, {"action": "start"}, "discord")
        assert reply.url is not None
        await page.wait_for_selector("#badges:has-text('🔴 Recording')", timeout=5_000)
        offer = page.locator("#notice").get_by_role("button", name="Leave my voice out")
        await offer.wait_for(timeout=5_000)
        await offer.click()
        await page.wait_for_selector("#status:has-text('left out of this Space')", timeout=5_000)
        store = platform.plugins.plugins["recording"][1].store
        assert await store.get(f"optout:{space.id}:{sam.id}") is not None

        await asyncio.sleep(1.0)
        room = platform.rooms.rooms[space.id]
        await core.add_caption(space.id, hana.id, "welcome to the replay", room.seq * 0.02, room.seq * 0.02 + 1.2)
        await asyncio.sleep(1.0)
        await core.react(Actor(account_id=sam.id), space.id, "🎉")
        await asyncio.sleep(1.5)
        await platform.plugins.invoke("record", host, space.id, {"action": "stop"}, "discord")
        await page.wait_for_selector("#badges:empty", state="attached", timeout=5_000)

        replay = await (await browser.new_context()).new_page()
        await replay.goto(reply.url)
        await replay.wait_for_selector("body[data-ready='1']", timeout=10_000)
        await replay.wait_for_selector("h1:has-text('Replayed')")
        await replay.wait_for_selector("#log li:has-text('🎉 from Sam Speaker')")
        await replay.evaluate("document.getElementById('audio').play()")
        caption_at = await replay.evaluate("""() => new Promise((done) => {
            const a = document.getElementById('audio');
            const check = () => document.getElementById('caption').textContent.includes('welcome to the replay')
                ? done(a.currentTime) : setTimeout(check, 20);
            check(); })""")
        float_at = await replay.evaluate("""() => new Promise((done) => {
            const a = document.getElementById('audio');
            const check = () => document.querySelector('.float') ? done(a.currentTime) : setTimeout(check, 20);
            check(); })""")
        timeline = await replay.evaluate("fetch(location.pathname + '/timeline.json').then(r => r.json())")
        cap = next(e for e in timeline["events"] if e["type"] == "caption.line")
        reaction = next(e for e in timeline["events"] if e["type"] == "reaction.sent")
        # shown when the audio reaches them (timeupdate fires every ~250 ms)
        assert cap["t"] - 0.05 <= caption_at <= cap["t"] + 0.6, (caption_at, cap)
        assert reaction["t"] - 0.05 <= float_at <= reaction["t"] + 0.6, (float_at, reaction)
        assert 0.5 < cap["t"] < reaction["t"]
        await browser.close()
