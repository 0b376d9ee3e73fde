"""Straight to the wire: the room's packets sent to every participant in one loop per tick.

aiortc's ``RTCRtpSender`` runs a task per peer that awaits its track, builds an ``RtpPacket``,
computes header extensions and walks four coroutine layers per packet: about 70 µs a packet here,
so one core carried some 280 listeners. The room already holds the one encoded packet; what each
listener needs of its own is a 12-byte RTP header (SSRC, sequence number, timestamp), one SRTP
protect (libsrtp, in C) and one ``sendto``. An ``Outlet`` does exactly that, synchronously, from the
room's tick.

aiortc still negotiates everything (ICE, DTLS, SRTP keys, the answer's SSRC and payload type) and
still runs the RTCP of each peer: its sender is given a track that never yields, so it sends nothing
itself (its sender reports therefore count no packets; receivers use them only for A/V sync and
stats, and there is no video to sync). Two private attributes are read once a peer is connected,
``RTCDtlsTransport._tx_srtp`` and aioice's nominated pair, because aiortc has no public way to send a
prepared RTP packet; the versions are pinned by the lock file and the room's media tests fail loudly
if either moves.

With the native engine (``fanout.choose_engine``) an Outlet instead holds a ``_fanout.Stream`` made
from the same SRTP master key and salt aiortc derived (``srtp_keys``) and a dup of the ICE socket;
``send`` only queues it in the loop's ``Batch``, which hands the whole tick to C in one call.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import weakref
from typing import Any

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import SessionDescription

from adapters.webrtc.fanout import Engine, choose_engine

log = logging.getLogger(__name__)
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
MAX_BACKLOG = 64 * 1024  # bytes queued in the socket's transport before a slow peer's packets are dropped
_HEADER = struct.Struct("!BBHII")
_engine: Engine | None = None


def engine() -> Engine:
    """The process's fan-out engine, chosen once (``fanout.choose_engine``)."""
    global _engine
    if _engine is None:
        _engine = choose_engine()
        if _engine.problem:
            log.error("fan-out: %s; sending with the %s engine", _engine.problem, _engine.name)
    return _engine


def srtp_keys(dtls: Any) -> tuple[str, bytes, bytes]:
    """(profile, master key, master salt) of the peer's outbound SRTP, derived as aiortc's
    ``RTCDtlsTransport._setup_srtp`` derives them for its tx ``pylibsrtp.Session`` (RFC 5764 4.2)."""
    name = dtls._ssl.get_selected_srtp_profile()
    profile = next(p for p in dtls._srtp_profiles if p.openssl_profile == name)
    view = dtls._ssl.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (profile.key_length + profile.salt_length))
    material = profile.get_key_and_salt(view, 1 if dtls._role == "server" else 0)
    return name.decode(), material[:profile.key_length], material[profile.key_length:]


class Batch:
    """One event loop's queued sends: flushed by one native call as soon as the room's tick returns."""

    def __init__(self, loop: asyncio.AbstractEventLoop, engine: Engine) -> None:
        self.loop, self.engine = loop, engine
        self.groups: list[tuple[list[Any], bytes, int]] = []

    def add(self, stream: Any, payload: bytes, pts: int) -> None:
        groups = self.groups
        if groups and groups[-1][1] is payload and groups[-1][2] == pts:
            groups[-1][0].append(stream)
            return
        if not groups:
            self.loop.call_soon(self.flush)
        groups.append(([stream], payload, pts))

    def flush(self) -> None:
        groups, self.groups = self.groups, []
        assert self.engine.module is not None
        try:
            self.engine.module.fanout(groups, self.engine.threads)
        except Exception:  # a bug here must not stop the room's tick; the streams count nothing
            log.exception("fan-out: the native batch failed")


_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Batch] = weakref.WeakKeyDictionary()


def batch_for(loop: asyncio.AbstractEventLoop, engine: Engine) -> Batch:
    batch = _batches.get(loop)
    if batch is None:
        batch = _batches[loop] = Batch(loop, engine)
    return batch


