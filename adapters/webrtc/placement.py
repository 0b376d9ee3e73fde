"""Which process runs a live Space's media room.

One process alone runs every room (``LocalPlacement``, the default). With several processes on
Redis (``RedisPlacement``), each live Space's room is owned by exactly one *media* process, held by
a lease in Redis that its owner renews every ``ttl_s / 3``; signaling on any process sends offers to
the owner (``Rooms.offer``). When an owner dies its leases run out after ``ttl_s`` and the next offer
for the Space (clients are told to reconnect their media: ``Rooms`` watches the owners of the
Spaces it has sockets for) lets another media process claim it.

Big rooms: listeners of one Space spread over media processes. Each media process publishes its
load in its heartbeat, ``<prefix>media:node:<id>`` = ``{"url", "load": rooms owned, "listeners":
WebRTC listeners here in all, "spaces": {space id: its listeners here}}``, rewritten every ``ttl_s / 3``
and at once (coalesced) when its listeners change, expiring with the process. The owner decides
where each new listener's media goes, because it alone knows its own count exactly: itself while
it holds fewer than ``per_process`` of the Space's listeners, else ``pick_relay``: the live media
process, other than itself, that holds fewer than that many of this Space's listeners and the
fewest listeners in all (ties at random), which serves them as a *relay* (``relay.py``: one copy of
the owner's encoded packets, fanned out there). The relay checks its own exact count against the
limit the owner used and refuses when a race filled it; the owner then picks again without it.
Published counts are at most one renewal old, so two owners choosing at the same moment may
overfill a relay by a listener or two; that is the price of not locking on every offer.

Why Redis and not the database: leases are renewed every few seconds by every media process, which
is write traffic the database does not need, and a lost Redis loses only who-runs-what, which the
next offers rebuild.

A Redis outage ends nothing. Rooms keep running where they are; signaling answers "who serves this
Space" from what it last knew (offers for a Space it never saw are refused with ``media.unavailable``,
which clients retry); the relay listener reconnects with backoff. Leases that ran out meanwhile are
taken again by their owner as soon as Redis is back, unless another process took the Space in the
meantime (it could reach Redis when this one could not): then the holder in Redis wins, this process
closes its room, and the clients' watchers move their media to the winner.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from adapters.webrtc.room import MediaError
from core.redis_support import (
    KEEP_LEASE,
    REDIS_TIMEOUT_S,
    RELEASE_LEASE,
    Backoff,
    Duty,
    Outage,
    redis_client,
    redis_prefix,
    stop_task,
)

__all__ = ["Duty", "LocalPlacement", "Node", "Placement", "RedisPlacement", "new_node_id"]  # Duty: its old home

log = logging.getLogger(__name__)
T = TypeVar("T")
HEALTH_EVERY_S = 2.0  # the relay listener pings this often; silence for REDIS_TIMEOUT_S means the link is gone

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
    load: Callable[[], dict[str, int]] | None  # this process's WebRTC listeners per Space (owned and relayed)

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

    async def pick_relay(self, space_id: str, limit: int, exclude: set[str]) -> Node | None:
        """Another live media process holding fewer than ``limit`` of the Space's listeners, the
        least loaded (module docstring); None when there is none."""
        ...

    async def alive(self, ids: set[str]) -> set[str]:
        """Which of these media processes still renew their heartbeat."""
        ...

    async def publish_load(self) -> None:
        """Write this process's listener counts now (``load`` gives them), not at the next renewal."""
        ...


class LocalPlacement:
    """One process: it owns every room."""

    def __init__(self) -> None:
        self.node = Node("local", "")
        self.media = True
        self.on_lost: Callable[[str], Awaitable[None]] | None = None
        self.on_relay: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None
        self.load: Callable[[], dict[str, int]] | None = None

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

    async def pick_relay(self, space_id: str, limit: int, exclude: set[str]) -> Node | None:
        return None  # no other process: the one room takes everyone

    async def alive(self, ids: set[str]) -> set[str]:
        return set(ids)

    async def publish_load(self) -> None:
        return None


