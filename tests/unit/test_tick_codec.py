"""The room's audio as it crosses between processes (a consumer in one, the room in another)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from adapters.webrtc.ticks import decode_tick, encode_tick
from core.ports import FRAME_SAMPLES, AudioTick

# hypothesis's own array strategy: a frame of 960 samples drawn one by one is too slow on a busy machine
pcm = arrays(np.int16, FRAME_SAMPLES)


@given(seq=st.integers(0, 2**63), mix=pcm, speakers=st.dictionaries(st.text(min_size=1, max_size=40), pcm, max_size=3))
def test_a_tick_arrives_as_it_left(seq: int, mix: np.ndarray, speakers: dict[str, np.ndarray]) -> None:
    speakers = {k: v for k, v in speakers.items() if len(k.encode()) < 256}
    back = decode_tick(encode_tick(AudioTick(seq, mix, speakers)))
    assert back.seq == seq and np.array_equal(back.mix, mix)
    assert back.speakers.keys() == speakers.keys()
    assert all(np.array_equal(back.speakers[k], v) for k, v in speakers.items())


def test_a_cut_or_padded_tick_is_refused() -> None:
    data = encode_tick(AudioTick(7, np.zeros(FRAME_SAMPLES, np.int16), {"a": np.ones(FRAME_SAMPLES, np.int16)}))
    for bad in (data[:-1], data + b"x", data[:5]):
        with pytest.raises(ValueError, match="malformed audio tick"):
            decode_tick(bad)
