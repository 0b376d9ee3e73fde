"""Joins: a listener's first packet leaves the moment its SRTP is ready, not at the room's next tick."""

from __future__ import annotations

from typing import Any

from aiortc import RTCSessionDescription

from adapters.webrtc.room import Room, restrict_candidates
from tests.integration.webrtc.test_room_media import Client, has, room, until, until_heard
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
