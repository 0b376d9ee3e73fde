"""The core's stage and the Discord Stage follow each other, both ways, from every surface.

Against the fake Discord (real gateway WebSocket and HTTP): approve/promote/demote/mute from the web
(the core), the CLI or Telegram (the command table's dispatch) and Discord's slash commands move the
member on the Stage; a stage moderator's Move to Audience or Server Mute with Discord's own controls
changes the core, with an audit entry, and the bot's own changes never come back as a second change.
"""

from __future__ import annotations

from typing import Any

from core import events as ev
from core.commands import dispatch
from core.model.accounts import Actor
from plugins.moderation import read_audit
from tests.integration.discord.conftest import DC
from tests.integration.discord.test_flows import live, setup_guild, until
from tests.integration.discord.test_stage_presence import Seen
from tests.support.discord_fake import Call, Mention


async def _on_stage_with_hand(dc: DC) -> tuple[str, str]:
    """A live Space and the fan listening on its Stage with their hand up (Discord's Request to Speak)."""
    await setup_guild(dc)
    space_id = await live(dc)
    fan = await dc.actor(dc.fan)
    await dc.fake.join_voice(dc.guild, dc.fan, dc.stage)
    await until(lambda: _count(dc, space_id, 2))
    await dc.fake.request_to_speak(dc.guild, dc.fan)
    await until(lambda: _hand(dc, space_id, fan.account_id))
    return space_id, fan.account_id


async def _count(dc: DC, space_id: str, n: int) -> bool:
    return bool((await dc.core.view(space_id)).listener_count == n)


async def _hand(dc: DC, space_id: str, account_id: str) -> bool:
    return any(h.account_id == account_id for h in (await dc.core.view(space_id)).space.hands)


async def _role(dc: DC, space_id: str, account_id: str) -> str:
    role = (await dc.core.view(space_id)).space.role_of(account_id)
    return "listener" if role is None else role.value


def _fan_voice(dc: DC) -> dict[str, Any]:
    return dc.fake.guilds[dc.guild.id].voice[dc.fan]


async def _suppress(dc: DC, value: bool, mark: int) -> Call:
    """The bot's request to set the fan's ``suppress`` on the Stage (after call ``mark``)."""
    return await dc.fake.wait_for(lambda c: c.method == "PATCH" and c.path.endswith(f"/voice-states/{dc.fan}")
                                  and c.body.get("suppress") is value, after=mark)


async def _host(dc: DC, platform: str) -> Actor:
    acc = await dc.core.ensure_account("discord", str(dc.host), "Hana")
    return Actor(account_id=acc.id, platform=platform)


async def _audit(dc: DC, space_id: str) -> list[dict[str, Any]]:
    await _drain(dc)
    assert dc.platform.plugins is not None
    return await read_audit(dc.platform.plugins.plugins["moderation"][1].store, space_id)


async def test_approve_and_demote_from_the_web_the_cli_and_telegram_move_the_member_on_the_stage(dc: DC) -> None:
    space_id, fan = await _on_stage_with_hand(dc)
    mark = len(dc.fake.calls)
    await dc.core.approve(await _host(dc, "web"), space_id, fan)  # the web room's approve button
    await _suppress(dc, False, mark)
    await until(lambda: _async(_fan_voice(dc)["suppress"] is False))

    mark = len(dc.fake.calls)  # the CLI's `spacebridge cmd demote` is the table's dispatch, as Telegram's is
    await dispatch(dc.core, await _host(dc, "telegram"), "demote", space_id, {"person": fan})
    await _suppress(dc, True, mark)
    await until(lambda: _async(_fan_voice(dc)["suppress"] is True))
    assert await _role(dc, space_id, fan) == "listener"

    mark = len(dc.fake.calls)
    await dispatch(dc.core, await _host(dc, "web"), "promote", space_id, {"person": fan, "role": "speaker"})
    await _suppress(dc, False, mark)
    await until(lambda: _async(_fan_voice(dc)["suppress"] is False))
    assert await _role(dc, space_id, fan) == "speaker", "the bot's own changes did not bounce back"


async def test_approve_and_demote_with_discords_slash_commands(dc: DC) -> None:
    space_id, fan = await _on_stage_with_hand(dc)
    mark = len(dc.fake.calls)
    r = await dc.ask(dc.host, "stage", "approve", member=Mention("user", dc.fan))
    assert "⚠️" not in r["content"], r
    await _suppress(dc, False, mark)
    await until(lambda: _async(_fan_voice(dc)["suppress"] is False))
    mark = len(dc.fake.calls)
    r = await dc.ask(dc.host, "stage", "demote", member=Mention("user", dc.fan))
    assert "⚠️" not in r["content"], r
    await _suppress(dc, True, mark)
    await until(lambda: _async(_fan_voice(dc)["suppress"] is True))
    assert await _role(dc, space_id, fan) == "listener"


