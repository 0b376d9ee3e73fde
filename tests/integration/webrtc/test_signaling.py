"""The web room's signaling over a real WebSocket: tokens, commands, events and media together."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from aiortc import RTCSessionDescription

from adapters.webrtc.room import restrict_candidates
from core.model.accounts import Actor
from spacebridge.app import Instance
from tests.integration.webrtc.test_room_media import Client, has, until_heard
from tests.support.loopback import LOOPBACK


class Peer:
    """A browser tab, minus the browser: the signaling socket plus an aiortc peer."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse, client: Client) -> None:
        self.http, self.ws, self.client = http, ws, client
        self.inbox: list[dict[str, Any]] = []
        self._n = 0

    async def recv(self, kind: str, timeout: float = 5, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for m in self.inbox:
                if m.get("type") == kind and all(_get(m, k) == v for k, v in match.items()):
                    self.inbox.remove(m)
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind} {match}; got {self.inbox[-5:]}")
            msg = await self.ws.receive(timeout=left)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"socket ended: {msg}")
            self.inbox.append(json.loads(msg.data))

    async def command(self, name: str, **args: Any) -> dict[str, Any]:
        self._n += 1
        cid = f"c{self._n}"
        await self.ws.send_json({"type": "command", "id": cid, "name": name, "args": args})
        while True:
            m = await self.recv_any(cid)
            if m.get("id") == cid:
                return m

    async def recv_any(self, cid: str) -> dict[str, Any]:
        for m in self.inbox:
            if m.get("id") == cid:
                self.inbox.remove(m)
                return m
        msg = await self.ws.receive(timeout=5)
        data: dict[str, Any] = json.loads(msg.data)
        if data.get("id") != cid:
            self.inbox.append(data)
        return data

    async def media(self) -> dict[str, Any]:
        pc = self.client.pc
        await pc.setLocalDescription(await pc.createOffer())
        await self.ws.send_json({"type": "offer", "sdp": restrict_candidates(pc.localDescription.sdp, {LOOPBACK})})
        answer = await self.recv("answer")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        return answer


