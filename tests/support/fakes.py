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


class RecordingGateway:
    """A payment provider that, like Stripe, answers a repeated idempotency key with the first result."""

    def __init__(self, provider: str = "stripe", fail_after_call: int = 0) -> None:
        self.provider = provider
        self.refunds: dict[str, tuple[str, int]] = {}
        self.calls = 0
        self.fail_after_call = fail_after_call

    async def refund(self, provider_ref: str, amount_minor: int, idempotency_key: str, reason: str) -> str:
        self.calls += 1
        self.refunds.setdefault(idempotency_key, (provider_ref, amount_minor))
        if self.fail_after_call and self.calls == self.fail_after_call:
            raise ConnectionResetError("connection lost after the provider refunded")
        return f"re_{idempotency_key}"
