"""What a Telegram community sees: a group admin adds the bot, hosts a Space from the group, followers
get their DMs, listeners raise hands and react from the live card. All through the unmodified
python-telegram-bot, over HTTP, against the fake Bot API."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from core.commands import REACTIONS
from core.model.space import SpaceState
from tests.integration.telegram.conftest import FAN1, FAN2, FAN3, GROUP, HOST, TG
from tests.support.telegram_fake import Call


def buttons(call: Call) -> list[dict[str, Any]]:
    markup = call.params.get("reply_markup") or {}
    return [b for row in markup.get("inline_keyboard", []) for b in row]


async def card_for(tg: TG, chat: int, predicate: Any, after: int = 0) -> Call:
    """The card message (or its latest edit) in ``chat`` that satisfies ``predicate``."""
    return await tg.fake.wait_for(
        lambda c: c.method in ("sendMessage", "editMessageText") and c.params.get("chat_id") == chat
        and predicate(str(c.params.get("text", ""))), after=after)


async def test_admin_adds_bot_schedules_and_followers_get_alerts(tg: TG) -> None:
    mark = len(tg.fake.calls)
    await tg.fake.bot_added(GROUP, HOST, title="Jazz Club")
    welcome = await tg.fake.reply_to(GROUP, mark)
    assert "/space new" in welcome.params["text"]
    commands = tg.fake.sent("setMyCommands")[0].params["commands"]
    assert {c["command"] for c in commands} >= {"space", "hand", "react", "ticket", "follow", "approve", "link"}

    # followers start the bot in private (so they can be DM'd), then follow the host from the group
    for fan in (FAN1, FAN2):
        assert "Welcome" in await tg.say(fan, fan, "/start")
    mark = len(tg.fake.calls)
    text = await tg.say(GROUP, HOST, '/space new "Friday Jam" +2h', name="Hosty")
    assert "Friday Jam" in text and "scheduled" in text
    card = await card_for(tg, GROUP, lambda t: "Friday Jam" in t and "Starts" in t, mark)
    assert next(b["text"] for b in buttons(card)).endswith("Remind me")
    space = (await tg.core.list_spaces(states=("scheduled",)))[0]
    for fan in (FAN1, FAN2, FAN3):  # FAN3 never started the bot: Telegram will refuse to DM them
        assert "follow Hosty" in await tg.say(GROUP, fan, "/follow")
    tg.fake.blocked.add(FAN3)
    # a reminder from the card's button
    mark = len(tg.fake.calls)
    await tg.fake.press(GROUP, FAN1, card.params.get("message_id") or 1, f"m:{space.id}")
    answer = await tg.fake.wait_for(lambda c: c.method == "answerCallbackQuery", after=mark)
    assert "DM you" in answer.params["text"]

    await tg.jobs()
    assert not [c for c in tg.fake.sent("sendMessage") if c.params["chat_id"] in (FAN1, FAN2) and
                "Friday Jam" in c.params["text"] and "starts in" in c.params["text"]]
    tg.clock.set(space.scheduled_for - timedelta(minutes=30))
    await tg.jobs()
    host_dm = tg.fake.sent("sendMessage", chat_id=HOST)
    assert any("Your Space" in c.params["text"] and "/space start" in c.params["text"] for c in host_dm)
    tg.clock.set(space.scheduled_for - timedelta(minutes=10))
    await tg.jobs()
    reminders = [c for c in tg.fake.sent("sendMessage", chat_id=FAN1) if "starts in 10 min" in c.params["text"]]
    assert len(reminders) == 1

    mark = len(tg.fake.calls)
    assert "is live" in await tg.say(GROUP, HOST, "/space start")
    await card_for(tg, GROUP, lambda t: "LIVE" in t and "Friday Jam" in t, mark)
    await tg.jobs()
    for fan in (FAN1, FAN2):
        alerts = [c for c in tg.fake.sent("sendMessage", chat_id=fan) if "is live now" in c.params["text"]]
        assert len(alerts) == 1, f"fan {fan} got {len(alerts)} go-live alerts"
        join = buttons(alerts[0])[0]
        assert join["url"] == f"https://t.me/{tg.fake.username}?start=join_{space.id}"
    refused = [c for c in tg.fake.calls if c.params.get("chat_id") == FAN3 and c.method == "sendMessage"]
    assert refused and all(c.status == 403 for c in refused)
    idents = await tg.core.identities((await tg.actor(FAN3)).account_id)
    assert [i.reachable for i in idents] == [False]
    await tg.jobs()
    assert len([c for c in tg.fake.sent("sendMessage", chat_id=FAN1) if "is live now" in c.params["text"]]) == 1

    # the Join link opens a private chat whose answer carries the Mini App button
    mark = len(tg.fake.calls)
    await tg.fake.send_text(FAN1, FAN1, f"/start join_{space.id}")
    room = await tg.fake.reply_to(FAN1, mark)
    web_app = [b for b in buttons(room) if "web_app" in b]
    assert web_app and web_app[0]["web_app"]["url"].endswith(f"/tg/app?space={space.id}")
    browser = next(b for b in buttons(room) if "url" in b)["url"]
    assert f"/s/{space.id}#t=" in browser

    mark = len(tg.fake.calls)
    assert "has ended" in await tg.say(GROUP, HOST, "/end")
    ended = await card_for(tg, GROUP, lambda t: "Friday Jam</b> — ended" in t, mark)
    assert ended.method == "editMessageText" and not buttons(ended)
    assert (await tg.core.view(space.id)).space.state == SpaceState.ENDED


async def test_hand_approve_and_reactions_show_on_the_card(tg: TG) -> None:
    mark = len(tg.fake.calls)
    await tg.say(GROUP, HOST, '/space new "Open Mic"', name="Hosty")
    card = await card_for(tg, GROUP, lambda t: "LIVE" in t and "Open Mic" in t, mark)
    msg_id = card.params.get("message_id")
    if msg_id is None:  # the first post: find the id the fake gave it
        msg_id = max(k[1] for k in tg.fake.messages if k[0] == GROUP)
    space = (await tg.core.list_spaces(states=("live",)))[0]

    mark = len(tg.fake.calls)
    await tg.fake.press(GROUP, FAN1, msg_id, f"h:{space.id}")
    ans = await tg.fake.wait_for(lambda c: c.method == "answerCallbackQuery", after=mark)
    assert "number 1" in ans.params["text"]
    assert "✋ Hand raised: you are number 2" in await tg.say(GROUP, FAN2, "/hand", name="Bea")
    queue = await tg.say(GROUP, HOST, "/queue")
    assert queue.index("User102") < queue.index("Bea")
    refused = await tg.say(GROUP, FAN2, "/approve 1")
    assert "Only the host or a co-host" in refused
    assert "User102 is now on stage" in await tg.say(GROUP, HOST, "/approve 1")
    view = await tg.core.view(space.id)
    assert view.space.speakers == [(await tg.actor(FAN1)).account_id]
    assert [h.account_id for h in view.space.hands] == [(await tg.actor(FAN2)).account_id]

    for user, idx in ((FAN2, REACTIONS.index("👏")), (FAN3, REACTIONS.index("👏")), (HOST, REACTIONS.index("💯"))):
        mark = len(tg.fake.calls)
        await tg.fake.press(GROUP, user, msg_id, f"r:{space.id}:{idx}")
        await tg.fake.wait_for(lambda c: c.method == "answerCallbackQuery", after=mark)
    final = await card_for(tg, GROUP, lambda t: "👏 2" in t and "💯 1" in t and "On stage: User102" in t)
    assert final.method == "editMessageText" and "✋ 1 in queue" in final.params["text"]
    assert "Bea's hand was lowered" in await tg.say(GROUP, HOST, "/deny 1")
    assert (await tg.core.view(space.id)).space.hands == []
    edits = [c for c in tg.fake.calls if c.method == "editMessageText"]
    assert all(c.status == 200 for c in edits), "an edit was refused (not modified, or rate limited)"


async def test_card_survives_a_restart_and_is_edited_not_reposted(tg: TG, tmp_path: Any, monkeypatch: Any) -> None:
    from spacebridge.app import stop
    from tests.integration.telegram.conftest import make_tg

    await tg.say(GROUP, HOST, '/space new "Night Owls"', name="Hosty")
    await card_for(tg, GROUP, lambda t: "Night Owls" in t)
    space = (await tg.core.list_spaces(states=("live",)))[0]
    host = await tg.actor(HOST, admin=True)
    db = tg.platform.settings.database_url
    tg.platform.runners.clear()
    await stop(tg.platform)
    # while the bot is down, the host turns captions on from another adapter (the CLI, the web room)
    p2 = await make_tg(tmp_path, monkeypatch, tg.fake, tg.clock, db=db)
    try:
        mark = len(tg.fake.calls)
        await p2.core.set_captions(host, space.id, True)
        edit = await card_for(tg, GROUP, lambda t: "Captions on" in t, mark)
        assert edit.method == "editMessageText"
        posts = [c for c in tg.fake.sent("sendMessage", chat_id=GROUP) if "Night Owls" in c.params["text"]
                 and "LIVE" in c.params["text"]]
        assert len(posts) == 1
    finally:
        await stop(p2)
    tg.platform = p2  # the fixture's stop() then finds nothing running twice