def _get(m: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("__"):
        m = m.get(part) if isinstance(m, dict) else None  # type: ignore[assignment]
    return m


async def connect(p: Instance, http: aiohttp.ClientSession, space_id: str, token: str, hz: float | None) -> Peer:
    ws = await http.ws_connect(f"{p.url}/ws/{space_id}")
    await ws.send_json({"type": "hello", "token": token})
    peer = Peer(http, ws, Client(hz))
    return peer


async def test_room_flow_over_signaling(platform: Instance) -> None:
    core = platform.core
    host_acc = await core.ensure_account("web", "host", "Host")
    fan_acc = await core.ensure_account("web", "fan", "Fan")
    space = await core.create_space(Actor(account_id=host_acc.id, is_community_admin=True), "Live room")
    now = core.now()
    async with aiohttp.ClientSession() as http:
        tokens = platform.tokens
        host = await connect(platform, http, space.id, tokens.issue(space.id, host_acc.id, "speaker", now), 440)
        assert (await host.recv("welcome"))["you"]["role"] == "host"
        assert (await host.media())["publish"] is True
        fan = await connect(platform, http, space.id, tokens.issue(space.id, fan_acc.id, "listener", now), None)
        welcome = await fan.recv("welcome")
        assert welcome["you"]["role"] == "listener" and welcome["space"]["title"] == "Live room"
        assert (await fan.media())["publish"] is False
        await until_heard(fan.client, lambda heard: has(heard, 440))  # the listener hears the host

        assert (await fan.command("react", emoji="👏"))["type"] == "ok"
        await host.recv("event", event__type="reaction.sent", event__emoji="👏")
        assert (await fan.command("raise_hand"))["result"] == 1
        await host.recv("event", event__type="hand.raised", event__account_id=fan_acc.id)
        denied = await fan.command("approve", account_id=fan_acc.id)
        assert denied["type"] == "error" and denied["code"] == "role.moderator_required"
        assert (await host.command("approve", account_id=fan_acc.id))["type"] == "ok"
        reneg = await fan.recv("renegotiate")
        assert reneg == {"type": "renegotiate", "role": "speaker", "publish": True}

        # bad input gets a clear error frame and the room keeps serving
        await fan.ws.send_str("{nope")
        assert (await fan.recv("error"))["code"] == "protocol.bad_json"
        await fan.ws.send_json({"type": "teleport"})
        assert (await fan.recv("error"))["code"] == "protocol.unknown_type"
        assert (await fan.command("react", emoji="not an emoji"))["code"] == "reaction.not_an_emoji"
        assert (await fan.command("fly"))["code"] == "protocol.unknown_command"
        await fan.ws.send_json({"type": "offer", "sdp": "garbage"})
        assert (await fan.recv("error"))["code"] == "sdp.invalid"
        await fan.ws.send_str(json.dumps({"type": "ping", "pad": "x" * 70_000}))
        closed = await fan.ws.receive(timeout=5)
        assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        await host.ws.send_json({"type": "ping"})
        assert (await host.recv("pong"))["type"] == "pong"

        for c in (host.client, fan.client):
            await c.pc.close()
        await host.ws.close()


@pytest.mark.parametrize("case", ["forged", "expired", "wrong_space", "none"])
async def test_bad_tokens_are_refused(platform: Instance, case: str) -> None:
    from core.tokens import JoinTokens

    core = platform.core
    host_acc = await core.ensure_account("web", "host", "Host")
    host = Actor(account_id=host_acc.id, is_community_admin=True)
    space = await core.create_space(host, "Guarded")
    other = await core.create_space(host, "Other")
    now = core.now()
    token = {
        "forged": JoinTokens(b"not-the-server-secret").issue(space.id, host_acc.id, "listener", now),
        "expired": platform.tokens.issue(space.id, host_acc.id, "listener", now, ttl_s=-1),
        "wrong_space": platform.tokens.issue(other.id, host_acc.id, "listener", now),
        "none": "",
    }[case]  # a good token for an ended Space opens the socket: tests/integration/webrtc/test_waiting_room.py
    expected = {"forged": "token.bad_signature", "expired": "token.expired", "wrong_space": "token.wrong_space",
                "none": "token.malformed"}[case]
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{platform.url}/ws/{space.id}") as ws:
        await ws.send_json({"type": "hello", "token": token})
        err = json.loads((await ws.receive(timeout=5)).data)
        assert err["type"] == "error" and err["code"] == expected and err["message"]
        assert (await ws.receive(timeout=5)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_audio_tap_gives_the_mix_each_speaker_and_the_room_packets(platform: Instance) -> None:
    """What captions, recording and Discord playback read: the tone a speaker sends comes back out."""
    import av
    import numpy as np

    from core.ports import SAMPLE_RATE

    core = platform.core
    host_acc = await core.ensure_account("web", "host", "Host")
    space = await core.create_space(Actor(account_id=host_acc.id, is_community_admin=True), "Tapped")
    async with aiohttp.ClientSession() as http:
        host = await connect(platform, http, space.id,
                             platform.tokens.issue(space.id, host_acc.id, "speaker", core.now()), 440)
        await host.recv("welcome")
        await host.media()
        await asyncio.sleep(1.5)

        async def take(it: Any, n: int) -> list[Any]:
            out = []
            async for item in it:
                out.append(item)
                if len(out) == n:
                    break
            return out

        mix, voices, packets = await asyncio.gather(take(platform.rooms.mix(space.id), 50),
                                                    take(platform.rooms.speakers(space.id), 50),
                                                    take(platform.rooms.opus_packets(space.id), 50))

        def peak_hz(pcm: Any) -> float:
            spec = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(pcm.size)))
            return float(np.fft.rfftfreq(pcm.size, 1 / SAMPLE_RATE)[int(np.argmax(spec))])

        assert abs(peak_hz(np.concatenate([f.pcm for f in mix])) - 440) < 5
        assert {f.speaker_id for f in voices} == {host_acc.id}
        assert abs(peak_hz(np.concatenate([f.pcm for f in voices])) - 440) < 5
        seqs = [s for s, _ in packets]
        assert seqs == list(range(seqs[0], seqs[0] + 50)), "packets out of order or missing"
        decoder: Any = av.CodecContext.create("libopus", "r")
        decoded = []
        for _, data in packets:
            for frame in decoder.decode(av.Packet(data)):
                decoded.append(frame.to_ndarray().reshape(-1, len(frame.layout.channels)).mean(axis=1))
        assert abs(peak_hz(np.concatenate(decoded)) - 440) < 5
        await host.client.pc.close()
        await host.ws.close()


