"""Every signaling socket of a web app, so a shutdown tells each one 1012 before anything else.

aiohttp does not close WebSockets on shutdown: it waits for their handlers (up to its shutdown
timeout) and then cuts them, which clients see as 1006 after a long pause. A restart must instead
look like a restart: close code 1012 (service restart) at once, and a page that reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSCloseCode, web

log = logging.getLogger(__name__)


class Sockets:
    """The open signaling sockets of one web app, and whether it is shutting down."""

    def __init__(self) -> None:
        self.open: set[web.WebSocketResponse] = set()
        self.draining = False


SOCKETS: web.AppKey[Sockets] = web.AppKey("signaling_sockets", Sockets)


async def close_sockets(app: web.Application, timeout_s: float) -> int:
    """Mark the app draining and close every socket with 1012, all at once, within ``timeout_s``."""
    sockets = app.get(SOCKETS)
    if sockets is None:
        return 0
    sockets.draining = True
    targets = [ws for ws in sockets.open if not ws.closed]

    async def one(ws: web.WebSocketResponse) -> None:
        with contextlib.suppress(Exception):
            await ws.close(code=WSCloseCode.SERVICE_RESTART, message=b"server restarting")

    if targets:
        _, pending = await asyncio.wait([asyncio.ensure_future(one(ws)) for ws in targets], timeout=timeout_s)
        for t in pending:
            t.cancel()
        log.info("told %d web socket(s) the server is restarting (1012)", len(targets))
    return len(targets)
