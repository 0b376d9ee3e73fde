"""Real aiortc peers over loopback: what speakers and listeners hear in the room."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from adapters.webrtc.candidates import CandidatePolicy
from adapters.webrtc.room import MediaError, Room, restrict_candidates
from adapters.webrtc.wire import MAX_BACKLOG
from core.ports import FRAME_SAMPLES, SAMPLE_RATE
from tests.support.loopback import LOOPBACK, ensure_loopback_alias


@pytest.fixture(scope="module", autouse=True)
def loopback_alias() -> None:
    ensure_loopback_alias()


class Tone(MediaStreamTrack):
    kind = "audio"

    def __init__(self, hz: float) -> None:
        super().__init__()
        self.hz, self.n, self.t0 = hz, 0, time.monotonic()

    async def recv(self) -> Any:
        due = self.t0 + self.n * 0.02
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        t = (np.arange(FRAME_SAMPLES) + self.n * FRAME_SAMPLES) / SAMPLE_RATE
        pcm = (0.3 * 32767 * np.sin(2 * np.pi * self.hz * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, self.n * FRAME_SAMPLES, fractions.Fraction(
            1, SAMPLE_RATE)
        self.n += 1
        return frame


class Client:
    """A participant: publishes a tone (or nothing) and records what it hears, with arrival times."""

    def __init__(self, hz: float | None) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN: loopback only
        self.heard: list[tuple[float, Any]] = []
        self.tasks: list[asyncio.Task[None]] = []
        if hz is None:
            self.pc.addTransceiver("audio", direction="recvonly")
        else:
            self.pc.addTrack(Tone(hz))

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.tasks.append(asyncio.ensure_future(self._listen(track)))

    async def _listen(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame: Any = await track.recv()
            except MediaStreamError:
                return
            pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels)).mean(axis=1)
            self.heard.append((time.monotonic(), pcm))

    async def join(self, room: Room, pid: str, publish: bool) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = restrict_candidates(self.pc.localDescription.sdp, {LOOPBACK})
        answer = await room.add_participant(pid, offer, publish=publish)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    def spectrum_peaks(self, since: float, until: float | None = None) -> set[int]:
        chunks = [pcm for t, pcm in self.heard if t >= since and (until is None or t < until)]
        assert chunks, "heard nothing"
        audio = np.concatenate(chunks)
        spec = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
        freqs = np.fft.rfftfreq(audio.size, 1 / SAMPLE_RATE)
        band = (freqs > 100) & (freqs < 2000)
        strong = band & (spec > spec[band].max() * 0.1)
        return {int(round(f / 10) * 10) for f in freqs[strong]}


def has(peaks: set[int], hz: int) -> bool:
    return any(abs(p - hz) <= 10 for p in peaks)


HEAR_DEADLINE_S = 30.0


async def until_heard(client: Client, ok: Callable[[set[int]], bool], *, since: float | None = None,
                      window_s: float = 1.0, deadline_s: float = HEAR_DEADLINE_S) -> set[int]:
    """What ``client`` hears over the last ``window_s`` (not before ``since``), polled until ``ok`` holds.

    Why: the test waits for the audio it expects instead of sleeping a fixed time, so a busy machine
    is slower, never wrong; the deadline is generous and only there to end a test that would hang."""
    end = time.monotonic() + deadline_s
    peaks: set[int] = set()
    while True:
        now = time.monotonic()
        start = max(now - window_s, since) if since is not None else now - window_s
        if sum(1 for t, _ in client.heard if t >= start) >= window_s * 25:  # at least half the window's frames
            peaks = client.spectrum_peaks(start)
            if ok(peaks):
                return peaks
        if now > end:
            raise AssertionError(f"not heard within {deadline_s} s; last peaks {sorted(peaks)}")
        await asyncio.sleep(0.1)


async def until(cond: Callable[[], bool], what: str, deadline_s: float = HEAR_DEADLINE_S) -> None:
    """Poll ``cond`` until it holds (generous deadline)."""
    end = time.monotonic() + deadline_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {deadline_s} s")
        await asyncio.sleep(0.05)


@pytest.fixture
async def room() -> AsyncIterator[Room]:
    r = Room("space-test", announce={LOOPBACK}, allowed=CandidatePolicy.parse(["127.0.0.0/8"]))
    yield r
    await r.close()


async def test_listener_hears_both_speakers_who_do_not_hear_themselves(room: Room) -> None:
    a, b, listener = Client(440), Client(660), Client(None)
    await a.join(room, "A", publish=True)
    await b.join(room, "B", publish=True)
    await listener.join(room, "L", publish=False)
    await until_heard(listener, lambda heard: has(heard, 440) and has(heard, 660), window_s=1.5)
    a_heard = await until_heard(a, lambda heard: has(heard, 660), window_s=1.5)
    b_heard = await until_heard(b, lambda heard: has(heard, 440), window_s=1.5)
    assert not has(a_heard, 440), a_heard  # nobody hears themselves
    assert not has(b_heard, 660), b_heard
    # A is muted at the server: gone from the listener's audio, B still there
    room.set_publishers({"B"})
    cut = time.monotonic()
    await until_heard(listener, lambda heard: has(heard, 660) and not has(heard, 440), since=cut)
    for c in (a, b, listener):
        await c.pc.close()


async def test_listener_sending_media_is_not_heard(room: Room) -> None:
    sneaky, listener = Client(880), Client(None)
    await sneaky.join(room, "S", publish=False)
    await listener.join(room, "L", publish=False)
    await until(lambda: len(listener.heard) >= 100, "the listener receives the room's audio")
    chunks = np.concatenate([p for _, p in listener.heard[-50:]])
    assert float(np.abs(chunks).max()) < 50, "a listener's audio reached the room"
    for c in (sneaky, listener):
        await c.pc.close()


async def test_bad_sdp_is_refused_and_the_room_keeps_serving(room: Room) -> None:
    speaker, listener = Client(440), Client(None)
    await speaker.join(room, "A", publish=True)
    await listener.join(room, "L", publish=False)
    cases = (("hello", "sdp.invalid"), ("v=0\r\nnonsense", "sdp.no_audio"), ("v=0" + "x" * 70000, "sdp.invalid"))
    for bad, code in cases:
        with pytest.raises(MediaError) as e:
            await room.add_participant("X", bad)
        assert e.value.code == code
    assert "X" not in room.participants
    await until_heard(listener, lambda heard: has(heard, 440))
    for c in (speaker, listener):
        await c.pc.close()


def _sockets(client: Client) -> list[Any]:
    """The client's ICE sockets (asyncio transports), to play a peer that froze or vanished."""
    dtls = client.pc.getTransceivers()[0].receiver.transport
    return [p.transport for p in dtls.transport._connection._protocols]