class Idle(MediaStreamTrack):
    """The track aiortc's sender waits on: it never yields, the outlet sends instead."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._stopped: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def recv(self) -> Any:
        await asyncio.shield(self._stopped)
        raise MediaStreamError

    def stop(self) -> None:
        if not self._stopped.done():
            self._stopped.set_result(None)
        super().stop()


class Outlet:
    """One peer's outbound audio: RTP headers of its own around the room's shared payloads."""

    def __init__(self, pc: RTCPeerConnection, sender: RTCRtpSender, engine_name: str | None = None) -> None:
        mid = next(t.mid for t in pc.getTransceivers() if t.sender is sender)
        media = next(m for m in SessionDescription.parse(pc.localDescription.sdp).media if m.rtp.muxId == mid)
        self.sender = sender
        self.payload_type = int(media.rtp.codecs[0].payloadType or 0)
        self.ssrc = media.ssrc[0].ssrc
        ext = next((e for e in media.rtp.headerExtensions if e.uri == MID_URI), None)
        value = (mid or "").encode()
        if ext is not None and value and 1 <= ext.id <= 14 and len(value) <= 16:
            # RFC 8285 one-byte form: 0xBEDE, length in words, then id/len, value, padding
            body = bytes([ext.id << 4 | (len(value) - 1)]) + value
            body += b"\0" * (-len(body) % 4)
            self._ext = struct.pack("!HH", 0xBEDE, len(body) // 4) + body
        else:
            self._ext = b""
        self._first = 0x90 if self._ext else 0x80
        self.seq = random.randrange(1 << 15)  # low half: far from a wrap, as aiortc and Chromium start
        self.ts_origin = random.getrandbits(32)
        self._sent = 0
        self._dropped = 0
        self._srtp: Any = None
        self._ice: Any = None
        self._marker = 0x80
        chosen = engine()
        self.engine = chosen.name if engine_name is None else engine_name
        if self.engine not in ("native", "python") or (self.engine == "native" and chosen.module is None):
            raise ValueError(f"no {engine_name!r} fan-out engine here (have: {chosen.name})")
        self._native = chosen if self.engine == "native" else None
        self._stream: Any = None  # native: the _fanout.Stream, its ICE pair and transport, the loop's batch
        self._pair: Any = None
        self._transport: Any = None
        self._batch: Batch | None = None
        self._closed = False

    @property
    def sent(self) -> int:
        return self._sent + (self._stream.sent if self._stream is not None else 0)

    @property
    def dropped(self) -> int:
        stream = self._stream
        return self._dropped + (stream.dropped + stream.errors if stream is not None else 0)

    def arm(self) -> bool:
        """Take the peer's SRTP session and ICE connection once DTLS is up; False until then."""
        if self._srtp is None:
            dtls = self.sender.transport
            if dtls.state != "connected" or dtls._tx_srtp is None:
                return False
            self._srtp = dtls._tx_srtp
            self._ice = dtls.transport._connection
        return True

    def _queue(self, pair: Any, payload: bytes, pts: int) -> bool:
        """Queue the packet for the tick's native batch; False when this peer must go the Python way."""
        if pair is not self._pair and not self._arm_native(pair):
            if self._native is None:
                return False
            self._dropped += 1
            return True
        if self._transport.is_closing():
            self._dropped += 1
            return True
        assert self._batch is not None
        self._batch.add(self._stream, payload, pts)
        return True

    def _arm_native(self, pair: Any) -> bool:
        """A native stream on this ICE pair's socket (aiortc's tx SRTP keys), continuing the numbering."""
        assert self._native is not None and self._native.module is not None
        roc = self._stream.roc if self._stream is not None else 0
        if self._stream is not None:
            self._retire()
        transport = pair.protocol.transport
        if transport is None or transport.is_closing():
            return False
        try:
            profile, key, salt = srtp_keys(self.sender.transport)
            self._stream = self._native.module.Stream(
                profile, key, salt, self.ssrc, self.payload_type, self.seq, self.ts_origin, self._ext,
                transport.get_extra_info("socket").fileno(), tuple(pair.remote_addr[:2]), roc,
                marker=self._marker != 0)
        except Exception:  # an unexpected profile or address: this peer goes the Python way
            log.exception("outlet %08x: native stream refused; sending from Python", self.ssrc)
            self._native = None
            return False
        self._pair, self._transport = pair, transport
        self._batch = batch_for(asyncio.get_running_loop(), self._native)
        return True

    def close(self) -> None:
        """The peer is leaving: release the native stream's socket now and send nothing more."""
        self._closed = True
        if self._stream is not None:
            self._retire()

    def _retire(self) -> None:
        """Close the native stream, keeping its counts and where its numbering stopped."""
        old, self._stream = self._stream, None
        self._sent += old.sent
        self._dropped += old.dropped + old.errors
        self.seq = old.seq
        self._marker = 0
        old.close()

    def send(self, payload: bytes, pts: int) -> None:
        """Protect and send one packet now (native: queue it for this tick's batch); a peer whose
        socket is backed up loses it instead."""
        if self._closed or (self._srtp is None and not self.arm()):
            return
        pair = self._ice._nominated.get(1)
        if pair is None:
            return
        if self._native is not None and self._queue(pair, payload, pts):
            return
        transport = pair.protocol.transport
        if transport is None or transport.is_closing() or transport.get_write_buffer_size() > MAX_BACKLOG:
            self._dropped += 1
            return
        seq = self.seq
        self.seq = (seq + 1) & 0xFFFF
        header = _HEADER.pack(self._first, self._marker | self.payload_type, seq,
                              (self.ts_origin + pts) & 0xFFFFFFFF, self.ssrc)
        self._marker = 0
        try:
            transport.sendto(self._srtp.protect(header + self._ext + payload), pair.remote_addr)
        except Exception:  # one broken peer must not cost the rest of the room its tick
            if not self._dropped:
                log.exception("outlet %08x: sending failed", self.ssrc)
            self._dropped += 1
            return
        self._sent += 1
