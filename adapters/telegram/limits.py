"""Telegram's flood limits, kept before a request leaves rather than learned from 429s.

Telegram allows about 30 messages a second overall, one a second per private chat and 20 a
minute per group, and answers 429 with ``retry_after`` when they are broken. The stock
``AIORateLimiter`` is a leaky bucket that lets a full burst through and then drips, which can put
up to twice the limit into one sliding second; that is enough for Telegram to start throttling a
broadcast. This limiter instead paces: every send waits for its chat's (or group's) window, then
for the overall one, and both are measured with a small margin so that jitter between our clock
and Telegram's arrival time never adds up to a breach. A 429 that arrives anyway pauses every
sender for ``retry_after`` and the request is retried a few times before the caller hears of it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter

__all__ = ["BULK", "FloodLimiter", "FloodLimits", "Send", "retry_seconds"]

LIMITED_PREFIXES = ("send", "edit", "copy", "forward", "pin")


@dataclass(frozen=True)
class FloodLimits:
    overall_per_s: float = 30.0
    chat_per_s: float = 1.0
    group_per_min: int = 20
    margin: float = 0.02  # each window is this fraction longer than Telegram's
    max_retries: int = 3


def retry_seconds(e: RetryAfter) -> float:
    """``retry_after`` in seconds (read from the timedelta ptb keeps, avoiding its int/timedelta switch)."""
    td = getattr(e, "_retry_after", None)
    if isinstance(td, timedelta):
        return td.total_seconds()
    return float(td) if isinstance(td, int | float) else 1.0


class _Window:
    """At most ``cap`` events in any ``span`` seconds (``cap`` 1 is plain pacing)."""

    __slots__ = ("cap", "lock", "span", "times")

    def __init__(self, cap: int, span: float) -> None:
        self.cap, self.span = cap, span
        self.times: deque[float] = deque()
        self.lock = asyncio.Lock()

    def delay(self, now: float) -> float:
        while self.times and self.times[0] <= now - self.span:
            self.times.popleft()
        return 0.0 if len(self.times) < self.cap else self.times[0] + self.span - now


@dataclass(frozen=True)
class Send:
    """``rate_limit_args`` of a request: ``bulk`` for broadcasts that may wait behind replies."""

    bulk: bool = False
    max_retries: int | None = None


BULK = Send(bulk=True)


class FloodLimiter(BaseRateLimiter[Send]):
    """Paces every message-sending call of one bot; replies go ahead of bulk sends (``BULK``)."""

    def __init__(self, limits: FloodLimits | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or FloodLimits()
        self.clock = clock
        m = 1.0 + self.limits.margin
        self._overall = _Window(1, m / self.limits.overall_per_s)
        self._bulk_gate = asyncio.Lock()
        self._chats: dict[int | str, _Window] = {}
        self._pause_until = 0.0
        self.stats = {"requests": 0, "waited_s": 0.0, "retry_after": 0}

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        self._chats.clear()

    def _window_for(self, chat_id: Any) -> _Window | None:
        if chat_id is None:
            return None
        try:
            key: int | str = int(chat_id)
        except (TypeError, ValueError):
            key = str(chat_id)  # @channelusername: a group or channel
        w = self._chats.get(key)
        if w is None:
            if len(self._chats) > 50_000:  # forget idle chats rather than grow without bound
                now = self.clock()
                for k in [k for k, v in self._chats.items() if not v.lock.locked() and v.delay(now) == 0.0]:
                    del self._chats[k]
            m = 1.0 + self.limits.margin
            is_group = isinstance(key, str) or key < 0
            w = (_Window(self.limits.group_per_min, 60.0 * m) if is_group
                 else _Window(1, m / self.limits.chat_per_s))
            self._chats[key] = w
        return w

    async def _wait(self, w: _Window) -> None:
        slot = None
        while True:
            now = self.clock()
            d = max(w.delay(now), self._pause_until - now)
            if d <= 0:
                # Book the slot we waited for, not the moment the event loop woke us: sleeps overshoot
                # by a millisecond or so, and booking late would lower the rate by that much per message.
                w.times.append(now if slot is None else max(slot, now - w.span / 4))
                return
            slot = now + d
            self.stats["waited_s"] += d
            await asyncio.sleep(d)

    async def _overall_slot(self, bulk: bool) -> None:
        if bulk:  # at most one bulk sender queues for the overall slot: replies never wait behind a broadcast
            async with self._bulk_gate, self._overall.lock:
                await self._wait(self._overall)
        else:
            async with self._overall.lock:
                await self._wait(self._overall)

    async def _acquire(self, chat: _Window | None, bulk: bool) -> None:
        if chat is None:
            await self._overall_slot(bulk)
            return
        async with chat.lock:  # waiting for one chat holds up nobody else
            while True:
                d = chat.delay(self.clock())
                if d <= 0:
                    break
                await asyncio.sleep(d)
            await self._overall_slot(bulk)
            chat.times.append(self.clock())

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: Send | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        limited = endpoint.startswith(LIMITED_PREFIXES)
        send = rate_limit_args or Send()
        retries = self.limits.max_retries if send.max_retries is None else send.max_retries
        for attempt in range(retries + 1):
            if limited:
                await self._acquire(self._window_for(data.get("chat_id")), send.bulk)
                self.stats["requests"] += 1
            try:
                return await callback(*args, **kwargs)
            except RetryAfter as e:
                self.stats["retry_after"] += 1
                self._pause_until = max(self._pause_until, self.clock() + retry_seconds(e) + 0.1)
                if attempt == retries:
                    raise
        raise AssertionError("unreachable")
