"""Streaming speech-to-text for one speaker: resample, segment by voice activity, recognise.

Everything here is synchronous and confined to one worker thread per speaker at a time; the plugin
(``plugins/captions/__init__.py``) feeds it batches of 20 ms room frames off the event loop.

Back-ends: PocketSphinx (its US English model ships in its wheel: the offline default), Vosk and
faster-whisper (optional packages, used only with a local model directory: nothing is downloaded
at run time).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import av
import numpy as np
import numpy.typing as npt

from core.errors import Invalid

RATE = 16_000  # what every back-end and the voice activity detector take


class Recognizer(Protocol):
    def start(self) -> None: ...

    def feed(self, pcm: bytes) -> None: ...

    def finish(self) -> str: ...


class PocketSphinxRecognizer:
    def __init__(self, model_path: str = "") -> None:
        from pocketsphinx import Decoder

        kwargs: dict[str, Any] = {"samprate": RATE, "loglevel": "FATAL"}
        if model_path:
            kwargs["hmm"] = model_path
        self.decoder = Decoder(**kwargs)

    def start(self) -> None:
        self.decoder.start_utt()

    def feed(self, pcm: bytes) -> None:
        self.decoder.process_raw(pcm, False, False)

    def finish(self) -> str:
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp is not None else ""


class VoskRecognizer:
    def __init__(self, model_path: str) -> None:
        import vosk

        self.model = vosk.Model(model_path)
        self.rec: Any = None

    def start(self) -> None:
        import vosk

        self.rec = vosk.KaldiRecognizer(self.model, RATE)

    def feed(self, pcm: bytes) -> None:
        self.rec.AcceptWaveform(pcm)

    def finish(self) -> str:
        return str(json.loads(self.rec.FinalResult()).get("text", ""))


class WhisperRecognizer:
    """faster-whisper decodes whole utterances; the segmenter keeps them short (``max_utterance_s``)."""

    def __init__(self, model_path: str, language: str = "en") -> None:
        from faster_whisper import WhisperModel

        self.model = WhisperModel(model_path, device="cpu", compute_type="int8")
        self.language = language
        self.chunks: list[bytes] = []

    def start(self) -> None:
        self.chunks = []

    def feed(self, pcm: bytes) -> None:
        self.chunks.append(pcm)

    def finish(self) -> str:
        audio = np.frombuffer(b"".join(self.chunks), dtype=np.int16).astype(np.float32) / 32768.0
        segments, _ = self.model.transcribe(audio, language=self.language, beam_size=1, vad_filter=False)
        return " ".join(s.text.strip() for s in segments)


def recognizer_factory(backend: str, model_path: str = "", language: str = "en") -> Callable[[], Recognizer]:
    """Check the back-end can be used here, once, at set-up; then make one recognizer per speaker."""
    if backend == "pocketsphinx":
        try:
            import pocketsphinx  # noqa: F401
        except ImportError as e:
            raise Invalid("captions.backend_unavailable", detail=f"pocketsphinx is not installed ({e})") from None
        return lambda: PocketSphinxRecognizer(model_path)
    if not model_path:
        raise Invalid("captions.backend_unavailable",
                      detail=f"the {backend} back-end needs model_path (a local model directory)")
    if backend == "vosk":
        try:
            import vosk  # noqa: F401
        except ImportError:
            raise Invalid("captions.backend_unavailable", detail="pip install vosk for this back-end") from None
        return lambda: VoskRecognizer(model_path)
    if backend == "faster-whisper":
        try:
            import faster_whisper  # noqa: F401
        except ImportError:
            raise Invalid("captions.backend_unavailable", detail="pip install faster-whisper for this back-end") \
                from None
        return lambda: WhisperRecognizer(model_path, language)
    raise Invalid("captions.backend_unavailable", detail=f"unknown back-end {backend!r}")


@dataclass(frozen=True)
class Line:
    text: str
    start_s: float  # on the room's clock (tick seq * 0.02)
    end_s: float


class SpeakerStream:
    """One speaker: 48 kHz room frames in, finished caption lines out."""

    def __init__(self, make: Callable[[], Recognizer], *, max_utterance_s: float = 8.0, window_s: float = 0.3) -> None:
        from pocketsphinx import Endpointer

        self.ep = Endpointer(window=window_s, ratio=0.9, sample_rate=RATE)
        self.rec = make()
        self.resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        self.pending = bytearray()
        self.max_utterance_s = max_utterance_s
        self.origin_s: float | None = None  # room time of the first sample fed
        self.fed_s = 0.0  # seconds fed so far (what the endpointer's times count)
        self.utt_start: float | None = None
        self.utt_fed_s = 0.0
        self.next_seq = -1

    def feed(self, seq: int, frames: list[npt.NDArray[np.int16]]) -> list[Line]:
        """Frames are consecutive 20 ms room frames starting at tick ``seq``."""
        if self.origin_s is None or seq != self.next_seq:  # first audio, or back after a pause
            self.origin_s = seq * 0.02 - self.fed_s - len(self.pending) / 2 / RATE
        self.next_seq = seq + len(frames)
        pcm = np.concatenate(frames).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = 48_000
        for out in self.resampler.resample(frame):
            self.pending += out.to_ndarray().tobytes()
        return self._drain()

    def _drain(self) -> list[Line]:
        lines: list[Line] = []
        size = self.ep.frame_bytes
        step = self.ep.frame_length
        while len(self.pending) >= size:
            chunk = bytes(self.pending[:size])
            del self.pending[:size]
            self.fed_s += step
            was = self.ep.in_speech
            speech = self.ep.process(chunk)
            if speech is None:
                continue
            if not was:
                self.rec.start()
                self.utt_start = self.ep.speech_start
                self.utt_fed_s = 0.0
            self.rec.feed(speech)
            self.utt_fed_s += step
            if not self.ep.in_speech:
                lines.extend(self._finish(self.ep.speech_end))
            elif self.utt_fed_s >= self.max_utterance_s:  # a long talk is captioned in parts, not at its end
                lines.extend(self._finish(self.fed_s))
                self.rec.start()
                self.utt_start = self.fed_s
                self.utt_fed_s = 0.0
        return lines

    def _finish(self, end: float) -> list[Line]:
        text = " ".join(self.rec.finish().split())
        start = self.utt_start if self.utt_start is not None else end
        self.utt_start = None
        origin = self.origin_s or 0.0
        return [Line(text, round(origin + start, 2), round(origin + end, 2))] if text else []

    def flush(self) -> list[Line]:
        """The speaker went quiet or left: end what they were saying."""
        if not self.ep.in_speech or self.utt_start is None:
            return []
        return self._finish(self.fed_s)