async def test_a_frozen_or_vanished_listener_costs_the_others_nothing(room: Room) -> None:
    """A listener that stops reading, and one whose sockets are gone, lose their packets; the room
    queues nothing for them and everyone else keeps hearing every 20 ms frame."""
    speaker, fine, frozen, gone = Client(440), Client(None), Client(None), Client(None)
    await speaker.join(room, "A", publish=True)
    for pid, c in (("F", fine), ("Z", frozen), ("G", gone)):
        await c.join(room, pid, publish=False)
    await until(lambda: all(room.participants[p].outlet is not None and room.participants[p].outlet.sent > 0  # type: ignore[union-attr]
                            for p in "FZG"), "every listener is being sent audio")
    for t in _sockets(frozen):
        t.pause_reading()
    for t in _sockets(gone):
        t.close()
    before = {p: room.participants[p].outlet.sent for p in "FZG"}  # type: ignore[union-attr]
    cut = time.monotonic()
    # the others keep hearing: 2.5 s of frames arrive after the cut, and the tone is in them
    await until(lambda: sum(1 for t, _ in fine.heard if t > cut) >= 125, "the others' audio stopped")
    await until_heard(fine, lambda heard: has(heard, 440), since=cut)

    def kept_going(pid: str) -> bool:
        outlet = room.participants[pid].outlet
        return outlet is not None and outlet.sent + outlet.dropped > before[pid]

    await until(lambda: all(kept_going(pid) for pid in "ZG"), "the room stopped serving the stuck listeners")
    for pid in "ZG":
        outlet = room.participants[pid].outlet
        assert outlet is not None
        queued = outlet._ice._nominated[1].protocol.transport.get_write_buffer_size()
        assert queued <= MAX_BACKLOG, queued
    for c in (speaker, fine, frozen, gone):
        with contextlib.suppress(Exception):
            await c.pc.close()
