"""Telegram's flood limits, kept before a request leaves rather than learned from 429s.

Telegram allows about 30 messages a second overall, one a second per private chat and 20 a
minute per group, and answers 429 with ``retry_after`` when they are broken. The stock
``AIORateLimiter`` is a leaky bucket that lets a full burst through and then drips, which can put
up to twice the limit into one sliding second; that is enough for Telegram to start throttling a
broadcast. This limiter instead paces, and counts each request the way Telegram does: on arrival.

We cannot see when a request arrives, only that it arrives after we let it go and before we read
its answer. So a request holds its place in a window from the moment it is let go until ``span``
after its answer (``_Window``). However late or bunched requests travel — a busy machine, a
stalled event loop on either side, a slow connection pool — no ``span``-long stretch at Telegram
can then hold more than ``cap`` of them. Pacing on top of that (one overall slot every
``1/overall_per_s``, a few saved up while idle) only spreads a broadcast evenly. A 429 that arrives anyway pauses every
sender for ``retry_after`` and the request is retried a few times before the caller hears of it.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter

__all__ = ["BULK", "FloodLimiter", "FloodLimits", "Send", "retry_seconds"]

# Bot API methods Telegram counts against the flood limits (deleteMessage and unpinChatMessage too).
LIMITED_PREFIXES = ("send", "edit", "copy", "forward", "pin", "unpin", "delete")


@dataclass(frozen=True)
class FloodLimits:
    overall_per_s: float = 30.0
    chat_per_s: float = 1.0
    group_per_min: int = 20
    # each window is this fraction longer than Telegram's; arrival jitter needs none (see _Window),
    # this only absorbs clock granularity
    margin: float = 0.01
    burst: int = 5  # overall slots an idle moment may save up (the 30/s window still holds)
    max_retries: int = 3


def retry_seconds(e: RetryAfter) -> float:
    """``retry_after`` in seconds (read from the timedelta ptb keeps, avoiding its int/timedelta switch)."""
    td = getattr(e, "_retry_after", None)
    if isinstance(td, timedelta):
        return td.total_seconds()
    return float(td) if isinstance(td, int | float) else 1.0


class _Pace:
    """Spreads sends: one slot every ``span`` seconds, and up to ``burst`` slots saved by idle moments,
    so a short pause in the work (a batch of jobs being claimed) is caught up. It promises nothing
    about Telegram's limits; the windows do."""

    __slots__ = ("at", "burst", "span", "tokens")

    def __init__(self, span: float, burst: int) -> None:
        self.span, self.burst = span, burst
        self.tokens = float(burst)
        self.at: float | None = None

    def _refill(self, now: float) -> None:
        if self.at is not None:
            self.tokens = min(float(self.burst), self.tokens + (now - self.at) / self.span)
        self.at = now

    def delay(self, now: float) -> float:
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) * self.span

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1.0


class _Window:
    """At most ``cap`` requests in any ``span`` seconds of their arrival at Telegram.

    A request counts from when it is let go (``take``) until ``span`` after its answer was read
    (``release``). Any ``span``-long stretch at Telegram holding ``cap + 1`` arrivals would need the
    last one let go while the other ``cap`` were all in flight or answered less than ``span`` ago,
    which ``delay`` refuses.
    """

    __slots__ = ("answered", "cap", "in_flight", "lock", "released", "span")

    def __init__(self, cap: int, span: float) -> None:
        self.cap, self.span = cap, span
        self.answered: list[float] = []  # heap of answer times
        self.in_flight = 0
        self.lock = asyncio.Lock()
        self.released = asyncio.Event()

    def delay(self, now: float) -> float | None:
        """0 if a request may go now, else seconds to wait; None: wait for an answer."""
        while self.answered and self.answered[0] <= now - self.span:
            heapq.heappop(self.answered)
        if self.in_flight + len(self.answered) < self.cap:
            return 0.0
        return self.answered[0] + self.span - now if self.answered else None

    def idle(self, now: float) -> bool:
        return self.in_flight == 0 and not self.lock.locked() and self.delay(now) == 0.0

    def take(self) -> None:
        self.in_flight += 1

    def release(self, now: float) -> None:
        self.in_flight -= 1
        heapq.heappush(self.answered, now)
        self.released.set()

    async def wait(self, clock: Callable[[], float]) -> float:
        """Wait until a request may go; returns the seconds waited (by the schedule, not measured)."""
        waited = 0.0
        while True:
            d = self.delay(clock())
            if d == 0.0:
                return waited
            if d is None:
                self.released.clear()
                await self.released.wait()
            else:
                waited += d
                await asyncio.sleep(d)


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
        self._pace = _Pace(m / self.limits.overall_per_s, self.limits.burst)
        self._overall = _Window(max(1, int(self.limits.overall_per_s)), m)
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
                for k in [k for k, v in self._chats.items() if v.idle(now)]:
                    del self._chats[k]
            m = 1.0 + self.limits.margin
            is_group = isinstance(key, str) or key < 0
            w = (_Window(self.limits.group_per_min, 60.0 * m) if is_group
                 else _Window(1, m / self.limits.chat_per_s))
            self._chats[key] = w
        return w

    async def _paced(self) -> None:
        """The next overall slot (and the end of any 429 pause)."""
        while True:
            now = self.clock()
            d = max(self._pace.delay(now), self._pause_until - now)
            if d <= 0:
                self._pace.take(now)
                return
            self.stats["waited_s"] += d
            await asyncio.sleep(d)

    async def _overall_slot(self, bulk: bool) -> None:
        if bulk:  # at most one bulk sender queues for the overall slot: replies never wait behind a broadcast
            async with self._bulk_gate, self._overall.lock:
                await self._take_overall()
        else:
            async with self._overall.lock:
                await self._take_overall()

    async def _take_overall(self) -> None:
        self.stats["waited_s"] += await self._overall.wait(self.clock)
        await self._paced()  # the window only empties while we wait: nobody else takes from it
        self._overall.take()

    async def _acquire(self, chat: _Window | None, bulk: bool) -> None:
        if chat is None:
            await self._overall_slot(bulk)
            return
        async with chat.lock:  # waiting for one chat holds up nobody else
            self.stats["waited_s"] += await chat.wait(self.clock)
            await self._overall_slot(bulk)
            chat.take()

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
            chat = self._window_for(data.get("chat_id")) if limited else None
            if limited:
                await self._acquire(chat, send.bulk)
                self.stats["requests"] += 1
            try:
                return await callback(*args, **kwargs)
            except RetryAfter as e:
                self.stats["retry_after"] += 1
                self._pause_until = max(self._pause_until, self.clock() + retry_seconds(e) + 0.1)
                if attempt == retries:
                    raise
            finally:
                if limited:  # the answer is in (or the request failed): it arrived by now, if at all
                    now = self.clock()
                    self._overall.release(now)
                    if chat is not None:
                        chat.release(now)
        raise AssertionError("unreachable")

