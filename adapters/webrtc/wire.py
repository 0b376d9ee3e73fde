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
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from typing import Any

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import SessionDescription

log = logging.getLogger(__name__)
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
MAX_BACKLOG = 64 * 1024  # bytes queued in the socket's transport before a slow peer's packets are dropped
_HEADER = struct.Struct("!BBHII")


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

    def __init__(self, pc: RTCPeerConnection, sender: RTCRtpSender) -> None:
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
        self.sent = 0
        self.dropped = 0
        self._srtp: Any = None
        self._ice: Any = None
        self._marker = 0x80

    def arm(self) -> bool:
        """Take the peer's SRTP session and ICE connection once DTLS is up; False until then."""
        if self._srtp is None:
            dtls = self.sender.transport
            if dtls.state != "connected" or dtls._tx_srtp is None:
                return False
            self._srtp = dtls._tx_srtp
            self._ice = dtls.transport._connection
        return True

    def send(self, payload: bytes, pts: int) -> None:
        """Protect and send one packet now; a peer whose socket is backed up loses it instead."""
        if self._srtp is None and not self.arm():
            return
        pair = self._ice._nominated.get(1)
        if pair is None:
            return
        transport = pair.protocol.transport
        if transport is None or transport.is_closing() or transport.get_write_buffer_size() > MAX_BACKLOG:
            self.dropped += 1
            return
        seq = self.seq
        self.seq = (seq + 1) & 0xFFFF
        header = _HEADER.pack(self._first, self._marker | self.payload_type, seq,
                              (self.ts_origin + pts) & 0xFFFFFFFF, self.ssrc)
        self._marker = 0
        try:
            transport.sendto(self._srtp.protect(header + self._ext + payload), pair.remote_addr)
        except Exception:  # one broken peer must not cost the rest of the room its tick
            if not self.dropped:
                log.exception("outlet %08x: sending failed", self.ssrc)
            self.dropped += 1
            return
        self.sent += 1
