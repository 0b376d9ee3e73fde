"""HLS audience capacity: nginx serving a live Space's playlist to N listeners' request pattern.

    python -m bench.hls_listeners --clients N [--seconds T] [--players P] --json

What runs, all on this machine:

* the production ``HlsWriter`` fed in real time by the room's Opus encoder (a 440 Hz tone), writing
  1 s fMP4 segments and a rolling playlist into a temporary directory;
* nginx (Debian's package) serving that directory, configured as docs/deploy.md says;
* wrk (Debian's package) making listeners' requests in their proportions (each listener asks for the
  playlist once per target duration and for each new segment once: half playlists, half the newest
  segment) as fast as nginx answers them; the rate reached, over the ``2 N / target`` requests per
  second that ``N`` listeners make, says whether nginx serves ``N`` listeners here
  (``--paced`` spreads exactly ``N`` listeners' rate over the connections instead);
* ``P`` simulated players (Python, through the same nginx) that play as hls.js does: start two
  segments behind the live edge, poll the playlist every target duration, download each segment,
  and advance a playhead in real time. A stall is time the playhead waited for a segment.

Printed: ``clients`` (the listeners asked for), ``requests_per_s`` achieved by wrk against the
``requests_per_s_needed``, ``listeners_served`` (the listeners that rate is), ``segments_per_s``
served, ``stall_pct`` (players' stalled time over their play time), ``latency_s`` (median of now
minus the program date-time of the audio at the playhead), ``p99_ms`` (wrk's request latency) and
``errors``. Target: 10,000 listeners with 0 stalls
and 2-5 s latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import aiohttp
import numpy as np

from adapters.webrtc.hls import PLAYLIST, HlsWriter
from adapters.webrtc.room import OpusEncoder
from core.ports import FRAME_SAMPLES, SAMPLE_RATE
from tests.support.nginx import NGINX, hls_location, start_nginx, stop_nginx
from tests.support.stripe_fake import free_port

LUA = r"""
-- Listeners' requests in their proportions: for each listener, one playlist and one new segment per
-- target duration, so half the requests are the playlist and half the newest segment (learnt from
-- the last playlist read). wrk keeps every connection busy (closed loop), so the rate it reaches is
-- the most this nginx serves in this pattern; HLS_PAUSE_MS > 0 paces each connection instead.
local pause_ms = tonumber(os.getenv("HLS_PAUSE_MS"))
local base = os.getenv("HLS_BASE")
local newest, turn = nil, 0
segments, bad = 0, 0  -- globals: done() reads them from every thread
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function request()
  turn = turn + 1
  if newest == nil or turn % 2 == 1 then
    return wrk.format("GET", base .. "index.m3u8")
  end
  return wrk.format("GET", base .. newest)
end

function response(status, headers, body)
  if status ~= 200 then bad = bad + 1 return end
  if body:sub(1, 7) == "#EXTM3U" then
    for line in body:gmatch("[^\n]+") do
      if line:sub(1, 1) ~= "#" then newest = line end
    end
  else
    segments = segments + 1
  end
end

function delay()
  return pause_ms
end

function done(summary, latency, requests)
  local segs, errs = 0, 0
  for _, t in ipairs(threads) do
    segs = segs + t:get("segments")
    errs = errs + t:get("bad")
  end
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\n", summary.requests, summary.duration,
           latency:percentile(99), errs + e.connect + e.read + e.write + e.timeout, latency:percentile(50), segs))
end
"""


def feed(writer: HlsWriter, stop: threading.Event) -> None:
    """The room's encoder at real time: a tone, 20 ms a packet."""
    enc, seq, t0 = OpusEncoder(), 0, time.monotonic()
    while not stop.is_set():
        t = (np.arange(FRAME_SAMPLES) + seq * FRAME_SAMPLES) / SAMPLE_RATE
        pcm = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
        for p in enc.encode(pcm, seq):
            writer.write(bytes(p), int(p.pts))
        seq += 1
        time.sleep(max(0.0, t0 + seq * 0.02 - time.monotonic()))


