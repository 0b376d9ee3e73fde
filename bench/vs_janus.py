"""Spacebridge room vs Janus Streaming: the same stream, the same listeners, in one run.

    python -m bench.vs_janus --listeners N --speakers S --seconds T [--engine native|python] --json

Needs Debian's ``janus`` (a benchmark prerequisite only: ``apt-get install -y janus``; without it
this says so and exits 2) and root, for the reason below.

One Room mixes S tone speakers and encodes once per 20 ms tick, as in ``bench.webrtc_fanout``. Each
encoded packet also goes, as plain RTP over loopback, to a Janus Streaming RTP/Opus mountpoint, so
both servers fan out the identical stream. Then, one after the other, N listeners join the room and
watch the mountpoint: aiortc peers for ICE and DTLS (``RTCConfiguration(iceServers=[])``) that count
SRTP packets without decoding them (``bench.webrtc_fanout.Counter``). Each server's CPU is its own
process's user+system time from ``/proc/<pid>/stat`` over the measured window; the other server's
figure over the same window is its cost with no listeners (``*_base_cores``: the room still mixes
and encodes for Janus, Janus still receives that RTP).

Janus runs with a generated config in a temp dir: Streaming plugin and HTTP transport on 127.0.0.1
only, no STUN/TURN, ``event_loops`` = cores (its documented setting for many handles; 0 would be a
thread per handle). Janus never gathers ICE candidates on a loopback interface (``ice.c`` skips
``IFF_LOOPBACK``), so this process opens a TUN interface holding only 127.0.0.3/32 and enforces it:
Janus's only candidate is 127.0.0.3 and all its media stays on 127.0.0.0/8. The interface lives
exactly as long as this process (its file descriptor); listeners offer only 127.0.0.2 (on ``lo``).

``ratio_cpu_per_listener`` is spacebridge_cpu_per_listener / janus_cpu_per_listener (issue 20
target <= 0.25): each server's whole process, the room's mixing and encoding included.
``marginal_cpu_per_listener_pct`` and ``ratio_marginal_cpu_per_listener`` subtract each server's
base first: what one more listener costs. ``us_per_packet_sent`` is CPU over the packets each
server sent its listeners (their sequence-number spans), ``*_at_50pps`` that at 50 packets/s, and
``ratio_cpu_per_packet`` their ratio: figures that hold when a busy machine slows the room's tick
(``source_pkts_per_s``, which caps both servers' rate) or starves one side. On a machine shared
with other work all of these move from run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import multiprocessing as mp
import os
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.webrtc_fanout import LOOPBACK, Counter, measure

JANUS_HOST = "127.0.0.3"  # Janus's ICE address, on the TUN interface this process holds
LIB = Path("/usr/lib/x86_64-linux-gnu/janus")
MOUNTPOINT = 1
Signal = Callable[[Connection, str], Awaitable[None]]


def janus_missing() -> str | None:
    """Why Janus cannot run here, or None."""
    if shutil.which("janus") is None:
        return "janus is not installed"
    for part in ("plugins/libjanus_streaming.so", "transports/libjanus_http.so"):
        if not (LIB / part).exists():
            return f"{LIB / part} is missing"
    return None


@contextlib.contextmanager
def janus_interface() -> Iterator[str]:
    """A non-loopback interface holding only JANUS_HOST/32, gone when its descriptor closes."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        ifr = struct.pack("16sH", b"sbjanus%d", 0x0001 | 0x1000)  # IFF_TUN | IFF_NO_PI
        name = fcntl.ioctl(fd, 0x400454CA, ifr)[:16].rstrip(b"\0").decode()  # TUNSETIFF
        with contextlib.suppress(OSError):
            Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6").write_text("1")
        subprocess.run(["ip", "addr", "add", f"{JANUS_HOST}/32", "dev", name], check=True)
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
        yield name
    finally:
        os.close(fd)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_config(folder: Path, iface: str, http_port: int, rtp_port: int, loops: int) -> Path:
    """Janus's three config files: core, HTTP transport, one Streaming mountpoint."""
    keep = {"libjanus_streaming.so", "libjanus_http.so"}
    off = {kind: ",".join(sorted(p.name for p in (LIB / kind).glob("*.so") if p.name not in keep))
           for kind in ("plugins", "transports", "loggers", "events")}
    (folder / "janus.jcfg").write_text(f"""general: {{
    configs_folder = "{folder}"
    plugins_folder = "{LIB}/plugins"
    transports_folder = "{LIB}/transports"
    events_folder = "{LIB}/events"
    loggers_folder = "{LIB}/loggers"
    debug_level = 3
    session_timeout = 0
    event_loops = {loops}
}}
media: {{
    rtp_port_range = "20000-60000"
}}
nat: {{
    ice_enforce_list = "{iface}"
    ignore_mdns = true
}}
plugins: {{ disable = "{off['plugins']}" }}
transports: {{ disable = "{off['transports']}" }}
loggers: {{ disable = "{off['loggers']}" }}
events: {{ disable = "{off['events']}" }}
""")
    (folder / "janus.transport.http.jcfg").write_text(f"""general: {{
    base_path = "/janus"
    http = true
    port = {http_port}
    ip = "127.0.0.1"
    https = false
}}
admin: {{ admin_http = false }}
""")
    (folder / "janus.plugin.streaming.jcfg").write_text(f"""general: {{ }}
room: {{
    type = "rtp"
    id = {MOUNTPOINT}
    description = "spacebridge room mix"
    audio = true
    audioport = {rtp_port}
    audioiface = "127.0.0.1"
    audiopt = 111
    audiocodec = "opus"
    audiortpmap = "opus/48000/2"
}}
""")
    return folder / "janus.jcfg"


