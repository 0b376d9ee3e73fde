"""The room's single Opus encode, also written as HLS for audiences past what WebRTC fan-out serves.

No second encode: the very packets listeners get over WebRTC are muxed (PyAV, ffmpeg's ``hls``
muxer) into fragmented-MP4 segments of ``segment_s`` and a rolling playlist of ``list_size``
segments, in ``<hls_dir>/<space_id>-<key>/``. A static file server (nginx) serves that directory
after asking the app whether each request's per-person token is valid (``HlsAccess``,
docs/deploy.md); the app serves it too, at ``/hls/<space_id>-<key>/index.m3u8?t=<token>``.

- Segment numbers start at the wall-clock second, so a Space that moves to another media process
  (docs/deploy.md) goes on with higher numbers: ffmpeg's ``append_list`` keeps the old segments in the
  playlist and marks the change with ``EXT-X-DISCONTINUITY``.
- Files are written under temporary names and renamed (``temp_file``): a server never serves half
  a segment. ``EXT-X-PROGRAM-DATE-TIME`` on every segment lets players (and bench.hls_listeners)
  measure latency.
- Muxing and disk writes run in one thread per room, fed by a bounded queue: the room's 20 ms tick
  never waits for a disk; if the disk cannot keep up, packets are dropped and counted.
- ``EXT-X-ENDLIST`` is written only when the Space ends, not when a process stops (the Space goes on
  elsewhere).
"""

from __future__ import annotations

import base64
import contextlib
import fractions
import hmac
import logging
import mimetypes
import queue
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import av

from core.ports import SAMPLE_RATE

log = logging.getLogger(__name__)
PLAYLIST = "index.m3u8"
QUEUE_PACKETS = 500  # 10 s of 20 ms packets
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)

mimetypes.add_type("application/vnd.apple.mpegurl", ".m3u8")
mimetypes.add_type("video/iso.segment", ".m4s")


class HlsWriter:
    def __init__(self, directory: Path, *, segment_s: float = 1.0, list_size: int = 6, bit_rate: int = 48_000) -> None:
        self.directory = directory
        self.segment_s, self.list_size, self.bit_rate = segment_s, list_size, bit_rate
        self.queue: queue.Queue[tuple[bytes, int] | None] = queue.Queue(QUEUE_PACKETS)
        self.dropped = 0
        self.ended = False
        self.failed = False
        self.thread = threading.Thread(target=self._run, name=f"hls {directory.name}", daemon=True)
        self.thread.start()

    def write(self, packet: bytes, pts: int) -> None:
        """One Opus packet (20 ms) with its pts in 1/48000 s; never blocks."""
        if self.failed:
            return
        try:
            self.queue.put_nowait((packet, pts))
        except queue.Full:
            self.dropped += 1
            if self.dropped in (1, 1000):
                log.warning("HLS for %s cannot keep up; %d packets dropped", self.directory.name, self.dropped)

    def close(self, *, ended: bool) -> None:
        """Finish the last segment; ``ended`` (the Space is over) also ends the playlist."""
        self.ended = ended
        with contextlib.suppress(queue.Full):
            self.queue.put(None, timeout=2.0)
        self.thread.join(timeout=10.0)

    def _open(self) -> tuple[Any, Any]:
        self.directory.mkdir(parents=True, exist_ok=True)
        out = av.open(str(self.directory / PLAYLIST), "w", format="hls", options={
            "hls_time": f"{self.segment_s:g}",
            "hls_list_size": str(self.list_size),
            "hls_segment_type": "fmp4",
            "hls_fmp4_init_filename": "init.mp4",
            "hls_segment_filename": str(self.directory / "s%d.m4s"),
            "hls_flags": "delete_segments+independent_segments+program_date_time+temp_file+append_list"
                         "+discont_start+omit_endlist",
            "hls_delete_threshold": "2",
            "start_number": str(int(time.time())),
        })
        stream = out.add_stream("libopus", rate=SAMPLE_RATE)  # carries the codec parameters; never encodes
        stream.codec_context.layout = "mono"
        stream.codec_context.format = "s16"
        stream.codec_context.bit_rate = self.bit_rate
        stream.time_base = TIME_BASE
        return out, stream

    def _run(self) -> None:
        out: Any = None
        try:
            out, stream = self._open()
            first: int | None = None
            while (item := self.queue.get()) is not None:
                data, pts = item
                if first is None:
                    first = pts
                p = av.Packet(data)
                p.pts = p.dts = pts - first
                p.time_base = TIME_BASE
                p.stream = stream
                out.mux(p)
        except Exception:
            self.failed = True
            log.exception("HLS for %s failed; listeners on HLS lose this Space", self.directory.name)
        finally:
            if out is not None:
                with contextlib.suppress(Exception):
                    out.close()
            if self.ended:
                with contextlib.suppress(OSError), (self.directory / PLAYLIST).open("a") as f:
                    f.write("#EXT-X-ENDLIST\n")
            while True:  # a failed writer must not leave ``write`` filling a queue nobody reads
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    break


