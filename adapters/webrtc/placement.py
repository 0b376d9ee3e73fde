"""Which process runs a live Space's media room.

One process alone runs every room (``LocalPlacement``, the default). With several processes on
Redis (``RedisPlacement``), each live Space's room is owned by exactly one *media* process, held by
a lease in Redis that its owner renews every ``ttl_s / 3``; signaling on any process sends offers to
the owner (``Rooms.offer``). When an owner dies its leases run out after ``ttl_s`` and the next offer
for the Space (clients are told to reconnect their media: ``Rooms`` watches the owners of the
Spaces it has sockets for) lets another media process claim it.

Why Redis and not the database: leases are renewed every few seconds by every media process, which
is write traffic the database does not need, and a lost Redis loses only who-runs-what, which the
next offers rebuild.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

# Compare-and-set on the lease value: only the holder renews or releases it.
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


@dataclass(frozen=True)
class Node:
    """A process that can own rooms: its id and the base URL other processes reach it on."""

    id: str
    url: str

    def encode(self) -> str:
        return json.dumps({"id": self.id, "url": self.url})

    @staticmethod
    def decode(raw: str | bytes) -> Node:
        d = json.loads(raw)
        return Node(str(d["id"]), str(d["url"]))


def new_node_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Placement(Protocol):
    node: Node
    media: bool  # this process may own rooms
    on_lost: Callable[[str], Awaitable[None]] | None  # a lease ran out under us: close that room
    on_relay: Callable[[str, dict[str, Any]], Awaitable[None]] | None  # another process's room said this

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def owner(self, space_id: str) -> Node | None: ...

    async def claim(self, space_id: str) -> Node:
        """Own the Space's room if nobody does; returns whoever owns it afterwards."""
        ...

    async def release(self, space_id: str) -> None: ...

    def owns(self, space_id: str) -> bool: ...

    async def relay(self, space_id: str, message: dict[str, Any]) -> None:
        """Room messages that are not domain events (speaking levels) to the other processes' sockets."""
        ...

    async def pick(self) -> Node | None:
        """A media process for a Space nobody owns yet (the least loaded)."""
        ...


class LocalPlacement:
    """One process: it owns every room."""

    def __init__(self) -> None:
        self.node = Node("local", "")
        self.media = True
        self.on_lost: Callable[[str], Awaitable[None]] | None = None
        self.on_relay: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None

    async def relay(self, space_id: str, message: dict[str, Any]) -> None:
        return None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def owner(self, space_id: str) -> Node | None:
        return self.node

    async def claim(self, space_id: str) -> Node:
        return self.node

    async def release(self, space_id: str) -> None:
        return None

    def owns(self, space_id: str) -> bool:
        return True

    async def pick(self) -> Node | None:
        return self.node


