"""The HTTP server's edges: half-sent requests are timed out, vanished clients are not errors.

aiohttp closes a connection that has not completed a request's headers within its
``keepalive_timeout`` (measured from the connection's start or its last response, not reset by
trickled bytes), so that setting is the header deadline. It has no deadline for a request body a
client trickles forever; ``body_deadline`` gives each request one. A client that disconnects while
its request is handled makes the handler's next write fail with ``ConnectionResetError``; that is
the client's doing, logged at debug level instead of as a traceback.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class HttpLimits:
    # longer than a reverse proxy's idle upstream keep-alive (nginx: 60 s), so it never reuses a
    # connection we are closing; also how long a client may take to send a request's headers
    header_s: float = 75.0
    body_s: float = 30.0  # from the handler's start to the request body's last byte

    def server_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``web.AppRunner`` (passed on to each connection's handler)."""
        return {"keepalive_timeout": self.header_s}


class BodyTimeout(TimeoutError):
    """The request body did not arrive in time (a ``TimeoutError``: aiohttp then stops reading quietly)."""


def install(app: web.Application, limits: HttpLimits) -> None:
    """Add the edge middlewares to ``app`` (before it is frozen by the runner)."""
    app.middlewares.append(_client_gone)
    app.middlewares.append(_body_deadline(limits.body_s))


@web.middleware
async def _client_gone(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ConnectionResetError:
        transport = request.transport
        if transport is not None and not transport.is_closing():
            raise  # not our client: a real failure
        log.debug("%s %s: the client went away before the answer", request.method, request.path)
        return web.Response(status=499, reason="Client Closed Request")


def _body_deadline(seconds: float) -> Middleware:
    @web.middleware
    async def body_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.can_read_body:
            return await handler(request)
        content = request.content

        def expire() -> None:
            if not content.is_eof():
                content.set_exception(BodyTimeout())

        timer = asyncio.get_running_loop().call_later(seconds, expire)
        try:
            return await handler(request)
        except BodyTimeout:
            log.info("%s %s: request body not received within %.0f s", request.method, request.path, seconds)
            raise web.HTTPRequestTimeout(text="The request body did not arrive in time.",
                                         headers={"Connection": "close"}) from None
        finally:
            timer.cancel()

    return body_deadline
