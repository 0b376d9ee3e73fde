"""Hand-written fakes for core ports (DESIGN: fakes for ports in unit tests, never library patches)."""

from __future__ import annotations

from core.ports import Delivery, DeliveryResult


class RecordingNotifier:
    """A platform that accepts every message, except for recipients marked blocked or flaky."""

    def __init__(self, platform: str) -> None:
        self.platform = platform
        self.sent: list[Delivery] = []
        self.blocked: set[str] = set()
        self.flaky: dict[str, int] = {}

    async def deliver(self, delivery: Delivery) -> DeliveryResult:
        if delivery.external_id in self.blocked:
            return DeliveryResult("unreachable", detail="bot was blocked by the user")
        if self.flaky.get(delivery.external_id, 0) > 0:
            self.flaky[delivery.external_id] -= 1
            return DeliveryResult("retry", retry_after_s=5, detail="429")
        self.sent.append(delivery)
        return DeliveryResult("sent")

    def to(self, template: str) -> list[str]:
        return sorted(d.external_id for d in self.sent if d.template == template)
