"""One Discord speaker's Opus packets to 20 ms PCM frames for the room's tick: a small jitter buffer.

Packets arrive from the voice socket in any order (``push``, on the event loop); the room asks for a
frame every tick (``pull``). Playback starts once ``depth`` packets are buffered (40 ms), reorders by
RTP sequence, and conceals a lost packet with Opus in-band FEC when the following packet is already
here, else with Opus packet-loss concealment; a packet merely late is concealed while waiting for
it, and a buffer that keeps growing (the sender's clock is fast) drops a frame to catch up. A
speaker who stops sending costs nothing: after a couple of concealed frames the stream goes idle
and ``pull`` returns None without decoding, until packets arrive again. Late packets (behind what
was played) are dropped; if the buffer grows past ``max_depth`` the oldest are skipped, so latency
stays bounded whatever the network does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import discord.opus
import numpy as np

from adapters.webrtc.mixer import Pcm
from core.ports import FRAME_SAMPLES

DEPTH = 2  # packets buffered before playback starts (40 ms)
MAX_DEPTH = 10  # packets (200 ms): more and the oldest are skipped
DRIFT = 3  # packets beyond ``depth`` tolerated before one is dropped to catch up
CONCEAL = 2  # frames concealed after the last packet before the stream goes idle


def _mono(stereo: bytes) -> Pcm:
    """discord.py's decoder gives 48 kHz interleaved stereo; the room mixes mono 960-sample frames."""
    pcm: Pcm = np.frombuffer(stereo, dtype=np.int16).reshape(-1, 2).mean(axis=1).astype(np.int16)
    if pcm.size >= FRAME_SAMPLES:
        return pcm[:FRAME_SAMPLES]
    return np.concatenate([pcm, np.zeros(FRAME_SAMPLES - pcm.size, dtype=np.int16)])


@dataclass
class Stats:
    received: int = 0
    decoded: int = 0
    fec: int = 0
    concealed: int = 0
    late: int = 0
    skipped: int = 0


@dataclass
class SpeakerStream:
    """``adapters.webrtc.room.ExternalSource`` for one Discord member (one SSRC)."""

    depth: int = DEPTH
    max_depth: int = MAX_DEPTH
    stats: Stats = field(default_factory=Stats)
    arrived: float = 0.0  # loop time of the newest packet (the bench's latency probe)
    _packets: dict[int, bytes] = field(default_factory=dict)  # extended sequence number -> Opus
    _top: int | None = None  # highest extended sequence number seen
    _next: int | None = None  # the next sequence number to play; None while idle
    _misses: int = 0
    _decoder: discord.opus.Decoder | None = None

    def push(self, seq16: int, opus: bytes) -> None:
        seq = self._extend(seq16)
        self.stats.received += 1
        if self._next is not None and seq < self._next:
            self.stats.late += 1
            return
        self._packets[seq] = opus
        while len(self._packets) > self.max_depth:
            oldest = min(self._packets)
            del self._packets[oldest]
            self.stats.skipped += 1
            if self._next is not None and self._next <= oldest:
                self._next = oldest + 1

    def _extend(self, seq16: int) -> int:
        """RTP's 16-bit sequence number, unwrapped around the highest one seen."""
        if self._top is None:
            self._top = seq16
            return seq16
        delta = (seq16 - self._top) & 0xFFFF
        seq = self._top + delta if delta < 0x8000 else self._top + delta - 0x10000
        self._top = max(self._top, seq)
        return seq

    def pull(self) -> Pcm | None:
        if self._next is None:
            if len(self._packets) < self.depth:
                return None
            self._next = min(self._packets)
        seq = self._next
        if len(self._packets) > self.depth + DRIFT and seq in self._packets:  # the sender's clock runs fast
            del self._packets[seq]  # (or a burst came): one frame dropped keeps the delay near ``depth``
            seq += 1
            self.stats.skipped += 1
        opus = self._packets.pop(seq, None)
        decoder = self._decoder = self._decoder or discord.opus.Decoder()  # type: ignore[no-untyped-call]
        if opus is None and not self._packets:  # late, or they stopped talking: wait for it, concealing
            if self._misses >= CONCEAL:  # stopped (or left): idle, nothing more to decode
                self._next, self._misses = None, 0
                return None
            self._misses += 1
            self.stats.concealed += 1
            try:
                return _mono(decoder.decode(None, fec=False))
            except discord.opus.OpusError:
                return None
        self._next = seq + 1
        try:
            if opus is not None:
                self._misses = 0
                self.stats.decoded += 1
                return _mono(decoder.decode(opus, fec=False))
            following = self._packets.get(seq + 1)  # lost: later ones are here
            if following is not None:
                self.stats.fec += 1
                return _mono(decoder.decode(following, fec=True))
            self.stats.concealed += 1
            return _mono(decoder.decode(None, fec=False))
        except discord.opus.OpusError:  # a corrupt frame: silence this tick, the stream goes on
            return None

    def skip(self) -> None:
        """Not heard now: forget what arrived (nothing decoded), start afresh when heard again."""
        if self._packets or self._next is not None:
            self._packets.clear()
            self._next, self._misses = None, 0

    @property
    def buffered(self) -> int:
        return len(self._packets)
