"""Discord voice received: Stage members' audio into the Space's room, and the room played back to
the Stage without them (mix-minus).

discord.py (2.7) has no public receive API. What this module relies on, all in the version the lock
pins, each used in one place:

* ``VoiceConnectionState(voice_client, hook=...)``: the voice WebSocket hands every JSON frame to the
  hook after handling it; ``VoiceClient.create_connection_state`` is overridden to pass ours. We read
  SPEAKING (op 5: ``user_id``, ``ssrc``), CLIENTS_CONNECT (11) and CLIENT_DISCONNECT (13).
* ``VoiceConnectionState.add_socket_listener``/``remove_socket_listener``: callbacks on the UDP
  reader thread, for every datagram (IP discovery uses the same hook).
* ``VoiceConnectionState.secret_key``, ``.mode``, ``.dave_protocol_version`` and ``.dave_session`` (a
  ``davey.DaveSession`` that discord.py keeps in the MLS group as the voice gateway drives it).
* ``VoiceClient.supported_modes`` and ``_encrypt_<mode>``: we add ``aead_aes256_gcm_rtpsize``
  (Discord's preferred mode) beside discord.py's ``aead_xchacha20_poly1305_rtpsize``.

Per datagram (on the reader thread): RTP header, transport decryption with the negotiated mode (the
header and the RTP extension's 4-byte head are the associated data; the extension's body is
encrypted and stripped), then, when DAVE is active (protocol version >= 1), DAVE decryption for the
sender the SSRC maps to (``dave_session.decrypt(user_id, MediaType.audio, frame)``; frames sent in
the clear pass while the session allows passthrough). A frame that fails any step, or whose SSRC is
not mapped to a member yet, is counted and dropped: it never reaches the Opus decoder. Good frames go
to the member's jitter buffer on the event loop (``jitter.SpeakerStream``), which the room's tick
decodes as that member's voice (``adapters.webrtc.room.ExternalSource``). When another process serves
the Space's media, ``StageBridge`` forwards the frames to it instead (``/internal/media/{id}/speakers``),
where they enter the same jitter buffer and mix, and plays what it sends back to the Stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import davey
import discord
import nacl.bindings
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from discord.voice_state import VoiceConnectionState

from adapters.discord.jitter import SpeakerStream
from adapters.webrtc.internal import encode_speaker
from adapters.webrtc.placement import Node
from adapters.webrtc.room import MediaError
from core.model.space import SpaceState
from core.ports import FRAME_SAMPLES
from core.redis_support import Backoff

if TYPE_CHECKING:
    from adapters.webrtc.room import Room
    from adapters.webrtc.router import Rooms

log = logging.getLogger(__name__)

OPUS_PT = 0x78  # Discord's Opus payload type (120)
OP_SPEAKING, OP_CLIENTS_CONNECT, OP_CLIENT_DISCONNECT = 5, 11, 13
MODES = ("aead_aes256_gcm_rtpsize", "aead_xchacha20_poly1305_rtpsize")
UPLINK_DEPTH = 100  # forwarded frames waiting for the owner's socket (~1 s for two speakers); oldest dropped


@dataclass
class RxStats:
    packets: int = 0
    transport_failures: int = 0  # not ours, tampered with, or the key changed under us
    dave_failures: int = 0  # DAVE said no: not in the group yet, wrong epoch, tampered
    unmapped: int = 0  # SSRC not (yet) announced by SPEAKING: cannot pick the sender's key
    passthrough: int = 0

    @property
    def decrypt_failures(self) -> int:
        return self.transport_failures + self.dave_failures


def transport_decrypt(mode: str, key: bytes, data: bytes) -> tuple[int, int, bytes]:
    """``(ssrc, sequence, payload)`` of one RTP datagram of an ``*_rtpsize`` mode; ValueError otherwise."""
    if len(data) < 12 + 4 + 16 or data[0] >> 6 != 2 or data[1] & 0x7F != OPUS_PT:
        raise ValueError("not an Opus RTP packet")
    cc, has_ext = data[0] & 0x0F, bool(data[0] & 0x10)
    head = 12 + 4 * cc + (4 if has_ext else 0)
    if len(data) < head + 4 + 16:
        raise ValueError("short RTP packet")
    aad, box, nonce = data[:head], data[head:-4], data[-4:]
    try:
        if mode == "aead_xchacha20_poly1305_rtpsize":
            plain = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(box, aad, nonce + bytes(20), key)
        elif mode == "aead_aes256_gcm_rtpsize":
            plain = AESGCM(key).decrypt(nonce + bytes(8), box, aad)
        else:
            raise ValueError(f"mode {mode} is not received")
    except ValueError:
        raise
    except Exception as e:  # nacl's CryptoError, cryptography's InvalidTag
        raise ValueError(f"transport decryption failed ({type(e).__name__})") from None
    if has_ext:  # the extension body (its length in 32-bit words is in the clear head) is inside
        words = struct.unpack_from(">H", data, head - 2)[0]
        plain = plain[4 * words:]
    seq, ssrc = struct.unpack_from(">H", data, 2)[0], struct.unpack_from(">I", data, 8)[0]
    return ssrc, seq, plain


class Receiver:
    """One voice connection's incoming audio, by member. ``on_stream``/``on_gone`` run on the loop."""

    def __init__(self, state: VoiceConnectionState, loop: asyncio.AbstractEventLoop,
                 on_stream: Callable[[int, SpeakerStream], None], on_gone: Callable[[int], None],
                 ignore: int, forward: Callable[[int, int, bytes], bool] | None = None) -> None:
        self.state, self.loop = state, loop
        self.on_stream, self.on_gone = on_stream, on_gone
        self.forward = forward  # True: the frame went elsewhere (another process's room), not to the stream
        self.ignore = ignore  # the bot's own user id
        self.ssrc_user: dict[int, int] = {}  # written on the loop, read on the reader thread
        self.streams: dict[int, SpeakerStream] = {}  # user id -> stream (loop only)
        self.stats = RxStats()
        self._listening = False

    def start(self) -> None:
        if not self._listening:
            self.state.add_socket_listener(self._datagram)
            self._listening = True

    def stop(self) -> None:
        if self._listening:
            self.state.remove_socket_listener(self._datagram)
            self._listening = False
        for uid in list(self.streams):
            self._gone(uid)

    # ---- the voice gateway (loop) ----------------------------------------------------------------
    def on_ws(self, msg: dict[str, Any]) -> None:
        op, d = msg.get("op"), msg.get("d")
        if not isinstance(d, dict):
            return
        with contextlib.suppress(KeyError, TypeError, ValueError):
            if op == OP_SPEAKING:
                uid, ssrc = int(d["user_id"]), int(d["ssrc"])
                if uid != self.ignore:
                    for old in [s for s, u in self.ssrc_user.items() if u == uid and s != ssrc]:
                        del self.ssrc_user[old]  # they reconnected with a new SSRC
                    self.ssrc_user[ssrc] = uid
            elif op == OP_CLIENT_DISCONNECT:
                self._gone(int(d["user_id"]))

    def _gone(self, uid: int) -> None:
        for ssrc in [s for s, u in self.ssrc_user.items() if u == uid]:
            del self.ssrc_user[ssrc]
        if self.streams.pop(uid, None) is not None:
            self.on_gone(uid)

    # ---- the UDP reader thread ---------------------------------------------------------------------
    def _datagram(self, data: bytes) -> None:
        if len(data) < 12 or data[1] & 0x7F != OPUS_PT:
            return  # IP discovery, RTCP
        state = self.state
        self.stats.packets += 1
        try:
            ssrc, seq, frame = transport_decrypt(state.mode, bytes(state.secret_key), data)
        except (ValueError, TypeError):
            self.stats.transport_failures += 1
            return
        uid = self.ssrc_user.get(ssrc)
        if uid is None:
            self.stats.unmapped += 1
            return
        session = state.dave_session
        if state.dave_protocol_version >= 1 and session is not None:
            try:
                opus = session.decrypt(uid, davey.MediaType.audio, frame)
            except Exception:  # davey raises on a frame it cannot open: silence, never the decoder
                self.stats.dave_failures += 1
                return
            if opus == frame:
                self.stats.passthrough += 1
        else:
            opus = frame
        self.loop.call_soon_threadsafe(self._deliver, uid, seq, opus)

    def _deliver(self, uid: int, seq: int, opus: bytes) -> None:
        if uid not in set(self.ssrc_user.values()):
            return  # they left while this packet was on its way
        stream = self.streams.get(uid)
        if stream is None:
            stream = self.streams[uid] = SpeakerStream()
            self.on_stream(uid, stream)
        stream.arrived = self.loop.time()
        if self.forward is None or not self.forward(uid, seq, opus):
            stream.push(seq, opus)


