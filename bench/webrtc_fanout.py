"""Room fan-out cost: one Room serving S tone speakers and N listeners in other processes.

    python -m bench.webrtc_fanout --listeners N --speakers S --seconds T --json

Listener peers run in worker processes (real aiortc peers over loopback 127.0.0.2; needs root to add
that address to ``lo`` once, as the tests do). Server CPU is the server process's own user+system
time over the measured window; packet counts come from each listener's RTP statistics.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import resource
import statistics
import time
from multiprocessing.connection import Connection
from typing import Any

LOOPBACK = "127.0.0.2"


def _listener_proc(conn: Connection, count: int, seconds: float) -> None:
    asyncio.run(_listeners(conn, count, seconds))


async def _listeners(conn: Connection, count: int, seconds: float) -> None:
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from adapters.webrtc.room import restrict_candidates

    pcs = []
    for _ in range(count):
        pc = RTCPeerConnection()
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        t0 = time.monotonic()
        conn.send(restrict_candidates(pc.localDescription.sdp, {LOOPBACK}))
        answer = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        pcs.append((pc, t0))
    first: dict[int, float] = {}
    start = time.monotonic()
    while time.monotonic() - start < seconds + 5:
        for i, (pc, t0) in enumerate(pcs):
            if i not in first:
                for s in (await pc.getStats()).values():
                    if s.type == "inbound-rtp" and s.packetsReceived > 0:
                        first[i] = time.monotonic() - t0
        if len(first) == len(pcs):
            break
        await asyncio.sleep(0.1)
    conn.send("ready")
    before = [await _received(pc) for pc, _ in pcs]
    await asyncio.sleep(seconds)
    after = [await _received(pc) for pc, _ in pcs]
    conn.send({"joins": list(first.values()), "connected": len(first),
               "received": [a[0] - b[0] for a, b in zip(after, before, strict=True)],
               "lost": [max(0, a[1] - b[1]) for a, b in zip(after, before, strict=True)]})
    for pc, _ in pcs:
        await pc.close()


async def _received(pc: Any) -> tuple[int, int]:
    for s in (await pc.getStats()).values():
        if s.type == "inbound-rtp":
            return int(s.packetsReceived), int(s.packetsLost)
    return 0, 0


async def run(listeners: int, speakers: int, seconds: float, procs: int) -> dict[str, object]:
    import fractions

    import av
    import numpy as np

    from adapters.webrtc.room import Room
    from core.ports import FRAME_SAMPLES, SAMPLE_RATE

    room = Room("bench", announce={LOOPBACK})
    room.start()
    # Speakers feed the mixer directly (decoding speaker uplinks is not what this measures).
    tones = {f"s{i}": (0.1 * 32767 * np.sin(2 * np.pi * (300 + 60 * i) * np.arange(FRAME_SAMPLES) / SAMPLE_RATE))
             .astype(np.int16) for i in range(speakers)}
    room.publishers = set(tones)

    from adapters.webrtc.room import Participant

    for sid in tones:  # stage members without a peer: only their frames matter here
        room.participants[sid] = Participant(sid, None, None)  # type: ignore[arg-type]

    async def feed() -> None:
        while True:
            for sid, pcm in tones.items():
                room.participants[sid].buffer.append(pcm)
            await asyncio.sleep(0.02)

    feeder = asyncio.create_task(feed())
    del av, fractions
    ctx = mp.get_context("spawn")
    per = [listeners // procs + (1 if i < listeners % procs else 0) for i in range(procs)]
    pipes = []
    workers = []
    for i, n in enumerate(per):
        if not n:
            continue
        parent, child = ctx.Pipe()
        w = ctx.Process(target=_listener_proc, args=(child, n, seconds), daemon=True)
        w.start()
        pipes.append((parent, n, i))
        workers.append(w)
    loop = asyncio.get_running_loop()

    async def serve(conn: Connection, n: int, proc: int) -> Any:
        for j in range(n):
            offer = await loop.run_in_executor(None, conn.recv)
            answer = await room.add_participant(f"l{proc}-{j}", offer)
            conn.send(answer)
        assert await loop.run_in_executor(None, conn.recv) == "ready"
        return conn

    conns = await asyncio.gather(*(serve(c, n, i) for c, n, i in pipes))
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    results = [await loop.run_in_executor(None, c.recv) for c in conns]
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    feeder.cancel()
    for w in workers:
        w.join(timeout=30)
    for sid in tones:
        room.participants.pop(sid, None)
    await room.close()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    window = t1 - t0
    received = [x for r in results for x in r["received"]]
    lost = [x for r in results for x in r["lost"]]
    joins = sorted(x for r in results for x in r["joins"])
    cores = cpu / window
    return {
        "listeners": listeners, "connected": sum(r["connected"] for r in results), "speakers": speakers,
        "server_cpu_cores": round(cores, 3),
        "server_cpu_per_listener_pct": round(100 * cores / max(1, listeners), 3),
        "pkts_per_listener_per_s": round(statistics.mean(received) / window, 1) if received else 0.0,
        "loss_pct": round(100 * sum(lost) / max(1, sum(received) + sum(lost)), 2),
        "join_p50_s": round(joins[len(joins) // 2], 3) if joins else None,
        "join_p99_s": round(joins[min(len(joins) - 1, int(len(joins) * 0.99))], 3) if joins else None,
        "server_rss_mb": round(r1.ru_maxrss / 1024, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--listeners", type=int, default=50)
    ap.add_argument("--speakers", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--procs", type=int, default=2, help="listener worker processes")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    out = asyncio.run(run(a.listeners, a.speakers, a.seconds, a.procs))
    print(json.dumps(out) if a.json else "\n".join(f"{k}: {v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
