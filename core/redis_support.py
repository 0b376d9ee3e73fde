"""Redis in one place: the client that fails fast, the deployment's key prefix, backoff and outage
logging, the lease scripts, and ``Duty`` (work one process at a time does). The event bus
(core/bus.py), media placement (adapters/webrtc/placement.py) and the chat adapters use these.

It sits in core because the core's event bus needs it and core imports no adapter; it names no
platform and holds no domain rule."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 5.0  # a Redis that answers nothing for this long is treated as gone

# Compare-and-set on the lease value: only the holder renews or releases it.
RENEW_LEASE = ("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end "
               "return 0")
# Renew, or take back a lease that ran out while its holder could not reach Redis, unless another
# process holds it now (0).
KEEP_LEASE = """local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
return 0"""
RELEASE_LEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def redis_prefix(url: str) -> str:
    """The default namespace of a deployment's keys and channels: one per Redis database index.

    Redis pub/sub channels (and anything a deployment shares) are global across database indexes, so
    two deployments on one Redis server must differ by prefix; by default they do when their URLs
    name different databases (``redis://host/2`` -> ``spacebridge:2:``)."""
    u = urlsplit(url)
    db = parse_qs(u.query).get("db", [""])[0] or (u.path.strip("/") if u.scheme != "unix" else "")
    return f"spacebridge:{int(db) if db.isdigit() else 0}:"


def redis_client(url: str, timeout_s: float = REDIS_TIMEOUT_S) -> Any:
    """A Redis client that fails fast instead of waiting: a partitioned Redis (no bytes either way)
    must turn into an error within seconds, which the callers turn into a reconnect with backoff."""
    import redis.asyncio as aioredis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return aioredis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                             retry=Retry(NoBackoff(), 0))


class Backoff:
    """Capped exponential backoff with jitter, so processes that lost Redis together do not all
    knock at the same moment when it comes back."""

    def __init__(self, first_s: float = 0.1, cap_s: float = 5.0) -> None:
        self.first_s, self.cap_s = first_s, cap_s
        self._next = first_s

    def reset(self) -> None:
        self._next = self.first_s

    async def wait(self) -> None:
        await asyncio.sleep(self._next * random.uniform(0.5, 1.0))
        self._next = min(self._next * 2, self.cap_s)


class Outage:
    """Says once that a link to Redis is lost and once that it is back (not a line per retry)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.down_since: float | None = None
        self.back_at: float | None = None  # time.monotonic() when it last came back

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def lost(self, error: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("%s: lost Redis (%s); retrying with backoff", self.what, describe_error(error))

    def back(self) -> None:
        if self.down_since is not None:
            self.back_at = time.monotonic()
            log.warning("%s: Redis is back after %.1f s", self.what, self.back_at - self.down_since)
            self.down_since = None

    def back_within(self, seconds: float) -> bool:
        """Whether it came back less than ``seconds`` ago."""
        return self.back_at is not None and time.monotonic() - self.back_at < seconds


async def stop_task(task: asyncio.Task[Any] | None, grace_s: float = REDIS_TIMEOUT_S) -> None:
    """Cancel a Redis loop and wait for it to end.

    redis-py can swallow a cancellation that lands mid-command (redis/redis-py#2028, #2551), and a
    loop that swallowed it runs on, so a plain ``cancel(); await task`` can hang shutdown forever.
    Cancel again until the task ends; after ``grace_s`` leave it with a log line instead."""
    if task is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.05)
        if not task.done() and loop.time() > deadline:
            log.warning("a Redis task (%s) did not stop within %.0f s; left behind", task.get_name(), grace_s)
            return
    if not task.cancelled() and task.exception() is not None:
        log.warning("a Redis task (%s) ended with %s", task.get_name(), describe_error(task.exception()))  # type: ignore[arg-type]


def describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class Duty:
    """Work one process at a time must do (keeping a platform's chat cards), held by a Redis lease.

    Without Redis there is one process and it always holds the duty. With Redis the first process
    to ask takes it and renews it every ``ttl_s / 3``; when it dies another takes it within
    ``ttl_s`` and ``on_gain`` lets it catch up on what it missed. A holder that cannot reach Redis
    keeps the duty until its lease would have run out (another process may have it after that),
    then asks for it again with backoff until Redis is back."""

    def __init__(self, redis_url: str, name: str, node_id: str, *, ttl_s: float = 10.0,
                 prefix: str | None = None) -> None:
        self.redis_url, self.node_id = redis_url, node_id
        self.key = f"{redis_prefix(redis_url) if prefix is None else prefix}duty:{name}" if redis_url else name
        self.ttl_ms = int(ttl_s * 1000)
        self.held = not redis_url
        self.on_gain: Callable[[], Awaitable[None]] | None = None
        self.outage = Outage(f"duty {name}")
        self._renewed = 0.0  # time.monotonic() of the last renewal Redis confirmed
        self._redis: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self.redis_url:
            return
        self._redis = redis_client(self.redis_url, min(REDIS_TIMEOUT_S, max(0.5, self.ttl_ms / 3000)))
        await self._step()
        self._task = asyncio.create_task(self._keep())

    async def _step(self) -> None:
        if self.held:
            self.held = bool(await self._redis.eval(RENEW_LEASE, 1, self.key, self.node_id, self.ttl_ms))
            if self.held:
                self._renewed = time.monotonic()
            else:
                log.warning("lost the %s duty", self.key)
            return
        if await self._redis.set(self.key, self.node_id, nx=True, px=self.ttl_ms):
            self.held, self._renewed = True, time.monotonic()
            log.info("this process now holds %s", self.key)
            if self.on_gain is not None:
                await self.on_gain()

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.outage.lost(e)
                if self.held and time.monotonic() - self._renewed > self.ttl_ms / 1000:
                    self.held = False  # our lease has run out: another process may hold the duty now
                    log.warning("gave up the %s duty: Redis unreachable for longer than its lease", self.key)
            else:
                self.outage.back()

    async def close(self) -> None:
        await stop_task(self._task)
        self._task = None
        if self._redis is not None:
            with contextlib.suppress(Exception):
                if self.held:
                    await asyncio.wait_for(self._redis.eval(RELEASE_LEASE, 1, self.key, self.node_id), REDIS_TIMEOUT_S)
            with contextlib.suppress(Exception):
                await self._redis.aclose()
        self.held = not self.redis_url
