"""The ``ticket.refund`` job: give a buyer's money back through their provider, then revoke the seat.

Queued by a cancel (every paid ticket, in the cancel's own transaction) and for every payment
that could not become a seat (a returned-payment row, see billing/ledger.py). The provider call
carries ``refund:<row id>`` as its idempotency key, so a job re-run after a crash never refunds twice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from billing.ledger import Ledger
from core.errors import NotFound
from core.model.ticket import TicketStatus
from core.ports import PaymentGateway
from core.scheduler import Handler, Job, Retry

log = logging.getLogger(__name__)


def make_refund_handler(ledger: Ledger, gateways: Mapping[str, PaymentGateway]) -> Handler:
    async def refund(job: Job) -> None:
        try:
            ticket = await ledger.get(job.payload["ticket_id"])
        except NotFound:
            return
        if ticket.status == TicketStatus.REFUNDED:
            return
        gateway = gateways.get(ticket.provider.value)
        if gateway is None:
            raise Retry(300, f"no {ticket.provider.value} gateway configured; refund waits")
        if not ticket.provider_ref:
            log.warning("ticket %s has no provider reference; nothing to refund", ticket.id)
            return
        await gateway.refund(ticket.provider_ref, ticket.amount_minor, f"refund:{ticket.id}",
                             job.payload.get("reason", "requested_by_customer"))
        returned = ticket.status == TicketStatus.VOID and ticket.hold_expires_at is None
        if ticket.status == TicketStatus.PAID or returned:
            await ledger.mark_refunded(ticket.id)  # a seat's ticket, or a returned payment

    return refund
