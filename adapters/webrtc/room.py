"""The media room on aiortc: decode the speakers, mix once per 20 ms, encode once, fan out.

Listeners all receive the same Opus packets (one encode per room), sent from the tick itself by
each peer's ``Outlet`` (``wire.py``); each speaker receives one extra encode of the mix without
their own voice. Only accounts in ``publishers`` reach the mix: anyone else's audio is dropped here,
at the server, whatever their client sends.

Speakers from elsewhere (Discord members on a Stage) are ``ExternalSource``s in a named group: mixed
exactly like web speakers, and the group gets one extra encode of the mix without the whole group
(its members hear each other on their own platform) while any of them is a publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import re
from collections import deque
from collections.abc import Callable, Set
from dataclasses import dataclass, field
from typing import Any, Protocol

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp

from adapters.webrtc.candidates import CandidatePolicy, filter_sdp
from adapters.webrtc.fanout import FanOut
from adapters.webrtc.mixer import FLOOR_DBFS, Mixer, Pcm
from adapters.webrtc.wire import Idle, Outlet, batch_for, engine
from core.errors import Invalid
from core.ports import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE

log = logging.getLogger(__name__)
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
JITTER_FRAMES = 3
MAX_SDP = 64 * 1024
MAX_CANDIDATE = 1024
_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) ", re.MULTILINE)
_UFRAG_SDP = re.compile(r"^a=ice-ufrag:(\S+)", re.MULTILINE)
_UFRAG = re.compile(r" ufrag (\S+)")
LEVEL_EVERY = 10  # ticks per ``levels`` report: five a second
LEVEL_HOLD = 4  # reports one loud moment stays in (~0.8 s): the ring stays lit through a pause between words


def restrict_candidates(sdp: str, allow: set[str] | None) -> str:
    """Keep only ICE candidates on the allowed addresses (None keeps all): where this server is
    reachable is a deployment fact aioice cannot guess (it also never offers 127.0.0.1)."""
    if allow is None:
        return sdp
    lines = [ln for ln in sdp.split("\r\n")
             if not ((m := _CANDIDATE.match(ln + " ")) and m.group(1) not in allow)]
    return "\r\n".join(lines)


class OpusEncoder:
    """One libopus encoder: PCM frames in, ``av.Packet`` with RTP-ready timestamps out."""

    def __init__(self, bit_rate: int = 48_000) -> None:
        self.codec: Any = av.CodecContext.create("libopus", "w")
        self.codec.sample_rate = SAMPLE_RATE
        self.codec.layout = "mono"
        self.codec.format = "s16"
        self.codec.bit_rate = bit_rate
        self.codec.time_base = TIME_BASE
        self.codec.options = {"application": "voip", "frame_duration": str(FRAME_MS)}

    def encode(self, pcm: Pcm, seq: int) -> list[Any]:
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = seq * FRAME_SAMPLES
        frame.time_base = TIME_BASE
        packets = list(self.codec.encode(frame))
        for p in packets:
            p.pts = seq * FRAME_SAMPLES
            p.time_base = TIME_BASE
        return packets


@dataclass
class Participant:
    pid: str
    pc: RTCPeerConnection
    outlet: Outlet | None
    inbound: asyncio.Task[None] | None = None
    buffer: deque[Pcm] = field(default_factory=lambda: deque(maxlen=JITTER_FRAMES))
    ufrag: str | None = None  # the offer's ICE username fragment: trickled candidates must match it
    refused: bool = False  # some of its candidates were outside the allowed networks (see add_candidate)


class ExternalSource(Protocol):
    """A speaker whose audio arrives outside WebRTC, asked once per tick on the room's loop."""

    def pull(self) -> Pcm | None:
        """The next 20 ms frame (decoded now, concealed when lost), or None while they are silent."""
        ...

    def skip(self) -> None:
        """Not heard this tick (not on stage, muted): drop what arrived, decode nothing."""
        ...


@dataclass
class External:
    source: ExternalSource
    group: str


