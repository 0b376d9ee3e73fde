"""Core command throughput on one event loop: joins, hands and reactions per second.

    python -m bench.core_ops [--database URL] [--joins N] [--concurrency C] [--hands N] [--reactions N] --json

Joins come from C clients at once (a room filling up); hands and reactions from one client in turn.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from core.bus import InProcessBus
from core.clock import SystemClock
from core.ids import new_id
from core.model.accounts import Account, Actor
from core.services import Core
from core.storage import migrate
from core.storage.engine import make_engine, make_sessionmaker


async def run(url: str, joins: int, hands: int, reactions: int, concurrency: int = 100) -> dict[str, object]:
    await asyncio.to_thread(migrate.upgrade, url)
    engine = make_engine(url)
    bus = InProcessBus()
    await bus.start()
    core = Core(make_sessionmaker(engine), bus, SystemClock(), reaction_rate_per_s=1e9, reaction_burst=10**9)
    n_people = max(joins, hands)
    run_id = new_id(6)  # a shared database may hold an earlier run's accounts
    async with core.uow() as uow:
        now = core.now()
        for i in range(n_people + 1):
            await uow.accounts.add(Account(id=f"b{run_id}{i:07d}", display_name=f"bench {i}", created_at=now))
        await uow.commit()
    host = Actor(account_id=f"b{run_id}{0:07d}", is_operator=True)
    space = await core.create_space(host, "Benchmark")
    people = [Actor(account_id=f"b{run_id}{i:07d}") for i in range(1, n_people + 1)]

    async def client(mine: list[Actor]) -> None:
        for p in mine:
            await core.join(p, space.id)

    t = time.perf_counter()
    await asyncio.gather(*(client(people[i:joins:concurrency]) for i in range(concurrency)))
    joins_s = joins / (time.perf_counter() - t)
    assert (await core.view(space.id)).listener_count == joins + 1, "a join was lost"

    t = time.perf_counter()
    for p in people[:hands // 2]:
        await core.raise_hand(p, space.id)
        await core.lower_hand(p, space.id)
    hands_s = (hands // 2 * 2) / (time.perf_counter() - t)

    t = time.perf_counter()
    for i in range(reactions):
        await core.react(people[i % len(people)], space.id, "👏")
    reactions_s = reactions / (time.perf_counter() - t)

    await bus.close()
    await engine.dispose()
    return {"backend": engine.dialect.name, "joins_per_s": round(joins_s, 1), "hands_per_s": round(hands_s, 1),
            "reactions_per_s": round(reactions_s, 1), "joins": joins, "hands": hands // 2 * 2,
            "reactions": reactions, "join_concurrency": concurrency}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--database", default="")
    ap.add_argument("--joins", type=int, default=3000)
    ap.add_argument("--hands", type=int, default=2000)
    ap.add_argument("--reactions", type=int, default=50000)
    ap.add_argument("--concurrency", type=int, default=100, help="clients joining at the same time")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        url = a.database or f"sqlite:///{Path(d) / 'bench.sqlite3'}"
        out = asyncio.run(run(url, a.joins, a.hands, a.reactions, a.concurrency))
    print(json.dumps(out) if a.json else "\n".join(f"{k}: {v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
