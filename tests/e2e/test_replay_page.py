"""Recording in Chromium: the indicator and the opt-out offered in the web room, and the replay page
playing the recording with captions and reactions at their moments."""

from __future__ import annotations

import asyncio
from typing import Any

from core.model.accounts import Actor
from spacebridge.app import Instance
from tests.e2e.test_browser_room import CHROMIUM, FLAGS, chromium_present

__all__ = ["chromium_present"]  # the fixture that fails (CI) or skips without Chromium


# Watches the replay page from before it plays: resolves with the audio's position at the moment the
# caption shows ``text`` and at the moment a reaction floats up (MutationObserver callbacks, so the
# page's own rendering is what is timed). No eval: the page's CSP forbids it outside Playwright's
# own call, and an EvalError thrown in a later timer left the old polling promise unsettled forever.
WATCH = """(text) => {
  const a = document.getElementById('audio');
  const when = (node, seen) => new Promise((done) => {
    if (seen()) { done(a.currentTime); return; }
    new MutationObserver((_, obs) => { if (seen()) { obs.disconnect(); done(a.currentTime); } })
      .observe(node, { childList: true, subtree: true, characterData: true });
  });
  const caption = document.getElementById('caption');
  window.shownAt = {
    caption: when(caption, () => caption.textContent.includes(text)),
    float: when(document.getElementById('stage'), () => document.querySelector('.float') !== null),
  };
}"""


async def ticks_pass(room: Any, ticks: int) -> None:
    """Wait until the room's 20 ms clock (what the recording's offsets count) has moved on."""
    start = room.seq
    deadline = asyncio.get_running_loop().time() + 60
    while room.seq < start + ticks:
        assert asyncio.get_running_loop().time() < deadline, "the room's clock stopped"
        await asyncio.sleep(0.02)


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
        assert await page.get_by_role("button", name="Clip 30 s").count() == 0, "no Clip while nothing records"

        reply = await platform.plugins.invoke("record", host, space.id, {"action": "start"}, "discord")
        assert reply.url is not None
        await page.wait_for_selector("#badges:has-text('🔴 Recording')", timeout=5_000)
        await page.get_by_role("button", name="Clip 30 s").wait_for()  # a plugin's button, while recording
        offer = page.locator("#notice").get_by_role("button", name="Leave my voice out")
        await offer.wait_for(timeout=5_000)
        await offer.click()
        await page.wait_for_selector("#status:has-text('left out of this Space')", timeout=5_000)
        store = platform.plugins.plugins["recording"][1].store
        assert await store.get(f"optout:{space.id}:{sam.id}") is not None

        room = platform.rooms.rooms[space.id]
        await ticks_pass(room, 50)  # a second of the room's own clock, so the caption is not at 0
        await core.add_caption(space.id, hana.id, "welcome to the replay", room.seq * 0.02, room.seq * 0.02 + 1.2)
        await ticks_pass(room, 50)
        await core.react(Actor(account_id=sam.id), space.id, "🎉")
        await ticks_pass(room, 75)
        await platform.plugins.invoke("record", host, space.id, {"action": "stop"}, "discord")
        await page.wait_for_selector("#badges:empty", state="attached", timeout=5_000)

        replay = await (await browser.new_context()).new_page()
        errors: list[str] = []
        replay.on("pageerror", lambda e: errors.append(str(e)))  # a script error in the page fails the test
        await replay.goto(reply.url)
        await replay.wait_for_selector("body[data-ready='1']", timeout=10_000)
        await replay.wait_for_selector("h1:has-text('Replayed')")
        await replay.wait_for_selector("#log li:has-text('🎉 from Sam Speaker')")
        await replay.evaluate(WATCH, "welcome to the replay")
        await replay.evaluate("void document.getElementById('audio').play()")  # its promise may never settle
        # the recording is a few seconds long: both show within a minute even on a very busy machine
        caption_at = await asyncio.wait_for(replay.evaluate("window.shownAt.caption"), 60)
        float_at = await asyncio.wait_for(replay.evaluate("window.shownAt.float"), 60)
        timeline = await replay.evaluate("fetch(location.pathname + '/timeline.json').then(r => r.json())")
        cap = next(e for e in timeline["events"] if e["type"] == "caption.line")
        reaction = next(e for e in timeline["events"] if e["type"] == "reaction.sent")
        # shown when the audio reaches them, not before (the page reads the audio's own clock; how soon
        # after depends on a busy machine, so that is not asserted)
        assert caption_at >= cap["t"] - 0.05, (caption_at, cap)
        assert float_at >= reaction["t"] - 0.05, (float_at, reaction)
        assert 0.5 < cap["t"] < reaction["t"]
        assert not errors, errors
        await browser.close()
