"""A page that may have missed events reads the whole Space again over its socket.

``sync`` is the page's own way (after an event it cannot apply, or a renegotiation); ``bus.gap`` is
the server's: another process's events were lost while Redis was away, so every socket here is sent
the Space afresh without asking.
"""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp

from core.bus import BusGap
from core.model.accounts import Actor
from spacebridge.app import Instance
from tests.integration.webrtc.test_signaling import connect


async def test_sync_answers_the_whole_space_even_unlisted(platform: Instance) -> None:
    core = platform.core
    host_acc = await core.ensure_account("web", "host", "Host")
    fan_acc = await core.ensure_account("web", "fan", "Fan")
    host = Actor(account_id=host_acc.id, is_community_admin=True)
    space = await core.create_space(host, "Quiet room", visibility="unlisted")
    async with aiohttp.ClientSession() as http:
        fan = await connect(platform, http, space.id, platform.tokens.issue(space.id, fan_acc.id, "listener",
                                                                            core.now()), None)
        await fan.recv("welcome")
        await core.edit_space(host, space.id, title="Renamed room")
        await fan.ws.send_json({"type": "sync", "id": "s1"})
        frame = await fan.recv("space", id="s1")
        assert frame["space"]["title"] == "Renamed room" and frame["space"]["id"] == space.id
        # an unlisted Space is not readable over HTTP without a token, but its sockets read it
        async with http.get(f"{platform.url}/api/spaces/{space.id}") as r:
            assert r.status == 404
        await fan.ws.close()


async def test_a_bus_gap_sends_every_socket_the_space_afresh(platform: Instance) -> None:
    core = platform.core
    host_acc = await core.ensure_account("web", "host", "Host")
    fan_acc = await core.ensure_account("web", "fan", "Fan")
    host = Actor(account_id=host_acc.id, is_community_admin=True)
    space = await core.create_space(host, "Town hall")
    async with aiohttp.ClientSession() as http:
        fan = await connect(platform, http, space.id, platform.tokens.issue(space.id, fan_acc.id, "listener",
                                                                            core.now()), None)
        await fan.recv("welcome")
        await core.raise_hand(Actor(account_id=fan_acc.id), space.id)
        await fan.recv("event", event__type="hand.raised")
        # what another process would have said, lost: the gap is all this process learns of it
        await core.bus.publish([BusGap(origin="other-process", lost=3, at=datetime.now(UTC))])
        frame = await fan.recv("space")
        assert frame["space"]["queue"] == [fan_acc.id]
        await fan.ws.send_json({"type": "ping", "id": 1})
        assert (await fan.recv("pong"))["id"] == 1  # the socket goes on as before
        await fan.ws.close()


async def test_a_pending_invitation_survives_a_reload(platform: Instance) -> None:
    core = platform.core
    host_acc = await core.ensure_account("web", "host", "Host")
    fan_acc = await core.ensure_account("web", "fan", "Fan")
    host = Actor(account_id=host_acc.id, is_community_admin=True)
    space = await core.create_space(host, "Town hall")
    async with aiohttp.ClientSession() as http:
        token = platform.tokens.issue(space.id, fan_acc.id, "listener", core.now())
        fan = await connect(platform, http, space.id, token, None)
        await fan.recv("welcome")
        await core.invite(host, space.id, fan_acc.id)
        await fan.recv("event", event__type="speaker.invited")
        await fan.ws.close()  # a reload: the page forgets everything but what welcome says
        again = await connect(platform, http, space.id, token, None)
        welcome = await again.recv("welcome")
        assert welcome["space"]["invited"] == [fan_acc.id]
        assert (await again.command("accept_invite"))["type"] == "ok"
        await again.ws.close()
