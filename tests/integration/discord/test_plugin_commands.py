"""Plugin commands in Discord: synced as app commands with typed options, run with role checks,
member options resolved to accounts, notices posted under the Space's card."""

from __future__ import annotations

from tests.integration.discord.conftest import DC
from tests.integration.discord.test_flows import live, setup_guild
from tests.support.discord_fake import Call, Mention


async def test_plugin_commands_as_app_commands(dc: DC) -> None:
    synced = {c["name"]: c for c in dc.fake.commands}
    assert {"record", "clip", "optout", "recordings", "audit", "block", "filter", "space"} <= set(synced)
    assert "muteall" not in synced  # the table's mute_all (a /space subcommand), not a plugin's
    record = {o["name"]: o for o in synced["record"]["options"]}
    assert record["action"]["required"] and [c["value"] for c in record["action"]["choices"]] == ["start", "stop"]
    block = {o["name"]: o for o in synced["block"]["options"]}
    assert block["member"]["type"] == 6 and block["reason"]["type"] == 3 and not record["space"]["required"]

    await setup_guild(dc)
    space_id = await live(dc)
    refused = await dc.ask(dc.fan, "record", action="start")
    assert refused["flags"] & 64 and "Only the host or a co-host" in refused["content"]
    started = await dc.ask(dc.host, "record", action="start")
    assert started["flags"] & 64 and "/p/recording/r/" in started["content"]
    notice = await dc.fake.wait_for(lambda c: c.method == "POST" and c.path == f"/channels/{dc.text}/messages"
                                    and "being recorded" in (c.body or {}).get("content", ""))
    assert notice.body["message_reference"]["message_id"]
    # the card shows it: edited, or (when the Space went live just before) posted with it already
    cards = f"/channels/{dc.text}/messages"
    await dc.fake.wait_for(lambda c: c.method in ("POST", "PATCH") and c.path.startswith(cards)
                           and any(f.get("value") == "🔴 Recording" for e in (c.body or {}).get("embeds", [])
                                   for f in e.get("fields", [])))

    await dc.core.join(await dc.actor(dc.fan), space_id)
    blocked = await dc.ask(dc.host, "block", member=Mention("user", dc.fan), reason="trolling")
    assert "removed and blocked" in blocked["content"]
    log = await dc.ask(dc.host, "audit")
    assert "removed and blocked → Finn (trolling)" in log["content"]
    stopped = await dc.ask(dc.host, "record", action="stop")
    assert "Recording saved" in stopped["content"]


async def test_captions_show_on_the_discord_card(dc: DC) -> None:
    """The stage turns captions on from Discord; lines appear on the Space's card with the speaker's name."""
    await setup_guild(dc)
    space_id = await live(dc)
    refused = await dc.ask(dc.fan, "stage", "captions", on=True)
    assert refused["flags"] & 64 and "stage" in refused["content"].lower()
    on = await dc.ask(dc.host, "stage", "captions", on=True)
    assert "aptions" in on["content"], on
    host = await dc.actor(dc.host)
    await dc.core.add_caption(space_id, host.account_id, "welcome to the morning show", 1.0, 2.5)
    cards = f"/channels/{dc.text}/messages"

    def shows_caption(c: Call) -> bool:
        return c.path.startswith(cards) and any(
            f.get("name") == "Captions" and "welcome to the morning show" in f.get("value", "")
            and ":**" in f.get("value", "") for e in (c.body or {}).get("embeds", []) for f in e.get("fields", []))

    await dc.fake.wait_for(shows_caption)
