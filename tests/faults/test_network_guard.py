"""The server never probes other networks, and the suite never leaves loopback.

A client's offer (or its trickled candidates) may name any address; the room contacts only those
in SPACEBRIDGE_ICE_ALLOWED_NETWORKS. What the server sends is watched with the suite's own audit
hook (tests/support/netguard), which sees every ``sendto`` of this process.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiortc import RTCSessionDescription

from adapters.webrtc.candidates import CandidatePolicy, filter_sdp
from adapters.webrtc.room import Room, restrict_candidates
from spacebridge.config import ConfigError, load_settings
from tests.integration.webrtc.test_room_media import Client, has
from tests.support.loopback import LOOPBACK, ensure_loopback_alias
from tests.support.netguard import guard
from tests.support.netguard.plugin import SITE

ROOT = Path(__file__).resolve().parents[2]
PRIVATE = ["10.255.254.253", "192.168.254.253", "169.254.254.253", "172.31.254.253", "fd00:ffff::253"]
MDNS_NAME = "0f6b7c2e-5d8a-4c1b-9e3f-2a1b3c4d5e6f.local"
MDNS_GROUPS = ("224.0.0.251", "ff02::fb")
LOOPBACK_ONLY = CandidatePolicy.parse(["127.0.0.0/8"])


@pytest.fixture(scope="module", autouse=True)
def loopback_alias() -> None:
    ensure_loopback_alias()


@pytest.fixture
def sent() -> Iterator[list[str]]:
    """Every host this process sends a datagram to (or connects to) while the test runs."""
    hosts: list[str] = []
    undo = guard.watch(lambda event, host: hosts.append(host))
    yield hosts
    undo()


def with_candidates(sdp: str, hosts: list[str], *, keep_own: bool) -> str:
    """The offer with candidate lines on ``hosts`` (ranked above the peer's own) in its audio section."""
    lines = [ln for ln in sdp.split("\r\n") if keep_own or not ln.startswith("a=candidate:")]
    at = next(i for i, ln in enumerate(lines) if ln.startswith("a=ice-ufrag:"))
    extra = [f"a=candidate:{9 + n} 1 udp {2_000_000_000 - n} {h} {40000 + n} typ host" for n, h in enumerate(hosts)]
    return "\r\n".join(lines[:at] + extra + lines[at:])


def remote_hosts(room: Room, pid: str) -> set[str]:
    """The remote candidates the room's ICE agent holds for ``pid`` (all it will ever check)."""
    ice = room.participants[pid].pc.getTransceivers()[0].receiver.transport.transport
    return {c.ip for c in ice.getRemoteCandidates()}


async def until(check: object, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def hears(client: Client, hz: int) -> bool:
    recent = [t for t, _ in client.heard if t > time.monotonic() - 1.0]
    return len(recent) > 20 and has(client.spectrum_peaks(time.monotonic() - 1.0), hz)


@pytest.fixture
async def loopback_room() -> AsyncIterator[Room]:
    room = Room("space-guard", announce={LOOPBACK}, allowed=LOOPBACK_ONLY)
    yield room
    await room.close()


async def test_loopback_peer_hears_the_room_and_its_other_candidates_are_never_contacted(
        loopback_room: Room, sent: list[str]) -> None:
    speaker, listener = Client(440), Client(None)
    await speaker.join(loopback_room, "S", publish=True)
    await listener.pc.setLocalDescription(await listener.pc.createOffer())
    own = restrict_candidates(listener.pc.localDescription.sdp, {LOOPBACK})
    offer = with_candidates(own, [*PRIVATE, MDNS_NAME], keep_own=True)
    answer = await loopback_room.add_participant("L", offer)
    assert answer.startswith("v=0") and f" {LOOPBACK} " in answer
    for n, host in enumerate(["10.9.9.9", "192.168.9.9", MDNS_NAME, "evil.example.com"]):  # trickled later
        applied = await loopback_room.add_candidate("L", f"candidate:{50 + n} 1 udp 2000000 {host} 9 typ host")
        assert applied is False
    await listener.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    await until(lambda: hears(listener, 440))
    assert remote_hosts(loopback_room, "L") <= {LOOPBACK}
    refused = {*PRIVATE, "10.9.9.9", "192.168.9.9", MDNS_NAME, *MDNS_GROUPS}
    assert LOOPBACK in sent  # the hook does see the room's datagrams
    assert refused.isdisjoint(sent), sorted(refused & set(sent))
    for c in (speaker, listener):
        await c.pc.close()


async def test_by_default_only_public_addresses_are_contacted_and_the_offer_is_answered(sent: list[str]) -> None:
    """Loopback, private, link-local and .local candidates are refused out of the box; the client
    still connects, because the server learns its address from the checks it sends (peer-reflexive)."""
    room = Room("space-default")
    try:
        listener = Client(None)
        await listener.pc.setLocalDescription(await listener.pc.createOffer())
        offer = with_candidates(listener.pc.localDescription.sdp, [LOOPBACK, *PRIVATE, MDNS_NAME], keep_own=False)
        answer = await room.add_participant("L", offer)
        assert answer.startswith("v=0") and "a=candidate:" in answer
        assert remote_hosts(room, "L") == set()
        pc = room.participants["L"].pc
        await listener.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await until(lambda: pc.iceConnectionState == "completed")
        refused = {*PRIVATE, MDNS_NAME, *MDNS_GROUPS}
        assert refused.isdisjoint(sent), sorted(refused & set(sent))
        await listener.pc.close()
    finally:
        await room.close()


def test_the_policy_refuses_every_non_public_address_by_default() -> None:
    default = CandidatePolicy()
    for host in ["127.0.0.1", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
                 "0.0.0.0", "224.0.0.251", "255.255.255.255", "::1", "fe80::1", "fd00::1", "::ffff:10.0.0.1",
                 "::ffff:127.0.0.1", "x.local", "metadata.google.internal", "fe80::1%eth0", ""]:
        assert not default.allows(host), host
    for host in ["8.8.8.8", "2001:4860:4860::8888", "::ffff:8.8.8.8"]:
        assert default.allows(host), host
    lan = CandidatePolicy.parse(["10.0.0.0/8", "mdns"])
    assert lan.allows("10.1.2.3") and lan.allows("x.local") and not lan.allows("8.8.8.8")
    assert not lan.allows("192.168.1.1")
    assert CandidatePolicy.parse(["127.0.0.0/8"]).allows("::ffff:127.0.0.2")


def test_no_candidate_line_hides_from_the_sdp_filter() -> None:
    """Lines are split as aiortc splits them: bare LF, CR, extra spaces cannot smuggle one through."""
    sdp = ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\na=candidate:1 1 udp 1 10.0.0.1 9 typ host\r"
           "a=candidate:2  1 udp  1   192.168.0.1 9 typ host\r\na=candidate:3 1 udp 1 127.0.0.2 9 typ host\r\n"
           "a=candidate:broken\r\na=mid:0\r\n")
    kept, dropped = filter_sdp(sdp, LOOPBACK_ONLY)
    assert dropped == ["10.0.0.1", "192.168.0.1", "?"]
    assert "10.0.0.1" not in kept and "192.168.0.1" not in kept and "127.0.0.2" in kept and "a=mid:0" in kept


@pytest.mark.parametrize(("value", "words"), [
    ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
    ("bogus", "'bogus' is not a network"),
    ("127.0.0.0/33", "not a network"),
    ("127.0.0.0/8,,nonsense", "'nonsense' is not a network"),
])
def test_a_bad_network_is_a_config_error_in_words(monkeypatch: pytest.MonkeyPatch, value: str, words: str) -> None:
    monkeypatch.setenv("SPACEBRIDGE_ICE_ALLOWED_NETWORKS", value)
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert "ice_allowed_networks" in str(e.value) and words in str(e.value)


def test_the_setting_takes_lists_in_every_form(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ["127.0.0.0/8, ::1/128", '["127.0.0.0/8", "::1/128"]', "127.0.0.0/8 ::1/128"]:
        monkeypatch.setenv("SPACEBRIDGE_ICE_ALLOWED_NETWORKS", value)
        assert load_settings().candidate_policy().describe() == "127.0.0.0/8, ::1/128"
    monkeypatch.delenv("SPACEBRIDGE_ICE_ALLOWED_NETWORKS")
    assert load_settings().candidate_policy() == CandidatePolicy()  # public addresses only


def test_serve_refuses_a_bad_network_in_words(tmp_path: Path) -> None:
    env = {**os.environ, "SPACEBRIDGE_DATA_DIR": str(tmp_path), "SPACEBRIDGE_ICE_ALLOWED_NETWORKS": "10.0.0.1/8"}
    p = subprocess.run([sys.executable, "-m", "spacebridge", "serve", "--port", "0"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert "ice_allowed_networks" in p.stderr and "did you mean 10.0.0.0/8" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


GUARDED = """
import asyncio, socket
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
for dest in [("198.51.100.7", 9), ("127.0.0.1", 9)]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(b"x", dest)
        print("sent", dest[0])
    except PermissionError as e:
        print("refused", dest[0], e)
try:
    socket.getaddrinfo("example.com", 80)
except OSError as e:
    print("lookup refused", e)
async def gather():  # a peer configured with an off-loopback STUN server (a documentation address)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[RTCIceServer(urls="stun:198.51.100.9:3478")]))
    pc.addTransceiver("audio")
    try:
        await pc.setLocalDescription(await pc.createOffer())
    except Exception as e:
        print("gather failed", type(e).__name__)
    await pc.close()
asyncio.run(gather())
"""


def test_the_guard_refuses_and_reports_what_a_subprocess_sends_off_loopback(tmp_path: Path) -> None:
    """The hook every Python subprocess of the suite runs (sitecustomize on PYTHONPATH): off-loopback
    datagrams and lookups are refused at the call and written down with the destination and stack."""
    log = tmp_path / "violations.jsonl"
    env = {**os.environ, guard.LOG_ENV: str(log)}
    assert str(SITE) in env["PYTHONPATH"].split(os.pathsep)
    p = subprocess.run([sys.executable, "-c", GUARDED], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert "refused 198.51.100.7" in p.stdout and "sent 127.0.0.1" in p.stdout and "lookup refused" in p.stdout
    found = guard.read_log(str(log))
    dests = [v["destination"] for v in found]
    assert "198.51.100.7:9" in dests and "example.com" in dests
    assert any(d.startswith("198.51.100.9") for d in dests), dests  # the STUN server's binding request
    assert all(v["stack"] and v["pid"] != os.getpid() for v in found)
    assert not any(d.startswith("127.") for d in dests)
    json.dumps(found)  # plain data: the session report prints it
