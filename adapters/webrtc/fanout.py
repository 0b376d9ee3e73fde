"""Encode once, fan out many: every listener gets the same packet object from a bounded queue.

A slow listener loses its oldest packets (counted), never the room's memory: the queue holds at
most ``depth`` packets (10 = 200 ms of audio) whatever the listener does.

Which engine sends the room's packets to WebRTC peers is chosen here, in one place
(``choose_engine``): the native extension ``adapters.webrtc._fanout`` when it is built, else the
pure-Python ``Outlet`` path; ``SPACEBRIDGE_FANOUT=native|python|auto`` overrides (default auto).
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Generic, TypeVar

ENGINE_ENV = "SPACEBRIDGE_FANOUT"
THREADS_ENV = "SPACEBRIDGE_FANOUT_THREADS"


@dataclass(frozen=True)
class Engine:
    """The fan-out engine in use: ``name`` is native or python; ``problem`` says why a wish was not met."""

    name: str
    wanted: str
    threads: int
    detail: str
    problem: str | None = None
    module: ModuleType | None = None


def choose_engine(env: Mapping[str, str] | None = None) -> Engine:
    """Native when built and not refused, else python; a bad setting falls back to python and says so."""
    env = os.environ if env is None else env
    wanted = env.get(ENGINE_ENV, "auto").strip().lower() or "auto"
    raw = env.get(THREADS_ENV, "").strip()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = min(4, cores)
    if raw:
        if not raw.isdigit() or not 1 <= int(raw) <= 16:
            return Engine("python", wanted, 1, "pure-Python Outlet",
                          f"{THREADS_ENV} must be a whole number 1..16 (got {raw[:20]!r})")
        threads = int(raw)
    if wanted not in ("auto", "native", "python"):
        return Engine("python", wanted, 1, "pure-Python Outlet",
                      f"{ENGINE_ENV} must be native, python or auto (got {wanted[:20]!r})")
    if wanted == "python":
        return Engine("python", wanted, 1, f"pure-Python Outlet ({ENGINE_ENV}=python)")
    try:
        module = importlib.import_module("adapters.webrtc._fanout")
    except ImportError as e:
        why = (f"the native extension is not built ({e}); `pip install -e .` builds it where gcc, the "
               "Python headers and libssl-dev are installed")
        if wanted == "native":  # asked for and missing: a problem doctor reports
            return Engine("python", wanted, 1, "pure-Python Outlet", why)
        return Engine("python", wanted, 1, f"pure-Python Outlet: {why}")
    return Engine("native", wanted, threads,
                  f"native C extension (OpenSSL libcrypto SRTP, sendmmsg, {threads} thread(s))", module=module)

P = TypeVar("P")


@dataclass
class Subscriber(Generic[P]):
    depth: int
    queue: deque[P] = field(init=False)
    dropped: int = 0
    delivered: int = 0
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    def __post_init__(self) -> None:
        self.queue = deque(maxlen=self.depth)

    def offer(self, packet: P) -> None:
        if len(self.queue) == self.depth:
            self.dropped += 1  # deque(maxlen) drops the oldest for us
        self.queue.append(packet)
        self._ready.set()

    async def next(self) -> P:
        while not self.queue:
            if self.closed:
                raise EOFError("fan-out closed")
            self._ready.clear()
            await self._ready.wait()
        self.delivered += 1
        return self.queue.popleft()

    def close(self) -> None:
        self.closed = True
        self._ready.set()


class FanOut(Generic[P]):
    def __init__(self, depth: int = 10) -> None:
        self.depth = depth
        self._subs: dict[str, Subscriber[P]] = {}

    def subscribe(self, key: str) -> Subscriber[P]:
        old = self._subs.pop(key, None)
        if old is not None:
            old.close()
        sub: Subscriber[P] = Subscriber(self.depth)
        self._subs[key] = sub
        return sub

    def unsubscribe(self, key: str) -> None:
        sub = self._subs.pop(key, None)
        if sub is not None:
            sub.close()

    def publish(self, packet: P) -> None:
        for sub in self._subs.values():
            sub.offer(packet)

    def __len__(self) -> int:
        return len(self._subs)

    def close(self) -> None:
        for sub in self._subs.values():
            sub.close()
        self._subs.clear()