class StageVoiceClient(discord.VoiceClient):
    """discord.py's voice client, listening too: our hook on the voice WebSocket, AES-GCM offered."""

    supported_modes = MODES  # type: ignore[assignment]  # discord.py's Literal lacks aead_aes256_gcm_rtpsize
    receiver: Receiver | None = None

    def create_connection_state(self) -> VoiceConnectionState:
        return VoiceConnectionState(self, hook=self._voice_frame)

    async def _voice_frame(self, ws: Any, msg: dict[str, Any]) -> None:
        if self.receiver is not None:
            self.receiver.on_ws(msg)

    def _encrypt_aead_aes256_gcm_rtpsize(self, header: bytes, data: bytes) -> bytes:
        nonce = struct.pack(">I", self._incr_nonce)
        self.checked_add("_incr_nonce", 1, 4294967295)
        return header + AESGCM(bytes(self.secret_key)).encrypt(nonce + bytes(8), bytes(data), bytes(header)) + nonce

    def listen(self, on_stream: Callable[[int, SpeakerStream], None], on_gone: Callable[[int], None],
               forward: Callable[[int, int, bytes], bool] | None = None) -> Receiver:
        self.receiver = Receiver(self._connection, self.loop, on_stream, on_gone, self.user.id, forward)
        self.receiver.start()
        return self.receiver


