"""The room mix: one full mix for listeners and one mix-minus-self per speaker, every 20 ms.

Pure numpy on 48 kHz mono int16 frames of 960 samples. Summing in int32 and clipping once keeps the
cost at one pass over the speakers for the full mix; each speaker's mix-minus-self is the full sum
minus their own frame, so N speakers cost N subtractions, not N*(N-1) additions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from core.ports import FRAME_SAMPLES

Pcm = npt.NDArray[np.int16]
SILENCE: Pcm = np.zeros(FRAME_SAMPLES, dtype=np.int16)
FLOOR_DBFS = -90.0


def level_dbfs(frame: Pcm) -> float:
    """RMS level in dBFS (0 = full scale); silence is -90."""
    if not frame.size:
        return FLOOR_DBFS
    rms = math.sqrt(float(np.mean(np.square(frame, dtype=np.float64))))
    return FLOOR_DBFS if rms < 1.0 else max(FLOOR_DBFS, 20.0 * math.log10(rms / 32768.0))


@dataclass(frozen=True)
class Mix:
    full: Pcm
    minus: dict[str, Pcm]
    levels: dict[str, float]
    total: npt.NDArray[np.int32] | None = None  # the unclipped sum, for mixes without a group

    def without(self, frames: list[Pcm]) -> Pcm:
        """The mix minus several speakers at once (a platform whose members hear each other already):
        one subtraction per member of the group, one clip."""
        if self.total is None or not frames:
            return self.full
        rest = self.total.copy()
        for f in frames:
            rest -= f
        return np.clip(rest, -32768, 32767).astype(np.int16)


@dataclass
class Mixer:
    """Smoothed levels survive between ticks so "who is speaking" does not flicker."""

    smoothing: float = 0.6
    _levels: dict[str, float] = field(default_factory=dict)

    def mix(self, frames: dict[str, Pcm]) -> Mix:
        for sid, f in frames.items():
            if f.shape != (FRAME_SAMPLES,) or f.dtype != np.int16:
                raise ValueError(f"frame from {sid!r} is {f.dtype}{f.shape}, expected int16[{FRAME_SAMPLES}]")
        if not frames:
            return Mix(SILENCE, {}, {})
        total = np.zeros(FRAME_SAMPLES, dtype=np.int32)
        for f in frames.values():
            total += f
        full = np.clip(total, -32768, 32767).astype(np.int16)
        minus = {sid: np.clip(total - f, -32768, 32767).astype(np.int16) for sid, f in frames.items()}
        levels = {}
        for sid, f in frames.items():
            now = level_dbfs(f)
            prev = self._levels.get(sid, FLOOR_DBFS)
            levels[sid] = now if now > prev else self.smoothing * prev + (1 - self.smoothing) * now
        self._levels = levels
        return Mix(full, minus, levels, total)
