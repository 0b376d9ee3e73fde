"""A Discord Stage member heard in Chromium and in the recording (issue 18).

The member's client (tests/support/discord_voice_fake.py) encrypts its 660 Hz Opus with its own
``davey.DaveSession`` (DAVE protocol version 1) and sends it to the bot through the fake voice
server; the bot decrypts it, the room mixes it as that member's voice, and:

* a web listener in headless Chromium hears it: the FFT peak of what the page's ``<audio>`` element
  receives, measured in the page with a WebAudio ``AnalyserNode`` (as tests/e2e/test_browser_room.py
  measures loudness), is 660 Hz within two FFT bins;
* the page shows the member speaking (``li.speaking``): levels from the room's mix, per speaker, reach
  the page for a Discord speaker exactly as for a web speaker;
* the host records from Discord (``/record start`` and ``stop``) and the Ogg file, decoded with PyAV,
  peaks at 660 Hz.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import numpy.typing as npt
import pytest

from core.clock import SystemClock
from core.ports import SAMPLE_RATE
from spacebridge.app import stop
from tests.e2e.test_browser_room import CHROMIUM, FLAGS, chromium_present  # noqa: F401  (autouse fixture)
from tests.integration.discord.test_voice_rx import HOST, MEMBER, approve, mixed, on_air, speak, ticks_until
from tests.support.discord_fake import STAGE
from tests.support.discord_voice_fake import AESGCM_MODE, XCHACHA

pytestmark = pytest.mark.slow
TONE = 660.0

# The spectrum of what the page's <audio> element receives over ~2 s (10 reads of an 8192-point FFT,
# magnitudes summed), measured in the page: the strongest frequency between 100 Hz and 2 kHz, the FFT's
# resolution, and how far that peak stands above the median of the band (silence has no clear peak).
SPECTRUM_JS = """async () => {
  const el = document.getElementById('audio');
  if (!el.srcObject) return null;
  const ctx = new AudioContext();
  const src = ctx.createMediaStreamSource(el.srcObject);
  const an = ctx.createAnalyser(); an.fftSize = 8192; an.smoothingTimeConstant = 0; src.connect(an);
  const bins = new Float32Array(an.frequencyBinCount), sum = new Float64Array(an.frequencyBinCount);
  for (let i = 0; i < 10; i++) {
    await new Promise(r => setTimeout(r, 200));
    an.getFloatFrequencyData(bins);
    for (let k = 0; k < bins.length; k++) sum[k] += Number.isFinite(bins[k]) ? Math.pow(10, bins[k] / 20) : 0;
  }
  const res = ctx.sampleRate / an.fftSize;
  const lo = Math.ceil(100 / res), hi = Math.floor(2000 / res);
  let best = lo;
  for (let k = lo; k <= hi; k++) if (sum[k] > sum[best]) best = k;
  const band = Array.from(sum.slice(lo, hi + 1)).sort((a, b) => a - b);
  const median = band[band.length >> 1] || 1e-12;
  ctx.close();
  return { peak: best * res, resolution: res, prominence: sum[best] / median };
}"""


def decode_ogg(path: Path) -> npt.NDArray[np.float64]:
    with av.open(str(path)) as f:
        chunks = [fr.to_ndarray().reshape(-1) for fr in f.decode(audio=0)]
    return np.concatenate(chunks).astype(np.float64)


def peak(audio: npt.NDArray[np.float64]) -> tuple[float, float]:
    """(strongest frequency between 100 Hz and 2 kHz, FFT resolution) of ``audio`` (mono, 48 kHz)."""
    spec = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    freqs = np.fft.rfftfreq(audio.size, 1 / SAMPLE_RATE)
    band = (freqs > 100) & (freqs < 2000)
    return float(freqs[band][int(np.argmax(spec[band]))]), SAMPLE_RATE / audio.size


async def heard_in_page(page: Any, hz: float, deadline_s: float = 60) -> dict[str, float]:
    """Measure until the page hears ``hz`` as a clear peak (media takes a moment to connect)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    last: dict[str, float] | None = None
    while loop.time() < end:
        last = await page.evaluate(SPECTRUM_JS)
        if last is not None and abs(last["peak"] - hz) <= 2 * last["resolution"] and last["prominence"] > 20:
            return last
        if last is None:
            await page.wait_for_timeout(100)
    raise AssertionError(f"the web listener never heard {hz} Hz; last measured {last}")


async def test_a_dave_members_tone_is_heard_in_chromium_shown_speaking_and_recorded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from playwright.async_api import async_playwright

    fake, guild, p, space_id = await on_air(tmp_path, monkeypatch, 1, [AESGCM_MODE, XCHACHA], SystemClock())
    talker: asyncio.Task[None] | None = None
    try:
        assert fake.voice.session["dave"] == 1
        await fake.join_voice(guild, MEMBER, fake.channel_of(guild, STAGE))
        member_acc = await approve(p, space_id, MEMBER)
        mika = await fake.voice.speaker(MEMBER, fake.channel_of(guild, STAGE))
        assert mika.dave is not None and mika.dave.ready
        talker = asyncio.create_task(speak(fake, mika, TONE))
        await ticks_until(p.rooms.ticks(space_id), lambda w: mixed(w, member_acc))

        fan = await p.core.ensure_account("web", "fan", "Finn Fan")
        url = f"{p.url}/s/{space_id}#t={p.tokens.issue(space_id, fan.id, 'listener', p.core.now())}"
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = await (await browser.new_context()).new_page()
            await page.goto(url)
            await page.wait_for_selector("text=Hosted by Hana")
            measured = await heard_in_page(page, TONE)
            assert measured["resolution"] < 10, measured
            # the member's place on the stage lights up from the room's levels; the silent host's does not
            await page.wait_for_selector("#stage li.speaking[aria-label^='Mika']", timeout=10_000)
            assert await page.locator("#stage li[aria-label^='Hana']").count() == 1
            assert await page.locator("#stage li.speaking[aria-label^='Hana']").count() == 0
            await browser.close()

        # the host records from Discord; the member (who did not opt out) is in the file
        started = await fake.reply(await fake.interact(guild, HOST, "record", None, {"action": "start"}))
        assert "/p/recording/r/" in started["content"], started
        recorded = 0

        def long_enough(window: list[Any]) -> bool:
            nonlocal recorded
            recorded += 1
            return recorded >= 150 and mixed(window, member_acc)  # 3 s of the room with the member in it

        await ticks_until(p.rooms.ticks(space_id), long_enough)
        stopped = await fake.reply(await fake.interact(guild, HOST, "record", None, {"action": "stop"}))
        assert "Recording saved" in stopped["content"], stopped
        found = re.search(r"/p/recording/r/[\w-]+", stopped["content"])
        assert found is not None, stopped
        async with aiohttp.ClientSession() as http, http.get(f"{p.url}{found.group(0)}/audio.ogg") as r:
            assert r.status == 200 and r.headers["Content-Type"] == "audio/ogg"
            (tmp_path / "rec.ogg").write_bytes(await r.read())
        audio = decode_ogg(tmp_path / "rec.ogg")
        assert audio.size > 2 * SAMPLE_RATE, "the recording is shorter than what was recorded"
        hz, resolution = peak(audio)
        assert abs(hz - TONE) <= 2 * resolution, f"the recording peaks at {hz} Hz, not the member's {TONE} Hz"
    finally:
        if talker is not None:
            talker.cancel()
        await stop(p)
        await fake.stop()
