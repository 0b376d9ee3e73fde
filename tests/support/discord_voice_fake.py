"""The fake Discord's voice server: voice WebSocket (v8), UDP with IP discovery, transport encryption
(``aead_aes256_gcm_rtpsize`` and ``aead_xchacha20_poly1305_rtpsize``) and, when ``dave_version`` is 1,
DAVE: the server is the MLS external sender and delivery service (``dave_fake.py``), and simulated
members hold their own ``davey.DaveSession`` and encrypt their Opus with it, as Discord clients do.

What the bot sends is kept in ``packets`` as Opus (transport-decrypted, and DAVE-decrypted by a
simulated member's session when DAVE is on): what a Discord member would hear. ``speaker`` adds a
member to the call (SPEAKING to the bot, and under DAVE: key package, external Add proposal to the
bot, the bot's commit announced, its welcome processed by the member); ``send`` sends their RTP to
the bot the way Discord's SFU forwards it (with an RTP header extension, encrypted for the bot).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import davey
import nacl.bindings
from aiohttp import WSMsgType, web
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.support.dave_fake import ExternalSender, group_id, split_commit_welcome

XCHACHA, AESGCM_MODE = "aead_xchacha20_poly1305_rtpsize", "aead_aes256_gcm_rtpsize"
OP_EXTERNAL_SENDER, OP_KEY_PACKAGE, OP_PROPOSALS, OP_COMMIT_WELCOME = 25, 26, 27, 28
OP_ANNOUNCE_COMMIT, OP_WELCOME = 29, 30


def seal(mode: str, key: bytes, aad: bytes, plain: bytes, nonce: int) -> bytes:
    n = struct.pack(">I", nonce)
    if mode == AESGCM_MODE:
        return AESGCM(key).encrypt(n + bytes(8), plain, aad) + n
    return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, aad, n + bytes(20), key) + n


def unseal(mode: str, key: bytes, aad: bytes, box: bytes, nonce4: bytes) -> bytes:
    if mode == AESGCM_MODE:
        return AESGCM(key).decrypt(nonce4 + bytes(8), box, aad)
    return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(box, aad, nonce4 + bytes(20), key)


@dataclass
class Member:
    """A Discord member's client in the call."""

    user_id: int
    ssrc: int
    dave: davey.DaveSession | None = None
    joined: asyncio.Event = field(default_factory=asyncio.Event)  # in the MLS group (or no DAVE)
    seq: int = 0
    timestamp: int = 0
    nonce: int = 0


