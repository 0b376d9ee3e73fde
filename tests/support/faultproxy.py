"""A TCP proxy of the tests' own, between a process and PostgreSQL or Redis, that can cut, stall and reset.

It runs in its own thread with its own event loop, so it keeps working while the code under test
blocks its loop, and it can sit in front of a ``serve`` subprocess as well as an in-process Platform.
Point the code under test at ``proxy.url(real_url)``; then:

- ``cut()``: close every open connection at once and refuse new ones (the peer sees a reset or EOF),
  like a service going away; ``restore()`` lets connections through again.
- ``stall()``: keep connections open but pass no bytes either way (a network partition: nothing
  fails, everything waits); ``restore()`` lets the held bytes through.
- ``reset()``: drop the connections that are open now but keep accepting new ones (a blip).

``wait_connections(n)`` waits until at least n connections are open through the proxy, so a test
can tell the client has (re)connected without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.port = 0
        self.accepted = 0  # connections accepted in all (reconnects show here)
        self._state = "open"  # open | cut | stalled
        self._flowing = threading.Event()
        self._flowing.set()
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._loop = asyncio.new_event_loop()
        self._flow: asyncio.Event | None = None
        self._server: asyncio.AbstractServer | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"faultproxy:{target_port}", daemon=True)

    @classmethod
    def for_url(cls, url: str) -> FaultProxy:
        """A started proxy in front of the server a database or Redis URL names."""
        u = urlsplit(url)
        default = 6379 if u.scheme.startswith("redis") else 5432
        proxy = cls(u.hostname or "127.0.0.1", u.port or default)
        proxy.start()
        return proxy

    def url(self, real_url: str) -> str:
        """``real_url`` with its host and port replaced by the proxy's."""
        u = urlsplit(real_url)
        auth = u.netloc.rsplit("@", 1)[0] + "@" if "@" in u.netloc else ""
        return urlunsplit((u.scheme, f"{auth}{self.listen_host}:{self.port}", u.path, u.query, u.fragment))

    # ---- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start")

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        if not self._thread.is_alive():
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- faults ------------------------------------------------------------------------------------
    def cut(self) -> None:
        """The service goes away: open connections are reset and new ones refused until ``restore``."""
        self._call(self._set, "cut")

    def stall(self) -> None:
        """A partition: connections stay open (and new ones are accepted) but no byte moves."""
        self._call(self._set, "stalled")

    def reset(self) -> None:
        """A blip: the open connections are reset; new ones go through."""
        self._call(self._drop_all)

    def restore(self) -> None:
        self._call(self._set, "open")

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def wait_connections(self, n: int = 1, timeout: float = 30.0) -> None:
        """Until at least ``n`` connections are open through the proxy (polling, not a fixed sleep)."""
        deadline = time.monotonic() + timeout
        while len(self._conns) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self._conns)} connections through the proxy, wanted {n}")
            time.sleep(0.02)

    @contextlib.contextmanager
    def cut_for_a_while(self) -> Iterator[None]:
        """``with proxy.cut_for_a_while(): ...`` cuts for the duration of the block."""
        self.cut()
        try:
            yield
        finally:
            self.restore()

    # ---- the proxy's own loop ----------------------------------------------------------------------
    def _call(self, fn: object, *args: object) -> None:
        async def run() -> None:
            result = fn(*args)  # type: ignore[operator]
            if asyncio.iscoroutine(result):
                await result

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self) -> None:
        self._flow = asyncio.Event()
        self._flow.set()
        self._server = await asyncio.start_server(self._accept, self.listen_host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _set(self, state: str) -> None:
        assert self._flow is not None
        self._state = state
        if state == "stalled":
            self._flow.clear()
        else:
            self._flow.set()
        if state == "cut":
            await self._drop_all()

    async def _drop_all(self) -> None:
        for client, upstream in list(self._conns):
            for w in (client, upstream):
                with contextlib.suppress(OSError):
                    sock = w.get_extra_info("socket")
                    if sock is not None:  # RST, not FIN: what a vanished server looks like
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                w.transport.abort()
        self._conns.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._state == "cut":
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        pair = (writer, up_writer)
        self._conns.add(pair)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._conns.discard(pair)
            for w in pair:
                w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flow is not None
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                await self._flow.wait()  # stalled: hold the bytes until restored
                if writer.transport.is_closing():
                    break
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            if not writer.transport.is_closing():
                writer.write_eof()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._drop_all()
