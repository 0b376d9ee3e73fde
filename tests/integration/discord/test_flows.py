"""Slash commands, the Stage, buttons and scheduled events, against the fake Discord.

The unmodified discord.py client talks to ``tests/support/discord_fake.py`` over HTTP and the
gateway WebSocket; every assertion is on what Discord was asked to do or what the core decided.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from core.commands import REACTIONS
from core.model.accounts import Actor
from tests.integration.discord.conftest import DC
from tests.support.discord_fake import Mention


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 5.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await check()
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def setup_guild(dc: DC, **extra: Any) -> dict[str, Any]:
    return await dc.ask(dc.admin, "spacebridge", "setup", stage_channel=Mention("channel", dc.stage),
                        announce_channel=Mention("channel", dc.text), host_rule="everyone", **extra)


async def live(dc: DC, title: str = "Morning show") -> str:
    iid = await dc.fake.interact(dc.guild, dc.host, "space", "start", {"title": title})
    r = await dc.fake.reply(iid)
    assert "is live" in r["content"], r
    spaces = await dc.core.list_spaces(states=("live",))
    dc.last = iid
    return str(spaces[0].id)


async def test_setup_then_start_opens_the_stage_and_announces(dc: DC) -> None:
    role = dc.fake.add_role(dc.guild, "Space fans")
    r = await setup_guild(dc, announce_role=Mention("role", role))
    assert r["flags"] & 64, "settings are shown to the admin only"
    assert f"<#{dc.stage}>" in r["content"] and "everyone" in r["content"]
    space_id = await live(dc)
    stage = await dc.fake.wait_for(lambda c: c.method == "POST" and c.path == "/stage-instances")
    assert stage.body["topic"] == "Morning show" and str(stage.body["channel_id"]) == str(dc.stage)
    post = await dc.fake.wait_for(lambda c: c.method == "POST" and c.path == f"/channels/{dc.text}/messages")
    assert post.body["embeds"][0]["title"] == "Morning show"
    assert f"<@&{role}>" in post.body["content"]
    assert [str(r) for r in post.body["allowed_mentions"]["roles"]] == [str(role)], "only the configured role is pinged"
    ids = [c["custom_id"] for row in post.body["components"] for c in row["components"] if "custom_id" in c]
    assert f"sb:j:{space_id}" in ids and f"sb:h:{space_id}" in ids
    # the host gets a personal speaker link to the web room, privately
    link = await dc.fake.reply(dc.last, index=1)
    assert link["flags"] & 64
    url = link["components"][0]["components"][0]["url"]
    assert url.startswith(f"{dc.platform.url}/s/{space_id}#t=")

    await dc.ask(dc.host, "space", "end")
    await dc.fake.wait_for(lambda c: c.method == "DELETE" and c.path == f"/stage-instances/{dc.stage}")
    edited = await dc.fake.wait_for(lambda c: c.method == "PATCH" and c.path.startswith(f"/channels/{dc.text}/")
                                    and "Ended" in c.body["embeds"][0]["description"])
    assert edited.body["components"] == []


async def test_request_to_speak_joins_the_queue_and_approval_elsewhere_unsuppresses(dc: DC) -> None:
    await setup_guild(dc)
    space_id = await live(dc)
    fan = await dc.actor(dc.fan)
    await dc.fake.join_voice(dc.guild, dc.fan, dc.stage)
    await until(lambda: _present(dc, space_id, fan.account_id))
    await dc.fake.request_to_speak(dc.guild, dc.fan)
    view = await until(lambda: _hand_up(dc, space_id, fan.account_id))
    assert [h.account_id for h in view.space.hands] == [fan.account_id]

    # the host approves from the web room (any platform): Discord is asked to unsuppress the member
    host = await dc.core.ensure_account("discord", str(dc.host), "Hana")
    web_host = Actor(account_id=host.id, platform="web")
    mark = len(dc.fake.calls)
    await dc.core.approve(web_host, space_id, fan.account_id)
    patch = await dc.fake.wait_for(lambda c: c.method == "PATCH" and c.path.endswith(f"/voice-states/{dc.fan}"),
                                   after=mark)
    assert patch.body["suppress"] is False and str(patch.body["channel_id"]) == str(dc.stage)
    assert dc.fake.guilds[dc.guild.id].voice[dc.fan]["suppress"] is False

    mark = len(dc.fake.calls)
    await dc.core.mute(web_host, space_id, fan.account_id, True)
    patch = await dc.fake.wait_for(lambda c: c.method == "PATCH" and c.path.endswith(f"/voice-states/{dc.fan}"),
                                   after=mark)
    assert patch.body["suppress"] is True

    # leaving the Stage leaves the Space
    await dc.fake.leave_voice(dc.guild, dc.fan)
    await until(lambda: _absent(dc, space_id, fan.account_id))


async def _present(dc: DC, space_id: str, account_id: str) -> bool:
    return bool((await dc.core.view(space_id)).listener_count >= 2)


async def _absent(dc: DC, space_id: str, account_id: str) -> bool:
    return bool((await dc.core.view(space_id)).listener_count == 1)


async def _hand_up(dc: DC, space_id: str, account_id: str) -> Any:
    view = await dc.core.view(space_id)
    return view if any(h.account_id == account_id for h in view.space.hands) else None


async def test_card_buttons_react_raise_hands_and_hand_out_personal_links(dc: DC) -> None:
    await setup_guild(dc)
    space_id = await live(dc)
    post = await dc.fake.wait_for(lambda c: c.method == "POST" and c.path == f"/channels/{dc.text}/messages")
    card = next(m for m, v in dc.fake.messages.items() if v["channel_id"] == str(dc.text) and v["embeds"])
    assert post.body["embeds"][0]["title"] == dc.fake.messages[card]["embeds"][0]["title"]
    await dc.fake.join_voice(dc.guild, dc.fan, dc.stage)  # listening on the Stage
    fan = await dc.actor(dc.fan)
    await until(lambda: _present(dc, space_id, fan.account_id))
    clap = REACTIONS.index("👏")
    iid = await dc.fake.interact(dc.guild, dc.fan, "", custom_id=f"sb:r:{space_id}:{clap}", message_id=card)
    answer = await dc.fake.reply(iid)
    assert answer["flags"] & 64 and "👏 1" in answer["content"]
    assert (await dc.core.view(space_id)).reactions == {"👏": 1}
    iid = await dc.fake.interact(dc.guild, dc.fan, "", custom_id=f"sb:h:{space_id}", message_id=card)
    assert "number 1" in (await dc.fake.reply(iid))["content"]
    # the card follows: one hand up and the reaction tally
    edit = await dc.fake.wait_for(lambda c: c.method == "PATCH" and c.path == f"/channels/{dc.text}/messages/{card}"
                                  and any(f["name"] == "Hands up" and f["value"] == "1"
                                          for f in c.body["embeds"][0].get("fields", [])))
    assert any(f["name"] == "Reactions" and "👏 1" in f["value"] for f in edit.body["embeds"][0]["fields"])
    iid = await dc.fake.interact(dc.guild, dc.fan, "", custom_id=f"sb:j:{space_id}", message_id=card)
    link = await dc.fake.reply(iid)
    token = link["components"][0]["components"][0]["url"].split("#t=")[1]
    claims = dc.platform.tokens.verify(token, dc.core.now(), space_id)
    assert claims.account_id == fan.account_id and claims.role == "listener"
    # a forged button (unknown reaction index) is refused and changes nothing
    iid = await dc.fake.interact(dc.guild, dc.fan, "", custom_id=f"sb:r:{space_id}:{len(REACTIONS)}", message_id=card)
    assert "⚠️" in (await dc.fake.reply(iid))["content"]
    assert (await dc.core.view(space_id)).reactions == {"👏": 1}
    iid = await dc.fake.interact(dc.guild, dc.fan, "", custom_id="sb:zz", message_id=card)
    assert "⚠️" in (await dc.fake.reply(iid))["content"], "a malformed button gets a clear answer"


async def test_renaming_a_live_space_retitles_the_stage_and_demoting_suppresses(dc: DC) -> None:
    await setup_guild(dc)
    space_id = await live(dc)
    host = await dc.actor(dc.host)
    await dc.core.edit_space(host, space_id, title="Evening show")
    patch = await dc.fake.wait_for(lambda c: c.method == "PATCH" and c.path == f"/stage-instances/{dc.stage}")
    assert patch.body["topic"] == "Evening show"
    fan = await dc.actor(dc.fan)
    await dc.fake.join_voice(dc.guild, dc.fan, dc.stage)
    await until(lambda: _present(dc, space_id, fan.account_id))
    await dc.core.promote(host, space_id, fan.account_id, "speaker")
    up = await dc.fake.wait_for(lambda c: c.method == "PATCH" and c.path.endswith(f"/voice-states/{dc.fan}"))
    assert up.body["suppress"] is False
    mark = len(dc.fake.calls)
    await dc.core.demote(host, space_id, fan.account_id)
    down = await dc.fake.wait_for(lambda c: c.method == "PATCH" and c.path.endswith(f"/voice-states/{dc.fan}"),
                                  after=mark)
    assert down.body["suppress"] is True


async def test_scheduled_space_becomes_a_stage_event_kept_in_sync_and_interested_get_reminders(dc: DC) -> None:
    await setup_guild(dc)
    r = await dc.ask(dc.host, "space", "schedule", title="Launch party", when="+2h")
    assert "scheduled for" in r["content"], r
    created = await dc.fake.wait_for(lambda c: c.method == "POST" and c.path.endswith("/scheduled-events"))
    assert created.body["entity_type"] == 1 and str(created.body["channel_id"]) == str(dc.stage)
    assert created.body["name"] == "Launch party"
    space = (await dc.core.list_spaces(states=("scheduled",)))[0]
    assert datetime.fromisoformat(created.body["scheduled_start_time"]) == space.scheduled_for
    event_id = next(iter(dc.guild.events))

    host = await dc.actor(dc.host)
    new_time = dc.core.now().replace(microsecond=0) + (space.scheduled_for - dc.core.now()) * 2
    await dc.core.reschedule_space(host, space.id, new_time)
    moved = await dc.fake.wait_for(lambda c: c.method == "PATCH" and c.path.endswith(f"/scheduled-events/{event_id}"))
    assert datetime.fromisoformat(moved.body["scheduled_start_time"]) == new_time

    # a member marks the event Interested: they get the core's reminder by DM
    await dc.fake.mark_interested(dc.guild, event_id, dc.fan)
    assert dc.platform.discord is not None
    await dc.platform.discord.sync_interested()
    fan = await dc.actor(dc.fan)
    assert fan.account_id in await _reminded(dc, space.id)
    dc.clock.set(new_time)
    await dc.jobs()
    dm = await dc.fake.wait_for(lambda c: c.method == "POST" and c.path == "/users/@me/channels"
                                and str(c.body["recipient_id"]) == str(dc.fan))
    assert dm
    dm_channel = dc.fake.dm_channels[dc.fan]
    await dc.fake.wait_for(lambda c: c.method == "POST" and c.path == f"/channels/{dm_channel}/messages"
                           and "Launch party" in c.body["content"])

    # starting it starts the event and links the stage instance to it; cancelling another cancels its event
    await dc.ask(dc.host, "space", "start", space=space.id)
    started = await dc.fake.wait_for(lambda c: c.method == "PATCH" and c.path.endswith(f"/scheduled-events/{event_id}")
                                     and c.body.get("status") == 2)
    assert started
    stage = await dc.fake.wait_for(lambda c: c.method == "POST" and c.path == "/stage-instances")
    assert str(stage.body["guild_scheduled_event_id"]) == str(event_id)


async def test_cancelling_a_scheduled_space_cancels_its_event(dc: DC) -> None:
    await setup_guild(dc)
    await dc.ask(dc.host, "space", "schedule", title="Maybe later", when="+1d")
    await dc.fake.wait_for(lambda c: c.method == "POST" and c.path.endswith("/scheduled-events"))
    event_id = next(iter(dc.guild.events))
    r = await dc.ask(dc.host, "space", "cancel")
    assert "cancelled" in r["content"]
    await dc.fake.wait_for(lambda c: c.method == "PATCH" and c.path.endswith(f"/scheduled-events/{event_id}")
                           and c.body.get("status") == 4)


async def _reminded(dc: DC, space_id: str) -> set[str]:
    from sqlalchemy import select

    from core.storage.tables import ReminderRow

    async with dc.core.uow() as uow:
        return set(await uow.session.scalars(select(ReminderRow.account_id).where(ReminderRow.space_id == space_id)))
