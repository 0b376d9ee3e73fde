"""The audio tick codec: how one process's room audio crosses to a consumer in another process
(``/internal/media/{space_id}/ticks``), kept apart so both ends and the tests share one format."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from core.ports import FRAME_SAMPLES, AudioTick

_TICK_HEAD = struct.Struct("<QH")
_PCM_BYTES = FRAME_SAMPLES * 2


def encode_tick(tick: AudioTick) -> bytes:
    """seq, speaker count, the mix, then each speaker's id and frame: 16-bit little-endian PCM."""
    parts = [_TICK_HEAD.pack(tick.seq, len(tick.speakers)), tick.mix.astype("<i2").tobytes()]
    for pid, pcm in tick.speakers.items():
        raw = pid.encode()
        parts += [bytes([len(raw)]), raw, pcm.astype("<i2").tobytes()]
    return b"".join(parts)


def decode_tick(data: bytes) -> AudioTick:
    """The inverse of ``encode_tick``; anything else raises ``ValueError``."""
    try:
        seq, count = _TICK_HEAD.unpack_from(data)
        at = _TICK_HEAD.size
        mix = np.frombuffer(data, dtype="<i2", count=FRAME_SAMPLES, offset=at).astype(np.int16)
        at += _PCM_BYTES
        speakers: dict[str, Any] = {}
        for _ in range(count):
            n = data[at]
            pid = data[at + 1:at + 1 + n].decode()
            at += 1 + n
            speakers[pid] = np.frombuffer(data, dtype="<i2", count=FRAME_SAMPLES, offset=at).astype(np.int16)
            at += _PCM_BYTES
    except (struct.error, IndexError, ValueError) as e:  # numpy says "buffer is smaller" with ValueError
        raise ValueError(f"a malformed audio tick ({e})") from None
    if at != len(data):
        raise ValueError("a malformed audio tick (trailing bytes)")
    return AudioTick(seq, mix, speakers)