def _die_with_parent() -> None:
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: no Janus outlives this bench


class Janus:
    """A Janus process and its HTTP API (one session per listener, as browsers do)."""

    def __init__(self, folder: Path, iface: str, loops: int) -> None:
        self.port, self.rtp_port = free_tcp_port(), free_port()
        config = write_config(folder, iface, self.port, self.rtp_port, loops)
        self.log = folder / "janus.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(["janus", "-C", str(config), "-F", str(folder), "-o"], stdout=out,
                                         stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        self.url = f"http://127.0.0.1:{self.port}/janus"
        import httpx

        self.http = httpx.AsyncClient(timeout=60)

    async def ready(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"janus exited ({self.proc.returncode}):\n{self.tail()}")
            with contextlib.suppress(Exception):
                if (await self.call("", {"janus": "info"}))["janus"] == "server_info":
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"janus did not answer on {self.url}:\n{self.tail()}")
            await asyncio.sleep(0.1)

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        reply = await self.http.post(self.url + path, json={**body, "transaction": os.urandom(6).hex()})
        data: dict[str, Any] = reply.json()
        if data.get("janus") == "error":
            raise RuntimeError(f"janus: {data['error']}")
        return data

    async def watch(self) -> tuple[str, str]:
        """A new session watching the mountpoint: (its handle path, Janus's SDP offer)."""
        session = (await self.call("", {"janus": "create"}))["data"]["id"]
        handle = (await self.call(f"/{session}", {"janus": "attach", "plugin": "janus.plugin.streaming"}))["data"]["id"]
        path = f"/{session}/{handle}"
        await self.call(path, {"janus": "message", "body": {"request": "watch", "id": MOUNTPOINT}})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for event in (await self.http.get(f"{self.url}/{session}", params={"maxev": 10})).json():
                if event.get("sender") == handle and "jsep" in event:
                    return path, str(event["jsep"]["sdp"])
        raise RuntimeError("janus sent no offer for a watch within 30 s")

    async def start(self, path: str, answer: str) -> None:
        await self.call(path, {"janus": "message", "body": {"request": "start"},
                               "jsep": {"type": "answer", "sdp": answer}})

    async def stop(self) -> None:
        await self.http.aclose()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class RtpForward:
    """The room's encoded packets as plain RTP to the mountpoint (a ``Room.sinks`` entry)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.dest, self.seq, self.sent = ("127.0.0.1", port), 0, 0

    def __call__(self, packet: Any) -> None:
        header = struct.pack("!BBHII", 0x80, 111, self.seq & 0xFFFF, int(packet.pts) & 0xFFFFFFFF, 0x5B0B)
        self.seq += 1
        with contextlib.suppress(BlockingIOError):
            self.sock.sendto(header + bytes(packet), self.dest)
            self.sent += 1


def cpu_seconds(pid: int) -> float:
    """User+system CPU of a whole process (all its threads) so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- listeners (worker processes) ------------------------------------------------------------
def _listener_proc(conn: Connection, count: int, seconds: float, they_offer: bool) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(_listeners(conn, count, seconds, they_offer))


