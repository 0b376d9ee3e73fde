"""Headless Chromium (Debian's) in the web room: a speaker and a listener, as people use it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from core.model.accounts import Actor
from spacebridge.app import Instance
from tests.support.netguard import CHROMIUM_FLAGS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required", *CHROMIUM_FLAGS,
]

# Loudness of what the page's <audio> element receives, measured in the page with WebAudio.
LEVEL_JS = """async () => {
  const el = document.getElementById('audio');
  if (!el.srcObject) return -1;
  const ctx = new AudioContext();
  const src = ctx.createMediaStreamSource(el.srcObject);
  const an = ctx.createAnalyser(); an.fftSize = 2048; src.connect(an);
  const buf = new Float32Array(an.fftSize);
  let peak = 0;
  for (let i = 0; i < 20; i++) {
    await new Promise(r => setTimeout(r, 50));
    an.getFloatTimeDomainData(buf);
    for (const v of buf) peak = Math.max(peak, Math.abs(v));
  }
  ctx.close();
  return peak;
}"""


@pytest.fixture(autouse=True)
def chromium_present() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing; .ci/run must install it")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does)")


async def test_speaker_and_listener_in_chromium(platform: Instance) -> None:
    from playwright.async_api import async_playwright

    core = platform.core
    host_acc = await core.ensure_account("web", "host", "Hana Host")
    fan_acc = await core.ensure_account("web", "fan", "Finn Fan")
    space = await core.create_space(Actor(account_id=host_acc.id, is_community_admin=True), "Browser Space")
    now = core.now()
    host_url = f"{platform.url}/s/{space.id}#t={platform.tokens.issue(space.id, host_acc.id, 'speaker', now)}"
    fan_url = f"{platform.url}/s/{space.id}#t={platform.tokens.issue(space.id, fan_acc.id, 'listener', now)}"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        host = await (await browser.new_context()).new_page()
        fan = await (await browser.new_context()).new_page()
        await host.goto(host_url)
        await host.wait_for_selector("text=Browser Space")
        await fan.goto(fan_url)
        await fan.wait_for_selector("text=Hosted by Hana Host")
        await fan.wait_for_function("document.getElementById('audio').srcObject !== null", timeout=15_000)
        await fan.wait_for_timeout(1500)
        level = await fan.evaluate(LEVEL_JS)
        assert level > 0.01, f"the listener's audio is silent (peak {level})"
        await fan.get_by_role("button", name="React 👏").click()
        await host.wait_for_selector(".floater:has-text('👏')", timeout=5_000)
        await fan.get_by_label("Write a comment").fill("hello from the browser")
        await fan.keyboard.press("Enter")
        await host.wait_for_selector("#comments li:has-text('Finn Fan: hello from the browser')", timeout=5_000)
        # the host's tone is already heard: their ring lights, and goes out once they mute
        await fan.wait_for_selector("#stage li.speaking[aria-label^='Hana Host']", timeout=10_000)
        await host.get_by_role("button", name="🎙 Mute").click()
        await fan.wait_for_selector("#stage li[aria-label^='Hana Host, Host, muted']", timeout=10_000)
        await fan.wait_for_selector("#stage li.speaking", state="detached", timeout=10_000)
        hand = fan.get_by_role("button", name="✋ Raise hand")
        await hand.focus()  # usable from the keyboard
        await fan.keyboard.press("Enter")
        await host.get_by_role("button", name="Approve Finn Fan").wait_for(timeout=5_000)
        await host.get_by_role("button", name="Approve Finn Fan").click()
        await fan.wait_for_selector("#stage li[aria-label^='Finn Fan, Speaker']", timeout=10_000)
        await browser.close()


async def test_expired_link_says_so(platform: Instance) -> None:
    """An expired link (or none) makes the page ask for a token from the session; nobody signed in
    and an unlisted Space: the page says to sign in (tests/e2e/test_web_signin.py has the rest)."""
    from playwright.async_api import async_playwright

    host_acc = await platform.core.ensure_account("web", "host", "Hana Host")
    space = await platform.core.create_space(Actor(account_id=host_acc.id, is_community_admin=True), "S",
                                             visibility="unlisted")
    token = platform.tokens.issue(space.id, host_acc.id, "listener", platform.core.now(), ttl_s=-1)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = await browser.new_page()
        await page.goto(f"{platform.url}/s/{space.id}#t={token}")
        await page.wait_for_selector("text=Sign in to join this Space", timeout=10_000)
        await page.goto(f"{platform.url}/s/{space.id}")
        await page.wait_for_selector("text=Sign in to join this Space", timeout=10_000)
        await browser.close()


# Loudness of what an <audio> element plays from a URL (HLS through Media Source Extensions).
ELEMENT_LEVEL_JS = """async () => {
  const el = document.getElementById('audio');
  const ctx = new AudioContext();
  const src = ctx.createMediaElementSource(el);
  const an = ctx.createAnalyser(); an.fftSize = 2048; src.connect(an); an.connect(ctx.destination);
  const buf = new Float32Array(an.fftSize);
  let peak = 0;
  for (let i = 0; i < 40; i++) {
    await new Promise(r => setTimeout(r, 50));
    an.getFloatTimeDomainData(buf);
    for (const v of buf) peak = Math.max(peak, Math.abs(v));
  }
  return peak;
}"""


async def test_listener_on_hls_in_chromium(platform: Instance) -> None:
    """A listener who asks for HLS (#hls=1, as a big audience's page would) hears the speaker from
    the playlist and segments, and still reacts over the signaling socket."""
    from playwright.async_api import async_playwright

    core = platform.core
    host_acc = await core.ensure_account("web", "host", "Hana Host")
    fan_acc = await core.ensure_account("web", "fan", "Finn Fan")
    space = await core.create_space(Actor(account_id=host_acc.id, is_community_admin=True), "HLS Space")
    now = core.now()
    host_url = f"{platform.url}/s/{space.id}#t={platform.tokens.issue(space.id, host_acc.id, 'speaker', now)}"
    fan_url = f"{platform.url}/s/{space.id}#t={platform.tokens.issue(space.id, fan_acc.id, 'listener', now)}&hls=1"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        host = await (await browser.new_context()).new_page()
        fan = await (await browser.new_context()).new_page()
        await host.goto(host_url)
        await host.wait_for_selector("text=HLS Space")
        await fan.goto(fan_url)
        await fan.wait_for_selector("text=Hosted by Hana Host")
        playing = ("(() => { const a = document.getElementById('audio');"
                   " return a.srcObject === null && a.src.startsWith('blob:') && a.currentTime > 1; })()")
        # polled with evaluate: wait_for_function evals the string in the page, which the room's CSP forbids
        for _ in range(200):
            if await fan.evaluate(playing):
                break
            await fan.wait_for_timeout(100)
        else:
            raise AssertionError("the HLS listener's <audio> never played from a blob: source")
        level = await fan.evaluate(ELEMENT_LEVEL_JS)
        assert level > 0.01, f"the HLS listener's audio is silent (peak {level})"
        await fan.get_by_role("button", name="React 👏").click()
        await host.wait_for_selector(".floater:has-text('👏')", timeout=5_000)
        await browser.close()
