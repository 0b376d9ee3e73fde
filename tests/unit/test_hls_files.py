"""HLS directories do not pile up: what ended Spaces left behind goes; a live Space's stays."""

from __future__ import annotations

import os
import time
from pathlib import Path

from adapters.webrtc.hls import PLAYLIST, remove_stale


def test_stale_hls_directories_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    live, ended, empty = tmp_path / "live-key", tmp_path / "ended-key", tmp_path / "empty-key"
    for d in (live, ended, empty):
        d.mkdir()
    (live / PLAYLIST).write_text("#EXTM3U\n")
    (ended / PLAYLIST).write_text("#EXTM3U\n#EXT-X-ENDLIST\n")
    (ended / "s1.m4s").write_bytes(b"x")
    hour_ago = time.time() - 3600
    os.utime(ended / PLAYLIST, (hour_ago, hour_ago))
    os.utime(empty, (hour_ago, hour_ago))
    assert remove_stale(tmp_path, 600) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["live-key"]
    assert remove_stale(tmp_path / "missing", 600) == 0
