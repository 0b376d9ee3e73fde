"""Who a Space for subscribers refuses on the web, and the words they read (issue 19's list): someone
signed in who never subscribed, a lapsed subscriber (the subscription ended; a failed renewal past
its grace) and a guest, at each of the web's doors: the join token the room asks for first, the
room's socket (a link made before the subscription lapsed, or before the Space became for
subscribers), and the Space's page."""

from __future__ import annotations

import time
from datetime import timedelta

import aiohttp

from core.model.accounts import Account, Actor
from core.model.subscription import GRACE
from tests.integration.billing.test_subscriptions import Env, env, members_space, sub_obj
from tests.integration.web.test_studio import call

__all__ = ["env"]

REQUIRED = "This Space is for the host's subscribers: subscribe to join."
SIGN_IN = "This Space is for the host's subscribers: sign in and subscribe to join."


async def hello(env: Env, space_id: str, token: str) -> dict[str, object]:
    """The room's socket says hello with ``token``: the error frame it gets, then the close (4001)."""
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{env.p.url}/ws/{space_id}") as ws:
        await ws.send_json({"type": "hello", "token": token})
        frame: dict[str, object] = await ws.receive_json(timeout=10)
        closed = await ws.receive(timeout=10)
        assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 4001, closed
        return frame


async def test_never_subscribed_lapsed_and_guests_are_told_why_at_every_web_door(env: Env) -> None:
    p = env.p
    tier = await env.sales.create_tier(Actor(account_id=env.creator.id), "Supporter", 500, "eur")
    space_id = await members_space(env, tier)
    now = int(time.time())
    never, ended, lapsed = [await p.core.ensure_account("web", n, n.title()) for n in ("never", "ended", "lapsed")]
    links: dict[str, str] = {}

    # ended: subscribed (and given a room link), then Stripe ended the subscription
    await env.event("customer.subscription.created", sub_obj("sub_end", tier, ended.id, "active", now + 86400),
                    created=now - 9)
    status, minted = await env.token(space_id, ended)
    assert status == 200, minted
    links["ended"] = str(minted["token"])
    await env.event("customer.subscription.deleted", sub_obj("sub_end", tier, ended.id, "canceled", now + 86400),
                    created=now - 8)
    # lapsed: a renewal failed and the grace after the paid period has run out
    long_ago = now - int(GRACE.total_seconds()) - 86400
    await env.event("customer.subscription.updated", sub_obj("sub_lapse", tier, lapsed.id, "past_due", long_ago),
                    created=now - 7)
    # links made earlier, while the Space was open or the subscription still opened it
    issued = p.core.now() - timedelta(minutes=1)
    links["never"] = p.tokens.issue(space_id, never.id, "listener", issued, ttl_s=900)
    links["lapsed"] = p.tokens.issue(space_id, lapsed.id, "listener", issued, ttl_s=900)
    links["guest"] = p.tokens.issue(space_id, None, "guest", issued, ttl_s=900)

    people: dict[str, Account | None] = {"never": never, "ended": ended, "lapsed": lapsed, "guest": None}
    for name, who in people.items():
        code, words = ("subscription.sign_in", SIGN_IN) if who is None else ("subscription.required", REQUIRED)
        status, body = await env.token(space_id, who)  # the room's first request
        assert status == 403 and body["error"]["code"] == code, (name, body)
        assert body["error"]["message"] == words, (name, body)
        frame = await hello(env, space_id, links[name])  # the room's socket
        assert frame["type"] == "error" and frame["code"] == code and frame["message"] == words, (name, frame)
        status, html, _ = await call(p, "GET", f"/s/{space_id}", who)  # the Space's page: why, and no room
        assert status == 403 and f'role="alert">{words}<' in html and 'id="stage"' not in html, name
    assert (await p.core.view(space_id)).listener_count == 1, "only the host is in"