class SpeakingLevels:
    """Each speaker's level for the ``levels`` reports: the loudest they were over the last
    ``LEVEL_HOLD`` report windows, not one tick's reading every ``LEVEL_EVERY`` ticks. One 20 ms
    sample in ten misses short sounds (a syllable, a 20 ms beep) whenever they fall between two
    samples, and blanks the ring at every gap between words; a silent speaker still fades out
    within the hold, and one who stops publishing (muted, off stage) leaves the next report."""

    def __init__(self) -> None:
        self._windows: deque[dict[str, float]] = deque(maxlen=LEVEL_HOLD)
        self._window: dict[str, float] = {}

    def add(self, levels: dict[str, float]) -> None:
        """One tick's (smoothed) levels into the current window."""
        for pid, db in levels.items():
            if db > self._window.get(pid, FLOOR_DBFS - 1):
                self._window[pid] = db

    def report(self, speakers: set[str]) -> dict[str, float]:
        """Close the current window: the loudest each of ``speakers`` was over the held windows."""
        self._windows.append(self._window)
        self._window = {}
        loudest: dict[str, float] = {}
        for window in self._windows:
            for pid, db in window.items():
                if pid in speakers and db > loudest.get(pid, FLOOR_DBFS - 1):
                    loudest[pid] = db
        return {pid: round(db, 1) for pid, db in loudest.items()}


class MediaError(Invalid):
    """Bad SDP, unknown participant: the code says which; the room goes on serving everyone else."""


