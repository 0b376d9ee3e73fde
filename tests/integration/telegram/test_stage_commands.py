"""The host runs the stage from the group: invite, mute, remove (and block), pins, captions, share;
cross-platform linking through the /start deep link."""

from __future__ import annotations

from core.model.accounts import Actor
from tests.integration.telegram.conftest import FAN1, FAN2, GROUP, HOST, TG

OTHER_GROUP = -1009999


async def test_host_runs_the_stage_from_the_group(tg: TG) -> None:
    await tg.say(GROUP, HOST, '/space new "Stage Night"', name="Hosty")
    space = (await tg.core.list_spaces(states=("live",)))[0]
    fan1, fan2 = (await tg.actor(FAN1)).account_id, (await tg.actor(FAN2)).account_id

    assert "invited to speak" in await tg.say(GROUP, HOST, f"/invite {fan1}")
    assert (await tg.core.view(space.id)).space.role_of(fan1) is None  # invited, not yet on stage
    await tg.core.accept_invite(await tg.actor(FAN1), space.id)
    assert "User102 is muted" in await tg.say(GROUP, HOST, f"/mute {fan1}")
    assert fan1 in (await tg.core.view(space.id)).space.muted
    assert "unmuted" in await tg.say(GROUP, HOST, f"/mute off {fan1}")
    assert fan1 not in (await tg.core.view(space.id)).space.muted

    assert "Pinned: Slides" in await tg.say(GROUP, HOST, "/pin https://example.org/slides Slides")
    assert "Captions on" in await tg.say(GROUP, HOST, "/captions on")
    card = await tg.fake.wait_for(lambda c: c.method == "editMessageText" and c.params["chat_id"] == GROUP
                                  and "📌 Slides — https://example.org/slides" in c.params["text"]
                                  and "Captions on" in c.params["text"])
    assert card.status == 200
    assert "Unpinned" in await tg.say(GROUP, HOST, "/unpin 1")
    assert (await tg.core.view(space.id)).space.pins == []

    await tg.say(GROUP, FAN2, "/hand")
    assert "removed and blocked" in await tg.say(GROUP, HOST, f"/remove block {fan2}")
    assert "blocked you" in await tg.say(GROUP, FAN2, "/hand")
    assert (await tg.core.view(space.id)).space.hands == []

    # sharing into another group posts a card there that is kept up to date too
    mark = len(tg.fake.calls)
    text = await tg.say(OTHER_GROUP, FAN1, f"/share {space.id}")
    assert "Stage Night" in text and f"start=join_{space.id}" in text
    await tg.fake.wait_for(lambda c: c.method == "sendMessage" and c.params["chat_id"] == OTHER_GROUP
                           and "LIVE" in c.params["text"], after=mark)
    mark = len(tg.fake.calls)
    await tg.say(GROUP, HOST, "/end")
    for chat in (GROUP, OTHER_GROUP):
        await tg.fake.wait_for(lambda c, chat=chat: c.method == "editMessageText" and c.params["chat_id"] == chat
                               and "— ended" in c.params["text"], after=mark)


async def test_link_code_from_the_web_redeemed_by_deep_link(tg: TG) -> None:
    web_acc = await tg.core.create_account("Ada on the web")
    code = await tg.core.issue_link_code(Actor(account_id=web_acc.id, platform="web"))
    text = await tg.say(FAN1, FAN1, f"/start link_{code.code}")
    assert "Linked" in text and "Ada on the web" in text
    tg_acc = await tg.core.ensure_account("telegram", str(FAN1), "?")
    assert tg_acc.id == web_acc.id
    assert "not valid" in await tg.say(FAN2, FAN2, f"/link {code.code}")  # single use
    issued = await tg.say(FAN2, FAN2, "/link")
    assert "link code is" in issued


async def test_cohost_promote_and_demote_from_the_group(tg: TG) -> None:
    await tg.say(GROUP, HOST, '/space new "Co-host Night"', name="Hosty")
    space = (await tg.core.list_spaces(states=("live",)))[0]
    fan1 = (await tg.actor(FAN1)).account_id
    await tg.core.join(await tg.actor(FAN1), space.id)
    assert "Only the host or a co-host" in await tg.say(GROUP, FAN2, f"/promote {fan1} cohost")
    assert "User102 is now a co-host" in await tg.say(GROUP, HOST, f"/promote {fan1} cohost")
    assert fan1 in (await tg.core.view(space.id)).space.cohosts
    assert "User102 is back in the audience" in await tg.say(GROUP, HOST, f"/demote {fan1}")
    s = (await tg.core.view(space.id)).space
    assert fan1 not in s.cohosts and fan1 not in s.speakers