class RedisPlacement:
    def __init__(self, redis_url: str, node: Node, *, media: bool, ttl_s: float = 5.0,
                 prefix: str = "spacebridge:media") -> None:
        self.redis_url, self.node, self.media = redis_url, node, media
        self.ttl_ms = int(ttl_s * 1000)
        self.prefix = prefix
        self.owned: set[str] = set()
        self.on_lost: Callable[[str], Awaitable[None]] | None = None
        self.on_relay: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None
        self._redis: Any = None
        self._renewer: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None

    def _key(self, space_id: str) -> str:
        return f"{self.prefix}:space:{space_id}"

    async def start(self) -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.from_url(self.redis_url)
        await self._redis.ping()
        ready = asyncio.Event()
        self._listener = asyncio.create_task(self._listen(ready))
        await asyncio.wait_for(ready.wait(), 10)
        if self.media:
            await self._heartbeat()
            self._renewer = asyncio.create_task(self._renew_forever())

    async def relay(self, space_id: str, message: dict[str, Any]) -> None:
        await self._redis.publish(f"{self.prefix}:relay", json.dumps(
            {"from": self.node.id, "space": space_id, "message": message}))

    async def _listen(self, ready: asyncio.Event) -> None:
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(f"{self.prefix}:relay")
        ready.set()
        try:
            async for msg in pubsub.listen():
                if msg.get("type") != "message":
                    continue
                try:
                    data = json.loads(msg["data"])
                    if data.get("from") != self.node.id and self.on_relay is not None:
                        await self.on_relay(str(data["space"]), dict(data["message"]))
                except Exception:
                    log.exception("bad relay message")
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def close(self) -> None:
        for task in (self._renewer, self._listener):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._redis is not None:
            with contextlib.suppress(Exception):  # hand the rooms over now, not after the lease runs out
                for space_id in list(self.owned):
                    await self.release(space_id)
                if self.media:
                    await self._redis.delete(f"{self.prefix}:node:{self.node.id}")
                    await self._redis.srem(f"{self.prefix}:nodes", self.node.id)
            await self._redis.aclose()
            self._redis = None

    async def owner(self, space_id: str) -> Node | None:
        raw = await self._redis.get(self._key(space_id))
        return Node.decode(raw) if raw is not None else None

    async def claim(self, space_id: str) -> Node:
        if space_id in self.owned:
            return self.node
        if not self.media:
            raise RuntimeError("this process does not run media (--role media)")
        for _ in range(3):  # the lease may run out between SET and GET
            if await self._redis.set(self._key(space_id), self.node.encode(), nx=True, px=self.ttl_ms):
                self.owned.add(space_id)
                log.info("media for %s is now served here (%s)", space_id, self.node.id)
                return self.node
            current = await self.owner(space_id)
            if current is not None:
                if current.id == self.node.id:
                    self.owned.add(space_id)
                    return self.node
                return current
        raise RuntimeError(f"could not settle who serves {space_id}")

    async def release(self, space_id: str) -> None:
        self.owned.discard(space_id)
        await self._redis.eval(_RELEASE, 1, self._key(space_id), self.node.encode())

    def owns(self, space_id: str) -> bool:
        return space_id in self.owned

    async def pick(self) -> Node | None:
        members = await self._redis.smembers(f"{self.prefix}:nodes")
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in members]
        if not ids:
            return None
        raws = await self._redis.mget([f"{self.prefix}:node:{i}" for i in ids])
        alive: list[tuple[int, float, Node]] = []
        for node_id, raw in zip(ids, raws, strict=True):
            if raw is None:  # its heartbeat ran out: gone
                await self._redis.srem(f"{self.prefix}:nodes", node_id)
                continue
            d = json.loads(raw)
            alive.append((int(d.get("load", 0)), random.random(), Node(node_id, str(d["url"]))))
        return min(alive)[2] if alive else None

    async def _heartbeat(self) -> None:
        value = json.dumps({"url": self.node.url, "load": len(self.owned)})
        await self._redis.set(f"{self.prefix}:node:{self.node.id}", value, px=self.ttl_ms)
        await self._redis.sadd(f"{self.prefix}:nodes", self.node.id)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            try:
                await self._heartbeat()
                for space_id in list(self.owned):
                    kept = await self._redis.eval(_RENEW, 1, self._key(space_id), self.node.encode(), self.ttl_ms)
                    if not kept and space_id in self.owned:  # it ran out (this process stalled): not ours now
                        self.owned.discard(space_id)
                        log.warning("lost the media lease for %s", space_id)
                        if self.on_lost is not None:
                            await self.on_lost(space_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("renewing media leases failed; retrying")


class Duty:
    """Work one process at a time must do (keeping a platform's chat cards), held by a Redis lease.

    Without Redis there is one process and it always holds the duty. With Redis the first process
    to ask takes it and renews it every ``ttl_s / 3``; when it dies another takes it within
    ``ttl_s`` and ``on_gain`` lets it catch up on what it missed."""

    def __init__(self, redis_url: str, name: str, node_id: str, *, ttl_s: float = 10.0) -> None:
        self.redis_url, self.key, self.node_id = redis_url, f"spacebridge:duty:{name}", node_id
        self.ttl_ms = int(ttl_s * 1000)
        self.held = not redis_url
        self.on_gain: Callable[[], Awaitable[None]] | None = None
        self._redis: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self.redis_url:
            return
        import redis.asyncio as aioredis

        self._redis = aioredis.from_url(self.redis_url)
        await self._step()
        self._task = asyncio.create_task(self._keep())

    async def _step(self) -> None:
        if self.held:
            self.held = bool(await self._redis.eval(_RENEW, 1, self.key, self.node_id, self.ttl_ms))
            if not self.held:
                log.warning("lost the %s duty", self.key)
            return
        if await self._redis.set(self.key, self.node_id, nx=True, px=self.ttl_ms):
            self.held = True
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
            except Exception:
                log.exception("keeping %s failed; retrying", self.key)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._redis is not None:
            with contextlib.suppress(Exception):
                if self.held:
                    await self._redis.eval(_RELEASE, 1, self.key, self.node_id)
            await self._redis.aclose()
        self.held = not self.redis_url