async def test_move_to_audience_with_discords_controls_demotes_in_the_core_with_an_audit_entry(dc: DC) -> None:
    space_id, fan = await _on_stage_with_hand(dc)
    seen = Seen(dc.core.bus)
    await dc.core.approve(await _host(dc, "web"), space_id, fan)
    await until(lambda: _async(_fan_voice(dc)["suppress"] is False))
    assert await _role(dc, space_id, fan) == "speaker"

    mark = len(dc.fake.calls)
    await dc.fake.stage_moderate(dc.guild, dc.fan, suppress=True)  # a stage moderator's Move to Audience
    await until(lambda: _role_is(dc, space_id, fan, "listener"))
    changes = [e for e in seen.of(ev.RoleChanged, fan) if isinstance(e, ev.RoleChanged)]
    assert [(e.previous, e.role) for e in changes] == [("listener", "speaker"), ("speaker", "listener")]
    controls = await dc.core.ensure_account("discord", str(dc.fake.bot["id"]), "Discord Stage controls")
    assert changes[1].by == controls.id
    entries = await _audit(dc, space_id)
    assert any(e["what"] == "moved to listeners" and e["whom"] == fan and e["who_name"] == "Discord Stage controls"
               for e in entries), entries
    # the core agrees with Discord, so the bot asks nothing more of Discord
    await _drain(dc)
    assert not [c for c in dc.fake.calls[mark:] if c.path.endswith(f"/voice-states/{dc.fan}")]


async def test_server_mute_with_discords_controls_mutes_in_the_core_and_an_unmute_anywhere_lifts_it(dc: DC) -> None:
    space_id, fan = await _on_stage_with_hand(dc)
    await dc.core.approve(await _host(dc, "web"), space_id, fan)
    await until(lambda: _async(_fan_voice(dc)["suppress"] is False))

    mark = len(dc.fake.calls)
    await dc.fake.stage_moderate(dc.guild, dc.fan, mute=True)  # Server Mute
    await until(lambda: _muted(dc, space_id, fan, True))
    await _suppress(dc, True, mark)  # the core's mute is suppress on the Stage, as from any surface
    await until(lambda: _async(_fan_voice(dc)["suppress"] is True))
    await _drain(dc)
    assert await _role(dc, space_id, fan) == "speaker", "the bot's suppress did not come back as a demote"
    entries = await _audit(dc, space_id)
    assert any(e["what"] == "muted" and e["whom"] == fan for e in entries), entries

    # the moderator's Server Mute stays on Discord while the core mutes them (the approve's own sync, still
    # finishing its unsuppress when the mute came, once lifted it as if the core had)
    assert _fan_voice(dc)["mute"] is True

    mark = len(dc.fake.calls)
    await dc.core.mute(await _host(dc, "web"), space_id, fan, False)  # unmuted from the web room
    await _suppress(dc, False, mark)
    lift = await dc.fake.wait_for(lambda c: c.method == "PATCH" and c.path == f"/guilds/{dc.guild.id}/members/{dc.fan}"
                                  and c.body.get("mute") is False, after=mark)
    assert lift
    await until(lambda: _async(_fan_voice(dc)["mute"] is False and _fan_voice(dc)["suppress"] is False))
    await _drain(dc)
    assert not await _muted(dc, space_id, fan, True)


async def test_a_core_speaker_who_joins_the_stage_is_unsuppressed_and_removal_disconnects(dc: DC) -> None:
    await setup_guild(dc)
    space_id = await live(dc)
    fan = await dc.actor(dc.fan)
    await dc.core.join(fan, space_id)  # listening in the web room, brought on stage there
    await dc.core.promote(await _host(dc, "web"), space_id, fan.account_id, "speaker")
    mark = len(dc.fake.calls)
    await dc.fake.join_voice(dc.guild, dc.fan, dc.stage)
    await _suppress(dc, False, mark)
    await until(lambda: _async(_fan_voice(dc)["suppress"] is False))

    await dc.core.remove(await _host(dc, "web"), space_id, fan.account_id)
    moved = await dc.fake.wait_for(lambda c: c.method == "PATCH" and c.path == f"/guilds/{dc.guild.id}/members/{dc.fan}"
                                   and "channel_id" in c.body and c.body["channel_id"] is None, after=mark)
    assert moved
    await until(lambda: _async(dc.fan not in dc.fake.guilds[dc.guild.id].voice))


async def _role_is(dc: DC, space_id: str, account_id: str, role: str) -> bool:
    return await _role(dc, space_id, account_id) == role


async def _muted(dc: DC, space_id: str, account_id: str, on: bool) -> bool:
    return (account_id in (await dc.core.view(space_id)).space.muted) == on


async def _drain(dc: DC) -> None:
    """Every event published so far has been handled by every subscriber."""
    await dc.platform.bus.drain()  # type: ignore[attr-defined]


async def _async(value: object) -> object:
    return value