_keys = itertools.count()


@dataclass
class StageBridge:
    """One Space's Discord speakers in its room, and its mix-minus back to the Stage.

    Members are attached to whichever room object serves the Space now (rooms are replaced when the
    Space moves or the process restarts them); ``resolve`` maps a Discord user to the account whose
    place on the core's stage decides whether they are heard. When another process serves the media,
    their frames are forwarded to it (``forward``: a bounded queue, oldest dropped, so the receiver
    never waits) and the Stage plays the owner's mix without them."""

    rooms: Rooms
    space_id: str
    group: str
    resolve: Callable[[int], Awaitable[str]]
    members: dict[int, tuple[str, SpeakerStream]] = field(default_factory=dict)
    room: Room | None = None
    remote: bool = False  # the owner is another process: frames go to ``uplink``
    uplink: deque[bytes] = field(default_factory=lambda: deque(maxlen=UPLINK_DEPTH))
    _queued: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def on_stream(self, uid: int, stream: SpeakerStream) -> None:
        task = asyncio.get_running_loop().create_task(self._add(uid, stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _add(self, uid: int, stream: SpeakerStream) -> None:
        account = await self.resolve(uid)
        self.members[uid] = (account, stream)
        if self.room is not None:
            self.room.add_external(account, self.group, stream)

    def forward(self, uid: int, seq: int, opus: bytes) -> bool:
        """The receiver's hook (on the loop): while the media is elsewhere, the frame is queued for the
        owner (dropped while the member's account is still being resolved: a packet or two)."""
        if not self.remote:
            return False
        member = self.members.get(uid)
        if member is not None:
            self._queue(encode_speaker(member[0], seq, opus))
        return True

    def _queue(self, frame: bytes) -> None:
        self.uplink.append(frame)
        self._queued.set()

    async def _next_frame(self) -> bytes:
        while not self.uplink:
            self._queued.clear()
            await self._queued.wait()
        return self.uplink.popleft()

    def on_gone(self, uid: int) -> None:
        if self.remote and uid in self.members:
            self._queue(encode_speaker(self.members[uid][0], None))
        gone = self.members.pop(uid, None)
        if gone is not None and self.room is not None and self.room.external.get(gone[0]) is not None \
                and self.room.external[gone[0]].source is gone[1]:
            self.room.remove_external(gone[0])

    async def _local_room(self) -> Room | None:
        """The Space's room when this process serves it (claiming it when nobody does), else None."""
        placement = self.rooms.placement
        if not placement.owns(self.space_id):
            if not placement.media or (await placement.claim(self.space_id)).id != placement.node.id:
                return None
        return self.rooms.room(self.space_id)

    async def _owner(self) -> Node | None:
        """The process serving the Space's media, or the one that should take it when nobody does."""
        placement = self.rooms.placement
        try:
            return await placement.owner(self.space_id) or await placement.pick()
        except MediaError:  # placement unreachable: ask again after the backoff
            return None

    async def _remote(self, owner: Node) -> AsyncIterator[tuple[int, bytes]]:
        """The members forwarded to ``owner``, and its mix without them, until that link ends."""
        self.uplink.clear()
        self.remote = True
        try:
            async for pts, packet in self.rooms.link.speakers(owner, self.space_id, self.group, self._next_frame):
                yield pts // FRAME_SAMPLES, packet
        finally:
            self.remote = False

    async def packets(self) -> AsyncIterator[tuple[int, bytes]]:
        """(seq, Opus) for the Stage: the room's mix without this group, following the room."""
        backoff = Backoff(0.2, 5.0)
        while not self.rooms.closed:
            room = await self._local_room()
            if room is None:  # served elsewhere: the members go there, its mix-minus comes back
                owner = await self._owner()
                if owner is not None and owner.id != self.rooms.placement.node.id:
                    async for item in self._remote(owner):
                        backoff.reset()
                        yield item
                if (await self.rooms.core.view(self.space_id)).space.state == SpaceState.ENDED:
                    return
                await backoff.wait()  # the link dropped or the Space moved: ask placement again
                continue
            backoff.reset()
            self.room = room
            for account, stream in self.members.values():
                room.add_external(account, self.group, stream)
            key = f"discord-{next(_keys)}"
            tap = room.group_tap(self.group)
            sub = tap.subscribe(key)
            try:
                with contextlib.suppress(EOFError):
                    while True:
                        pts, packet = await sub.next()
                        yield pts // FRAME_SAMPLES, packet
            finally:
                tap.unsubscribe(key)
                for account, _ in self.members.values():
                    room.remove_external(account)
            if (await self.rooms.core.view(self.space_id)).space.state == SpaceState.ENDED:
                return

    def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self.room is not None:
            for account, _ in self.members.values():
                self.room.remove_external(account)
        self.members.clear()
