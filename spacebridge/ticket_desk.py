"""The command table's ports, wired from the platform: tickets through billing, share links to the web room.

Core must not import billing, so the table's ``ticket`` and ``refund`` entries reach it through
``core.commands.Ports``; this is where the composition root fills them in for every surface.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from core.commands import Ports
from core.errors import Conflict
from core.model.accounts import Actor

if TYPE_CHECKING:
    from billing.ledger import Ledger
    from billing.sales import TicketSales
    from core.services import Core
    from spacebridge.instance import Instance


class LedgerDesk:
    """``ticket``: a Stripe Checkout link (where Stripe is configured); ``refund``: the ledger's request."""

    def __init__(self, core: Core, ledger: Ledger, sales: TicketSales | None) -> None:
        self.core, self.ledger, self.sales = core, ledger, sales

    async def ticket(self, actor: Actor, space_id: str) -> Mapping[str, Any]:
        """The Space's own answer first (a free Space needs no ticket), as the chat apps give it; only a
        priced Space on an instance without Stripe hears that sales are off."""
        space = (await self.core.view(space_id)).space
        if space.ticketing is None:
            raise Conflict("ticket.not_ticketed", space_id=space_id)
        if self.sales is None:
            raise Conflict("billing.off", hint="this Space is priced in " + space.ticketing.currency.upper())
        bought = await self.sales.buy_with_checkout(actor, space_id, space.title)
        return {"ticket_id": bought.ticket.id, "url": bought.url}

    async def refund(self, actor: Actor, space_id: str) -> Mapping[str, Any]:
        ticket = await self.ledger.request_refund(actor, space_id)
        return {"ticket_id": ticket.id, "status": str(ticket.status)}


def command_ports(platform: Instance, base: str = "") -> Ports:
    """Ports for ``core.commands.dispatch`` on this instance. ``base``: where links (Checkout's
    return, share) point; a web request passes the address its browser used, so a buyer comes back
    to the site holding their session (else the configured address)."""
    from billing.sales import TicketSales

    base = (base or platform.settings.base_url()).rstrip("/")
    sales = TicketSales(platform.ledger, platform.stripe, base) if platform.stripe is not None else None
    return Ports(tickets=LedgerDesk(platform.core, platform.ledger, sales),
                 links=lambda space_id: {"web": f"{base}/s/{space_id}"})
