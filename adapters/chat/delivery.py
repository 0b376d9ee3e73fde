"""DeliveryResult shorthands: what a chat Notifier reports for each way a DM can go."""

from __future__ import annotations

from core.ports import DeliveryResult

RETRY_S = 5.0  # a network failure or a platform hiccup: try again soon (the job queue waits this long)

SENT = DeliveryResult("sent")


def retry(detail: str, after_s: float = RETRY_S) -> DeliveryResult:
    """Try again later: the platform asked us to slow down, or could not be reached."""
    return DeliveryResult("retry", retry_after_s=after_s, detail=detail)


def unreachable(detail: str) -> DeliveryResult:
    """The person can never be reached this way (blocked the bot, closed DMs, deleted account)."""
    return DeliveryResult("unreachable", detail=detail)


def not_connected(platform: str) -> DeliveryResult:
    return retry(f"the {platform} bot is not connected")
