"""Speech made at test time with espeak-ng (Debian package), for captions tests and the benchmark."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

VOICE = "en-us+m1"


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, rate: int = 48_000, voice: str = VOICE) -> npt.NDArray[np.int16]:
    """``text`` spoken by espeak-ng, as mono signed 16-bit PCM at ``rate``."""
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True, capture_output=True)
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        out: list[npt.NDArray[Any]] = []
        with av.open(str(wav)) as f:
            for frame in f.decode(audio=0):
                out.extend(r.to_ndarray().reshape(-1) for r in resampler.resample(frame))
        out.extend(r.to_ndarray().reshape(-1) for r in resampler.resample(None))
    return np.concatenate(out).astype(np.int16)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance over words, divided by the reference's length."""
    r, h = reference.lower().split(), hypothesis.lower().split()
    d = np.zeros((len(r) + 1, len(h) + 1), dtype=int)
    d[:, 0] = range(len(r) + 1)
    d[0, :] = range(len(h) + 1)
    for i in range(1, len(r) + 1):
        for j in range(1, len(h) + 1):
            d[i, j] = min(d[i - 1, j] + 1, d[i, j - 1] + 1, d[i - 1, j - 1] + (r[i - 1] != h[j - 1]))
    return float(d[len(r), len(h)]) / max(1, len(r))
