"""Plugin commands in Telegram: listed with the bot's commands, run from the group with role checks,
notices posted under the Space's card, the recording indicator and captions on the card."""

from __future__ import annotations

import asyncio

from tests.integration.telegram.conftest import FAN1, FAN2, GROUP, HOST, TG


async def test_plugin_commands_from_the_group(tg: TG) -> None:
    listed = {c["command"] for c in tg.fake.sent("setMyCommands")[0].params["commands"]}
    assert {"record", "clip", "optout", "recordings", "audit", "block", "filter"} <= listed
    assert {"space", "hand", "captions", "mute_all"} <= listed  # the core's own are still there
    assert "muteall" not in listed  # the table's mute_all; the old name still works, off the menu

    await tg.say(GROUP, HOST, '/space new "Plugged night"', name="Hosty")
    space = (await tg.core.list_spaces(states=("live",)))[0]
    assert tg.platform.telegram is not None
    cards = tg.platform.telegram.cards
    for _ in range(100):
        if await cards.for_space(space.id):
            break
        await asyncio.sleep(0.05)
    card = (await cards.for_space(space.id))[0]
    fan1 = (await tg.actor(FAN1)).account_id

    assert "Only the host or a co-host" in await tg.say(GROUP, FAN1, "/record start")
    assert "action: must be one of start, stop" in await tg.say(GROUP, HOST, "/record later")
    assert "record needs action" in await tg.say(GROUP, HOST, "/record")
    mark = len(tg.fake.calls)
    started = await tg.say(GROUP, HOST, "/record start")
    assert "Recording" in started and "/p/recording/r/" in started
    notice = await tg.fake.wait_for(lambda c: c.method == "sendMessage" and c.params["chat_id"] == GROUP
                                    and "being recorded" in c.params.get("text", ""), after=mark)
    assert (notice.params.get("reply_parameters") or {}).get("message_id") == int(card.message_id)
    await tg.fake.wait_for(lambda c: c.method == "editMessageText" and c.params["chat_id"] == GROUP
                           and "🔴 Recording" in c.params["text"], after=mark)
    assert "left out" in await tg.say(GROUP, FAN1, "/optout")
    assert "included in this Space's recording again" in await tg.say(GROUP, FAN1, "/optout off")

    # moderation: a listener is refused, the host acts on a member by queue number or reply
    assert "Only the host or a co-host" in await tg.say(GROUP, FAN2, "/audit")
    await tg.say(GROUP, FAN2, "/hand")
    blocked = await tg.say(GROUP, HOST, "/block 1 keeps spamming")
    assert "removed and blocked" in blocked
    entry = "removed and blocked → User103 (keeps spamming)"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10.0
    log = await tg.say(GROUP, HOST, "/audit")
    while entry not in log and loop.time() < deadline:  # the audit log is written from the domain events
        await asyncio.sleep(0.05)
        log = await tg.say(GROUP, HOST, "/audit")
    assert entry in log
    assert "Filtered here: heck" in await tg.say(GROUP, HOST, "/filter add heck")

    # captions: the stage turns them on, lines show on the card with the speaker's name
    assert "Captions on" in await tg.say(GROUP, HOST, "/captions on")
    await tg.core.add_caption(space.id, fan1, "what the heck is going on", 1.0, 2.5)
    await tg.fake.wait_for(lambda c: c.method == "editMessageText" and c.params["chat_id"] == GROUP
                           and "User102:</i> what the h*** is going on" in c.params["text"])
    assert "Recording saved" in await tg.say(GROUP, HOST, "/record stop")
    assert "/p/recording/r/" in await tg.say(GROUP, FAN1, "/recordings")
    unknown = await tg.say(GROUP, FAN1, "/teleport")
    assert "I don't know /teleport" in unknown and "/clip" in unknown
