"""Encode once, fan out many: every listener gets the same packet object from a bounded queue.

A slow listener loses its oldest packets (counted), never the room's memory: the queue holds at
most ``depth`` packets (10 = 200 ms of audio) whatever the listener does.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

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
