"""Join-to-audio latency in headless Chromium on loopback: open a personal link, time until the
page's <audio> carries sound from a speaker already on stage, and where that time went.

    python -m bench.join_latency [--joins N] [--beeps] [--json]

The speaker's fake microphone plays a continuous 440 Hz tone from a WAV file made here
(``--use-file-for-fake-audio-capture``), so the time measured is the join, not the wait for the next
of the default fake device's short beeps (``--beeps`` measures that way, as earlier figures did).

Each join's timeline is read in the page (an init script watches the page's WebSocket and
RTCPeerConnection without changing room.js): navigation, the page's files fetched, DOM ready,
socket created and open, welcome, offer sent, answer applied, ICE connected, DTLS connected
(connectionState), first RTP packet received (getStats), sound heard. The JSON gives p50 of each
mark (seconds after the click) next to join-to-audio p50/p99, and the machine's load average, since
the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import wave
from typing import Any

import numpy as np

from core.model.accounts import Actor
from spacebridge.app import build, start, stop
from spacebridge.config import load_settings
from tests.e2e.test_browser_room import CHROMIUM, FLAGS

# Records, once each, the wall-clock time (ms) of the join's steps in window.__tl.
TIMELINE_JS = """(() => {
  const tl = window.__tl = {};
  const mark = (k) => { if (!(k in tl)) tl[k] = performance.timeOrigin + performance.now(); };
  mark('script');
  document.addEventListener('DOMContentLoaded', () => {
    mark('dom_ready');
    for (const e of performance.getEntriesByType('resource')) {
      const n = e.name.split('/').pop().split('?')[0];
      if (n === 'room.js' || n === 'room_dom.js' || n === 'room.css') {
        tl['got_' + n] = performance.timeOrigin + e.responseEnd;
      }
    }
  });
  const WS = window.WebSocket;
  window.WebSocket = function (...args) {
    const ws = new WS(...args); mark('ws_new');
    ws.addEventListener('open', () => mark('ws_open'));
    ws.addEventListener('message', (m) => {
      const t = (m.data.match(/"type": ?"(\\w+)"/) || [])[1];
      if (t === 'welcome' || t === 'answer') mark(t);
    });
    const send = ws.send.bind(ws);
    ws.send = (d) => { if (String(d).includes('"type":"offer"')) mark('offer_sent'); return send(d); };
    return ws;
  };
  window.WebSocket.prototype = WS.prototype; Object.assign(window.WebSocket, WS);
  const PC = window.RTCPeerConnection;
  window.RTCPeerConnection = function (...args) {
    const pc = new PC(...args); mark('pc_new');
    pc.addEventListener('iceconnectionstatechange', () => mark('ice_' + pc.iceConnectionState));
    pc.addEventListener('connectionstatechange', () => mark('pc_' + pc.connectionState));
    pc.addEventListener('track', () => mark('track'));
    const srd = pc.setRemoteDescription.bind(pc);
    pc.setRemoteDescription = (d) => srd(d).then((r) => { mark('answer_applied'); return r; });
    const poll = async () => {
      if (pc.connectionState === 'closed') return;
      const stats = await pc.getStats();
      for (const s of stats.values()) {
        if (s.type === 'inbound-rtp' && s.packetsReceived > 0) { mark('first_rtp'); return; }
      }
      setTimeout(poll, 5);
    };
    poll();
    return pc;
  };
  window.RTCPeerConnection.prototype = PC.prototype;
})();"""

# Resolves with the wall-clock time (ms) at which the page's audio first carries sound.
SOUND_JS = """() => new Promise(resolve => {
  const ctx = new AudioContext(); let an = null; const buf = new Float32Array(1024);
  const tick = () => {
    const el = document.getElementById('audio');  // null while the page is still being parsed
    if (!an && el && el.srcObject) {
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

MARKS = ("script", "got_room.css", "got_room.js", "got_room_dom.js", "dom_ready", "pc_new", "ws_new", "ws_open",
         "welcome", "offer_sent", "srv_answered", "answer", "answer_applied",
         "ice_checking", "ice_connected", "pc_connected", "srv_connected", "srv_first_packet", "track", "first_rtp")


async def server_marks(rooms: Any, space_id: str, pid: str, clicked: float, into: dict[str, float]) -> None:
    """The server's side of one join, read from its room every 2 ms: answered (the participant is in
    the room), DTLS connected, first packet handed to the socket."""
    while "srv_first_packet" not in into:
        room = rooms.rooms.get(space_id)
        part = room.participants.get(pid) if room is not None else None
        if part is not None and part.outlet is not None:
            now = time.time() - clicked
            into.setdefault("srv_answered", now)
            if part.pc.connectionState == "connected":
                into.setdefault("srv_connected", now)
            if part.outlet.sent:
                into["srv_first_packet"] = now
        await asyncio.sleep(0.002)


DEADLINE_S = 30.0  # a join not heard by then counts as not heard


def tone_wav(path: str, seconds: float = 10.0) -> None:
    t = np.arange(int(48_000 * seconds)) / 48_000
    pcm = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48_000)
        w.writeframes(pcm.tobytes())


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(len(s) * q))], 3)


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
    failed = 0
    marks: dict[str, list[float]] = {}
    load = os.getloadavg()[0]
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
            await page.add_init_script(TIMELINE_JS)
            await page.goto("about:blank")
            clicked = time.time()
            server: dict[str, float] = {}
            watch = asyncio.create_task(server_marks(p.rooms, space.id, acc.id, clicked, server))
            await page.goto(url, wait_until="commit")
            try:
                heard = await asyncio.wait_for(page.evaluate(SOUND_JS), DEADLINE_S) / 1000
            except TimeoutError:
                failed += 1  # never heard: counted, and the next join goes on
                watch.cancel()
                await page.close()
                continue
            samples.append(heard - clicked)
            timeline: dict[str, float] = await page.evaluate("window.__tl")
            watch.cancel()
            for k, v in timeline.items():
                marks.setdefault(k, []).append(v / 1000 - clicked)
            for k, v in server.items():
                marks.setdefault(k, []).append(v)
            await page.close()
        await browser.close()
    await stop(p)
    load = max(load, os.getloadavg()[0])
    if not samples:
        raise SystemExit(f"no join heard the speaker within {DEADLINE_S} s")
    return {"joins": joins, "not_heard": failed,
            "join_to_audio_p50_s": pct(samples, 0.5), "join_to_audio_p99_s": pct(samples, 0.99),
            "timeline_p50_s": {k: pct(marks[k], 0.5) for k in MARKS if k in marks},
            "load_average_1m": round(load, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--joins", type=int, default=20)
    ap.add_argument("--beeps", action="store_true", help="the default fake microphone (short beeps)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    out = asyncio.run(run(a.joins, a.beeps))
    print(json.dumps(out) if a.json else "\n".join(f"{k}: {v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
