"""Joins: a listener's first packet leaves the moment its SRTP is ready, not at the room's next tick."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from aiortc import RTCSessionDescription

from adapters.webrtc.room import Room, restrict_candidates
from core.model.accounts import Actor
from spacebridge.app import Instance
from tests.integration.webrtc.test_room_media import Client, has, room, until, until_heard
from tests.integration.webrtc.test_signaling import Peer, connect
from tests.support.loopback import LOOPBACK

__all__ = ["room"]  # the fixture, shared with the room's media tests


async def test_a_listener_gets_the_rooms_latest_packet_the_moment_it_connects(room: Room) -> None:
    speaker, listener = Client(440), Client(None)
    await speaker.join(room, "A", publish=True)
    await until(lambda: room.last_packet is not None, "the room encodes its first packet")
    await listener.pc.setLocalDescription(await listener.pc.createOffer())
    answer = await room.add_participant("L", restrict_candidates(listener.pc.localDescription.sdp, {LOOPBACK}))
    part = room.participants["L"]
    at_connect: dict[str, Any] = {}

    @part.pc.on("connectionstatechange")  # runs right after the room's own handler, in the same event
    def seen() -> None:
        if part.pc.connectionState == "connected" and part.outlet is not None:
            at_connect.update(sent=part.outlet.sent, packet=room.last_packet)

    await listener.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await until(lambda: bool(at_connect), "the listener's connection is up")
    assert at_connect["sent"] == 1, at_connect  # the room's latest packet is on the wire already
    await until_heard(listener, lambda heard: has(heard, 440))  # and the ticks go on from there
    assert part.outlet is not None and part.outlet.dropped == 0
    for c in (speaker, listener):
        await c.pc.close()


async def test_an_offer_sent_right_behind_hello_is_answered_after_the_welcome(platform: Instance) -> None:
    """The page's personal-link join sends its listener offer without waiting for the welcome (one
    round trip less): the server reads frames in order, so the welcome comes first, then the answer
    to that offer, and the listener hears the room. An offer behind a refused hello gets no answer."""
    core = platform.core
    host_acc = await core.ensure_account("web", "host", "Host")
    fan_acc = await core.ensure_account("web", "fan", "Fan")
    space = await core.create_space(Actor(account_id=host_acc.id, is_community_admin=True), "Early offer")
    now = core.now()
    async with aiohttp.ClientSession() as http:
        token = platform.tokens.issue(space.id, host_acc.id, "speaker", now)
        host = await connect(platform, http, space.id, token, 440)
        await host.recv("welcome")
        await host.media()
        ws = await http.ws_connect(f"{platform.url}/ws/{space.id}")
        fan = Peer(http, ws, Client(None))
        pc = fan.client.pc
        await pc.setLocalDescription(await pc.createOffer())
        sdp = restrict_candidates(pc.localDescription.sdp, {LOOPBACK})
        await ws.send_json({"type": "hello", "token": platform.tokens.issue(space.id, fan_acc.id, "listener", now)})
        await ws.send_json({"type": "offer", "id": "m1", "sdp": sdp})
        first = json.loads((await ws.receive(timeout=10)).data)
        assert first["type"] == "welcome" and first["you"]["role"] == "listener", first
        answer = await fan.recv("answer", id="m1", timeout=10)
        assert answer["publish"] is False
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        await until_heard(fan.client, lambda heard: has(heard, 440))

        stranger = await http.ws_connect(f"{platform.url}/ws/{space.id}")
        await stranger.send_json({"type": "hello", "token": "forged.token"})
        await stranger.send_json({"type": "offer", "id": "m1", "sdp": sdp})
        refused = json.loads((await stranger.receive(timeout=10)).data)
        assert refused["type"] == "error" and refused["code"].startswith("token."), refused
        closing = await stranger.receive(timeout=10)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and closing.data == 4001
        for c in (host.client, fan.client):
            await c.pc.close()
        await host.ws.close()
        await ws.close()
