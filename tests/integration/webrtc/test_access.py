"""Access is checked whenever media is given, not only at hello: every offer, every HLS grant and
every HLS request. A refund, a block or a removal cuts the person's media and socket at once, their
HLS link stops working, and ticket news reaches only the ticket's owner and the Space's moderators."""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import timedelta
from typing import Any

import aiohttp

from core.model.accounts import Actor
from core.model.space import Ticketing
from core.storage.tables import TicketRow
from spacebridge.app import Instance
from tests.integration.webrtc.test_signaling import Peer, connect

TICKET_EVENTS = "ticket.changed"


async def ticketed_live(p: Instance, *names: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """A live ticketed Space hosted by hana; every other name holds a paid ticket. Returns the
    Space, account ids and ticket ids by name."""
    core = p.core
    ids = {n: (await core.ensure_account("web", n, n.title())).id for n in ("hana", *names)}
    host = Actor(account_id=ids["hana"], is_operator=True)
    space = await core.create_space(host, "Paid room", start_at=core.now() + timedelta(hours=1))
    await core.set_ticketing(host, space.id, Ticketing(price_minor=900, currency="eur", capacity=10))
    tickets = {}
    for n in names:
        t = await p.ledger.hold(Actor(account_id=ids[n]), space.id, "stripe")
        await p.ledger.settle(t.id, paid=True)
        tickets[n] = t.id
    await core.start_space(host, space.id)
    return space.id, ids, tickets


async def join(p: Instance, http: aiohttp.ClientSession, space_id: str, account_id: str | None,
               role: str, hz: float | None = None) -> Peer:
    peer = await connect(p, http, space_id, p.tokens.issue(space_id, account_id, role, p.core.now()), hz)
    await peer.recv("welcome")
    return peer


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


async def status(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url) as r:
        return r.status


async def until_status(http: aiohttp.ClientSession, url: str, want: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while (got := await status(http, url)) != want:
        assert time.monotonic() < deadline, f"{url} answers {got}, not {want}"
        await asyncio.sleep(0.2)


async def closed_with(peer: Peer, code: int) -> None:
    """Read the socket to its end; it must close with ``code``."""
    deadline = time.monotonic() + 5
    while True:
        msg = await peer.ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        if msg.type == aiohttp.WSMsgType.TEXT:
            peer.inbox.append(msg.json())
            continue
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING), msg
        assert peer.ws.close_code == code, (peer.ws.close_code, peer.inbox[-3:])
        return


async def settled(peer: Peer) -> list[dict[str, Any]]:
    """Everything the socket was sent up to now (a ping's pong marks the end)."""
    await peer.ws.send_json({"type": "ping", "id": "sync"})
    await peer.recv("pong", id="sync")
    return list(peer.inbox)


async def wait_gone(p: Instance, space_id: str, pid: str) -> None:
    deadline = time.monotonic() + 5
    while pid in p.rooms.rooms[space_id].participants:
        assert time.monotonic() < deadline, f"{pid} is still in the room"
        await asyncio.sleep(0.05)


async def test_refund_cuts_media_socket_and_hls_link_and_ticket_news_stays_private(platform: Instance) -> None:
    p = platform
    s, ids, tickets = await ticketed_live(p, "finn", "ada")
    ids["cleo"] = (await p.core.ensure_account("web", "cleo", "Cleo")).id
    async with aiohttp.ClientSession() as http:
        host = await join(p, http, s, ids["hana"], "speaker", 440)
        assert (await host.media())["publish"] is True
        finn = await join(p, http, s, ids["finn"], "listener")
        assert (await finn.media())["publish"] is False
        ada = await join(p, http, s, ids["ada"], "listener")
        await ada.ws.send_json({"type": "hls"})
        ada_url = p.url + (await ada.recv("hls", reason="asked"))["url"]
        await finn.ws.send_json({"type": "hls", "renew": True})  # a token only; his media stays WebRTC
        grant = await finn.recv("hls", reason="renewed")
        finn_url = p.url + grant["url"]
        assert ids["finn"] in p.rooms.rooms[s].participants
        assert grant["expires_in_s"] == 60 and ada_url != finn_url and "?t=" in finn_url
        await until_status(http, finn_url, 200)
        async with http.get(finn_url) as r:
            listed = [x for x in (await r.text()).splitlines() if x and not x.startswith("#")]
        token = finn_url.split("?t=")[1]
        assert listed and all(x.endswith(f"?t={token}") for x in listed)
        segment = finn_url.replace(f"index.m3u8?t={token}", listed[-1])
        assert await status(http, segment) == 200

        # the link is bound: another person's name in it, another Space, an old one, none at all
        forged = finn_url.replace(f"?t={b64(ids['finn'])}.", f"?t={b64(ids['ada'])}.")
        assert forged != finn_url and await status(http, forged) == 403
        other = finn_url.replace(p.rooms.hls_key(s), p.rooms.hls_key("othr0space"))
        assert await status(http, other) == 403
        old = p.rooms.hls_access.issue(s, ids["finn"], now=time.time() - 61)
        assert await status(http, finn_url.split("?")[0] + f"?t={old}") == 403
        assert await status(http, finn_url.split("?")[0]) == 403
        assert await status(http, segment.split("?")[0]) == 403

        # someone buys: the host hears of it, listeners do not (it names the buyer)
        held = await p.ledger.hold(Actor(account_id=ids["cleo"]), s, "stripe")
        await p.ledger.settle(held.id, paid=True)
        news = await host.recv("event", event__type=TICKET_EVENTS, event__status="paid")
        assert news["event"]["account_id"] == ids["cleo"], news
        for peer in (finn, ada):
            assert not [m for m in await settled(peer) if m.get("type") == "event"
                        and m["event"]["type"] == TICKET_EVENTS], peer.inbox

        # finn's ticket is refunded: his own news, then the notice, then the socket closes 4001;
        # his media leaves the room and his HLS link stops at once; ada's goes on
        await p.ledger.mark_refunded(tickets["finn"])
        mine = await finn.recv("event", event__type=TICKET_EVENTS)
        assert mine["event"]["status"] == "refunded" and mine["event"]["account_id"] == ids["finn"]
        notice = await finn.recv("error", code="access.revoked")
        assert notice["data"] == {"reason": "ticket.refunded"} and "refunded" in notice["message"]
        await closed_with(finn, 4001)
        await wait_gone(p, s, ids["finn"])
        await until_status(http, finn_url, 403, timeout=5)
        assert await status(http, segment) == 403
        assert await status(http, ada_url) == 200
        assert not [m for m in await settled(ada) if m.get("type") == "event"
                    and m["event"]["type"] == TICKET_EVENTS]
        # and the door stays shut: his join link is refused at hello
        again = await connect(p, http, s, p.tokens.issue(s, ids["finn"], "listener", p.core.now()), None)
        assert (await again.recv("error"))["code"] == "ticket.required"
        await closed_with(again, 4001)

        # a removal and a block cut off the same way, each with its reason
        cleo = await join(p, http, s, ids["cleo"], "listener")
        await cleo.media()
        assert (await host.command("remove", account_id=ids["cleo"]))["type"] == "ok"
        assert (await cleo.recv("error", code="access.revoked"))["data"] == {"reason": "removed"}
        await closed_with(cleo, 4001)
        await wait_gone(p, s, ids["cleo"])
        assert (await host.command("remove", account_id=ids["ada"], block=True))["type"] == "ok"
        assert (await ada.recv("error", code="access.revoked"))["data"] == {"reason": "blocked"}
        await closed_with(ada, 4001)
        await until_status(http, ada_url, 403, timeout=5)
        for peer in (host, finn, ada, cleo, again):
            await peer.client.pc.close()
            await peer.ws.close()


async def test_offer_and_hls_recheck_access_when_the_refund_event_was_lost(platform: Instance) -> None:
    """The bus is at most once: a refund whose event never reached this process is still caught at
    the next offer and the next HLS grant, and the socket stays open for the words."""
    p = platform
    s, ids, tickets = await ticketed_live(p, "finn")
    async with aiohttp.ClientSession() as http:
        finn = await join(p, http, s, ids["finn"], "listener")
        assert (await finn.media())["publish"] is False
        async with p.core.uow() as uow:  # refunded by another process; its event lost
            row = await uow.session.get(TicketRow, tickets["finn"])
            assert row is not None
            row.status = "refunded"
            await uow.commit()
        pc = finn.client.pc
        await pc.setLocalDescription(await pc.createOffer())
        await finn.ws.send_json({"type": "offer", "id": "again", "sdp": pc.localDescription.sdp})
        assert (await finn.recv("error", id="again"))["code"] == "ticket.required"
        for frame in ({"type": "hls", "id": "h1"}, {"type": "hls", "id": "h2", "renew": True}):
            await finn.ws.send_json(frame)
            assert (await finn.recv("error", id=frame["id"]))["code"] == "ticket.required"
        assert not [m for m in await settled(finn) if m.get("type") in ("answer", "hls")]
        await pc.close()
        await finn.ws.close()


async def test_guests_skip_no_rule(platform: Instance) -> None:
    """A guest link is refused at hello on a ticketed Space; on a free public one a guest's HLS link
    is theirs and that Space's only."""
    p = platform
    s, ids, _ = await ticketed_live(p)
    async with aiohttp.ClientSession() as http:
        guest = await connect(p, http, s, p.tokens.issue(s, None, "guest", p.core.now()), None)
        refused = await guest.recv("error")
        assert refused["code"] == "ticket.required" and refused["data"]["price_minor"] == 900
        await closed_with(guest, 4001)

        free = await p.core.create_space(Actor(account_id=ids["hana"], is_community_admin=True), "Free room")
        host = await join(p, http, free.id, ids["hana"], "speaker", 440)
        await host.media()
        visitor = await join(p, http, free.id, None, "guest")
        await visitor.ws.send_json({"type": "hls"})
        url = p.url + (await visitor.recv("hls", reason="asked"))["url"]
        await until_status(http, url, 200)
        assert await status(http, url.replace(p.rooms.hls_key(free.id), p.rooms.hls_key(s))) == 403
        for peer in (guest, host, visitor):
            await peer.client.pc.close()
            await peer.ws.close()
