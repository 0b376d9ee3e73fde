"""Join-to-audio latency in headless Chromium on loopback: open a personal link, time until the
page's <audio> carries sound from a speaker already on stage.

    python -m bench.join_latency [--joins N] [--beeps] --json

The speaker's fake microphone plays a continuous 440 Hz tone from a WAV file made here
(``--use-file-for-fake-audio-capture``), so the time measured is the join, not the wait for the next
of the default fake device's short beeps (``--beeps`` measures that way, as earlier figures did).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import wave

import numpy as np

from core.model.accounts import Actor
from spacebridge.app import build, start, stop
from spacebridge.config import load_settings
from tests.e2e.test_browser_room import CHROMIUM, FLAGS

# Resolves with the wall-clock time (ms) at which the page's audio first carries sound.
SOUND_JS = """() => new Promise(resolve => {
  const el = document.getElementById('audio');
  const ctx = new AudioContext(); let an = null; const buf = new Float32Array(1024);
  const tick = () => {
    if (!an && el.srcObject) {
      an = ctx.createAnalyser(); an.fftSize = 1024; ctx.createMediaStreamSource(el.srcObject).connect(an);
    }
    if (an) {
      an.getFloatTimeDomainData(buf);
      if (buf.some(v => Math.abs(v) > 0.01)) {
        ctx.close(); return resolve(performance.timeOrigin + performance.now());
      }
    }
    setTimeout(tick, 5);
  };
  tick();
})"""


def tone_wav(path: str, seconds: float = 10.0) -> None:
    t = np.arange(int(48_000 * seconds)) / 48_000
    pcm = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48_000)
        w.writeframes(pcm.tobytes())


async def run(joins: int, beeps: bool = False) -> dict[str, object]:
    from playwright.async_api import async_playwright

    d = tempfile.mkdtemp()
    flags = list(FLAGS)
    if not beeps:
        tone_wav(f"{d}/tone.wav")
        flags.append(f"--use-file-for-fake-audio-capture={d}/tone.wav")
    os.environ["SPACEBRIDGE_DATA_DIR"] = d
    p = await build(load_settings(database_url=f"sqlite:///{d}/j.sqlite3", ice_announce=["127.0.0.2"], job_workers=0,
                                  ice_allowed_networks=["127.0.0.0/8"]))  # the browser's loopback candidates only
    await start(p, "127.0.0.1", 0)
    host = await p.core.ensure_account("web", "host", "Host")
    space = await p.core.create_space(Actor(account_id=host.id, is_community_admin=True), "Latency")
    samples: list[float] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=flags)
        speaker = await browser.new_page()
        await speaker.goto(f"{p.url}/s/{space.id}#t={p.tokens.issue(space.id, host.id, 'speaker', p.core.now())}")
        await speaker.wait_for_selector("text=Latency")
        await asyncio.sleep(2)
        for i in range(joins):
            acc = await p.core.ensure_account("web", f"l{i}", f"Listener {i}")
            url = f"{p.url}/s/{space.id}#t={p.tokens.issue(space.id, acc.id, 'listener', p.core.now())}"
            page = await browser.new_page()
            await page.goto("about:blank")
            clicked = time.time()
            await page.goto(url, wait_until="commit")
            heard = await page.evaluate(SOUND_JS) / 1000
            samples.append(heard - clicked)
            await page.close()
        await browser.close()
    await stop(p)
    samples.sort()
    return {"joins": joins, "join_to_audio_p50_s": round(samples[len(samples) // 2], 3),
            "join_to_audio_p99_s": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--joins", type=int, default=20)
    ap.add_argument("--beeps", action="store_true", help="the default fake microphone (short beeps)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    out = asyncio.run(run(a.joins, a.beeps))
    print(json.dumps(out) if a.json else "\n".join(f"{k}: {v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
