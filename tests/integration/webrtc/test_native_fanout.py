"""The native fan-out engine (adapters/webrtc/_fanout.c) against the pure-Python Outlet path.

Both must put the same bytes on the wire for the same keys and packets (libsrtp via pylibsrtp is
the reference); a real aiortc listener hears the room through it; streams closed mid-batch and
failing sockets are counted, never fatal; malformed arguments raise ordinary exceptions.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pylibsrtp import Policy, Session

from adapters.webrtc.candidates import CandidatePolicy
from adapters.webrtc.fanout import choose_engine
from adapters.webrtc.room import Room
from adapters.webrtc.wire import _HEADER
from tests.integration.webrtc.test_room_media import Client, has, until, until_heard
from tests.native.fuzz_fanout import OK_ERRORS, fuzz
from tests.support.loopback import LOOPBACK, ensure_loopback_alias

ENGINE = choose_engine({})
if ENGINE.module is None:
    pytest.skip(f"the native fan-out is not built here: {ENGINE.detail}", allow_module_level=True)
native: Any = ENGINE.module

PROFILES = {"SRTP_AES128_CM_SHA1_80": (Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16, 14),
            "SRTP_AEAD_AES_128_GCM": (Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16, 12),
            "SRTP_AEAD_AES_256_GCM": (Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 32, 12)}
MID_EXT = struct.pack("!HH", 0xBEDE, 1) + bytes([0x10, ord("0"), 0, 0])  # what an Outlet adds for mid "0"


@pytest.fixture(scope="module", autouse=True)
def loopback_alias() -> None:
    ensure_loopback_alias()


@pytest.fixture
def sink() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOOPBACK, 0))
    s.settimeout(10)
    yield s
    s.close()


def policy(profile: str, key: bytes, salt: bytes, ssrc_type: int) -> Policy:
    p = Policy(key=key + salt, ssrc_type=ssrc_type, srtp_profile=PROFILES[profile][0])
    p.allow_repeat_tx, p.window_size = True, 1024  # as aiortc builds its sessions
    return p


def receive(sink: socket.socket, n: int) -> list[bytes]:
    return [sink.recv(2048) for _ in range(n)]


@pytest.mark.parametrize("profile", list(PROFILES))
def test_both_engines_put_the_same_srtp_on_the_wire(profile: str, sink: socket.socket) -> None:
    """The Outlet's Python path (struct header + libsrtp protect + sendto) and the native path, same keys,
    SSRC, payload type, sequence and timestamp origin: byte-identical datagrams, across a sequence wrap."""
    _, klen, slen = PROFILES[profile]
    key, salt = os.urandom(klen), os.urandom(slen)
    ssrc, pt, seq0, ts0 = 0x1234ABCD, 111, 65_500 - 32_768, 0xFFFFF000  # low half start, as Outlet does
    tx = Session(policy(profile, key, salt, Policy.SSRC_ANY_OUTBOUND))
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.setblocking(False)
    stream = native.Stream(profile, key, salt, ssrc, pt, seq0, ts0, MID_EXT, out.fileno(), sink.getsockname())
    payloads = [os.urandom(1 + (i * 37) % 300) for i in range(200)]
    seq, marker, python_wire, native_wire, between = seq0, 0x80, [], [], []
    for start in (0, 32_868):  # the second run crosses the 16-bit wrap: the rollover counter must agree
        if start:
            for i in range(start):  # advance both to just before the wrap without the socket
                tx.protect(_HEADER.pack(0x90, pt, (seq0 + 200 + i) & 0xFFFF, 0, ssrc) + MID_EXT + b"x")
                between.append(stream.protect(b"x", 0))
            seq = (seq0 + 200 + start) & 0xFFFF
        for i, payload in enumerate(payloads):
            pts = i * 960
            header = _HEADER.pack(0x90, marker | pt, seq, (ts0 + pts) & 0xFFFFFFFF, ssrc)
            marker, seq = 0, (seq + 1) & 0xFFFF
            out.sendto(tx.protect(header + MID_EXT + payload), sink.getsockname())
            python_wire.extend(receive(sink, 1))
            assert native.fanout([([stream], payload, pts)]) == (1, 0, 0)
            native_wire.extend(receive(sink, 1))
    assert stream.roc == 1 and stream.sent == 400
    assert python_wire == native_wire
    rx = Session(policy(profile, key, salt, Policy.SSRC_ANY_INBOUND))
    in_order = native_wire[:200] + between + native_wire[200:]  # a receiver follows the index one step at a time
    heard = [rx.unprotect(p)[len(MID_EXT) + 12:] for p in in_order]
    assert heard[:200] + heard[-200:] == payloads * 2
    out.close()


def test_one_call_sends_every_group_from_several_threads(sink: socket.socket) -> None:
    """A tick's listeners (one shared payload) and speakers (one each) in one call over 4 threads."""
    key, salt = os.urandom(16), os.urandom(14)
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(300)]
    streams = [native.Stream("SRTP_AES128_CM_SHA1_80", key, salt, i + 1, 111, 100, 0, b"", s.fileno(),
                             sink.getsockname()) for i, s in enumerate(socks)]
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    groups = [(streams[:290], b"room" * 20, 960), *(([s], b"mix-minus", 960) for s in streams[290:])]
    assert native.fanout(groups, threads=4) == (300, 0, 0)
    rx = Session(policy("SRTP_AES128_CM_SHA1_80", key, salt, Policy.SSRC_ANY_INBOUND))
    heard = {}
    for packet in receive(sink, 300):
        plain = rx.unprotect(packet)
        heard[int.from_bytes(plain[8:12], "big")] = plain[12:]
    assert heard == {i + 1: b"room" * 20 if i < 290 else b"mix-minus" for i in range(300)}
    for s in socks:
        s.close()