class FakeVoiceServer:
    def __init__(self, bot_id: int) -> None:
        self.bot_id = bot_id
        self.dave_version = 0
        self.modes = [XCHACHA]
        self.secret = os.urandom(32)
        self.packets: list[tuple[int, int, bytes]] = []  # (ssrc, seq, opus) the bot sent
        self.sessions: list[dict[str, Any]] = []
        self.ready = asyncio.Event()
        self.transport: asyncio.DatagramTransport | None = None
        self.udp_port = 0
        self.bot_addr: tuple[str, int] | None = None
        self.members: dict[int, Member] = {}
        self.external = ExternalSender()
        self.epoch = 0  # the MLS group's epoch (0: the bot's pending group, nobody else in it)
        self.transitions = itertools.count(1)
        self.executed: list[int] = []
        self.dave_failures = 0  # bot frames a member could not open
        self._ws: web.WebSocketResponse | None = None
        self._bin_seq = itertools.count(1)
        self._waiting: list[Member] = []  # proposed, waiting for the bot's commit

    @property
    def session(self) -> dict[str, Any]:
        return self.sessions[-1]

    # ---- the voice WebSocket ------------------------------------------------------------------------
    async def ws(self, request: web.Request, token: str) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"op": 8, "d": {"heartbeat_interval": 13750}})
        session: dict[str, Any] = {}
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                await self._binary(session, bytes(msg.data))
                continue
            if msg.type != WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            op, d = frame.get("op"), frame.get("d") or {}
            if op == 0:  # IDENTIFY
                if d.get("token") != token or int(d.get("user_id", 0)) != self.bot_id:
                    await ws.close(code=4004, message=b"Authentication failed")
                    break
                session = {"ssrc": 1000 + len(self.sessions), "identify": d}
                self.sessions.append(session)
                self._ws = ws
                await ws.send_json({"op": 2, "d": {"ssrc": session["ssrc"], "ip": "127.0.0.1",
                                                   "port": self.udp_port, "heartbeat_interval": 13750,
                                                   "modes": list(self.modes)}})
            elif op == 1:  # SELECT_PROTOCOL
                session["mode"] = d["data"]["mode"]
                version = min(self.dave_version, int(session["identify"].get("max_dave_protocol_version", 0)))
                session["dave"] = version
                await ws.send_json({"op": 4, "d": {"mode": d["data"]["mode"], "secret_key": list(self.secret),
                                                   "dave_protocol_version": version, "audio_codec": "opus"}})
                if version:
                    await self._send_binary(OP_EXTERNAL_SENDER, self.external.package())
            elif op == 3:  # HEARTBEAT
                await ws.send_json({"op": 6, "d": {"t": (d or {}).get("t") if isinstance(d, dict) else d}})
            elif op == 5:  # SPEAKING
                session["speaking"] = d.get("speaking")
                self.ready.set()
            elif op == 23:  # DAVE_TRANSITION_READY: everyone is ready, execute it
                await ws.send_json({"op": 22, "d": {"transition_id": d["transition_id"]}})
                self.executed.append(int(d["transition_id"]))
        if self._ws is ws:
            self._ws = None
        return ws

    async def _send_binary(self, op: int, payload: bytes) -> None:
        assert self._ws is not None
        await self._ws.send_bytes(struct.pack(">H", next(self._bin_seq) & 0xFFFF) + bytes([op]) + payload)

    async def _binary(self, session: dict[str, Any], data: bytes) -> None:
        op, payload = data[0], data[1:]
        if op == OP_KEY_PACKAGE:
            session["key_package"] = payload
        elif op == OP_COMMIT_WELCOME:  # the bot committed our proposals: announce it, welcome the added
            commit, welcome = split_commit_welcome(payload)
            transition = next(self.transitions)
            for m in self.members.values():
                if m.dave is not None and m.joined.is_set():
                    m.dave.process_commit(commit)
            for m in self._waiting:
                assert m.dave is not None and welcome is not None, "a commit adding members carries a welcome"
                m.dave.process_welcome(welcome)
                m.joined.set()
            self._waiting.clear()
            self.epoch += 1
            await self._send_binary(OP_ANNOUNCE_COMMIT, struct.pack(">H", transition) + commit)

    # ---- simulated members --------------------------------------------------------------------------
    async def speaker(self, user_id: int, channel_id: int) -> Member:
        """``user_id`` (already in the Stage's voice) connects to the call and may send audio."""
        assert self._ws is not None, "the bot is not in the voice channel"
        member = Member(user_id, 5000 + len(self.members))
        self.members[user_id] = member
        await self._ws.send_json({"op": 11, "d": {"user_ids": [str(user_id)]}})
        await self._ws.send_json({"op": 5, "d": {"user_id": str(user_id), "ssrc": member.ssrc, "speaking": 1}})
        if not self.session.get("dave"):
            member.joined.set()
            return member
        member.dave = davey.DaveSession(1, user_id, channel_id)
        member.dave.set_external_sender(self.external.package())
        key_package = member.dave.get_serialized_key_package()
        proposals = self.external.proposals(group_id(channel_id), self.epoch, [key_package])
        for m in self.members.values():  # every member of the group gets the proposals; the bot's commit wins
            if m.dave is not None and m.joined.is_set():
                m.dave.process_proposals(davey.ProposalsOperationType.append, proposals)
        self._waiting.append(member)
        await self._send_binary(OP_PROPOSALS, b"\x00" + proposals)
        await asyncio.wait_for(member.joined.wait(), 10)
        return member

    async def leave(self, user_id: int) -> None:
        if self.members.pop(user_id, None) is not None and self._ws is not None:
            await self._ws.send_json({"op": 13, "d": {"user_id": str(user_id)}})

    def send(self, member: Member, opus: bytes) -> None:
        """One 20 ms Opus frame from ``member`` to the bot, as Discord forwards it."""
        assert self.transport is not None and self.bot_addr is not None
        frame = member.dave.encrypt_opus(opus) if member.dave is not None else opus
        header = struct.pack(">BBHII", 0x90, 0x78, member.seq & 0xFFFF, member.timestamp & 0xFFFFFFFF, member.ssrc)
        ext_head, ext_body = struct.pack(">HH", 0xBEDE, 1), bytes([0x10, 0x7F, 0, 0])  # audio level, one word
        aad = header + ext_head
        packet = aad + seal(self.session["mode"], self.secret, aad, ext_body + frame, member.nonce)
        member.seq, member.timestamp, member.nonce = member.seq + 1, member.timestamp + 960, member.nonce + 1
        self.transport.sendto(packet, self.bot_addr)

    # ---- UDP ----------------------------------------------------------------------------------------
    def on_udp(self, data: bytes, addr: tuple[str, int], transport: asyncio.DatagramTransport) -> None:
        if len(data) == 74 and data[1] == 0x01:  # IP discovery
            reply = bytearray(74)
            struct.pack_into(">HHI", reply, 0, 2, 70, struct.unpack_from(">I", data, 4)[0])
            ip = addr[0].encode()
            reply[8:8 + len(ip)] = ip
            struct.pack_into(">H", reply, 72, addr[1])
            transport.sendto(bytes(reply), addr)
            self.bot_addr = addr
            return
        if len(data) < 12 + 16 + 4 or data[1] & 0x7F != 0x78 or not self.sessions:
            return
        header, box, nonce = data[:12], data[12:-4], data[-4:]
        try:
            frame = unseal(self.session.get("mode", XCHACHA), self.secret, header, box, nonce)
        except Exception:
            return  # not ours, or tampered with: Discord drops it too
        listener = next((m for m in self.members.values() if m.dave is not None and m.joined.is_set()), None)
        if listener is not None:
            assert listener.dave is not None
            try:
                frame = listener.dave.decrypt(self.bot_id, davey.MediaType.audio, frame)
            except Exception:
                if frame[-2:] == b"\xfa\xfa":  # a DAVE frame the member cannot open: it hears nothing
                    self.dave_failures += 1
                    return
        seq = struct.unpack_from(">H", data, 2)[0]
        ssrc = struct.unpack_from(">I", data, 8)[0]
        self.packets.append((ssrc, seq, frame))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            for m in self.members.values():
                if m.dave is not None:
                    m.dave.reset()
