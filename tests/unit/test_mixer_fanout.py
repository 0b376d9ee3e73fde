"""The room mix and the fan-out, with tones a listener would hear."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from adapters.webrtc.fanout import FanOut
from adapters.webrtc.mixer import Mixer, level_dbfs
from core.ports import FRAME_SAMPLES, SAMPLE_RATE


def tone(hz: float, amp: float = 0.3, phase0: int = 0) -> np.ndarray:  # type: ignore[type-arg]
    t = (np.arange(FRAME_SAMPLES) + phase0) / SAMPLE_RATE
    return (amp * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def peaks(pcm: np.ndarray) -> set[int]:  # type: ignore[type-arg]
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    freqs = np.fft.rfftfreq(pcm.size, 1 / SAMPLE_RATE)
    strong = spectrum > spectrum.max() * 0.2
    return {int(round(f / 50) * 50) for f in freqs[strong]}


def test_listeners_hear_everyone_speakers_not_themselves() -> None:
    # 20 ms frames give 50 Hz bins: tones on bin centres show as clean single peaks
    m = Mixer().mix({"a": tone(450), "b": tone(700)})
    assert peaks(m.full) == {450, 700}
    assert peaks(m.minus["a"]) == {700}
    assert peaks(m.minus["b"]) == {450}


def test_loud_speakers_clip_instead_of_wrapping() -> None:
    loud = np.full(FRAME_SAMPLES, 30000, dtype=np.int16)
    m = Mixer().mix({"a": loud, "b": loud})
    assert int(m.full.min()) == 32767  # int16 wrap-around would have gone negative


def test_levels_rise_fast_and_fall_smoothly() -> None:
    mixer = Mixer(smoothing=0.6)
    loud = mixer.mix({"a": tone(440, 0.5)}).levels["a"]
    assert -10 < loud < -6  # a 0.5-amplitude sine is about -9 dBFS RMS
    quiet = mixer.mix({"a": np.zeros(FRAME_SAMPLES, dtype=np.int16)}).levels["a"]
    assert loud > quiet > -90
    assert level_dbfs(np.zeros(FRAME_SAMPLES, dtype=np.int16)) == -90


def test_bad_frames_are_refused() -> None:
    with pytest.raises(ValueError, match="expected int16"):
        Mixer().mix({"a": np.zeros(480, dtype=np.int16)})
    assert Mixer().mix({}).full.sum() == 0


async def test_fanout_shares_packets_and_bounds_slow_listeners() -> None:
    fan: FanOut[bytes] = FanOut(depth=10)
    fast, slow = fan.subscribe("fast"), fan.subscribe("slow")
    got: list[bytes] = []
    for i in range(100):
        packet = bytes([i])
        fan.publish(packet)
        got.append(await fast.next())
    assert got == [bytes([i]) for i in range(100)] and fast.dropped == 0
    assert len(slow.queue) == 10 and slow.dropped == 90
    assert await slow.next() == bytes([90])  # the newest 200 ms survive
    waiter = asyncio.create_task(fast.next())
    await asyncio.sleep(0)
    fan.unsubscribe("fast")
    with pytest.raises(EOFError):
        await waiter
    assert len(fan) == 1
