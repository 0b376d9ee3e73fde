"""Running a table command from chat: the person named, the dispatch, the room link.

Both chat adapters turn their input (a reply, a mention, a queue number, an account id) into the
table's arguments and call ``run``, so the rules (state, least role, arguments) and the core's
decision are the same as on the web and in the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from core.command_model import Outcome, Ports
from core.commands import CommandTable, dispatch, resolve_person
from core.errors import Invalid, Unavailable
from core.model.accounts import Actor
from core.model.space import Role, Space

if TYPE_CHECKING:
    from billing.ledger import Ledger
    from core.services import Core
    from core.tokens import JoinTokens

JOIN_TOKEN_TTL_S = 15 * 60


def looks_like_id(text: str) -> bool:
    """Account and Space ids are 12 letters and digits."""
    return len(text) == 12 and text.isalnum()


async def person(core: Core, space: Space | None, given: str) -> str:
    """The account a moderator names from any platform: a queue position (``2``, ``#2``) or an account id.

    A person on another platform has no mention here; their queue number or account id (shown by
    ``queue`` on every surface) names them the same way everywhere.
    """
    text = given.strip().lstrip("#")
    if text.isdigit() and len(text) < 5:
        return resolve_person(space, given)  # the table's own reading of a queue position
    if looks_like_id(given.strip()):
        return (await core.account(given.strip())).id
    raise Invalid("chat.who")


class ChatDesk:
    """The ledger as the table's ``TicketDesk`` for refunds; buying is the surface's own (Stars, Checkout)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def ticket(self, actor: Actor, space_id: str) -> Mapping[str, Any]:
        raise Unavailable("command.unavailable", command="ticket")

    async def refund(self, actor: Actor, space_id: str) -> Mapping[str, Any]:
        await self.ledger.request_refund(actor, space_id)
        return {}


async def run(core: Core, actor: Actor, name: str, space: Space | str | None, args: Mapping[str, Any] | None = None,
              *, ports: Ports | None = None, table: CommandTable | None = None, text: bool = False) -> Outcome:
    """One table command for ``actor`` on ``space``; refusals are ``DomainError``s and change nothing.

    ``text``: the values are words typed in chat (``"on"``, ``"12"``), typed by the table's option kinds."""
    space_id = space.id if isinstance(space, Space) else space
    return await dispatch(core, actor, name, space_id, dict(args or {}), ports=ports, table=table, text=text)


async def room_token(core: Core, tokens: JoinTokens, account_id: str, space_id: str) -> str:
    """A personal join token for the web room (speaker if they are on stage), after the core says they may join."""
    view = await core.view(space_id)
    await core.may_join(account_id, space_id)
    role = view.space.role_of(account_id) or Role.LISTENER
    return tokens.issue(space_id, account_id, "speaker" if role != Role.LISTENER else "listener", core.now(),
                        ttl_s=JOIN_TOKEN_TTL_S)