async def _listeners(conn: Connection, count: int, seconds: float, they_offer: bool) -> None:
    """``count`` counting peers; with ``they_offer`` the server sends the offer (Janus)."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from adapters.webrtc.room import restrict_candidates

    loop = asyncio.get_running_loop()
    counters: list[Counter] = []
    pending: list[Counter] = []

    async def attach() -> None:  # as each connects, so aiortc never decodes
        while True:
            pending[:] = [c for c in pending if not c.attach()]
            await asyncio.sleep(0.005)

    attacher = asyncio.create_task(attach())
    for _ in range(count):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN: loopback only
        t0 = time.monotonic()
        if they_offer:
            offer = await loop.run_in_executor(None, conn.recv)
            t0 = time.monotonic()
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            conn.send(restrict_candidates(pc.localDescription.sdp, {LOOPBACK}))
        else:
            pc.addTransceiver("audio", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
            conn.send(restrict_candidates(pc.localDescription.sdp, {LOOPBACK}))
            answer = await loop.run_in_executor(None, conn.recv)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        counters.append(Counter(pc, t0))
        pending.append(counters[-1])
    await measure(counters, conn, seconds, attacher)


@dataclass
class Phase:
    """One server's measured window."""

    cores: float
    other_cores: float
    window: float
    results: list[dict[str, Any]]
    source_pps: float  # the room's packets per second over the window: the most a listener can get