async def test_an_aiortc_listener_hears_the_room_through_the_chosen_engine() -> None:
    expected = choose_engine().name  # native here, python when SPACEBRIDGE_FANOUT=python (next test)
    room = Room("native", announce={LOOPBACK}, allowed=CandidatePolicy.parse(["127.0.0.0/8"]))
    speaker, listener = Client(440), Client(None)
    try:
        await speaker.join(room, "A", publish=True)
        await listener.join(room, "L", publish=False)
        await until_heard(listener, lambda heard: has(heard, 440), window_s=1.5)
        outlet: Any = room.participants["L"].outlet
        assert outlet.engine == expected
        if expected == "native":
            assert outlet._stream is not None and outlet._stream.sent > 0
            assert outlet._sent == 0  # every packet it heard came from C
        else:
            assert outlet._stream is None and outlet.sent > 0
        # the speaker hears nothing of their own tone, through the native path too
        await until(lambda: len(speaker.heard) >= 50, "the speaker receives the room's mix")
    finally:
        for c in (speaker, listener):
            await c.pc.close()
        await room.close()


def test_the_python_fallback_serves_the_room_too() -> None:
    """The same listener test in a process where SPACEBRIDGE_FANOUT=python picks the Outlet path."""
    test = f"{__file__}::test_an_aiortc_listener_hears_the_room_through_the_chosen_engine"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
                         env={**os.environ, "SPACEBRIDGE_FANOUT": "python"}, capture_output=True, text=True,
                         timeout=600, cwd=Path(__file__).resolve().parents[3])
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout[-3000:]


