"""Telegram runs the one command table: its menu and /help list every table command, a person is named
by a reply, an @mention, a queue number or an account id (so a web hand is approved from the group),
and the commands Telegram lacked before the table (unmute, clear_queue, step_down, accept_invite,
mute_all, comment, reschedule) work with the table's rules and the shared words."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from core.commands import BUILTIN_TABLE
from core.model.accounts import Actor
from tests.integration.telegram.conftest import FAN1, FAN2, GROUP, HOST, TG


async def say_as(tg: TG, chat: int, user: dict[str, Any], text: str,
                 entities: Sequence[dict[str, Any]] = ()) -> str:
    """``user`` (a Telegram user object, e.g. with a username) types ``text``; the bot's answer."""
    mark = len(tg.fake.calls)
    msg_id = tg.fake._next_msg(chat)
    cmd = text.split()[0]
    await tg.fake.push({"message": {"message_id": msg_id, "date": int(time.time()), "chat": tg.fake.chat(chat),
                                    "from": user, "text": text,
                                    "entities": [{"type": "bot_command", "offset": 0, "length": len(cmd)},
                                                 *entities]}})
    call = await tg.fake.wait_for(lambda c: c.method == "sendMessage" and c.params.get("chat_id") == chat
                                  and (c.params.get("reply_parameters") or {}).get("message_id") == msg_id,
                                  after=mark)
    return str(call.params.get("text", ""))


async def test_menu_and_help_come_from_the_table(tg: TG) -> None:
    menu = {c["command"] for c in tg.fake.sent("setMyCommands")[0].params["commands"]}
    table = {c.name for c in BUILTIN_TABLE} - {"start"}  # the table's start is /space start here
    assert table <= menu
    assert {"start", "help", "spaces", "space", "queue"} <= menu
    help_text = await tg.say(FAN1, FAN1, "/help")
    for name in table:
        assert f"/{name}" in help_text
    assert "/promote WHO [speaker|cohost]" in help_text


async def test_people_named_by_mention_number_and_id_from_any_platform(tg: TG) -> None:
    await tg.say(GROUP, HOST, '/space new "Named"', name="Hosty")
    space = (await tg.core.list_spaces(states=("live",)))[0]
    bea = {"id": FAN1, "is_bot": False, "first_name": "Bea", "username": "bea_b"}
    assert "number 1" in await say_as(tg, GROUP, bea, "/hand")
    assert "Bea is now on stage" in await say_as(tg, GROUP, tg.fake.user(HOST, "Hosty"), "/approve @bea_b")
    assert (await tg.core.view(space.id)).space.role_of((await tg.actor(FAN1)).account_id) is not None
    assert "don't know @nobody" in await tg.say(GROUP, HOST, "/mute @nobody")

    # a tapped name (text_mention) of someone with no username
    cy = {"id": FAN2, "is_bot": False, "first_name": "Cy", "last_name": "Young"}
    text = "/invite Cy Young"
    assert "Cy Young is invited to speak" in await say_as(
        tg, GROUP, tg.fake.user(HOST, "Hosty"), text, [{"type": "text_mention", "offset": 8, "length": 8, "user": cy}])

    # /follow SPACE_ID follows that Space's host, from any group
    assert "You follow Hosty" in await tg.say(-1005555, FAN2, f"/follow {space.id}", name="Cy")

    # a hand raised in the web room is approved from the group by its queue number
    web = await tg.core.create_account("Wendy on the web")
    await tg.core.raise_hand(Actor(account_id=web.id, platform="web"), space.id)
    queue = await tg.say(GROUP, HOST, "/queue")
    assert "1. Wendy on the web" in queue
    assert "Wendy on the web is now on stage" in await tg.say(GROUP, HOST, "/approve 1")
    assert (await tg.core.view(space.id)).space.role_of(web.id) is not None


