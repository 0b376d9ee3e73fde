"""The voice server's side of DAVE (protocol version 1) for the fake Discord: the MLS external sender
and delivery service, built on RFC 9420's wire format with real P-256 signatures.

Clients (discord.py's ``davey.DaveSession`` in the bot, and a simulated member's own session) do all
of MLS themselves; the server only has to (1) announce itself as the group's external sender, (2)
turn members' key packages into Add proposals it signs, and (3) hand a committer's commit to the
group and its welcome to the new members. That is what this module serialises:

* ``ExternalSender {SignaturePublicKey signature_key; Credential credential}`` (DAVE op 25)
* ``MLSMessage(PublicMessage{FramedContent{group_id, epoch, Sender{external, 0}, proposal: Add}})``
  signed with ``SignWithLabel(., "FramedContentTBS", FramedContentTBS)`` (no GroupContext for an
  external sender), a vector of them after the operation type (DAVE op 27)
* splitting a client's ``commit || welcome`` (DAVE op 28) at the Welcome it ends with.

DAVE's MLS group id is the channel id (8 bytes, big-endian); ciphersuite 2
(MLS_128_DHKEMP256_AES128GCM_SHA256_P256); ECDSA signatures are DER, as RFC 9420 §5.1.1 says.
"""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

MLS10, PUBLIC_MESSAGE = 1, 1
CIPHERSUITE = 2
SENDER_EXTERNAL, CONTENT_PROPOSAL, PROPOSAL_ADD, CREDENTIAL_BASIC = 2, 2, 1, 1


def varint(n: int) -> bytes:
    """RFC 9420 §2.1.2 variable-length integer (the length prefix of ``<V>`` vectors)."""
    if n < 1 << 6:
        return bytes([n])
    if n < 1 << 14:
        return struct.pack(">H", 0x4000 | n)
    if n < 1 << 30:
        return struct.pack(">I", 0x80000000 | n)
    raise ValueError("vector too long")


def opaque(data: bytes) -> bytes:
    return varint(len(data)) + data


def read_varint(data: bytes, at: int) -> tuple[int, int]:
    first = data[at]
    kind = first >> 6
    if kind == 0:
        return first, at + 1
    if kind == 1:
        return struct.unpack_from(">H", data, at)[0] & 0x3FFF, at + 2
    if kind == 2:
        return struct.unpack_from(">I", data, at)[0] & 0x3FFFFFFF, at + 4
    raise ValueError("invalid varint")


class ExternalSender:
    """The voice server's MLS identity: a P-256 key and a basic credential."""

    def __init__(self, identity: bytes = b"fake-discord-voice") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.public = self.key.public_key().public_bytes(serialization.Encoding.X962,
                                                         serialization.PublicFormat.UncompressedPoint)
        self.identity = identity

    def package(self) -> bytes:
        """The serialized ``ExternalSender`` for op 25."""
        return opaque(self.public) + struct.pack(">H", CREDENTIAL_BASIC) + opaque(self.identity)

    def _sign(self, label: str, content: bytes) -> bytes:
        sign_content = opaque(f"MLS 1.0 {label}".encode()) + opaque(content)
        return self.key.sign(sign_content, ec.ECDSA(hashes.SHA256()))

    def add_proposal(self, group_id: bytes, epoch: int, key_package: bytes) -> bytes:
        """One ``MLSMessage`` carrying an external Add proposal for ``key_package``."""
        content = (opaque(group_id) + struct.pack(">Q", epoch) + bytes([SENDER_EXTERNAL]) + struct.pack(">I", 0)
                   + opaque(b"") + bytes([CONTENT_PROPOSAL]) + struct.pack(">H", PROPOSAL_ADD) + key_package)
        head = struct.pack(">HH", MLS10, PUBLIC_MESSAGE)
        signature = self._sign("FramedContentTBS", head + content)
        return head + content + opaque(signature)  # no membership tag for an external sender

    def proposals(self, group_id: bytes, epoch: int, key_packages: list[bytes]) -> bytes:
        """Op 27's payload after the operation type: the vector of proposal messages."""
        return opaque(b"".join(self.add_proposal(group_id, epoch, kp) for kp in key_packages))


def group_id(channel_id: int) -> bytes:
    return struct.pack(">Q", channel_id)


def split_commit_welcome(data: bytes) -> tuple[bytes, bytes | None]:
    """A client's op 28: ``commit`` (an MLSMessage) or ``commit || welcome``, the Welcome bare (as DAVE
    sends it): ``{cipher_suite; secrets<V>; encrypted_group_info<V>}`` ending exactly at the data's end."""
    marker = struct.pack(">H", CIPHERSUITE)
    at = data.find(marker, 4)
    while at != -1:
        try:
            n, i = read_varint(data, at + 2)  # EncryptedGroupSecrets secrets<V>
            n2, j = read_varint(data, i + n)  # opaque encrypted_group_info<V>
            if j + n2 == len(data):
                return data[:at], data[at:]
        except (IndexError, ValueError):
            pass
        at = data.find(marker, at + 1)
    return data, None