def test_streams_leaving_mid_batch_and_failing_sockets_are_counted(sink: socket.socket) -> None:
    key, salt = os.urandom(16), os.urandom(12)
    gone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gone.bind((LOOPBACK, 0))
    nobody = gone.getsockname()
    gone.close()
    refusing = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    refusing.connect(nobody)  # a connected UDP socket learns of ICMP port unreachable: ECONNREFUSED
    healthy = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2000)]

    def make(sock: socket.socket, dest: Any) -> Any:
        return native.Stream("SRTP_AEAD_AES_128_GCM", key, salt, 7, 111, 1, 0, b"", sock.fileno(), dest)

    bad = make(refusing, nobody)
    native.fanout([([bad], b"hello", 0)])
    refusing.close()  # the stream keeps its own descriptor: closing the peer's socket does not race it
    streams = [make(s, sink.getsockname()) for s in healthy]
    done: list[tuple[int, int, int]] = []
    batch = threading.Thread(target=lambda: done.append(native.fanout([([bad, *streams], b"p" * 100, 0)],
                                                                      threads=2)))
    batch.start()
    for s in streams[::2]:  # leave while the batch runs (the GIL is released)
        s.close()
    while batch.is_alive():  # a second call for streams that batch holds is refused, never raced
        try:
            native.fanout([(streams[1:2], b"x", 0)])
        except RuntimeError as e:
            assert "another fanout" in str(e)
    batch.join()
    sent, dropped, errors = done[0]
    assert sent + dropped + errors == 2001 and errors == 1
    assert bad.errors >= 1 and bad.last_errno == errno.ECONNREFUSED
    assert all(s.closed for s in streams[::2]) and not any(s.closed for s in streams[1::2])
    sent_before = sum(s.sent for s in streams)
    assert native.fanout([(streams, b"again", 0)]) == (1000, 1000, 0)  # closed ones drop, the rest send
    assert sum(s.sent for s in streams) == sent_before + 1000  # closed ones drop, the rest send
    for s in healthy:
        s.close()


def test_bad_arguments_raise_and_change_nothing(sink: socket.socket) -> None:
    key, salt = os.urandom(16), os.urandom(14)
    with pytest.raises(ValueError, match="unknown SRTP profile"):
        native.Stream("ROT13", key, salt, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="16-byte key"):
        native.Stream("SRTP_AES128_CM_SHA1_80", key[:5], salt, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="payload_type"):
        native.Stream("SRTP_AES128_CM_SHA1_80", key, salt, 1, 128, 1, 1)
    with pytest.raises(ValueError, match="UDP socket"):
        with socket.socket() as tcp:
            native.Stream("SRTP_AES128_CM_SHA1_80", key, salt, 1, 1, 1, 1, b"", tcp.fileno(), ("127.0.0.1", 9))
    s = native.Stream("SRTP_AES128_CM_SHA1_80", key, salt, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="payload"):
        native.fanout([([s], b"", 0)])
    with pytest.raises(TypeError):
        native.fanout([([s, "listener"], b"x", 0)])
    with pytest.raises(ValueError, match="threads"):
        native.fanout([([s], b"x", 0)], threads=0)
    assert s.seq == 1 and s.sent == 0  # nothing was sent or numbered by the refused calls
    assert native.fanout([([s], b"x", 0)]) == (0, 1, 0)  # no socket: dropped, counted


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(args=st.lists(st.one_of(st.none(), st.integers(-(2**70), 2**70), st.binary(max_size=40), st.text(max_size=30),
                               st.tuples(st.text(max_size=10), st.integers(-5, 70000)), st.floats()), max_size=12),
       payload=st.one_of(st.binary(max_size=1500), st.integers(), st.none()),
       pts=st.one_of(st.integers(-(2**40), 2**40), st.text(max_size=3)))
def test_malformed_native_calls_raise_python_errors(args: list[Any], payload: Any, pts: Any) -> None:
    try:
        s = native.Stream(*args)
    except OK_ERRORS:
        s = native.Stream("SRTP_AES128_CM_SHA1_80", b"k" * 16, b"s" * 14, 1, 1, 1, 1)
    for call in (lambda: s.protect(payload, pts), lambda: native.fanout([([s], payload, pts)]),
                 lambda: native.fanout([(args, payload, pts)]), lambda: native.fanout(args)):
        try:
            call()
        except OK_ERRORS:
            pass


def test_fuzzed_batches_in_process() -> None:
    assert fuzz(native, rounds=40, seed=7) > 0
