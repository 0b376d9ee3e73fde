"""The plugins' key-value store and the Space badges on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from core import events as ev
from core.errors import Invalid
from core.kv import KeyValueStore
from core.model.accounts import Actor
from core.services import Core


async def test_store_upserts_scans_by_prefix_and_keeps_namespaces_apart(core: Core) -> None:
    a = KeyValueStore(core.sessionmaker, core.clock, "alpha")
    b = KeyValueStore(core.sessionmaker, core.clock, "beta")
    await a.put("audit:s1:0002", {"n": 2})
    await a.put_many([("audit:s1:0001", {"n": 1}), ("audit:s1:0003", {"n": 3}), ("audit:s10:0001", {"n": 10}),
                      ("100%_sure", {"odd": True})])
    await a.put("audit:s1:0002", {"n": 22})  # an upsert, not a second row
    await b.put("audit:s1:0001", {"other": True})
    assert [e.value["n"] for e in await a.scan("audit:s1:")] == [1, 22, 3]
    assert [e.value["n"] for e in await a.scan("audit:s1:", newest_first=True, limit=2)] == [3, 22]
    assert [e.key for e in await a.scan("100%")] == ["100%_sure"]  # LIKE wildcards are literal
    assert await a.scan("100%x") == [] and await a.scan("1000") == []
    assert await b.get("audit:s1:0002") is None and (await b.get("audit:s1:0001")) == {"other": True}
    assert await a.delete("audit:s1:0001") and not await a.delete("audit:s1:0001")
    with pytest.raises(Invalid):
        await a.put("", {"x": 1})
    with pytest.raises(Invalid):
        await a.put("k", {"x": "y" * 70_000})
    assert await a.get("k") is None


async def test_badges_show_with_the_live_space_and_are_announced(core: Core) -> None:
    host = await core.ensure_account("web", "h", "Hana")
    space = await core.create_space(Actor(account_id=host.id, is_community_admin=True), "Badged")
    await core.set_badge(space.id, "recording", "🔴 Recording")
    await core.set_badge(space.id, "other", "🧪 Beta")
    assert (await core.view(space.id)).badges == {"other": "🧪 Beta", "recording": "🔴 Recording"}
    await core.set_badge(space.id, "other", None)
    view = await core.view(space.id)
    assert view.badges == {"recording": "🔴 Recording"} and view.as_dict()["badges"] == view.badges
    await core.bus.drain()  # type: ignore[attr-defined]
    sent = [e for e in core.recorder.events if isinstance(e, ev.SpaceBadge)]  # type: ignore[attr-defined]
    assert [(e.source, e.text) for e in sent] == [("recording", "🔴 Recording"), ("other", "🧪 Beta"), ("other", None)]
    await core.end_space(Actor(account_id=host.id), space.id)
    assert (await core.view(space.id)).badges == {}  # an ended Space shows no status
