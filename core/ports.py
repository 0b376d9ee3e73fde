"""Ports: the narrow Protocols through which the core talks to the world.

Adapters, billing and plugins implement them; the core never imports an implementation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from core.clock import Clock

__all__ = [
    "AudioFrame",
    "AudioTap",
    "AudioTick",
    "Clock",
    "Delivery",
    "DeliveryResult",
    "MediaRoom",
    "Notifier",
    "PaymentGateway",
]

SAMPLE_RATE = 48_000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 960 samples per channel per 20 ms frame


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """20 ms of mono 48 kHz signed 16-bit PCM, stamped with the room's frame counter."""

    seq: int
    pcm: npt.NDArray[np.int16]
    speaker_id: str | None = None  # None for the room mix


@dataclass(frozen=True, slots=True)
class AudioTick:
    """One 20 ms step of a room: the mix and each publishing speaker's own frame, on one clock.

    ``seq`` counts 20 ms steps since the room opened, so ``seq * 0.02`` is a position in time that
    every consumer (captions, recording, timeline) shares.
    """

    seq: int
    mix: npt.NDArray[np.int16]
    speakers: dict[str, npt.NDArray[np.int16]]


class AudioTap(Protocol):
    """The room's audio, for Discord playback, captions and recording.

    Each subscription gets its own bounded queue: a slow consumer loses frames, never the room.
    """

    def mix(self, space_id: str) -> AsyncIterator[AudioFrame]: ...

    def speakers(self, space_id: str) -> AsyncIterator[AudioFrame]: ...

    def ticks(self, space_id: str) -> AsyncIterator[AudioTick]:
        """Every tick, with silence included, so consumers can keep time (recording, captions)."""
        ...

    def opus_packets(self, space_id: str) -> AsyncIterator[tuple[int, bytes]]:
        """The room's single Opus encode as (seq, packet): what listeners receive, unmodified."""
        ...


class MediaRoom(Protocol):
    """What the core asks of a media server: open, close, and silence people at once."""

    async def open(self, space_id: str) -> None: ...

    async def close(self, space_id: str) -> None: ...

    async def set_publishers(self, space_id: str, account_ids: set[str]) -> None:
        """Only these accounts' audio reaches the mix; everyone else is dropped at the server."""
        ...


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message to one Identity, produced by a durable job."""

    platform: str
    external_id: str
    template: str  # e.g. "space.live", "space.reminder"; adapters render it
    data: dict[str, Any] = field(default_factory=dict)
    dedupe_key: str = ""


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What a Notifier reports: sent, retry later, or the recipient can never be reached."""

    status: str  # "sent" | "retry" | "unreachable"
    retry_after_s: float = 0.0
    detail: str = ""


class Notifier(Protocol):
    """Delivers messages on one platform and honours that platform's rate limits."""

    platform: str

    async def deliver(self, delivery: Delivery) -> DeliveryResult: ...


class PaymentGateway(Protocol):
    """One payment provider (Stripe, Telegram Stars) as billing's refund jobs see it."""

    provider: str

    async def refund(self, provider_ref: str, amount_minor: int, idempotency_key: str, reason: str) -> str:
        """Give the money back; returns the provider's refund id. Must be safe to repeat with the
        same key (the job may run twice after a crash)."""
        ...


EventHandler = Callable[[Any], Awaitable[None]]
