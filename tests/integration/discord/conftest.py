"""A whole instance with the Discord adapter on, talking to the fake Discord over real HTTP/WS/UDP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.clock import Clock, FrozenClock
from core.model.accounts import Actor
from core.scheduler import JobRunner
from spacebridge.app import Instance, add_job_runners, build, start, stop
from spacebridge.config import load_settings
from tests.support.discord_fake import STAGE, TEXT, FakeDiscord, Guild


@dataclass
class DC:
    fake: FakeDiscord
    platform: Instance
    clock: FrozenClock
    runner: JobRunner
    guild: Guild
    host: int
    fan: int
    admin: int
    last: int = 0  # the last interaction a helper made

    @property
    def core(self) -> Any:
        return self.platform.core

    @property
    def stage(self) -> int:
        return self.fake.channel_of(self.guild, STAGE)

    @property
    def text(self) -> int:
        return self.fake.channel_of(self.guild, TEXT)

    async def actor(self, uid: int, name: str = "") -> Actor:
        acc = await self.core.ensure_account("discord", str(uid), name or f"User{uid}")
        return Actor(account_id=acc.id, platform="discord")

    async def ask(self, uid: int, command: str, sub: str | None = None, **options: Any) -> dict[str, Any]:
        """``uid`` runs ``/command sub ...``; returns the bot's first answer (content, flags, embeds)."""
        iid = await self.fake.interact(self.guild, uid, command, sub, options)
        return await self.fake.reply(iid)

    async def jobs(self) -> None:
        await self.runner.run_until_idle()


async def make_dc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeDiscord, clock: Clock,
                  **overrides: object) -> Instance:
    monkeypatch.setenv("SPACEBRIDGE_DATA_DIR", str(tmp_path))
    settings = load_settings(**{
        "database_url": f"sqlite:///{tmp_path / 'dc.sqlite3'}", "job_workers": 0, "discord_bot_token": fake.token,
        "discord_api_base": fake.api_base, "discord_gateway_url": f"ws://127.0.0.1:{fake.port}/gateway",
        "discord_ca_file": fake.ca_file, "discord_card_interval_s": 0.05, "discord_guild_ready_timeout_s": 0.2,
        **overrides})
    p = await build(settings, clock=clock)
    await start(p, "127.0.0.1", 0)
    return p


@pytest.fixture
async def dc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DC]:
    fake = await FakeDiscord().start()
    guild = fake.add_guild("Spacebridge Fans")
    host, fan = 300000000000000001, 300000000000000002
    fake.add_member(guild, host, "Hana")
    fake.add_member(guild, fan, "Finn")
    admin = guild.owner_id
    clock = FrozenClock()
    p = await make_dc(tmp_path, monkeypatch, fake, clock, discord_voice=False)
    add_job_runners(p, 1)
    yield DC(fake, p, clock, p.runners[0], guild, host, fan, admin)
    p.runners.clear()
    await stop(p)
    await fake.stop()
