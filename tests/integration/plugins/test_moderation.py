"""Moderation: every stage and moderator action leaves an audit entry (who, what, whom, when, why),
readable from chat and the CLI; the word filter; spam limits; mute-all; block with a reason."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from core.commands import dispatch
from core.errors import Forbidden, RateLimited
from core.messages import describe
from core.model.accounts import Actor
from plugins.moderation import read_audit
from spacebridge.app import Instance, stop
from tests.integration.plugins.conftest import make_platform
from tests.integration.webrtc.test_signaling import connect


@pytest.fixture
async def platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Instance]:
    p = await make_platform(tmp_path, monkeypatch, plugins={
        "moderation": {"words": ["darn"], "reactions_per_min": 12, "hands_per_min": 6, "comments_per_min": 6}})
    yield p
    await stop(p)


async def audit(p: Instance, space_id: str) -> list[dict[str, object]]:
    """Oldest first, once every event published so far has been handled."""
    await p.bus.drain()  # type: ignore[attr-defined]
    rows = await read_audit(p.plugins.plugins["moderation"][1].store, space_id, limit=500)
    return list(reversed(rows))


async def test_every_moderation_action_is_audited(platform: Instance) -> None:
    p, core = platform, platform.core
    people = ("hana", "cora", "sam", "finn", "troll")
    ids = {n: (await core.ensure_account("web", n, n.capitalize())).id for n in people}
    host, cohost, sam, finn, troll = (Actor(account_id=ids[n]) for n in people)
    community = await core.ensure_community("web", "club", "Club")
    space = await core.create_space(Actor(account_id=ids["hana"], is_community_admin=True), "Town hall",
                                    community_id=community.id)
    s = space.id
    for who in (cohost, sam, finn, troll):
        await core.join(who, s)
    await core.promote(host, s, ids["cora"], "cohost")
    await core.raise_hand(sam, s)
    await core.approve(cohost, s, ids["sam"])
    await core.raise_hand(finn, s)
    await core.deny(cohost, s, ids["finn"])
    await core.invite(host, s, ids["finn"])
    await core.accept_invite(finn, s)
    await core.mute(cohost, s, ids["sam"])
    await core.mute(cohost, s, ids["sam"], False)
    await core.demote(host, s, ids["finn"])
    await core.pin(host, s, "Agenda", url="https://example.org/agenda")
    await core.set_captions(host, s, True)
    await core.memberships.create_tier(host, "Supporter", 500, "eur")
    await core.set_subscriber_priority(cohost, s, True)
    await core.remove(cohost, s, ids["finn"], reason="off topic")
    # the plugin's own commands, through the platform-neutral dispatcher and a web socket
    done = await dispatch(core, cohost, "muteall", s, {})  # the old plugin name reaches the table's mute_all
    assert done.code == "stage.all_muted" and (await core.view(s)).space.muted == {ids["sam"]}  # host, caller live
    async with aiohttp.ClientSession() as http:
        peer = await connect(p, http, s, p.tokens.issue(s, ids["hana"], "speaker", core.now()), None)
        await peer.recv("welcome")
        r2 = await peer.command("block", member=ids["troll"], reason="spam links")
        assert r2["type"] == "ok" and "blocked" in r2["result"]["text"]
        r3 = await peer.command("block", member=ids["troll"])
        assert r3["code"] == "protocol.bad_argument" and r3["data"]["argument"] == "reason"  # one table, one refusal
        r4 = await peer.command("filter", action="add", words="heck gosh")
        assert r4["result"]["text"] == "Filtered here: gosh, heck"
        # a listener cannot read the audit log or act
        with pytest.raises(Forbidden) as denied:
            await p.plugins.invoke("audit", sam, s, {}, "telegram")
        assert denied.value.code == "role.moderator_required"

        rows = await audit(p, s)
        said = [(r["who_name"], r["what"], r["whom_name"], r["why"]) for r in rows]
        expected = [
            ("Hana", "made cohost", "Cora", ""),
            ("Cora", "approved raised hand", "Sam", ""),
            ("Cora", "made speaker", "Sam", ""),
            ("Cora", "denied raised hand", "Finn", ""),
            ("Hana", "invited to speak", "Finn", ""),
            ("Finn", "joined the stage as speaker", None, ""),
            ("Cora", "muted", "Sam", ""),
            ("Cora", "unmuted", "Sam", ""),
            ("Hana", "moved to listeners", "Finn", ""),
            ("Hana", "pinned 'Agenda'", None, ""),
            ("Hana", "turned captions on", None, ""),
            ("Cora", "turned subscribers first in the queue on", None, ""),
            ("Cora", "removed", "Finn", "off topic"),
            ("Cora", "muted", "Sam", ""),
            ("Hana", "removed and blocked", "Troll", "spam links"),
            ("Hana", "added filtered words", None, "heck gosh"),
        ]
        for item in expected:
            assert item in said, f"no audit entry {item}; have {said}"
        assert said.count(("Cora", "muted", "Sam", "")) == 2  # by hand, then by mute-all
        assert all(r["at"] and r["space_id"] == s for r in rows)

        # the log is readable from chat (moderators) ...
        log = await peer.command("audit", count=3)
        assert log["type"] == "ok" and log["result"]["text"].startswith("Audit log, newest first:")
        assert "Hana: added filtered words" in log["result"]["text"]
        only = await peer.command("audit", who=ids["cora"], count=50)
        assert "Hana:" not in only["result"]["text"] and "Cora: muted → Sam" in only["result"]["text"]

        # ... the word filter works on pins and captions, and is itself audited
        await core.pin(host, s, "What the heck, darn it", url="https://example.org/x")
        await core.add_caption(s, ids["sam"], "gosh this is darn good", 1.0, 2.0)
        view = await core.view(s)
        assert view.space.pins[-1].title == "What the h***, d*** it"
        assert (await core.recent_captions(s))[-1]["text"] == "g*** this is d*** good"
        # ... and spam is slowed down, once per burst in the log
        for _ in range(3):
            await core.react(sam, s, "👏")
        with pytest.raises(RateLimited) as slow:
            await core.react(sam, s, "👏")
        assert slow.value.code == "moderation.rate_limited"
        refused = await peer.command("react", emoji="👍")  # the host's own bucket is separate
        assert refused["type"] == "ok"
        fan = Actor(account_id=(await core.ensure_account("web", "newbie", "Newbie")).id)
        await core.join(fan, s)
        for _ in range(3):
            await core.raise_hand(fan, s)
            await core.lower_hand(fan, s)
        with pytest.raises(RateLimited):
            await core.raise_hand(fan, s)
        # comments in the web room: filtered, limited, and late joiners see them
        said = await peer.command("comment", text="oh   heck, that is darn good")
        assert said["type"] == "ok" and said["result"]["text"] == "oh h***, that is d*** good"
        await peer.recv("event", event__type="comment.posted", event__text="oh h***, that is d*** good")
        assert (await peer.command("comment", text=" "))["code"] == "comment.length"
        assert (await peer.command("comment", text="x" * 301))["code"] == "comment.length"
        chatty = Actor(account_id=(await core.ensure_account("web", "chatty", "Chatty")).id)
        await core.join(chatty, s)
        for i in range(3):
            await core.comment(chatty, s, f"hello {i}")
        with pytest.raises(RateLimited) as hushed:
            await core.comment(chatty, s, "hello again")
        assert "comment again" in describe(hushed.value)
        assert [c["text"] for c in await core.recent_comments(s)][-2:] == ["hello 1", "hello 2"]
        rows = await audit(p, s)
        whats = [r["what"] for r in rows]
        assert "filtered 2 words in a comment" in whats and whats.count("slowed down (comment spam)") == 1
        assert "filtered 2 words in a pin" in whats and "filtered 2 words in a caption" in whats
        assert whats.count("slowed down (react spam)") == 1 and whats.count("slowed down (hand spam)") == 1

        # the host leaves (explicitly: a closed socket is only a disconnect): the co-host takes over, logged too
        await peer.ws.send_json({"type": "leave"})
        await peer.ws.receive(timeout=10)  # the server closes the socket once the leave is done
    for _ in range(100):
        if (await core.view(s)).space.host_id == ids["cora"]:
            break
        await asyncio.sleep(0.05)
    await core.end_space(cohost, s)
    rows = await audit(p, s)
    tail = [(r["who_name"], r["what"], r["whom_name"]) for r in rows[-3:]]
    assert ("Hana", "left the stage", None) in tail and tail[-1] == ("Spacebridge", "Space ended (host ended)", None)
    assert any(r["what"] == "made host" and r["whom_name"] == "Cora" for r in rows[-3:])

    env = {**os.environ, "SPACEBRIDGE_DATABASE_URL": p.settings.resolved_database_url()}
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "spacebridge", "audit", s, "--json",
                                                   "--limit", "500"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    entries = json.loads(out.stdout)
    assert len(entries) == len(rows) and entries == list(reversed(rows))
    by = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "spacebridge", "audit", s, "--by", ids["cora"]],
                                 capture_output=True, text=True, env=env)
    assert "Cora: removed -> Finn  (off topic)" in by.stdout and "Hana" not in by.stdout.replace("Hana:", "")
    missing = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "spacebridge", "audit", "nosuchspace"],
                                      capture_output=True, text=True, env=env)
    assert missing.returncode == 1 and "There is no Space nosuchspace" in missing.stderr