async def test_process_to_process_endpoints_need_the_key_and_good_bodies(platform: Instance) -> None:
    """/internal/media/... is how processes hand offers to the Space's media process: without the
    key derived from the instance secret it is refused, and a malformed body is a 400, not a crash."""
    from adapters.webrtc.internal import INTERNAL_HEADER

    space = await platform.core.create_space(
        Actor(account_id=(await platform.core.ensure_account("web", "h", "H")).id, is_community_admin=True), "S")
    base = f"{platform.url}/internal/media/{space.id}"
    good = {INTERNAL_HEADER: platform.rooms._internal_token()}
    async with aiohttp.ClientSession() as http:
        for path in ("offer", "hls", "leave", "candidate"):
            async with http.post(f"{base}/{path}", json={"pid": "x", "sdp": "v=0"}) as r:
                assert r.status == 403
            async with http.post(f"{base}/{path}", json={"pid": "x"},
                                 headers={INTERNAL_HEADER: "0" * 64}) as r:
                assert r.status == 403
        async with http.post(f"{base}/offer", data=b"not json", headers=good) as r:
            assert r.status == 400
        async with http.post(f"{base}/offer", json={"pid": 5, "sdp": ""}, headers=good) as r:
            assert r.status == 400
        async with http.post(f"{base}/offer", json={"pid": "x", "sdp": "hello"}, headers=good) as r:
            assert r.status == 400 and (await r.json())["code"] == "sdp.invalid"
        async with http.post(f"{base}/candidate", json={"pid": "x", "candidate": 5}, headers=good) as r:
            assert r.status == 400
        async with http.post(f"{base}/candidate", json={"pid": "x", "candidate": None}, headers=good) as r:
            assert r.status == 200 and (await r.json()) == {"applied": False}  # no such participant here
        async with http.get(f"{base}/ticks") as r:
            assert r.status == 403
        async with http.get(f"{platform.url}/healthz") as r:
            assert r.status == 200


async def test_trickled_candidates_reach_the_listeners_connection(platform: Instance) -> None:
    """An offer without candidates, then its candidates one by one (trickle ICE): the server adds
    each to the listener's connection, ignores one of an older offer, refuses a malformed one in
    words, and the listener hears the host."""
    core = platform.core
    host_acc = await core.ensure_account("web", "host", "Host")
    fan_acc = await core.ensure_account("web", "fan", "Fan")
    space = await core.create_space(Actor(account_id=host_acc.id, is_community_admin=True), "Trickle")
    now, tokens = core.now(), platform.tokens
    async with aiohttp.ClientSession() as http:
        host = await connect(platform, http, space.id, tokens.issue(space.id, host_acc.id, "speaker", now), 440)
        await host.recv("welcome")
        await host.media()
        fan = await connect(platform, http, space.id, tokens.issue(space.id, fan_acc.id, "listener", now), None)
        await fan.recv("welcome")
        pc = fan.client.pc
        await pc.setLocalDescription(await pc.createOffer())
        sdp = restrict_candidates(pc.localDescription.sdp, {LOOPBACK})
        lines = sdp.split("\r\n")
        found = [ln.removeprefix("a=") for ln in lines if ln.startswith("a=candidate:")]
        bare = "\r\n".join(ln for ln in lines if not ln.startswith("a=candidate:") and ln != "a=end-of-candidates")
        assert found, "the test peer gathered no candidate"
        await fan.ws.send_json({"type": "offer", "id": "m1", "sdp": bare})
        answer = await fan.recv("answer", id="m1")
        remote = platform.rooms.rooms[space.id].participants[fan_acc.id].pc.getTransceivers()[0] \
            .receiver.transport.transport
        assert remote.getRemoteCandidates() == []

        # the first as another process's signaling hands it over (docs/deploy.md), the rest by the socket
        from adapters.webrtc.internal import INTERNAL_HEADER

        async with http.post(f"{platform.url}/internal/media/{space.id}/candidate",
                             json={"pid": fan_acc.id, "candidate": found[0], "sdp_mid": "0"},
                             headers={INTERNAL_HEADER: platform.rooms._internal_token()}) as r:
            assert r.status == 200 and (await r.json()) == {"applied": True}
        for c in found[1:]:
            await fan.ws.send_json({"type": "candidate", "id": "m1", "candidate": c, "sdpMid": "0"})
        stale = f"candidate:99 1 udp 2130706431 {LOOPBACK} 9 typ host generation 0 ufrag someoneelse"
        await fan.ws.send_json({"type": "candidate", "id": "m1", "candidate": stale, "sdpMid": "0"})
        for bad in ("candidate:nonsense", "x" * 2000, 42):
            await fan.ws.send_json({"type": "candidate", "id": "m1", "candidate": bad})
            refused = await fan.recv("error")
            assert refused["code"] == "candidate.invalid" and refused["message"], refused
        await fan.ws.send_json({"type": "candidate", "id": "m1", "candidate": None})
        await fan.ws.send_json({"type": "ping"})
        await fan.recv("pong")  # every candidate before it was handled
        ports = sorted(c.port for c in remote.getRemoteCandidates())
        assert ports == sorted(int(c.split()[5]) for c in found), ports

        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        await until_heard(fan.client, lambda heard: has(heard, 440))  # the listener hears the host
        for client in (host.client, fan.client):
            await client.pc.close()