async def test_commands_new_to_telegram_follow_the_table(tg: TG) -> None:
    await tg.say(GROUP, HOST, '/space new "Table Night"', name="Hosty")
    space = (await tg.core.list_spaces(states=("live",)))[0]
    fan1 = (await tg.actor(FAN1)).account_id

    assert "Only the host or a co-host" in await tg.say(GROUP, FAN1, "/clear_queue")
    await tg.say(GROUP, FAN1, "/hand")
    await tg.say(GROUP, FAN2, "/hand")
    assert "Every hand is lowered" in await tg.say(GROUP, HOST, "/clear_queue")
    assert (await tg.core.view(space.id)).space.hands == []

    assert "invited to speak" in await tg.say(GROUP, HOST, f"/invite {fan1}")
    assert "You are on stage" in await tg.say(GROUP, FAN1, "/accept_invite")
    assert "User102 is muted" in await tg.say(GROUP, FAN1, "/mute")  # on stage: no one named is yourself
    assert "User102 is unmuted" in await tg.say(GROUP, FAN1, "/unmute")
    assert "muted" in await tg.say(GROUP, HOST, f"/mute {fan1}")
    assert "User102 is unmuted" in await tg.say(GROUP, HOST, f"/unmute {fan1}")
    assert fan1 not in (await tg.core.view(space.id)).space.muted
    assert "Everyone on stage is muted" in await tg.say(GROUP, HOST, "/mute_all")
    assert fan1 in (await tg.core.view(space.id)).space.muted
    assert "Everyone on stage is muted" in await tg.say(GROUP, HOST, "/muteall")  # the name docs once gave
    assert "You left the stage" in await tg.say(GROUP, FAN1, "/step_down")
    assert (await tg.core.view(space.id)).space.role_of(fan1) is None

    assert "Usage: /comment TEXT" in await tg.say(GROUP, FAN2, "/comment")
    assert "Said in" in await tg.say(GROUP, FAN2, "/comment hello from the group")
    assert "Which Space" in await tg.say(GROUP, HOST, "/reschedule +2h")  # none of this group is scheduled


async def test_reschedule_from_the_group(tg: TG) -> None:
    await tg.say(GROUP, HOST, '/space new "Later" +2h', name="Hosty")
    space = (await tg.core.list_spaces(states=("scheduled",)))[0]
    before = space.scheduled_for
    assert "Only the host" in await tg.say(GROUP, FAN1, "/reschedule +3h")
    assert "Later" in await tg.say(GROUP, HOST, "/reschedule +3h")
    after = (await tg.core.view(space.id)).space.scheduled_for
    assert before is not None and after is not None and after > before


async def test_subscribers_first_in_the_queue_from_the_group(tg: TG) -> None:
    """subscriber_priority (issue 19) from Telegram: refused in words while the host sells no tier; once
    on, a subscriber's /hand answers number 1 and /queue and /approve 1 follow that order."""
    from core.model.subscription import SubscriptionStatus
    from tests.integration.test_subscriber_badge import _subscribe

    await tg.say(GROUP, HOST, '/space new "Members first"', name="Hosty")
    space = (await tg.core.list_spaces(states=("live",)))[0]
    assert "sells no subscription tiers yet" in await tg.say(GROUP, HOST, "/subscriber_priority on")
    assert not (await tg.core.view(space.id)).space.subscriber_priority
    tier = await tg.core.memberships.create_tier(await tg.actor(HOST), "Basic", 300, "eur")
    assert "Only the host or a co-host" in await tg.say(GROUP, FAN1, "/subscriber_priority on", name="Bea")
    assert "subscribers' raised hands now go first" in await tg.say(GROUP, HOST, "/subscriber_priority on")
    assert "number 1" in await tg.say(GROUP, FAN1, "/hand", name="Bea")
    cy = await tg.actor(FAN2)
    await _subscribe(tg.core, tier, cy.account_id, SubscriptionStatus.ACTIVE)
    assert "number 1" in await tg.say(GROUP, FAN2, "/hand", name="Cy")  # ahead of Bea
    queue = await tg.say(GROUP, HOST, "/queue")
    lines = queue.splitlines()
    assert lines[1].startswith("1. ") and cy.account_id in lines[1] and lines[2].startswith("2. Bea"), queue
    # the card's queue follows a toggle at once (both hands still up)
    mark = len(tg.fake.calls)
    assert "back in the order hands went up" in await tg.say(GROUP, HOST, "/subscriber_priority off")
    await tg.fake.wait_for(lambda c: c.method == "editMessageText" and "Queue: 1. Bea" in str(c.params.get("text")),
                           after=mark)
    mark = len(tg.fake.calls)
    await tg.say(GROUP, HOST, "/subscriber_priority on")
    await tg.fake.wait_for(lambda c: c.method == "editMessageText" and "2. Bea" in str(c.params.get("text")),
                           after=mark)
    assert "is now on stage" in await tg.say(GROUP, HOST, "/approve 1")
    assert (await tg.core.view(space.id)).space.role_of(cy.account_id) is not None
    assert "back in the order hands went up" in await tg.say(GROUP, HOST, "/subscriber_priority")  # toggles off
