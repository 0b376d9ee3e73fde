"""Room fan-out cost: one Room serving S tone speakers and N listeners in other processes.

    python -m bench.webrtc_fanout --listeners N --speakers S --seconds T [--engine native|python] --json

Listener peers run in worker processes (real aiortc peers over loopback 127.0.0.2; needs root to add
that address to ``lo`` once, as the tests do). Server CPU is the server process's own user+system
time over the measured window.

Each listener is an aiortc peer for ICE and DTLS; once connected it authenticates (SRTP unprotect)
and counts the room's packets itself instead of decoding them: decoding 500 streams would take
more cores than the server under test has, and these share its machine. Loss is counted from RTP
sequence numbers; RTCP and STUN (consent checks) still go to aiortc.

``--wire`` measures only the send path, without aiortc or listener processes: N loopback UDP
sinks that never read (the kernel still delivers to them, as on the wire), the same 120-byte Opus
payload per tick through the Outlet's Python statements (struct header, libsrtp protect, asyncio
``sendto``) and through one native ``fanout`` call per tick, as fast as they go; CPU per packet each.

``--engine`` picks the fan-out engine (``SPACEBRIDGE_FANOUT``; default: what ``doctor`` reports).
``server_us_per_packet`` is the server's CPU time over the packets it handed to the kernel, and
``server_cpu_per_listener_pct_at_50pps`` that cost at the full 50 packets/s: figures that hold on a
machine too busy for the 20 ms tick, where the packets/s and loss figures measure the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import statistics
import time
from multiprocessing.connection import Connection
from typing import Any

LOOPBACK = "127.0.0.2"


def _listener_proc(conn: Connection, count: int, seconds: float) -> None:
    asyncio.run(_listeners(conn, count, seconds))


class Counter:
    """A listener's SRTP packets, authenticated and counted as they arrive."""

    def __init__(self, pc: Any, t0: float) -> None:
        self.pc, self.t0 = pc, t0
        self.first: float | None = None
        self.received = self.highest = self.bad = 0  # highest: extended sequence number, from 0
        self.last: int | None = None

    def attach(self) -> bool:
        dtls = self.pc.getTransceivers()[0].receiver.transport
        if dtls.state != "connected":
            return False
        for protocol in dtls.transport._connection._protocols:  # media may come to any of its sockets
            protocol.datagram_received = self._receiver(dtls._rx_srtp, protocol.datagram_received)
        return True

    def _receiver(self, srtp: Any, aiortc_gets: Any) -> Any:
        def datagram_received(data: bytes, addr: Any) -> None:
            if not (127 < data[0] < 192) or 192 <= data[1] <= 223:  # STUN, DTLS or RTCP
                aiortc_gets(data, addr)
                return
            try:
                plain = srtp.unprotect(data)
            except Exception:
                self.bad += 1
                return
            seq = int.from_bytes(plain[2:4], "big")
            if self.last is None:
                self.last, self.first = seq, time.monotonic() - self.t0
            elif (step := (seq - self.last) & 0xFFFF) < 0x8000:  # ahead (past a wrap too), not reordered
                self.highest += step
                self.last = seq
            self.received += 1

        return datagram_received

    def snapshot(self) -> tuple[int, int]:
        """(received, expected) so far."""
        return self.received, (self.highest + 1 if self.last is not None else 0)


async def _listeners(conn: Connection, count: int, seconds: float) -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from adapters.webrtc.room import restrict_candidates

    counters: list[Counter] = []
    pending: list[Counter] = []

    async def attach() -> None:  # as each connects: aiortc must not decode while the rest set up
        while True:
            pending[:] = [c for c in pending if not c.attach()]
            await asyncio.sleep(0.005)

    attacher = asyncio.create_task(attach())
    for _ in range(count):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN: loopback only
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        t0 = time.monotonic()
        conn.send(restrict_candidates(pc.localDescription.sdp, {LOOPBACK}))
        answer = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        counters.append(Counter(pc, t0))
        pending.append(counters[-1])
    await measure(counters, conn, seconds, attacher)


async def measure(counters: list[Counter], conn: Connection, seconds: float, attacher: asyncio.Task[Any]) -> None:
    """Wait (a generous while) for every listener's first packet, count over the window, report to the
    parent through ``conn`` and close the peers; shared with bench.vs_janus's listener workers."""
    start = time.monotonic()
    while time.monotonic() - start < seconds + 30 and any(c.first is None for c in counters):
        await asyncio.sleep(0.05)
    attacher.cancel()
    conn.send("ready")
    before = [c.snapshot() for c in counters]
    await asyncio.sleep(seconds)
    after = [c.snapshot() for c in counters]
    conn.send({"joins": [c.first for c in counters if c.first is not None],
               "connected": sum(c.first is not None for c in counters),
               "received": [a[0] - b[0] for a, b in zip(after, before, strict=True)],
               "lost": [max(0, (a[1] - b[1]) - (a[0] - b[0])) for a, b in zip(after, before, strict=True)],
               "bad": sum(c.bad for c in counters)})
    for c in counters:
        await c.pc.close()


