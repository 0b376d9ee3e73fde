"""Live captions: real-time factor, latency, accuracy and capacity of one speaker's pipeline.

    python -m bench.captions [--backend pocketsphinx] [--model PATH] [--lines N] --json

Speech is made by espeak-ng (Debian package) from fixed lines with pauses between them, as 48 kHz
room frames. The same ``SpeakerStream`` the captions plugin runs (resample to 16 kHz, voice
activity segmentation, recognition) is fed twice:

* as fast as it goes, for the real-time factor: CPU seconds per second of audio (``rtf``), and so
  ``speakers_per_core`` = 1 / rtf;
* at real-time pace in 200 ms batches through the plugin's worker processes, from an asyncio loop
  as the server does, for latency: the time from the end of a spoken line to its caption line
  coming out (``latency_p50_s``); and for the longest the event loop was held up meanwhile
  (``loop_stall_max_ms``: the room mixes every 20 ms with a 60 ms jitter buffer).

``wer`` is the word error rate over all lines. Targets with PocketSphinx: rtf <= 0.3, latency p50 < 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import numpy as np
import numpy.typing as npt

from bench.speech import speak, word_error_rate
from plugins.captions.engine import Line, SpeakerStream, recognizer_factory
from plugins.captions.worker import WorkerConfig, WorkerPool

LINES = [
    "please raise your hand if you want to speak",
    "thank you all for joining this space",
    "we are going to talk about music today",
    "i have a question about the schedule",
    "welcome to the show",
    "i think the new album is really good",
    "what time does the meeting start",
    "let us take a few questions from the audience",
    "good morning everyone",
    "thank you very much",
]
BATCH = 10  # 20 ms frames per hand-off, as in the plugin


def frames_of(pcm: npt.NDArray[np.int16]) -> list[npt.NDArray[np.int16]]:
    n = pcm.size // 960
    return [pcm[i * 960:(i + 1) * 960] for i in range(n)]


def run_fast(stream: SpeakerStream, frames: list[npt.NDArray[np.int16]]) -> tuple[list[Line], float]:
    cpu = time.thread_time()
    out: list[Line] = []
    for i in range(0, len(frames), BATCH):
        out += stream.feed(i, frames[i:i + BATCH])
    out += stream.flush()
    return out, time.thread_time() - cpu


async def run_paced(config: WorkerConfig, frames: list[npt.NDArray[np.int16]]) \
        -> tuple[list[tuple[Line, float]], float]:
    """Feed in real time through a worker process; each line with the wall-clock second (from the
    start) it came out, and the event loop's longest stall (ms) while that went on."""
    out: list[tuple[Line, float]] = []
    pool = WorkerPool(config, 1)
    await pool.start()
    stalls: list[float] = []

    async def watch() -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            stalls.append(time.perf_counter() - t - 0.005)

    watcher = asyncio.create_task(watch())
    try:
        t0 = time.monotonic()
        for i in range(0, len(frames), BATCH):
            due = t0 + (i + BATCH) * 0.02  # a batch is handed over once its last frame has arrived
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            for line in await pool.feed("bench", i, frames[i:i + BATCH]):
                out.append((line, time.monotonic() - t0))
    finally:
        watcher.cancel()
        await pool.close()
    return out, max(stalls) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backend", default="pocketsphinx", choices=["pocketsphinx", "vosk", "faster-whisper"])
    ap.add_argument("--model", default="", help="local model directory (vosk, faster-whisper)")
    ap.add_argument("--lines", type=int, default=len(LINES), help="how many of the fixed lines to speak")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    lines = LINES[: max(1, min(args.lines, len(LINES)))]
    gap = np.zeros(48_000, dtype=np.int16)
    pcm = np.concatenate([gap] + [np.concatenate([speak(t), gap, gap]) for t in lines])
    frames = frames_of(pcm)
    audio_s = len(frames) * 0.02
    make = recognizer_factory(args.backend, args.model)

    fast, cpu_s = run_fast(SpeakerStream(make), frames)
    rtf = cpu_s / audio_s
    said = " ".join(line.text for line in fast)
    wer = word_error_rate(" ".join(lines), said)

    paced, stall_ms = asyncio.run(run_paced(WorkerConfig(args.backend, args.model), frames))
    latencies = [max(0.0, at - line.end_s) for line, at in paced]
    result = {
        "backend": args.backend,
        "rtf": round(rtf, 3),
        "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "latency_max_s": round(max(latencies), 3) if latencies else None,
        "loop_stall_max_ms": round(stall_ms, 1),
        "wer": round(wer, 3),
        "speakers_per_core": round(1 / rtf, 1) if rtf > 0 else None,
        "audio_s": round(audio_s, 1),
        "lines_spoken": len(lines),
        "caption_lines": len(fast),
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