class Room:
    def __init__(self, space_id: str, *, ice_servers: list[str] | None = None,
                 announce: set[str] | None = None, allowed: CandidatePolicy | None = None) -> None:
        self.space_id = space_id
        self.ice_servers = ice_servers or []
        self.announce = announce
        self.allowed = allowed or CandidatePolicy()  # remote candidates we may send to (public only by default)
        self.mixer = Mixer()
        self.packet_taps: FanOut[Any] = FanOut(10)  # the room's packets for in-process consumers (Discord)
        self.encoders: dict[str, OpusEncoder] = {}
        self.room_encoder = OpusEncoder()
        self.participants: dict[str, Participant] = {}
        self.publishers: set[str] = set()
        self.tick_taps: FanOut[tuple[int, Pcm, dict[str, Pcm]]] = FanOut(100)  # both, per tick (plugins)
        self.seq = 0
        self._task: asyncio.Task[None] | None = None
        self.on_levels: Callable[[dict[str, float]], None] | None = None  # ~5 times a second
        self.levels = SpeakingLevels()
        self.sinks: list[Callable[[Any], None]] = []  # each encoded packet of the mix, synchronously (HLS)
        self.external: dict[str, External] = {}  # account id -> a speaker from another platform
        self.group_taps: dict[str, FanOut[tuple[int, bytes]]] = {}  # group -> the mix without that group
        self.group_encoders: dict[str, OpusEncoder] = {}
        self.last_packet: tuple[bytes, int] | None = None  # the latest tick's packet: a new listener's first

    def sent(self) -> int:
        """Packets sent to the participants here now (operators' status, benchmarks)."""
        return sum(p.outlet.sent for p in self.participants.values() if p.outlet is not None)

    def listener_count(self) -> int:
        return sum(1 for pid in self.participants if pid not in self.publishers)

    # ---- life --------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"room:{self.space_id}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for pid in list(self.participants):
            await self.remove_participant(pid)
        self.packet_taps.close()
        self.tick_taps.close()
        for tap in self.group_taps.values():
            tap.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            next_tick += FRAME_MS / 1000
            try:
                self.tick()
            except Exception:
                log.exception("room %s: mixing failed this tick", self.space_id)
            delay = next_tick - loop.time()
            if delay < -0.2:  # fell far behind (machine paused): resynchronise, don't burst
                next_tick = loop.time()
                delay = 0
            await asyncio.sleep(max(0.0, delay))

    def tick(self) -> None:
        """One 20 ms step: take a frame per publishing speaker, mix, encode once, hand out."""
        frames = {pid: p.buffer.popleft() for pid, p in self.participants.items()
                  if pid in self.publishers and p.buffer}
        for pid, ext in self.external.items():
            if pid in self.publishers and pid not in frames:
                pcm = ext.source.pull()
                if pcm is not None:
                    frames[pid] = pcm
            else:
                ext.source.skip()
        mix = self.mixer.mix(frames)
        seq = self.seq
        self.seq += 1
        speakers = self.publishers
        room_packets: list[tuple[bytes, int]] = []
        for packet in self.room_encoder.encode(mix.full, seq):
            payload, pts = bytes(packet), int(packet.pts)
            room_packets.append((payload, pts))
            self.deliver(payload, pts, speakers)
            if len(self.packet_taps):
                self.packet_taps.publish(packet)
            for sink in self.sinks:
                sink(packet)
        if self.group_taps:
            self._publish_groups(mix, frames, room_packets)
        if len(self.tick_taps):
            self.tick_taps.publish((seq, mix.full, frames))
        self.levels.add(mix.levels)
        if self.on_levels is not None and seq % LEVEL_EVERY == 0:
            self.on_levels(self.levels.report(speakers))
        for pid in speakers:
            speaker = self.participants.get(pid)
            if speaker is None or speaker.outlet is None:
                continue
            enc = self.encoders.setdefault(pid, OpusEncoder())
            for packet in enc.encode(mix.minus.get(pid, mix.full), seq):
                speaker.outlet.send(bytes(packet), int(packet.pts))

    def deliver(self, payload: bytes, pts: int, speakers: Set[str]) -> None:
        """One packet of the room's encode to every listener here (not ``speakers``, who get their
        own encode); it is also the next listener's first packet (``_first_packet``)."""
        self.last_packet = (payload, pts)
        for pid, part in self.participants.items():
            if part.outlet is not None and pid not in speakers:
                part.outlet.send(payload, pts)

    def _publish_groups(self, mix: Any, frames: dict[str, Pcm], room_packets: list[tuple[bytes, int]]) -> None:
        """Each group's mix without its own members: the room's packets while none of them is a
        publisher, else one encode of the mix minus the group (one per group, not per member)."""
        for group, tap in self.group_taps.items():
            if not len(tap):
                continue
            members = [pid for pid, ext in self.external.items() if ext.group == group and pid in self.publishers]
            if not members:
                self.group_encoders.pop(group, None)
                for payload, pts in room_packets:
                    tap.publish((pts, payload))
                continue
            enc = self.group_encoders.setdefault(group, OpusEncoder())
            for packet in enc.encode(mix.without([frames[p] for p in members if p in frames]), self.seq - 1):
                tap.publish((int(packet.pts), bytes(packet)))

    def add_external(self, pid: str, group: str, source: ExternalSource) -> None:
        """``pid`` speaks from another platform; heard when in ``publishers``, like a web speaker."""
        self.external[pid] = External(source, group)
        self.start()

    def remove_external(self, pid: str) -> None:
        self.external.pop(pid, None)

    def group_tap(self, group: str) -> FanOut[tuple[int, bytes]]:
        """(pts, Opus packet) of the mix without ``group``'s speakers, every tick while subscribed."""
        tap = self.group_taps.get(group)
        if tap is None:
            tap = self.group_taps[group] = FanOut(10)
        self.start()
        return tap

    # ---- participants --------------------------------------------------------------------------
    async def add_participant(self, pid: str, offer_sdp: str, publish: bool = False) -> str:
        """Answer a participant's offer; returns the answer SDP."""
        if not isinstance(offer_sdp, str) or not offer_sdp.startswith("v=0") or len(offer_sdp) > MAX_SDP:
            raise MediaError("sdp.invalid", detail="an SDP offer starts with v=0 and is at most 64 KiB")
        if pid in self.participants:
            await self.remove_participant(pid)
        config = RTCConfiguration(iceServers=[RTCIceServer(urls=u) for u in self.ice_servers])
        pc = RTCPeerConnection(configuration=config)
        ufrag = _UFRAG_SDP.search(offer_sdp)
        part = Participant(pid, pc, None, ufrag=ufrag.group(1) if ufrag else None)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and part.inbound is None:
                part.inbound = asyncio.create_task(self._read(part, track))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                self._first_packet(part)

        offer_sdp, dropped = filter_sdp(offer_sdp, self.allowed)
        if dropped:
            part.refused = True
            log.debug("room %s: %s's candidates outside %s dropped: %s", self.space_id, pid,
                      self.allowed.describe(), ", ".join(dropped))
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            if not any(t.kind == "audio" for t in pc.getTransceivers()):
                raise MediaError("sdp.no_audio", detail="the offer has no audio section")
            sender = pc.addTrack(Idle())
            await pc.setLocalDescription(await pc.createAnswer())
            part.outlet = Outlet(pc, sender)
        except MediaError:
            await pc.close()
            raise
        except Exception as e:
            await pc.close()
            # aiortc's words (and what they quote of the offer) stay in our log, not in the reply
            log.info("room %s: %s's offer refused: %s: %.200s", self.space_id, pid, type(e).__name__, e)
            raise MediaError("sdp.invalid", detail="the offer could not be read as a WebRTC audio offer") from None
        self.participants[pid] = part
        if publish:
            self.publishers.add(pid)
        self.start()
        return restrict_candidates(pc.localDescription.sdp, self.announce)

    def _first_packet(self, part: Participant) -> None:
        """A listener's first packet goes out the moment SRTP is ready, not at the next tick (up to
        20 ms later): the room's latest packet, which the next tick's continues. Called from aiortc's
        connection-state event, before any tick can have armed this outlet; sent now, not after the
        callback (the loop's native batch is flushed here). Speakers wait for their own encode."""
        if self.participants.get(part.pid) is not part or part.outlet is None or self.last_packet is None:
            return
        if part.pid in self.publishers:
            return
        part.outlet.send(*self.last_packet)
        chosen = engine()
        if chosen.module is not None:
            batch = batch_for(asyncio.get_running_loop(), chosen)
            if batch.groups:
                batch.flush()

    async def _read(self, part: Participant, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame: Any = await track.recv()
            except MediaStreamError:
                return
            if part.pid not in self.publishers:
                continue  # silenced at the server
            pcm = frame.to_ndarray()
            if pcm.shape[0] == 1 and frame.layout.name == "stereo":  # packed interleaved stereo
                pcm = pcm.reshape(-1, 2).mean(axis=1)
            mono = pcm.reshape(-1)[:FRAME_SAMPLES].astype(np.int16)
            if mono.size == FRAME_SAMPLES:
                part.buffer.append(mono)

    def set_publishers(self, ids: set[str]) -> None:
        before = self.publishers
        self.publishers = set(ids)
        for pid in before - self.publishers:  # from the next tick on they hear the room, not themselves
            self.encoders.pop(pid, None)
            if pid in self.participants:
                self.participants[pid].buffer.clear()

    async def add_candidate(self, pid: str, candidate: str | None, sdp_mid: str | None = None) -> bool:
        """A remote ICE candidate trickled after the participant's offer (``None``: no more will
        come). False when it is not added: it belongs to an offer this room no longer holds (the client
        offered again), or its address is outside the allowed networks (dropped without a word, as
        browsers offer every interface they have)."""
        part = self.participants.get(pid)
        if part is None:
            return False
        if candidate is None:
            if not part.refused:  # else its checks may still reach us (a peer-reflexive candidate): wait
                await part.pc.addIceCandidate(None)
            return True
        if not isinstance(candidate, str) or len(candidate) > MAX_CANDIDATE:
            raise MediaError("candidate.invalid", detail=f"a candidate is a string of at most {MAX_CANDIDATE} bytes")
        ufrag = _UFRAG.search(candidate)
        if ufrag is not None and part.ufrag is not None and ufrag.group(1) != part.ufrag:
            return False
        try:
            parsed = candidate_from_sdp(candidate.removeprefix("candidate:"))
            if parsed.component != 1 or parsed.protocol.lower() not in ("udp", "tcp") or not 0 < parsed.port < 65536:
                raise ValueError("not an RTP candidate")
        except (AssertionError, ValueError, IndexError) as e:  # the parser's words stay in the log
            log.debug("room %s: %s sent an unreadable candidate: %s", self.space_id, pid, e)
            raise MediaError("candidate.invalid", detail="not an ICE candidate line") from None
        if not self.allowed.allows(parsed.ip):
            part.refused = True
            log.debug("room %s: %s's candidate on %s outside %s dropped", self.space_id, pid, parsed.ip,
                      self.allowed.describe())
            return False
        mids = [t.mid for t in part.pc.getTransceivers()]
        parsed.sdpMid = sdp_mid if sdp_mid in mids else mids[0]
        await part.pc.addIceCandidate(parsed)
        return True

    async def remove_participant(self, pid: str) -> None:
        part = self.participants.pop(pid, None)
        self.encoders.pop(pid, None)
        if part is None:
            return
        if part.outlet is not None:
            part.outlet.close()  # the native stream's copy of the socket goes now, not when collected
        part.outlet = None
        if part.inbound is not None:
            part.inbound.cancel()
        await part.pc.close()
