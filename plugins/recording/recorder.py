"""Writes one Space's recording: the mix of consenting speakers as Ogg/Opus, on the room's clock.

The recorder mixes the speakers itself from the room's per-speaker frames (``AudioTick``) so that
anyone who opted out is simply not added: their voice never reaches the file or a clip. A tick the
tap missed is written as silence, so a position in the file is always ``(seq - start_seq) * 0.02``
seconds and the timeline's offsets line up with the audio.
"""

from __future__ import annotations

import collections
import fractions
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from core.ports import FRAME_SAMPLES, SAMPLE_RATE, AudioTick

MAX_GAP_TICKS = 50 * 60  # a tap that lost more than a minute is restarted, not padded


def mix(tick: AudioTick, excluded: set[str]) -> npt.NDArray[np.int16]:
    acc = np.zeros(FRAME_SAMPLES, dtype=np.int32)
    for pid, pcm in tick.speakers.items():
        if pid not in excluded:
            acc += pcm[:FRAME_SAMPLES]
    return np.clip(acc, -32768, 32767).astype(np.int16)


class OggOpusWriter:
    """Opus in Ogg through PyAV (libopus), frame by frame, with explicit timestamps."""

    def __init__(self, path: Path, bitrate: int = 64_000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.container = av.open(str(path), "w", format="ogg")
        self.stream = self.container.add_stream("libopus", rate=SAMPLE_RATE, layout="mono")
        self.stream.bit_rate = bitrate
        self.samples = 0

    def write(self, pcm: npt.NDArray[np.int16]) -> None:
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self.samples
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self.samples += pcm.size
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE


def write_clip(path: Path, frames: list[npt.NDArray[np.int16]], bitrate: int = 64_000) -> float:
    """A clip from the recorder's recent frames; returns its length in seconds."""
    writer = OggOpusWriter(path, bitrate)
    for pcm in frames:
        writer.write(pcm)
    writer.close()
    return writer.seconds


class Recorder:
    """Fed tick by tick by the plugin; knows where it is in time for the timeline."""

    def __init__(self, path: Path, *, clip_ticks: int, bitrate: int = 64_000) -> None:
        self.writer = OggOpusWriter(path, bitrate)
        self.start_seq: int | None = None
        self.last_seq: int | None = None
        self.recent: collections.deque[npt.NDArray[np.int16]] = collections.deque(maxlen=clip_ticks)
        self.silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)

    def add(self, tick: AudioTick, excluded: set[str]) -> None:
        if self.start_seq is None:
            self.start_seq = self.last_seq = tick.seq - 1
        assert self.last_seq is not None
        gap = tick.seq - self.last_seq - 1
        if 0 < gap <= MAX_GAP_TICKS:
            for _ in range(gap):
                self._put(self.silence)
        elif gap > MAX_GAP_TICKS or gap < 0:  # the room restarted its clock: carry on from here
            self.start_seq = tick.seq - 1 - round(self.writer.seconds / 0.02)
        self._put(mix(tick, excluded))
        self.last_seq = tick.seq

    def _put(self, pcm: npt.NDArray[np.int16]) -> None:
        self.writer.write(pcm)
        self.recent.append(pcm)

    def offset(self, room_seconds: float | None = None) -> float:
        """Where in the file something happening now (or at room time ``room_seconds``) is."""
        if self.start_seq is None:
            return 0.0
        if room_seconds is None:
            return round(self.writer.seconds, 2)
        return round(max(0.0, room_seconds - (self.start_seq + 1) * 0.02), 2)

    def close(self) -> float:
        self.writer.close()
        return self.writer.seconds