def remove(directory: Path) -> None:
    """A finished Space's files (once nobody can be listening any more)."""
    shutil.rmtree(directory, ignore_errors=True)


def remove_stale(root: Path, older_than_s: float) -> int:
    """Directories whose playlist has not changed for ``older_than_s`` (their Space ended, or its
    media process died and nobody took it over); a live one is rewritten every segment."""
    gone = 0
    if not root.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    for d in root.iterdir():
        playlist = d / PLAYLIST
        try:
            changed = playlist.stat().st_mtime if playlist.exists() else d.stat().st_mtime
        except OSError:
            continue
        if d.is_dir() and changed < cutoff:
            remove(d)
            gone += 1
    return gone


# ---- who may fetch: per-person, short-lived, revocable URLs ------------------------------------------
TOKEN_TTL_S = 60  # a grant's life; the page asks for a fresh one over its socket before it runs out
TOKEN_PARAM = "t"
_REVOKES = ("participant.left", "account.blocked", "ticket.changed", "subscription.changed")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class HlsAccess:
    """Signs and checks the ``?t=`` token of every HLS request: bound to one Space, one person
    (account id, or a guest's connection id), the time it was issued and its expiry.

    A token is given only after the same access check as an offer (signaling); every request then
    costs an HMAC and one dict lookup here, no database: ``revoked`` remembers, per Space and person,
    when access was last taken away (a refund, a block, a removal, leaving), fed by the bus's events
    from every process. Tokens issued before that moment are refused; a person let back in gets a
    new one. Entries older than a token's life are forgotten (such tokens have expired anyway)."""

    def __init__(self, key: str, ttl_s: int = TOKEN_TTL_S) -> None:
        self._key = hmac.new(key.encode(), b"spacebridge-hls-access", "sha256").digest()
        self.ttl_s = ttl_s
        self.revoked: dict[tuple[str, str], float] = {}

    def _sign(self, space_id: str, subject: str, issued_ms: int, expires: int) -> str:
        msg = f"{space_id}|{subject}|{issued_ms}|{expires}".encode()
        return _b64(hmac.new(self._key, msg, "sha256").digest()[:16])

    def issue(self, space_id: str, subject: str, now: float | None = None) -> str:
        now = time.time() if now is None else now
        issued_ms, expires = int(now * 1000), int(now) + self.ttl_s
        return f"{_b64(subject.encode())}.{issued_ms}.{expires}.{self._sign(space_id, subject, issued_ms, expires)}"

    def subject(self, space_id: str, token: str, now: float | None = None) -> str | None:
        """Whose valid token ``token`` is for ``space_id``, or None (forged, another Space's, expired,
        revoked, malformed)."""
        now = time.time() if now is None else now
        parts = token.split(".") if 0 < len(token) <= 400 else []
        if len(parts) != 4 or not parts[1].isdigit() or not parts[2].isdigit():
            return None
        try:
            subject = _unb64(parts[0]).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        issued_ms, expires = int(parts[1]), int(parts[2])
        if not hmac.compare_digest(parts[3], self._sign(space_id, subject, issued_ms, expires)):
            return None
        if expires < now or issued_ms / 1000 <= self.revoked.get((space_id, subject), 0.0):
            return None
        return subject

    def revoke(self, space_id: str, subject: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if len(self.revoked) >= 10_000:
            self.revoked = {k: t for k, t in self.revoked.items() if t > now - self.ttl_s}
        self.revoked[(space_id, subject)] = now

    async def on_event(self, event: Any) -> None:
        """Bus handler: access taken away (a paid ticket never revokes; other states may have)."""
        if getattr(event, "name", None) not in _REVOKES or getattr(event, "status", None) == "paid":
            return
        self.revoke(event.space_id, event.account_id)


def rewrite_playlist(text: str, query: str) -> str:
    """The playlist as written, with ``?<query>`` on every segment and on the init segment's URI, so
    a player's relative requests carry the person's token (nginx's ``sub_filter`` does the same)."""
    out = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            line = f"{line}?{query}"
        elif line.startswith("#EXT-X-MAP:"):
            line = line.replace('.mp4"', f'.mp4?{query}"')
        out.append(line)
    return "\n".join(out) + "\n"
