"""Signaling for the web room, split by concept; this module keeps the old import path working.

- ``socket.py``: the WebSocket protocol (``Signaling``: hello, frames, commands, leave)
- ``router.py``: the media router (``Rooms``: rooms per Space, HLS grants, broadcast, access revocation)
- ``routing.py``: where each participant's media goes (owner or relay), offers, candidates, leaves
- ``relay.py``: relay rooms (listeners of a Space another process owns)
- ``internal.py``: the ``/internal/media`` HTTP and WebSocket API between processes
- ``tap.py``: the AudioTap port over the rooms
- ``ticks.py``: the audio tick codec
"""

from adapters.webrtc.internal import INTERNAL_HEADER, InternalApi, InternalLink, MediaMoved
from adapters.webrtc.router import HLS_KEEP_S, REVOKED, Rooms
from adapters.webrtc.routing import WATCH_EVERY_S
from adapters.webrtc.socket import HELLO_TIMEOUT_S, MAX_MESSAGE, RETRY_AFTER_S, WORDING, Signaling
from adapters.webrtc.tap import RoomAudio
from adapters.webrtc.ticks import decode_tick, encode_tick

__all__ = [
    "HELLO_TIMEOUT_S",
    "HLS_KEEP_S",
    "INTERNAL_HEADER",
    "MAX_MESSAGE",
    "RETRY_AFTER_S",
    "REVOKED",
    "WATCH_EVERY_S",
    "WORDING",
    "InternalApi",
    "InternalLink",
    "MediaMoved",
    "RoomAudio",
    "Rooms",
    "Signaling",
    "decode_tick",
    "encode_tick",
]
