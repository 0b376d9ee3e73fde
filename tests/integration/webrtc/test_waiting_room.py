"""A socket on a Space that is not live: a scheduled Space is a waiting room (table commands for its
state work, media is refused with ``space.not_live``, and the page is moved in when the host starts);
an ended one answers commands with the table's ``space.closed`` and media with ``space.ended``. The
access rules at hello are those of a live Space: blocks, tickets, guests only where they may listen."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import aiohttp

from adapters.webrtc.room import restrict_candidates
from core.model.accounts import Actor
from core.model.space import Ticketing
from spacebridge.app import Instance
from tests.integration.webrtc.test_access import closed_with, settled
from tests.integration.webrtc.test_signaling import Peer, connect
from tests.support.loopback import LOOPBACK


async def people(p: Instance, *names: str) -> dict[str, str]:
    return {n: (await p.core.ensure_account("web", n, n.title())).id for n in names}


async def scheduled(p: Instance, host_id: str, title: str = "Later tonight") -> str:
    host = Actor(account_id=host_id, is_community_admin=True)
    return (await p.core.create_space(host, title, start_at=p.core.now() + timedelta(hours=2))).id


async def hello(p: Instance, http: aiohttp.ClientSession, space_id: str, account_id: str | None,
                role: str = "listener", hz: float | None = None) -> tuple[Peer, dict[str, Any]]:
    peer = await connect(p, http, space_id, p.tokens.issue(space_id, account_id, role, p.core.now()), hz)
    first = await peer.recv("welcome") if account_id is not None or role == "guest" else {}
    return peer, first


async def offer(peer: Peer, cid: str) -> dict[str, Any]:
    """Send an offer; the reply to it (an answer or an error) with that id."""
    pc = peer.client.pc
    await pc.setLocalDescription(await pc.createOffer())
    await peer.ws.send_json({"type": "offer", "id": cid,
                             "sdp": restrict_candidates(pc.localDescription.sdp, {LOOPBACK})})
    for m in await settled(peer):
        if m.get("id") == cid:
            return m
    raise AssertionError(f"no reply to offer {cid}")


async def test_a_scheduled_space_is_a_waiting_room_until_the_host_starts_it(platform: Instance) -> None:
    p = platform
    ids = await people(p, "hana", "finn")
    space_id = await scheduled(p, ids["hana"])
    async with aiohttp.ClientSession() as http:
        finn, welcome = await hello(p, http, space_id, ids["finn"])
        assert welcome["space"]["state"] == "scheduled" and welcome["you"]["role"] == "listener"
        assert {"remind", "start", "hand"} <= {c["name"] for c in welcome["commands"]}

        refused = await offer(finn, "m1")  # no media before the start: a clear code, the socket stays
        assert (refused["type"], refused["code"]) == ("error", "space.not_live")
        await finn.ws.send_json({"type": "hls", "id": "h1"})
        assert (await finn.recv("error", id="h1"))["code"] == "space.not_live"
        assert (await finn.command("remind"))["type"] == "ok"
        assert (await finn.command("hand"))["code"] == "space.not_live"
        assert (await finn.command("start"))["code"] == "role.host_required"
        present = welcome["space"]["listener_count"]
        assert (await p.core.view(space_id)).listener_count == present  # waiting is not being in the Space

        hana, host_welcome = await hello(p, http, space_id, ids["hana"], "speaker", 440)
        assert host_welcome["you"]["role"] == "host"
        assert (await hana.command("start"))["type"] == "ok"
        started = await finn.recv("event", event__type="space.started")
        assert started["event"]["space_id"] == space_id

        answer = await offer(finn, "m2")  # moved into the room: the offer now joins and is answered
        assert answer["type"] == "answer" and answer["publish"] is False
        assert (await p.core.view(space_id)).listener_count == present + 1
        assert (await finn.command("hand"))["result"] == 1
        for peer in (finn, hana):
            await peer.client.pc.close()
            await peer.ws.close()


async def test_a_waiting_socket_is_told_when_the_space_started_before_it_was_listed(platform: Instance) -> None:
    """Nothing is lost between the welcome and the socket getting events: a later ``sync`` shows live."""
    p = platform
    ids = await people(p, "hana", "finn")
    space_id = await scheduled(p, ids["hana"])
    async with aiohttp.ClientSession() as http:
        finn, welcome = await hello(p, http, space_id, ids["finn"])
        assert welcome["space"]["state"] == "scheduled"
        await p.core.start_space(Actor(account_id=ids["hana"]), space_id)
        await finn.recv("event", event__type="space.started")
        await finn.ws.send_json({"type": "sync", "id": "s1"})
        assert (await finn.recv("space", id="s1"))["space"]["state"] == "live"
        await finn.client.pc.close()
        await finn.ws.close()


async def test_a_cancelled_space_tells_its_waiting_room_and_keeps_the_socket(platform: Instance) -> None:
    p = platform
    ids = await people(p, "hana", "finn")
    space_id = await scheduled(p, ids["hana"])
    async with aiohttp.ClientSession() as http:
        finn, _ = await hello(p, http, space_id, ids["finn"])
        hana, _ = await hello(p, http, space_id, ids["hana"])
        assert (await hana.command("reschedule", when="+3h"))["result"]["scheduled_for"]
        assert (await finn.command("cancel"))["code"] == "role.host_required"
        assert (await hana.command("cancel"))["type"] == "ok"
        await finn.recv("event", event__type="space.cancelled")
        assert (await finn.command("remind"))["code"] == "space.closed"
        await finn.ws.send_json({"type": "sync", "id": "s1"})
        assert (await finn.recv("space", id="s1"))["space"]["state"] == "cancelled"
        for peer in (finn, hana):
            await peer.client.pc.close()
            await peer.ws.close()


async def test_an_ended_space_answers_with_the_tables_refusal(platform: Instance) -> None:
    p = platform
    ids = await people(p, "hana", "finn")
    host = Actor(account_id=ids["hana"], is_community_admin=True)
    space = await p.core.create_space(host, "Over now")
    await p.core.join(Actor(account_id=ids["finn"]), space.id)
    await p.core.end_space(host, space.id)
    async with aiohttp.ClientSession() as http:
        hana, welcome = await hello(p, http, space.id, ids["hana"])
        assert welcome["space"]["state"] == "ended" and welcome["you"]["role"] == "host"
        assert (await hana.command("pin", title="Slides"))["code"] == "space.closed"
        assert (await hana.command("end"))["code"] == "space.closed"
        assert (await hana.command("follow", host=ids["hana"]))["type"] in ("ok", "error")  # any state: the table's
        refused = await offer(hana, "m1")
        assert (refused["type"], refused["code"]) == ("error", "space.ended")
        await hana.ws.send_json({"type": "leave"})  # never joined: only closes
        await closed_with(hana, 1000)
        assert (await p.core.view(space.id)).space.state.value == "ended"
        await hana.client.pc.close()


async def test_access_rules_at_hello_are_those_of_a_live_space(platform: Instance) -> None:
    p = platform
    ids = await people(p, "hana", "finn", "otto", "paid")
    host = Actor(account_id=ids["hana"], is_community_admin=True)
    space_id = await scheduled(p, ids["hana"])
    live = await p.core.create_space(host, "Now")
    await p.core.join(Actor(account_id=ids["otto"]), live.id)
    await p.core.remove(host, live.id, ids["otto"], block=True)
    unlisted = (await p.core.create_space(host, "Friends only", start_at=p.core.now() + timedelta(hours=2),
                                          visibility="unlisted")).id
    paid = await scheduled(p, ids["hana"], "Paid later")
    operator = Actor(account_id=ids["hana"], is_operator=True)  # ticketing is off in the default community
    await p.core.set_ticketing(operator, paid, Ticketing(price_minor=900, currency="eur", capacity=10))
    t = await p.ledger.hold(Actor(account_id=ids["paid"]), paid, "stripe")
    await p.ledger.settle(t.id, paid=True)
    async with aiohttp.ClientSession() as http:
        for where, who, role, code in ((space_id, ids["otto"], "listener", "space.blocked"),
                                       (paid, ids["finn"], "listener", "ticket.required"),
                                       (paid, None, "guest", "ticket.required"),
                                       (unlisted, None, "guest", "space.guests_not_allowed")):
            peer = await connect(p, http, where, p.tokens.issue(where, who, role, p.core.now()), None)
            assert (await peer.recv("error"))["code"] == code, (where, who)
            await closed_with(peer, 4001)
            await peer.client.pc.close()

        holder, welcome = await hello(p, http, paid, ids["paid"])
        assert welcome["space"]["state"] == "scheduled"
        guest, guest_welcome = await hello(p, http, space_id, None, "guest")
        assert guest_welcome["you"] == {"account_id": None, "role": "guest"} and guest_welcome["commands"] == []
        refused = await offer(guest, "g1")
        assert (refused["type"], refused["code"]) == ("error", "space.not_live")
        assert (await guest.command("remind"))["code"] == "guest.link_account"
        for peer in (holder, guest):
            await peer.client.pc.close()
            await peer.ws.close()


async def test_a_free_space_has_no_ticket_to_sell_even_without_stripe(platform: Instance) -> None:
    p = platform
    ids = await people(p, "hana", "finn")
    space_id = await scheduled(p, ids["hana"])
    async with aiohttp.ClientSession() as http:
        finn, _ = await hello(p, http, space_id, ids["finn"])
        assert (await finn.command("ticket"))["code"] == "ticket.not_ticketed"
        await finn.client.pc.close()
        await finn.ws.close()
