"""A sharded bot: each process runs some of the shards (``discord_shard_count`` and
``discord_shard_ids``) and serves exactly the servers of its shards, as Discord routes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.clock import FrozenClock
from spacebridge.app import stop
from tests.integration.discord.conftest import make_dc
from tests.support.discord_fake import FakeDiscord


async def test_each_process_serves_the_servers_of_its_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = await FakeDiscord().start()
    # guild ids whose shard (id >> 22) % 2 differs: Discord's rule
    even, odd = fake.add_guild("Even", gid=(1 << 40) | 5), fake.add_guild("Odd", gid=((1 << 40) + 1) << 22)
    assert {FakeDiscord.shard_of(even.id, 2), FakeDiscord.shard_of(odd.id, 2)} == {0, 1}
    by_shard = {FakeDiscord.shard_of(g.id, 2): g for g in (even, odd)}
    clock = FrozenClock()
    platforms = []
    try:
        for shard in (0, 1):
            (tmp_path / str(shard)).mkdir()
            platforms.append(await make_dc(
                tmp_path / str(shard), monkeypatch, fake, clock, discord_voice=False, discord_shard_count=2,
                discord_shard_ids=[shard], database_url=f"sqlite:///{tmp_path / 'shared.sqlite3'}"))
        for shard, p in enumerate(platforms):
            assert p.discord is not None and p.discord.client is not None
            assert [g.id for g in p.discord.client.guilds] == [by_shard[shard].id]
            assert p.discord.client.shard_count == 2
        # a command in each server is answered, each by the process holding that server's shard
        for g in (even, odd):
            iid = await fake.interact(g, g.owner_id, "space", "start", {"title": f"Live in {g.name}"})
            reply = await fake.reply(iid)
            assert f"Live in {g.name}" in str(reply), reply
        assert sorted(fake.shards.values()) == [(0, 2), (1, 2)]
    finally:
        for p in platforms:
            await stop(p)
        await fake.stop()