class RedisPlacement:
    def __init__(self, redis_url: str, node: Node, *, media: bool, ttl_s: float = 5.0,
                 prefix: str | None = None) -> None:
        self.redis_url, self.node, self.media = redis_url, node, media
        self.ttl_ms = int(ttl_s * 1000)
        # a renewal that waits longer than this is an outage, noticed before the lease runs out
        self.timeout_s = min(REDIS_TIMEOUT_S, max(0.5, ttl_s / 3))
        self.prefix = f"{redis_prefix(redis_url) if prefix is None else prefix}media"
        self.owned: set[str] = set()
        self.on_lost: Callable[[str], Awaitable[None]] | None = None
        self.on_relay: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None
        self.load: Callable[[], dict[str, int]] | None = None
        self._publishing = False  # a load write is on its way (publish_load coalesces)
        self.outage = Outage("media placement")
        self.listener_outage = Outage("media relay listener")
        self._known: dict[str, Node] = {}  # Space -> the owner last read: answers while Redis is away
        self._redis: Any = None
        self._renewer: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None

    def _key(self, space_id: str) -> str:
        return f"{self.prefix}:space:{space_id}"

    @property
    def healthy(self) -> bool:
        return self._redis is not None and not (self.outage.down or self.listener_outage.down)

    async def start(self) -> None:
        self._redis = redis_client(self.redis_url, self.timeout_s)
        await self._redis.ping()
        ready = asyncio.Event()
        self._listener = asyncio.create_task(self._listen(ready))
        await asyncio.wait_for(ready.wait(), 10)
        if self.media:
            await self._heartbeat()
        self._renewer = asyncio.create_task(self._renew_forever())

    async def _call(self, work: Awaitable[T]) -> T:
        """A Redis command for a participant's request: Redis trouble becomes ``media.unavailable``
        (which clients retry), never an exception that would cost them their socket."""
        try:
            result = await work
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.outage.lost(e)
            raise MediaError("media.unavailable", detail="media placement is unreachable; try again shortly") \
                from None
        self.outage.back()
        return result

    async def relay(self, space_id: str, message: dict[str, Any]) -> None:
        if self.outage.down or self._redis is None:
            return  # speaking levels are momentary: while Redis is away they are only shown here
        with contextlib.suppress(MediaError):
            await self._call(self._redis.publish(f"{self.prefix}:relay", json.dumps(
                {"from": self.node.id, "space": space_id, "message": message})))

    async def _listen(self, ready: asyncio.Event) -> None:
        """Other processes' relay messages, for as long as this process runs: reconnects with backoff."""
        backoff = Backoff()
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(f"{self.prefix}:relay")
                ready.set()
                self.listener_outage.back()
                backoff.reset()
                await self._pump(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.listener_outage.lost(e)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pubsub.aclose(), REDIS_TIMEOUT_S)
            await backoff.wait()

    async def _pump(self, pubsub: Any) -> None:
        """Until the link fails: pub/sub connections are idle most of the time, so a ping every few
        seconds tells a partitioned Redis (no bytes, no error) from a quiet one."""
        heard = pinged = time.monotonic()
        while True:
            msg = await pubsub.get_message(timeout=HEALTH_EVERY_S / 2)
            now = time.monotonic()
            if msg is not None:
                heard = now
            elif now - heard > REDIS_TIMEOUT_S:
                raise TimeoutError(f"no answer from Redis for {REDIS_TIMEOUT_S:.0f} s")
            if now - pinged > HEALTH_EVERY_S:
                await pubsub.ping()
                pinged = now
            if msg is None or msg.get("type") != "message":
                continue
            try:
                data = json.loads(msg["data"])
                if data.get("from") != self.node.id and self.on_relay is not None:
                    await self.on_relay(str(data["space"]), dict(data["message"]))
            except Exception:
                log.exception("bad relay message")

    async def close(self) -> None:
        for task in (self._renewer, self._listener):
            await stop_task(task)
        if self._redis is not None:
            with contextlib.suppress(Exception):  # hand the rooms over now, not after the lease runs out
                async with asyncio.timeout(REDIS_TIMEOUT_S):
                    for space_id in list(self.owned):
                        await self.release(space_id)
                    if self.media:
                        await self._redis.delete(f"{self.prefix}:node:{self.node.id}")
                        await self._redis.srem(f"{self.prefix}:nodes", self.node.id)
            with contextlib.suppress(Exception):
                await self._redis.aclose()
            self._redis = None

    async def owner(self, space_id: str) -> Node | None:
        if self.outage.down:  # what was true before the outage is the best guess, and keeps media where it is
            if space_id in self.owned:
                return self.node
            if space_id in self._known:
                return self._known[space_id]
        try:
            raw = await self._call(self._redis.get(self._key(space_id)))
        except MediaError:
            if space_id in self.owned:
                return self.node
            if space_id in self._known:
                return self._known[space_id]
            raise
        node = Node.decode(raw) if raw is not None else None
        if node is None and space_id in self._known and self.outage.back_within(self.ttl_ms / 1000 + self.timeout_s):
            # Redis just came back and the owner's lease ran out meanwhile: it takes it back within
            # a renewal or two; don't send everyone's media elsewhere in the meantime
            return self._known[space_id]
        if node is None:
            self._known.pop(space_id, None)
        else:
            self._known[space_id] = node
        return node

    async def claim(self, space_id: str) -> Node:
        if space_id in self.owned:
            return self.node
        if not self.media:
            raise RuntimeError("this process does not run media (--role media)")
        for _ in range(3):  # the lease may run out between SET and GET
            if await self._call(self._redis.set(self._key(space_id), self.node.encode(), nx=True, px=self.ttl_ms)):
                self.owned.add(space_id)
                self._known[space_id] = self.node
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
        self._known.pop(space_id, None)
        try:
            await self._call(self._redis.eval(RELEASE_LEASE, 1, self._key(space_id), self.node.encode()))
        except MediaError:  # the lease runs out on its own
            log.info("media lease for %s not released (Redis away); it runs out in %d ms", space_id, self.ttl_ms)

    def owns(self, space_id: str) -> bool:
        return space_id in self.owned

    async def _nodes(self) -> list[tuple[Node, dict[str, Any]]]:
        """The live media processes and their heartbeats (forgetting those whose heartbeat ran out)."""
        members = await self._call(self._redis.smembers(f"{self.prefix}:nodes"))
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in members]
        if not ids:
            return []
        raws = await self._call(self._redis.mget([f"{self.prefix}:node:{i}" for i in ids]))
        alive: list[tuple[Node, dict[str, Any]]] = []
        for node_id, raw in zip(ids, raws, strict=True):
            if raw is None:  # its heartbeat ran out: gone
                await self._call(self._redis.srem(f"{self.prefix}:nodes", node_id))
                continue
            d = json.loads(raw)
            alive.append((Node(node_id, str(d["url"])), d))
        return alive

    async def pick(self) -> Node | None:
        nodes = [(int(d.get("load", 0)), random.random(), node) for node, d in await self._nodes()]
        return min(nodes)[2] if nodes else None

    async def pick_relay(self, space_id: str, limit: int, exclude: set[str]) -> Node | None:
        fits: list[tuple[int, float, Node]] = []
        for node, d in await self._nodes():
            spaces = d.get("spaces") or {}
            if node.id in exclude or node.id == self.node.id or int(spaces.get(space_id, 0)) >= limit:
                continue
            fits.append((int(d.get("listeners", 0)), random.random(), node))
        return min(fits)[2] if fits else None

    async def alive(self, ids: set[str]) -> set[str]:
        order = sorted(ids)
        if not order:
            return set()
        raws = await self._call(self._redis.mget([f"{self.prefix}:node:{i}" for i in order]))
        return {i for i, raw in zip(order, raws, strict=True) if raw is not None}

    async def publish_load(self) -> None:
        if not self.media or self._redis is None or self._publishing or self.outage.down:
            return  # a write already on its way reads the counts when it runs
        self._publishing = True
        await asyncio.sleep(0)  # let the changes of this moment (several offers) land in one write
        self._publishing = False
        with contextlib.suppress(Exception):  # the next renewal writes it anyway
            async with asyncio.timeout(self.timeout_s):
                await self._heartbeat()

    async def _heartbeat(self) -> None:
        spaces = {k: v for k, v in (self.load() if self.load is not None else {}).items() if v}
        value = json.dumps({"url": self.node.url, "load": len(self.owned), "listeners": sum(spaces.values()),
                            "spaces": spaces})
        await self._redis.set(f"{self.prefix}:node:{self.node.id}", value, px=self.ttl_ms)
        await self._redis.sadd(f"{self.prefix}:nodes", self.node.id)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            try:
                await self._renew()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # rooms go on serving their people; leases are taken back when Redis is
                self.outage.lost(e)
            else:
                self.outage.back()

    async def _renew(self) -> None:
        """Renew this process's heartbeat and leases; on a signaling-only process, see whether Redis
        answers (while it does not, owners are answered from memory)."""
        if not self.media:
            await self._redis.ping()
            return
        await self._heartbeat()
        for space_id in list(self.owned):
            if space_id not in self.owned:
                continue  # released meanwhile
            kept = await self._redis.eval(KEEP_LEASE, 1, self._key(space_id), self.node.encode(), self.ttl_ms)
            if kept == 2:
                log.warning("media lease for %s ran out while Redis was away; taken back", space_id)
            elif not kept and space_id in self.owned:  # another process holds it now: it serves the Space
                self.owned.discard(space_id)
                self._known.pop(space_id, None)
                log.warning("lost the media lease for %s to another process", space_id)
                if self.on_lost is not None:
                    await self.on_lost(space_id)