def parse(text: str) -> tuple[float, int, list[tuple[str, float, datetime | None]]]:
    target, seq, segs, pdt, dur = 1.0, 0, [], None, 0.0
    for line in text.splitlines():
        if line.startswith("#EXT-X-TARGETDURATION:"):
            target = float(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            seq = int(line.split(":", 1)[1])
        elif line.startswith("#EXTINF:"):
            dur = float(line.split(":", 1)[1].rstrip(","))
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pdt = datetime.fromisoformat(re.sub(r"([+-]\d\d)(\d\d)$", r"\1:\2", line.split(":", 1)[1]))
        elif line and not line.startswith("#"):
            segs.append((line, dur, pdt))
            pdt = None
    return target, seq, segs


async def player(base: str, seconds: float, out: dict[str, list[float]]) -> None:
    """One listener's player: buffer from two segments behind the live edge, play in real time.

    The playhead is a wall-clock instant of the Space's audio (program date-time); it advances with
    real time but never past the end of what was downloaded: the difference is stalled time."""
    async with aiohttp.ClientSession() as http:
        start = last = time.monotonic()
        next_seq = -1
        playhead: float | None = None  # epoch seconds of the audio being played
        buffered_to = 0.0  # epoch seconds where the downloaded audio ends
        stalled = played = 0.0
        latencies: list[float] = []
        while time.monotonic() - start < seconds:
            now = time.monotonic()
            if playhead is not None:
                dt = now - last
                advance = min(dt, max(0.0, buffered_to - playhead))
                stalled += dt - advance
                played += dt
                playhead += advance
                latencies.append(time.time() - playhead)
            last = now
            async with http.get(base + PLAYLIST) as r:
                target, seq, segs = parse(await r.text())
            if next_seq < 0:
                next_seq = max(seq, seq + len(segs) - 2)
            for i in range(max(0, next_seq - seq), len(segs)):
                name, dur, pdt = segs[i]
                async with http.get(base + name) as r:
                    await r.read()
                next_seq = seq + i + 1
                if pdt is None:
                    continue
                if playhead is None:  # playback starts with the first segment downloaded
                    playhead, last = pdt.timestamp(), time.monotonic()
                buffered_to = max(buffered_to, pdt.timestamp() + dur)
            await asyncio.sleep(target / 2)
        out["stalled"].append(stalled)
        out["played"].append(played)
        out["latency"].extend(latencies)


async def run_players(base: str, count: int, seconds: float) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"stalled": [], "played": [], "latency": []}
    await asyncio.gather(*(player(base, seconds, out) for _ in range(count)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clients", type=int, default=10_000, help="listeners whose requests wrk makes")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--players", type=int, default=10, help="simulated players measuring stalls and latency")
    ap.add_argument("--connections", type=int, default=400, help="wrk connections carrying the listeners")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads")
    ap.add_argument("--paced", action="store_true", help="make exactly N listeners' rate, not as much as served")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")

    with tempfile.TemporaryDirectory() as tmp:
        root, prefix = Path(tmp) / "hls", Path(tmp) / "nginx"
        prefix.mkdir()
        writer = HlsWriter(root / "space", segment_s=1.0, list_size=6)
        stop = threading.Event()
        feeder = threading.Thread(target=feed, args=(writer, stop), daemon=True)
        feeder.start()
        port = free_port()
        if not Path(NGINX).exists():
            raise SystemExit("nginx is not installed (apt-get install nginx)")
        nginx = start_nginx(prefix, port, hls_location(root, "open_file_cache off;"), workers="auto",
                            connections=16384, listen="reuseport backlog=4096",
                            http="sendfile on; tcp_nopush on; keepalive_requests 1000000; "
                                 "open_file_cache max=1000 inactive=10s; open_file_cache_valid 1s;")
        base = f"http://127.0.0.1:{port}/hls/space/"
        try:
            while not (root / "space" / PLAYLIST).exists() or len(parse(
                    (root / "space" / PLAYLIST).read_text())[2]) < 3:
                time.sleep(0.2)
            target = 1.0
            needed = 2 * args.clients / target  # requests per second the listeners make
            pause_ms = max(1, int(1000 * args.connections / needed)) if args.paced else 0
            (prefix / "hls.lua").write_text(LUA)
            env = {**os.environ, "HLS_PAUSE_MS": str(pause_ms), "HLS_BASE": "/hls/space/"}
            wrk = subprocess.Popen(
                ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{int(args.seconds)}s",
                 "--timeout", "5s", "-s", str(prefix / "hls.lua"), f"http://127.0.0.1:{port}"],
                env=env, stdout=subprocess.PIPE, text=True)
            measured = asyncio.run(run_players(base, args.players, args.seconds - 1))
            out, _ = wrk.communicate(timeout=args.seconds + 30)
        finally:
            stop.set()
            feeder.join()
            writer.close(ended=True)
            stop_nginx(nginx)
    m = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", out)
    if not m:
        raise SystemExit(f"wrk printed no result:\n{out}")
    requests, duration_us, p99_us, errors, p50_us, segments = (int(x) for x in m.groups())
    rate = requests / (duration_us / 1e6)
    played = sum(measured["played"])
    result = {
        "clients": args.clients,
        "requests_per_s": round(rate),
        "requests_per_s_needed": round(needed),
        "segments_per_s": round(segments / (duration_us / 1e6)),
        "stall_pct": round(100 * sum(measured["stalled"]) / played, 3) if played else None,
        "latency_s": round(statistics.median(measured["latency"]), 2) if measured["latency"] else None,
        "p50_ms": round(p50_us / 1000, 2),
        "p99_ms": round(p99_us / 1000, 2),
        "errors": errors,
        "served_pct_of_needed": round(100 * rate / needed, 1),
        "listeners_served": int(rate * target / 2),
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
