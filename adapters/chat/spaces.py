"""Which Space a chat command means: the one way both chat adapters choose."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.errors import Invalid, NotFound
from core.model.space import Space, SpaceState

if TYPE_CHECKING:
    from core.services import Core


async def pick_space(core: Core, *, space_id: str | None, community_id: str | None, host_id: str | None,
                     states: tuple[str, ...], no_space_code: str, which_code: str,
                     **which_data: Any) -> Space:
    """The ``space_id`` given, else the one live (or, where ``states`` allow, scheduled) Space of this
    community, else the caller's own (``host_id``, outside a community); ambiguity is a question back.

    ``no_space_code``/``which_code`` are the surface's own error codes (they say how to name a Space there).
    """
    if space_id:
        return (await core.view(space_id.strip())).space
    if community_id is not None:
        candidates = await core.list_spaces(states=states, community_id=community_id)
    elif host_id is not None:
        candidates = await core.list_spaces(states=states, host_id=host_id)
    else:
        candidates = []
    live = [s for s in candidates if s.state == SpaceState.LIVE]
    pick = live or candidates
    if len(pick) == 1 or (live and community_id is not None):
        return pick[0]
    if not pick and community_id is not None and states == ("live",):
        raise NotFound(no_space_code)
    raise Invalid(which_code, **which_data)
