"""A late joiner's snapshot (issue 17): someone who opens the room after others came, and after the
host's connection dropped, sees from the server's welcome who is away (the host's seat kept, until
when) and, as a moderator, who is already here (with names): not only what events it saw live.
A ``sync`` answers the same; the host's return clears it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import aiohttp

from core.model.accounts import Actor
from spacebridge.app import Instance
from tests.integration.webrtc.test_room_media import Client
from tests.integration.webrtc.test_signaling import Peer


async def _join(p: Instance, http: aiohttp.ClientSession, space_id: str, account_id: str | None,
                role: str = "listener") -> tuple[Peer, dict[str, Any]]:
    ws = await http.ws_connect(f"{p.url}/ws/{space_id}")
    await ws.send_json({"type": "hello", "token": p.tokens.issue(space_id, account_id, role, p.core.now())})
    peer = Peer(http, ws, Client(None))
    return peer, (await peer.recv("welcome"))["space"]


async def test_a_late_joiner_sees_who_is_here_and_that_the_host_is_away(platform: Instance) -> None:
    p = platform
    hana = await p.core.ensure_account("web", "hana", "Hana")
    lia = await p.core.ensure_account("web", "lia", "Lia")
    cleo = await p.core.ensure_account("web", "cleo", "Cleo")
    max_ = await p.core.ensure_account("web", "max", "Max")
    space = await p.core.create_space(Actor(account_id=hana.id, is_community_admin=True), "Late joiners")
    async with aiohttp.ClientSession() as http:
        host, first = await _join(p, http, space.id, hana.id, "speaker")
        assert first["away"] == {} and first["present"] == [hana.id]  # the host is a moderator
        listener, seen = await _join(p, http, space.id, lia.id)
        assert seen["away"] == {} and "present" not in seen  # who is here is for moderators
        cohost, _ = await _join(p, http, space.id, cleo.id)
        assert (await host.command("promote", person=cleo.id, role="cohost"))["type"] == "ok"
        await cohost.recv("event", event__type="role.changed", event__account_id=cleo.id)

        await cohost.ws.close()  # a co-host's tab closes: a disconnect, her seat is kept
        await listener.recv("event", event__type="participant.away", event__account_id=cleo.id)
        await host.ws.close()  # then the host's: the Space waits for them
        away = await listener.recv("event", event__type="participant.away", event__account_id=hana.id)

        # a listener and a guest who come now saw none of that: the welcome says it
        late, snap = await _join(p, http, space.id, max_.id)
        assert set(snap["away"]) == {hana.id, cleo.id}
        assert snap["away"][hana.id] == away["event"]["until"]
        assert datetime.fromisoformat(snap["away"][hana.id]) > p.core.now()
        assert "present" not in snap and snap["state"] == "live"
        guest, gsnap = await _join(p, http, space.id, None, "guest")
        assert set(gsnap["away"]) == {hana.id, cleo.id}

        # the co-host comes back late: she is no longer away, and sees everyone already here, by name
        cohost, csnap = await _join(p, http, space.id, cleo.id)
        assert set(csnap["away"]) == {hana.id}
        assert csnap["present"] == sorted([lia.id, cleo.id, max_.id])
        assert csnap["names"][lia.id] == "Lia" and csnap["names"][max_.id] == "Max"

        # the host returns: the late listener hears it, and a sync shows nobody away
        host, _ = await _join(p, http, space.id, hana.id, "speaker")
        await late.recv("event", event__type="participant.back", event__account_id=hana.id)
        await late.ws.send_json({"type": "sync", "id": "s1"})
        synced = (await late.recv("space", id="s1"))["space"]
        assert synced["away"] == {} and "present" not in synced
        await cohost.ws.send_json({"type": "sync", "id": "s2"})
        assert (await cohost.recv("space", id="s2"))["space"]["present"] == sorted(
            [hana.id, lia.id, cleo.id, max_.id])
        for peer in (host, listener, late, guest, cohost):
            await peer.ws.close()
