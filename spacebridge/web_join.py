"""Lasting addresses: ``POST /api/spaces/{id}/join-token`` mints a join token from the session.

``/s/ID`` is a Space's one public URL. Its page asks here whenever it has no token (or its token
ran out), so reloads and long Spaces never lock a signed-in person out. Access is decided by the
core at every mint, exactly as for a bot's personal link (``adapters.chat.actions.room_token``:
state, tickets, blocks). Without a session, a public live Space without tickets gives a guest
token (listen only); anything else is a refusal that says to sign in. A *scheduled* Space gives the
same tokens under the same rule, judged as if it were live: its page waits on the socket (a waiting
room, docs/webrtc-protocol.md) and moves into the room when the host starts it.
"""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from adapters.chat.actions import JOIN_TOKEN_TTL_S, room_token
from core.errors import Forbidden
from core.model.space import SpaceState, Visibility
from core.usecases.context import access_error
from spacebridge.instance import INSTANCE
from spacebridge.web_auth import json_api
from spacebridge.web_session import current_account

__all__ = ["join_token", "setup"]


@json_api
async def join_token(request: web.Request) -> web.Response:
    p = request.app[INSTANCE]
    space_id = request.match_info["space_id"]
    account = await current_account(request)
    space = (await p.core.view(space_id)).space
    waiting = space.state == SpaceState.SCHEDULED
    if account is not None and waiting:  # the core's access rule (blocks, tickets) as if it were live
        await p.core.run(lambda uow: p.core.ctx.check_access(uow, replace(space, state=SpaceState.LIVE), account.id))
        role = "speaker" if space.role_of(account.id) is not None else "listener"
        token = p.tokens.issue(space_id, account.id, role, p.core.now(), ttl_s=JOIN_TOKEN_TTL_S)
    elif account is not None:
        token = await room_token(p.core, p.tokens, account.id, space_id)
        role = p.tokens.verify(token, p.core.now(), space_id).role
    else:
        if space.visibility != Visibility.PUBLIC:
            raise Forbidden("auth.sign_in_to_join", space_id=space_id)
        if space.ticketing is not None:  # a ticket is bought by someone signed in
            raise Forbidden("ticket.required", space_id=space_id, price_minor=space.ticketing.price_minor,
                            currency=space.ticketing.currency)
        as_live = replace(space, state=SpaceState.LIVE) if waiting else space
        refused = access_error(as_live, "", blocked=False, paid=False,  # the core's rule: live, not ended,
                               now=p.core.now())  # nor subscribers-only (a guest subscribes to nobody)
        if refused is not None:
            raise refused
        role = "guest"
        token = p.tokens.issue(space_id, None, "guest", p.core.now(), ttl_s=JOIN_TOKEN_TTL_S)
    return web.json_response({"token": token, "role": role, "expires_in_s": JOIN_TOKEN_TTL_S,
                              "account": None if account is None else {"id": account.id,
                                                                       "display_name": account.display_name}},
                             headers={"Cache-Control": "no-store"})


def setup(app: web.Application) -> None:
    app.router.add_post("/api/spaces/{space_id}/join-token", join_token)
