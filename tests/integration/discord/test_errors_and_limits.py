"""What goes wrong on Discord: missing permissions, the wrong caller, bad options, rate limits, closed DMs."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.clock import FrozenClock
from core.model.accounts import Actor
from spacebridge.app import add_job_runners, stop
from tests.integration.discord.conftest import DC, make_dc
from tests.integration.discord.test_flows import live, setup_guild
from tests.support.discord_fake import BOT_PERMS, MANAGE_CHANNELS, MUTE_MEMBERS, STAGE, TEXT, FakeDiscord, Mention


async def test_missing_bot_permissions_are_named_and_nothing_starts(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    fake = await FakeDiscord().start()
    guild = fake.add_guild("No perms", bot_perms=BOT_PERMS & ~MUTE_MEMBERS & ~MANAGE_CHANNELS)
    host = 300000000000000009
    fake.add_member(guild, host, "Hana")
    p = await make_dc(tmp_path, monkeypatch, fake, FrozenClock(), discord_voice=False)
    try:
        stage, text = fake.channel_of(guild, STAGE), fake.channel_of(guild, TEXT)
        iid = await fake.interact(guild, guild.owner_id, "spacebridge", "setup",
                                  {"stage_channel": Mention("channel", stage),
                                   "announce_channel": Mention("channel", text),
                                   "host_rule": "everyone"})
        r = await fake.reply(iid)
        assert "missing" in r["content"] and "Manage Channels" in r["content"] and "Mute Members" in r["content"]
        iid = await fake.interact(guild, host, "space", "start", {"title": "Will not start"})
        r = await fake.reply(iid)
        assert r["flags"] & 64, "errors are ephemeral"
        assert "Manage Channels, Mute Members" in r["content"] and "#Stage" in r["content"]
        assert await p.core.list_spaces(states=("live",)) == []
        assert not fake.find("POST", "/stage-instances")
    finally:
        await stop(p)
        await fake.stop()


async def test_only_server_managers_change_settings_and_bad_options_change_nothing(dc: DC) -> None:
    r = await dc.ask(dc.fan, "spacebridge", "setup", host_rule="everyone")
    assert r["flags"] & 64 and "admin" in r["content"].lower()
    community = (await dc.core.communities())[-1]
    assert community.settings.host_rule.kind == "followers"
    r = await dc.ask(dc.admin, "spacebridge", "setup", host_rule="role")
    assert "host_role" in r["content"]
    r = await dc.ask(dc.admin, "spacebridge", "setup", host_min_followers=5)
    assert "5+ followers" in r["content"]
    # the default rule (followers) applies: a host without followers is told what is missing
    r = await dc.ask(dc.host, "space", "start", title="Too early")
    assert r["flags"] & 64 and "5" in r["content"]
    assert await dc.core.list_spaces(states=("live",)) == []
    r = await dc.ask(dc.host, "space", "schedule", title="Sometime", when="next blue moon")
    assert r["flags"] & 64 and "⚠️" in r["content"]


async def test_stage_commands_check_the_callers_role(dc: DC) -> None:
    await setup_guild(dc)
    space_id = await live(dc)
    r = await dc.ask(dc.fan, "stage", "approve", member=Mention("user", dc.admin))
    assert r["flags"] & 64 and "⚠️" in r["content"]
    r = await dc.ask(dc.fan, "space", "end")
    assert r["flags"] & 64 and "⚠️" in r["content"]
    assert (await dc.core.view(space_id)).space.state.value == "live"
    r = await dc.ask(dc.fan, "stage", "queue", space="nosuchspace1")
    assert r["flags"] & 64 and "⚠️" in r["content"]
    # the host can invite and the invited member is on the Space's stage list once accepted
    r = await dc.ask(dc.host, "stage", "invite", member=Mention("user", dc.fan))
    assert "invited" in r["content"]


async def test_go_live_dms_are_paced_under_the_global_limit_and_closed_dms_mark_unreachable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = await FakeDiscord(global_per_s=20, dm_open_per_s=8).start()
    guild = fake.add_guild("Busy")
    host = 300000000000000010
    fake.add_member(guild, host, "Hana")
    p = await make_dc(tmp_path, monkeypatch, fake, FrozenClock(), discord_voice=False, discord_global_per_s=19.0)
    add_job_runners(p, 1)
    try:
        core = p.core
        host_acc = await core.ensure_account("discord", str(host), "Hana")
        followers = [400000000000000000 + i for i in range(25)]
        for uid in followers:
            acc = await core.ensure_account("discord", str(uid), f"F{uid % 100}")
            await core.follow(Actor(account_id=acc.id, platform="discord"), host_acc.id, True)
        fake.dm_closed.add(followers[0])
        await core.create_space(Actor(account_id=host_acc.id, platform="discord", is_community_admin=True), "Big news")
        await p.runners[0].run_until_idle()
        dm_users = {int(c.body["recipient_id"]) for c in fake.find("POST", "/users/@me/channels")}
        delivered = {u for u, ch in fake.dm_channels.items()
                     if fake.find("POST", f"/channels/{ch}/messages")}
        assert delivered == set(followers[1:]), "every open DM got the alert exactly once"
        assert all(len(fake.find("POST", f"/channels/{fake.dm_channels[u]}/messages")) == 1 for u in delivered)
        assert dm_users == set(followers)
        # 50 requests at 19/s under a global limit of 20/s, and discord.py waits out the DM bucket's window
        assert fake.rate_limited == [], "no request was refused with 429"
        ident = await core.identities((await core.ensure_account("discord", str(followers[0]), "x")).id)
        assert ident[0].reachable is False
    finally:
        p.runners.clear()
        await stop(p)
        await fake.stop()


async def test_doctor_asks_discord_who_the_bot_is(dc: DC) -> None:
    from spacebridge.config import load_settings
    from spacebridge.doctor import run_checks

    db = dc.platform.settings.database_url
    good = load_settings(database_url=db, discord_bot_token=dc.fake.token, discord_api_base=dc.fake.api_base)
    check = next(c for c in await run_checks(good) if c["name"] == "discord")
    assert check["ok"] and "Spacebridge" in check["detail"]
    bad = load_settings(database_url=db, discord_bot_token="not-a-token", discord_api_base=dc.fake.api_base)
    check = next(c for c in await run_checks(bad) if c["name"] == "discord")
    assert not check["ok"] and "refused DISCORD_BOT_TOKEN" in check["detail"]


async def test_a_refused_token_is_a_clear_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from spacebridge.config import ConfigError

    fake = await FakeDiscord().start()
    try:
        with pytest.raises(ConfigError, match="Discord refused DISCORD_BOT_TOKEN"):
            await make_dc(tmp_path, monkeypatch, fake, FrozenClock(), discord_voice=False,
                          discord_bot_token="MTIz.wrong.token")
    finally:
        await fake.stop()
