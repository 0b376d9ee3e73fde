"""One Stage per Space: two Spaces live in one server each run on a Stage of their own and end
independently; without Manage Channels where a second Stage would go, a second go-live is refused
with the name of the Space already live. Against the fake Discord (permissions computed per channel)."""

from __future__ import annotations

from tests.integration.discord.conftest import DC
from tests.integration.discord.test_flows import live, setup_guild, until
from tests.support.discord_fake import BOT_PERMS, MANAGE_CHANNELS, STAGE


async def test_two_spaces_in_one_server_each_get_a_stage_and_end_independently(dc: DC) -> None:
    await setup_guild(dc)
    first = await live(dc, "Morning show")
    await dc.fake.wait_for(lambda c: c.method == "POST" and c.path == "/stage-instances"
                           and str(c.body["channel_id"]) == str(dc.stage))
    r = await dc.ask(dc.fan, "space", "start", title="Late show")
    assert "is live" in r["content"], r
    second = next(s.id for s in await dc.core.list_spaces(states=("live",)) if s.id != first)
    made = await dc.fake.wait_for(lambda c: c.method == "POST" and c.path == f"/guilds/{dc.guild.id}/channels")
    assert made.body["type"] == STAGE and made.body["name"] == "Late show"
    own = next(cid for cid, c in dc.guild.channels.items() if c["type"] == STAGE and cid != dc.stage)
    await dc.fake.wait_for(lambda c: c.method == "POST" and c.path == "/stage-instances"
                           and str(c.body["channel_id"]) == str(own))
    assert dc.guild.stages[dc.stage]["topic"] == "Morning show" and dc.guild.stages[own]["topic"] == "Late show"

    # a listener on the second Stage is in the second Space, not the first
    await dc.fake.join_voice(dc.guild, dc.admin, own)
    await until(lambda: _listeners(dc, second, 2))
    assert (await dc.core.view(first)).listener_count == 1

    await dc.ask(dc.host, "space", "end", space=first)
    await dc.fake.wait_for(lambda c: c.method == "DELETE" and c.path == f"/stage-instances/{dc.stage}")
    await dc.platform.bus.drain()  # type: ignore[attr-defined]
    assert own in dc.guild.stages and own in dc.guild.channels, "ending one Space left the other's Stage alone"
    assert (await dc.core.view(second)).space.state.value == "live"

    await dc.ask(dc.fan, "space", "end", space=second)
    await dc.fake.wait_for(lambda c: c.method == "DELETE" and c.path == f"/stage-instances/{own}")
    await dc.fake.wait_for(lambda c: c.method == "DELETE" and c.path == f"/channels/{own}")
    assert dc.stage in dc.guild.channels, "the configured Stage is never deleted"

    # the configured Stage is free again for the next Space
    third = await dc.ask(dc.host, "space", "start", title="Encore")
    assert "is live" in third["content"]
    mark = len(dc.fake.calls)
    await dc.fake.wait_for(lambda c: c.method == "POST" and c.path == "/stage-instances"
                           and str(c.body["channel_id"]) == str(dc.stage) and c.body["topic"] == "Encore")
    assert not dc.fake.find("POST", f"/guilds/{dc.guild.id}/channels", after=mark)


async def test_a_second_space_is_refused_naming_the_live_one_when_no_stage_can_be_made(dc: DC) -> None:
    # the bot moderates the configured Stage (Manage Channels there) but may not make channels elsewhere
    role = dc.fake.bot_role(dc.guild)
    await dc.fake.role_permissions(dc.guild, role, BOT_PERMS & ~MANAGE_CHANNELS)
    await dc.fake.overwrite(dc.guild, dc.stage, role, allow=MANAGE_CHANNELS)
    r = await setup_guild(dc)
    assert "Several Spaces live at once: no" in r["content"], r
    first = await live(dc, "Morning show")
    await dc.fake.wait_for(lambda c: c.method == "POST" and c.path == "/stage-instances")
    mark = len(dc.fake.calls)
    r = await dc.ask(dc.fan, "space", "start", title="Late show")
    assert r["flags"] & 64 and "Morning show" in r["content"] and "already live" in r["content"], r
    assert "Manage Channels" in r["content"]
    assert [s.id for s in await dc.core.list_spaces(states=("live",))] == [first], "nothing changed"
    assert not dc.fake.find("POST", f"/guilds/{dc.guild.id}/channels", after=mark)
    assert not dc.fake.find("POST", "/stage-instances", after=mark)


async def _listeners(dc: DC, space_id: str, n: int) -> bool:
    return bool((await dc.core.view(space_id)).listener_count == n)
