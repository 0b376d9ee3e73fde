"""Join and command throughput with 1 and with 2 `spacebridge serve` processes on PostgreSQL + Redis.

    python -m bench.multiprocess [--clients C] [--joins J] [--seconds T] --json

For each process count: a fresh PostgreSQL database, that many ``serve --role web,media`` processes
sharing it and Redis, one live Space, and ``C`` WebSocket clients spread evenly over the processes
(the load balancer's job). Measured:

* ``joins_per_s``: ``J`` joins (hello -> welcome: token check, core join, the Space's view) made by
  the clients ``C`` at a time, then left;
* ``events_per_s``: ``C`` joined clients send reactions as fast as the acknowledgements come back
  for ``T`` seconds; each is a committed command and a domain event that crosses to every process
  on the Redis bus. ``deliveries_per_s`` counts those events as received by all clients.

The clients run in this process (one core's worth of Python), so 2 processes on this 2-core machine
share the CPU with them: the figures show what a second process buys where the clients are not the
limit, not the ceiling of a real deployment. Prints ``{"processes": [1, 2], "joins_per_s": [...],
"events_per_s": [...], ...}``.

    python -m bench.multiprocess --fanout --media N --listeners L --per-process P [--seconds T] --json

Big rooms (issue 20): N ``serve --role web,media`` processes, one live Space and L real aiortc
listeners (``bench.webrtc_fanout``'s counting peers, in worker processes; their sockets spread over
the processes) with ``SPACEBRIDGE_ROOM_LISTENERS_PER_PROCESS=P``: the owner takes P, the others
relay the room to the rest. Per process, over the first half of the listeners' T seconds: its
listeners, its CPU (user + system from ``/proc``, all threads), CPU per listener, packets sent per
second (from ``/internal/media/status``) and CPU per packet; per listener, packets received per
second and loss.
Needs 127.0.0.2 on ``lo`` (as the tests add it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = os.environ.get("SPACEBRIDGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("SPACEBRIDGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "bench-multiprocess-secret-0123456789abcdef"


async def admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def start_serve(env: dict[str, str], log: Path | None = None) -> tuple[asyncio.subprocess.Process, str]:
    with open(log or os.devnull, "w") as err:  # the child keeps its own copy of the descriptor
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "spacebridge", "serve", "--port", "0", "--role", "web,media", cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=err)
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    m = re.search(r"serving at (http://\S+)", line)
    if not m:
        raise SystemExit(f"serve did not start: {line}")
    return proc, m.group(1)


async def _deployment(**settings: str) -> tuple[str, dict[str, str], Any, Any, Any]:
    """A fresh PostgreSQL database at the current schema and the environment every ``serve`` of this
    run shares (plus ``settings``), with this process's own Core on it: (name, env, core, bus, engine)."""
    from core.bus import RedisBus
    from core.clock import SystemClock
    from core.services import Core
    from core.storage.engine import make_engine, make_sessionmaker

    name = f"sb_bench_{uuid.uuid4().hex[:8]}"
    await admin(f'CREATE DATABASE "{name}"')
    db = f"{POSTGRES.rsplit('/', 1)[0]}/{name}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACEBRIDGE_", "DISCORD_", "TELEGRAM_",
                                                                      "STRIPE_"))}
    env.update(SPACEBRIDGE_DATABASE_URL=db, SPACEBRIDGE_REDIS_URL=REDIS, SPACEBRIDGE_SECRET_KEY=SECRET,
               SPACEBRIDGE_DATA_DIR=f"/tmp/{name}", SPACEBRIDGE_LOG_LEVEL="WARNING", SPACEBRIDGE_HLS_ENABLED="false",
               SPACEBRIDGE_ICE_ALLOWED_NETWORKS="127.0.0.0/8",
               SPACEBRIDGE_PLUGINS_DISABLED='["captions", "recording", "moderation"]', **settings)
    up = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "spacebridge", "db", "upgrade"], cwd=ROOT,
                                 env=env, capture_output=True, text=True)
    if up.returncode != 0:
        raise SystemExit(up.stderr)
    engine = make_engine(db)
    bus = RedisBus(REDIS)
    await bus.start()
    core = Core(make_sessionmaker(engine), bus, SystemClock())
    return name, env, core, bus, engine


