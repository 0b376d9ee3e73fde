"""Per-socket send queues: no client can slow down or freeze another.

Every frame for a web-room socket is queued in that socket's ``Outbox`` and written by the
outbox's own task, so a broadcast only appends to queues and never awaits a socket. A queue is
bounded by frames and bytes; a socket that falls that far behind is closed with 1013 ("try again
later": the page reconnects and gets a fresh welcome) rather than buffered without limit.
``levels`` frames are superseded by the next one while queued, so a briefly slow client loses
stale meter readings first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMessage, WSMsgType, web

log = logging.getLogger(__name__)

TOO_SLOW = 1013  # WSCloseCode.TRY_AGAIN_LATER: the client reconnects (after a short backoff)
TOO_SLOW_REASON = "too slow: the client did not read its messages"
CLOSE_TIMEOUT_S = 2.0  # a close frame the client does not take within this cuts the connection


@dataclass(frozen=True)
class Limits:
    frames: int = 1000
    bytes: int = 512 * 1024


def dumps(message: Any) -> str:
    """A frame as strict JSON: ASCII (so its length is its size on the wire) and never NaN/Infinity,
    which browsers' ``JSON.parse`` refuses; such floats are sent as ``null``."""
    try:
        return json.dumps(message, allow_nan=False, separators=(",", ":"), default=str)
    except ValueError:
        return json.dumps(_finite(message), allow_nan=False, separators=(",", ":"), default=str)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class Outbox:
    """One socket's bounded queue and the task that writes it, in order."""

    def __init__(self, ws: web.WebSocketResponse, limits: Limits | None = None) -> None:
        self.ws = ws
        self.limits = limits or Limits()
        self.queued_bytes = 0
        self.peak_bytes = 0  # the most this queue ever held (memory per socket is bounded by limits.bytes)
        self.overflowed = False
        self._queue: deque[tuple[str, str | None]] = deque()
        self._wake = asyncio.Event()
        self._close: tuple[int, str] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._ending: asyncio.Task[None] | None = None
        self.ended = asyncio.Event()  # the close is done or given up on: the socket's reader should stop too
        self._task = asyncio.create_task(self._write(), name="outbox")

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def closing(self) -> bool:
        return self._close is not None or self.ws.closed

    def put(self, frame: str, *, supersedes: str | None = None) -> bool:
        """Queue ``frame``; with ``supersedes`` (a kind, e.g. "levels"), a queued frame of that kind
        is replaced instead of kept. False when the socket is closing or was just closed as too slow."""
        if self.closing:
            return False
        if supersedes is not None:
            self._drop(supersedes)
        size = len(frame)
        if len(self._queue) >= self.limits.frames or self.queued_bytes + size > self.limits.bytes:
            self._drop(None)  # what may be lost goes first
            if len(self._queue) >= self.limits.frames or self.queued_bytes + size > self.limits.bytes:
                self.overflowed = True
                log.info("closing a web-room socket that fell %d frames (%d bytes) behind",
                         len(self._queue), self.queued_bytes)
                self._cut(TOO_SLOW, TOO_SLOW_REASON)
                return False
        self._queue.append((frame, supersedes))
        self.queued_bytes += size
        self.peak_bytes = max(self.peak_bytes, self.queued_bytes)
        self._wake.set()
        return True

    def _drop(self, kind: str | None) -> None:
        """Remove queued frames of ``kind`` (None: every frame that may be superseded)."""
        kept: deque[tuple[str, str | None]] = deque()
        for frame, k in self._queue:
            if k is not None and (kind is None or k == kind):
                self.queued_bytes -= len(frame)
            else:
                kept.append((frame, k))
        self._queue = kept

    def close(self, code: int, reason: str) -> None:
        """Close after what is already queued (at most ``CLOSE_TIMEOUT_S`` later, queued or not)."""
        if self._close is not None:
            return
        self._close = (code, reason)
        self._wake.set()
        self._deadline = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, self._cut, code, reason)

    def _cut(self, code: int, reason: str) -> None:
        """Close now, dropping what is queued; the writer may be stuck on a client that stopped reading."""
        self._close = self._close or (code, reason)
        self._queue.clear()
        self.queued_bytes = 0
        if self._ending is None:
            self._task.cancel()
            self._ending = asyncio.create_task(self._end(code, reason), name="outbox-close")

    async def _write(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):  # the socket went away: nobody to write to
            while True:
                if self._queue:
                    frame, _ = self._queue.popleft()
                    self.queued_bytes -= len(frame)
                    await self.ws.send_str(frame)
                    continue
                if self._close is not None:
                    break
                self._wake.clear()
                await self._wake.wait()
        if self._close is not None and self._ending is None:
            self._ending = asyncio.current_task()
            await self._end(*self._close)

    async def _end(self, code: int, reason: str) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        # a close frame the client does not take in time: aiohttp then closes the transport itself
        # (which still flushes the frame if the client ever reads again)
        try:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await self.ws.close(code=code, message=reason.encode()[:120])
        finally:
            self.ended.set()

    async def shutdown(self) -> None:
        """The socket's life is over: stop writing (a close under way finishes, within its timeout)."""
        self._close = self._close or (1000, "")  # nothing more is queued
        if self._deadline is not None:
            self._deadline.cancel()
        ending = self._ending
        if ending is not None and ending is not asyncio.current_task():
            await asyncio.wait({ending}, timeout=2 * CLOSE_TIMEOUT_S)
            return
        self._task.cancel()
        await asyncio.wait({self._task})


async def receive(ws: web.WebSocketResponse, box: Outbox) -> AsyncIterator[WSMessage]:
    """The socket's messages until it closes or its outbox gave up on it: a client that stopped
    reading may never take the close frame, and its handler must not wait for it forever."""
    ended = asyncio.ensure_future(box.ended.wait())
    try:
        while True:
            message = asyncio.ensure_future(ws.receive())
            await asyncio.wait({message, ended}, return_when=asyncio.FIRST_COMPLETED)
            if not message.done():
                message.cancel()
                await asyncio.wait({message})
                return
            msg = message.result()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return
            yield msg
    finally:
        ended.cancel()


OUTBOX: web.ResponseKey[Outbox] = web.ResponseKey("outbox", Outbox)


def outbox(ws: web.WebSocketResponse, limits: Limits | None = None) -> Outbox:
    """The socket's outbox, made on first use (with ``limits``) and kept on the response object."""
    box = ws.get(OUTBOX)
    if box is None:
        box = ws[OUTBOX] = Outbox(ws, limits)
    return box