async def phase(listeners: int, procs: int, seconds: float, they_offer: bool, signal_one: Signal,
                pid: int, other_pid: int, source: Callable[[], int]) -> Phase:
    """N listeners in worker processes against one server; CPU of ``pid`` (and ``other_pid``)."""
    ctx = mp.get_context("spawn")
    per = [listeners // procs + (1 if i < listeners % procs else 0) for i in range(procs)]
    loop = asyncio.get_running_loop()
    pipes, workers = [], []
    for i, n in enumerate(per):
        if n:
            parent, child = ctx.Pipe()
            w = ctx.Process(target=_listener_proc, args=(child, n, seconds, they_offer), daemon=True)
            w.start()
            pipes.append((parent, n, i))
            workers.append(w)

    async def serve(conn: Connection, n: int, proc: int) -> Connection:
        for j in range(n):
            await signal_one(conn, f"l{proc}-{j}")
        assert await loop.run_in_executor(None, conn.recv) == "ready"
        return conn

    conns = await asyncio.gather(*(serve(c, n, i) for c, n, i in pipes))
    c0, o0, s0, t0 = cpu_seconds(pid), cpu_seconds(other_pid), source(), time.monotonic()
    results = [await loop.run_in_executor(None, c.recv) for c in conns]
    c1, o1, s1, t1 = cpu_seconds(pid), cpu_seconds(other_pid), source(), time.monotonic()
    for w in workers:
        await loop.run_in_executor(None, w.join, 30)
    return Phase((c1 - c0) / (t1 - t0), (o1 - o0) / (t1 - t0), t1 - t0, results, (s1 - s0) / (t1 - t0))


def us_per_packet(p: Phase) -> float:
    """CPU over the packets sent: each listener's span of sequence numbers."""
    sent: int = sum(x for r in p.results for x in r["received"]) + sum(x for r in p.results for x in r["lost"])
    return 1e6 * p.cores * p.window / max(1, sent)


def summary(p: Phase, listeners: int) -> dict[str, object]:
    received = [x for r in p.results for x in r["received"]]
    lost = [x for r in p.results for x in r["lost"]]
    joins = sorted(x for r in p.results for x in r["joins"])
    return {
        "connected": sum(r["connected"] for r in p.results),
        "cpu_cores": round(p.cores, 3),
        "cpu_per_listener_pct": round(100 * p.cores / max(1, listeners), 4),
        "source_pkts_per_s": round(p.source_pps, 1),
        "us_per_packet_sent": round(us_per_packet(p), 2),
        "cpu_per_listener_pct_at_50pps": round(50 * us_per_packet(p) / 1e4, 4),
        "pkts_per_listener_per_s": round(statistics.mean(received) / p.window, 1) if received else 0.0,
        "loss_pct": round(100 * sum(lost) / max(1, sum(received) + sum(lost)), 2),
        "join_p50_s": round(joins[len(joins) // 2], 3) if joins else None,
        "unauthenticated": sum(r["bad"] for r in p.results),
    }


async def run(listeners: int, speakers: int, seconds: float, procs: int, engine: str | None,
              loops: int, folder: Path, iface: str) -> dict[str, object]:
    if engine is not None:
        os.environ["SPACEBRIDGE_FANOUT"] = engine
    import numpy as np

    from adapters.webrtc.candidates import CandidatePolicy
    from adapters.webrtc.room import Participant, Room
    from adapters.webrtc.wire import engine as fanout_engine
    from core.ports import FRAME_SAMPLES, SAMPLE_RATE

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # Janus inherits it too
    janus = Janus(folder, iface, loops)
    room = Room("bench", announce={LOOPBACK}, allowed=CandidatePolicy.parse(["127.0.0.0/8"]))
    try:
        await janus.ready()
        forward = RtpForward(janus.rtp_port)
        room.sinks.append(forward)
        room.start()
        tones = {f"s{i}": (0.1 * 32767 * np.sin(2 * np.pi * (300 + 60 * i) * np.arange(FRAME_SAMPLES)
                                                 / SAMPLE_RATE)).astype(np.int16) for i in range(speakers)}
        room.publishers = set(tones)
        for sid in tones:  # stage members without a peer: only their frames matter here
            room.participants[sid] = Participant(sid, None, None)  # type: ignore[arg-type]

        async def feed() -> None:
            while True:
                for sid, pcm in tones.items():
                    room.participants[sid].buffer.append(pcm)
                await asyncio.sleep(0.02)

        feeder = asyncio.create_task(feed())
        loop = asyncio.get_running_loop()

        async def to_room(conn: Connection, pid: str) -> None:
            offer = await loop.run_in_executor(None, conn.recv)
            conn.send(await room.add_participant(pid, offer))

        async def to_janus(conn: Connection, pid: str) -> None:
            path, offer = await janus.watch()
            conn.send(offer)
            await janus.start(path, await loop.run_in_executor(None, conn.recv))

        me = os.getpid()
        sb = await phase(listeners, procs, seconds, False, to_room, me, janus.proc.pid, lambda: forward.sent)
        for pid in [p for p in room.participants if p not in tones]:
            await room.remove_participant(pid)
        ja = await phase(listeners, procs, seconds, True, to_janus, janus.proc.pid, me, lambda: forward.sent)
        feeder.cancel()
        for sid in tones:
            room.participants.pop(sid, None)
        sb_out, ja_out = summary(sb, listeners), summary(ja, listeners)
        sb_out["engine"] = fanout_engine().detail
        sb_out["base_cores"] = round(ja.other_cores, 3)  # mixing + encoding + forwarding, no listeners
        ja_out["base_cores"] = round(sb.other_cores, 3)  # receiving the mountpoint's RTP, no viewers
        ja_out["event_loops"] = loops
        for out, p, base in ((sb_out, sb, ja.other_cores), (ja_out, ja, sb.other_cores)):
            out["marginal_cpu_per_listener_pct"] = round(100 * (p.cores - base) / listeners, 4)
        ratio = sb.cores / ja.cores if ja.cores else None
        marginal = (sb.cores - ja.other_cores) / (ja.cores - sb.other_cores) if ja.cores > sb.other_cores else None
        return {"listeners": listeners, "speakers": speakers, "seconds": seconds,
                "cpus": os.cpu_count(), "spacebridge": sb_out, "janus": ja_out,
                "rtp_forwarded": forward.sent,
                "ratio_cpu_per_listener": round(ratio, 3) if ratio is not None else None,
                "ratio_marginal_cpu_per_listener": round(marginal, 3) if marginal is not None else None,
                "ratio_cpu_per_packet": round(us_per_packet(sb) / max(1e-9, us_per_packet(ja)), 3),
                "target_ratio": 0.25, "meets_target": ratio is not None and ratio <= 0.25}
    finally:
        await room.close()
        await janus.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listeners", type=int, default=200)
    ap.add_argument("--speakers", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--procs", type=int, default=2, help="listener worker processes")
    ap.add_argument("--engine", choices=["native", "python"], help="Spacebridge fan-out engine (default: auto)")
    ap.add_argument("--janus-event-loops", type=int, default=os.cpu_count() or 2,
                    help="Janus event_loops (0: a thread per handle, Janus's default)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.listeners < 1 or a.speakers < 1 or a.seconds <= 0 or a.procs < 1 or a.janus_event_loops < 0:
        ap.error("--listeners, --speakers, --procs must be >= 1, --seconds > 0, --janus-event-loops >= 0")
    if (why := janus_missing()) is not None:
        print(f"vs_janus: {why}. Install Debian's Janus for this benchmark (not needed by CI or the app):\n"
              "    apt-get install -y janus", file=sys.stderr)
        sys.exit(2)
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
        print("vs_janus: needs root and /dev/net/tun: Janus gathers no ICE candidates on loopback, so "
              f"the bench puts {JANUS_HOST} on a TUN interface of its own", file=sys.stderr)
        sys.exit(2)
    with janus_interface() as iface, tempfile.TemporaryDirectory(prefix="vs_janus-") as tmp:
        out = asyncio.run(run(a.listeners, a.speakers, a.seconds, a.procs, a.engine, a.janus_event_loops,
                              Path(tmp), iface))
    print(json.dumps(out) if a.json else json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