async def _teardown(name: str, servers: list[Any], bus: Any, engine: Any) -> None:
    for proc, _ in servers:
        proc.terminate()
        await proc.wait()
    await bus.close()
    await engine.dispose()
    await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def measure(processes: int, clients: int, joins: int, seconds: float) -> dict[str, float]:
    from core.model.accounts import Actor
    from core.tokens import JoinTokens

    name, env, core, bus, engine = await _deployment(SPACEBRIDGE_REACTION_RATE_PER_S="100000")
    servers = [await start_serve(env) for _ in range(processes)]
    try:
        host = await core.ensure_account("web", "host", "Host")
        space = await core.create_space(Actor(account_id=host.id, is_community_admin=True), "Bench")
        accounts = [(await core.ensure_account("web", f"fan{i}", f"Fan {i}")).id for i in range(clients)]
        tokens = JoinTokens(SECRET.encode())
        urls = [url for _, url in servers]

        async with aiohttp.ClientSession() as http:
            async def hello(i: int) -> aiohttp.ClientWebSocketResponse:
                ws = await http.ws_connect(f"{urls[i % len(urls)]}/ws/{space.id}")
                await ws.send_json({"type": "hello", "token": tokens.issue(space.id, accounts[i], "listener",
                                                                           core.now())})
                while (await ws.receive_json(timeout=30))["type"] != "welcome":
                    pass
                return ws

            # joins: C clients at a time, each joining and leaving again until J joins are done
            left = joins
            started = time.monotonic()

            async def joiner(i: int) -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    ws = await hello(i)
                    await ws.close()

            await asyncio.gather(*(joiner(i) for i in range(clients)))
            joins_per_s = joins / (time.monotonic() - started)

            # commands: everyone joined, reacting as fast as acknowledged; every client counts events
            sockets = await asyncio.gather(*(hello(i) for i in range(clients)))
            await asyncio.sleep(1.0)
            done = delivered = 0
            stop_at = time.monotonic() + seconds

            async def reactor(ws: aiohttp.ClientWebSocketResponse) -> None:
                nonlocal done, delivered
                n = 0
                while time.monotonic() < stop_at:
                    n += 1
                    cid = f"r{n}"
                    await ws.send_json({"type": "command", "id": cid, "name": "react", "args": {"emoji": "👏"}})
                    while True:
                        msg: dict[str, Any] = await ws.receive_json(timeout=30)
                        if msg.get("type") == "event":
                            delivered += 1
                        elif msg.get("id") == cid:
                            done += msg.get("type") == "ok"
                            break

            started = time.monotonic()
            await asyncio.gather(*(reactor(ws) for ws in sockets))
            elapsed = time.monotonic() - started
            for ws in sockets:
                await ws.close()
        return {"joins_per_s": round(joins_per_s, 1), "events_per_s": round(done / elapsed, 1),
                "deliveries_per_s": round(delivered / elapsed, 1)}
    finally:
        await _teardown(name, servers, bus, engine)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def fanout(media: int, listeners: int, per_process: int, seconds: float, procs: int) -> dict[str, Any]:
    import hmac
    import multiprocessing as mp

    from bench.webrtc_fanout import LOOPBACK, _listener_proc
    from core.model.accounts import Actor
    from core.tokens import JoinTokens

    name, env, core, bus, engine = await _deployment(SPACEBRIDGE_ICE_ANNOUNCE=f'["{LOOPBACK}"]',
                                                     SPACEBRIDGE_ROOM_LISTENERS_PER_PROCESS=str(per_process))
    servers = [await start_serve(env, Path(f"/tmp/{name}-serve{k}.log")) for k in range(media)]
    internal = {"X-Spacebridge-Internal": hmac.new(SECRET.encode(), b"spacebridge-internal", "sha256").hexdigest()}
    ctx = mp.get_context("spawn")
    workers: list[Any] = []
    try:
        host = await core.ensure_account("web", "host", "Host")
        space = await core.create_space(Actor(account_id=host.id, is_community_admin=True), "Bench")
        accounts = [(await core.ensure_account("web", f"fan{i}", f"Fan {i}")).id for i in range(listeners)]
        tokens = JoinTokens(SECRET.encode())
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession() as http:
            sockets: list[aiohttp.ClientWebSocketResponse] = []

            async def offer(i: int, sdp: str) -> str:
                ws = await http.ws_connect(f"{servers[i % media][1]}/ws/{space.id}")
                sockets.append(ws)
                await ws.send_json({"type": "hello", "token": tokens.issue(space.id, accounts[i], "listener",
                                                                           core.now())})
                for attempt in range(60):
                    await ws.send_json({"type": "offer", "id": f"m{attempt}", "sdp": sdp})
                    while True:
                        msg: dict[str, Any] = await ws.receive_json(timeout=60)
                        if msg.get("id") == f"m{attempt}":
                            break
                    if msg["type"] == "answer":
                        return str(msg["sdp"])
                    await asyncio.sleep(0.5)  # media.unavailable: the page tries again
                raise SystemExit(f"listener {i} got no answer: {msg}")

            per = [listeners // procs + (1 if k < listeners % procs else 0) for k in range(procs)]
            pipes = []
            for n in per:
                if n:
                    parent, child = ctx.Pipe()
                    w = ctx.Process(target=_listener_proc, args=(child, n, seconds), daemon=True)
                    w.start()
                    workers.append(w)
                    pipes.append((parent, n))

            async def serve(conn: Any, first: int, n: int) -> None:  # each worker's listeners one after another
                for i in range(first, first + n):
                    sdp = await loop.run_in_executor(None, conn.recv)
                    conn.send(await offer(i, sdp))
                    if (i - first + 1) % 20 == 0:
                        print(f"{i - first + 1}/{n} listeners of worker {first} answered", file=sys.stderr)
                assert await loop.run_in_executor(None, conn.recv) == "ready"

            await asyncio.gather(*(serve(conn, sum(n for _, n in pipes[:k]), n) for k, (conn, n) in enumerate(pipes)))

            async def status(url: str) -> dict[str, Any]:
                async with http.get(f"{url}/internal/media/status", headers=internal) as r:
                    data: dict[str, Any] = await r.json()
                    return data

            def sent(st: dict[str, Any]) -> tuple[int, int]:
                rooms = [*st["rooms"].values(), *st["relays"].values()]
                return sum(r["sent"] for r in rooms), sum(len(r["listeners"]) for r in rooms)

            # the processes' window: the first half of the listeners' own (each worker closes its peers
            # once its window is over, and the workers' windows start a little apart)
            before = [(cpu_seconds(p.pid), sent(await status(u))) for p, u in servers]
            t0 = time.monotonic()
            await asyncio.sleep(seconds / 2)
            after = [(cpu_seconds(p.pid), sent(st), st) for p, u in servers if (st := await status(u))]
            window = time.monotonic() - t0
            results = [await loop.run_in_executor(None, conn.recv) for conn, _ in pipes]
            for ws in sockets:
                await ws.close()
        rows = []
        for (c0, (s0, _)), (c1, (s1, held), st) in zip(before, after, strict=True):
            cores, packets = (c1 - c0) / window, s1 - s0
            rows.append({"role": "owner" if st["owned"] else "relay", "listeners": held,
                         "cpu_cores": round(cores, 3),
                         "cpu_per_listener_pct": round(100 * cores / held, 3) if held else None,
                         "packets_per_s": round(packets / window, 1),
                         "us_per_packet": round(1e6 * (c1 - c0) / packets, 1) if packets else None})
        received = [x for r in results for x in r["received"]]
        lost = [x for r in results for x in r["lost"]]
        return {"media_processes": media, "listeners": listeners, "per_process": per_process,
                "connected": sum(r["connected"] for r in results), "seconds": seconds, "processes": rows,
                "pkts_per_listener_per_s": round(sum(received) / len(received) / seconds, 1) if received else 0.0,
                "loss_pct": round(100 * sum(lost) / max(1, sum(received) + sum(lost)), 2)}
    finally:
        for w in workers:
            w.join(timeout=30)
        await _teardown(name, servers, bus, engine)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clients", type=int, default=40)
    ap.add_argument("--joins", type=int, default=400)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--fanout", action="store_true", help="listeners spread over media processes (issue 20)")
    ap.add_argument("--media", type=int, default=2)
    ap.add_argument("--listeners", type=int, default=60)
    ap.add_argument("--per-process", type=int, default=30)
    ap.add_argument("--procs", type=int, default=2, help="listener worker processes")
    args = ap.parse_args()
    if args.fanout:
        out = asyncio.run(fanout(args.media, args.listeners, args.per_process, args.seconds, args.procs))
        print(json.dumps(out) if args.json else json.dumps(out, indent=2))
        return
    runs = [asyncio.run(measure(n, args.clients, args.joins, args.seconds)) for n in (1, 2)]
    result: dict[str, Any] = {"processes": [1, 2]}
    for key in runs[0]:
        result[key] = [r[key] for r in runs]
    result.update(clients=args.clients, joins=args.joins, seconds=args.seconds)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