async def run(listeners: int, speakers: int, seconds: float, procs: int,
              engine: str | None = None) -> dict[str, object]:
    import fractions

    if engine is not None:
        os.environ["SPACEBRIDGE_FANOUT"] = engine

    import av
    import numpy as np

    from adapters.webrtc.candidates import CandidatePolicy
    from adapters.webrtc.room import Room
    from core.ports import FRAME_SAMPLES, SAMPLE_RATE

    room = Room("bench", announce={LOOPBACK}, allowed=CandidatePolicy.parse(["127.0.0.0/8"]))
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

    def sent() -> int:
        return sum(p.outlet.sent for p in room.participants.values() if p.outlet is not None)

    conns = await asyncio.gather(*(serve(c, n, i) for c, n, i in pipes))
    r0, t0, s0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), sent()
    results = [await loop.run_in_executor(None, c.recv) for c in conns]
    r1, t1, s1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), sent()
    from adapters.webrtc.wire import engine as fanout_engine
    dropped = sum(p.outlet.dropped for p in room.participants.values() if p.outlet is not None)
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
    per_packet = cpu / max(1, s1 - s0)
    return {
        "engine": fanout_engine().detail,
        "listeners": listeners, "connected": sum(r["connected"] for r in results), "speakers": speakers,
        "server_cpu_cores": round(cores, 3),
        "server_sys_share": round(((r1.ru_stime - r0.ru_stime) / cpu) if cpu else 0.0, 2),
        "server_cpu_per_listener_pct": round(100 * cores / max(1, listeners), 3),
        "server_packets_sent": s1 - s0,
        "server_us_per_packet": round(1e6 * per_packet, 2),
        "server_cpu_per_listener_pct_at_50pps": round(100 * 50 * per_packet, 4),
        "pkts_per_listener_per_s": round(statistics.mean(received) / window, 1) if received else 0.0,
        "loss_pct": round(100 * sum(lost) / max(1, sum(received) + sum(lost)), 2),
        "join_p50_s": round(joins[len(joins) // 2], 3) if joins else None,
        "join_p99_s": round(joins[min(len(joins) - 1, int(len(joins) * 0.99))], 3) if joins else None,
        "server_rss_mb": round(r1.ru_maxrss / 1024, 1),
        "server_dropped": dropped, "unauthenticated": sum(r["bad"] for r in results),
    }


async def wire(listeners: int, ticks: int, threads: int) -> dict[str, object]:
    """CPU per packet of the two send paths alone (see the module docstring)."""
    import socket

    from pylibsrtp import Policy, Session

    from adapters.webrtc.fanout import choose_engine
    from adapters.webrtc.wire import _HEADER

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * listeners + 100)), hard))
    loop = asyncio.get_running_loop()
    key = os.urandom(30)
    payload = os.urandom(120)
    sinks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(listeners)]
    for s in sinks:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.bind((LOOPBACK, 0))
    out: dict[str, object] = {"listeners": listeners, "ticks": ticks, "payload_bytes": len(payload)}
    transports = [(await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)))[0]
                  for _ in sinks]
    sessions = [Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                               srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80)) for _ in sinks]
    dests = [s.getsockname() for s in sinks]
    c0 = time.process_time()
    for t in range(ticks):
        for i, (tr, srtp, dest) in enumerate(zip(transports, sessions, dests, strict=True)):
            header = _HEADER.pack(0x80, 111, t & 0xFFFF, t * 960 & 0xFFFFFFFF, i + 1)
            tr.sendto(srtp.protect(header + payload), dest)
    python_us = 1e6 * (time.process_time() - c0) / (ticks * listeners)
    out["python_us_per_packet"] = round(python_us, 2)
    engine = choose_engine({})
    if engine.module is not None:
        streams = [engine.module.Stream("SRTP_AES128_CM_SHA1_80", key[:16], key[16:], i + 1, 111, 0, 0, b"",
                                        tr.get_extra_info("socket").fileno(), dest)
                   for i, (tr, dest) in enumerate(zip(transports, dests, strict=True))]
        for n in sorted({1, threads}):
            c0 = time.process_time()
            for t in range(ticks):
                engine.module.fanout([(streams, payload, t * 960)], n)
            native_us = 1e6 * (time.process_time() - c0) / (ticks * listeners)
            out[f"native_{n}t_us_per_packet"] = round(native_us, 2)
            out[f"native_{n}t_cpu_per_listener_pct_at_50pps"] = round(native_us * 50 / 1e4, 4)
        out["native_sent"] = sum(s.sent for s in streams)
        out["native_dropped_or_failed"] = sum(s.dropped + s.errors for s in streams)
    out["python_cpu_per_listener_pct_at_50pps"] = round(python_us * 50 / 1e4, 4)
    for tr in transports:
        tr.close()
    for s in sinks:
        s.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--listeners", type=int, default=50)
    ap.add_argument("--speakers", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--procs", type=int, default=2, help="listener worker processes")
    ap.add_argument("--engine", choices=["native", "python"], help="fan-out engine (default: auto)")
    ap.add_argument("--wire", action="store_true", help="measure the send paths alone (no aiortc peers)")
    ap.add_argument("--ticks", type=int, default=250, help="--wire: ticks to send")
    ap.add_argument("--threads", type=int, default=2, help="--wire: native threads to compare with 1")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.wire:
        out = asyncio.run(wire(a.listeners, a.ticks, a.threads))
    else:
        out = asyncio.run(run(a.listeners, a.speakers, a.seconds, a.procs, a.engine))
    print(json.dumps(out) if a.json else "\n".join(f"{k}: {v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
