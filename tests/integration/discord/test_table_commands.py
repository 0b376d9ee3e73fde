"""Discord offers what the other surfaces offer (issue 16's drift): follow, react, refund, co-host
promote and demote, and a Discord moderator approving a hand raised on the web by its queue number."""

from __future__ import annotations

from core.model.accounts import Actor
from tests.integration.discord.conftest import DC
from tests.integration.discord.test_flows import live, setup_guild
from tests.support.discord_fake import Mention


async def _web_listener(dc: DC, name: str = "Wendy") -> Actor:
    acc = await dc.core.ensure_account("web", "wendy-browser", name)
    return Actor(account_id=acc.id, platform="web")


async def test_a_discord_moderator_approves_a_web_hand_by_queue_number(dc: DC) -> None:
    await setup_guild(dc)
    space_id = await live(dc)
    web = await _web_listener(dc)
    await dc.core.join(web, space_id)
    assert await dc.core.raise_hand(web, space_id) == 1
    r = await dc.ask(dc.host, "stage", "approve", who="1")
    assert "Wendy is now on stage" in r["content"], r
    assert web.account_id in (await dc.core.view(space_id)).space.speakers
    r = await dc.ask(dc.host, "stage", "approve", who="3")  # nobody there: said, nothing changes
    assert "⚠️" in r["content"] and "number 3" in r["content"]


async def test_promote_to_cohost_and_demote_from_discord(dc: DC) -> None:
    await setup_guild(dc)
    space_id = await live(dc)
    web = await _web_listener(dc)
    await dc.core.join(web, space_id)
    r = await dc.ask(dc.host, "stage", "promote", who=web.account_id, role="cohost")
    assert "Wendy is now a co-host" in r["content"], r
    assert web.account_id in (await dc.core.view(space_id)).space.cohosts
    refused = await dc.ask(dc.fan, "stage", "demote", who=web.account_id)
    assert "⚠️" in refused["content"] and "Only the host or a co-host" in refused["content"]
    r = await dc.ask(dc.host, "stage", "demote", who=web.account_id)
    assert "Wendy is back in the audience" in r["content"], r
    space = (await dc.core.view(space_id)).space
    assert web.account_id not in space.cohosts and web.account_id not in space.speakers


async def test_follow_react_and_refund_on_discord(dc: DC) -> None:
    await setup_guild(dc)
    space_id = await live(dc)
    host = await dc.actor(dc.host)
    r = await dc.ask(dc.fan, "follow")  # no one named: the live Space's host
    assert "You follow Hana (1 followers)" in r["content"], r
    r = await dc.ask(dc.fan, "unfollow", member=Mention("user", dc.host))
    assert "You no longer follow Hana" in r["content"], r
    r = await dc.ask(dc.fan, "follow", who=host.account_id)
    assert "You follow Hana" in r["content"], r
    r = await dc.ask(dc.fan, "space", "react", emoji="💯")
    assert "💯 1" in r["content"], r
    assert (await dc.core.view(space_id)).reactions == {"💯": 1}
    r = await dc.ask(dc.fan, "space", "react", emoji="not an emoji")
    assert "⚠️" in r["content"]
    assert (await dc.core.view(space_id)).reactions == {"💯": 1}
    r = await dc.ask(dc.fan, "space", "refund")  # a free Space: no paid ticket, said in the ledger's words
    assert "⚠️" in r["content"] and "no paid ticket" in r["content"], r
