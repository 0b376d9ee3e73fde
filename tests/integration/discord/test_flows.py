"""Slash commands, the Stage and scheduled events, against the fake Discord."""

from __future__ import annotations

from tests.integration.discord.conftest import DC
from tests.support.discord_fake import Mention


async def test_setup_then_start_opens_the_stage_and_announces(dc: DC) -> None:
    r = await dc.ask(dc.admin, "spacebridge", "setup", stage_channel=Mention("channel", dc.stage),
                     announce_channel=Mention("channel", dc.text), host_rule="everyone")
    assert "Stage" in r["content"], r
    r = await dc.ask(dc.host, "space", "start", title="Morning show")
    assert "is live" in r["content"], r
    await dc.fake.wait_for(lambda c: c.method == "POST" and c.path == "/stage-instances")
    call = await dc.fake.wait_for(lambda c: c.method == "POST" and c.path == f"/channels/{dc.text}/messages")
    assert call.body["embeds"][0]["title"] == "Morning show"
