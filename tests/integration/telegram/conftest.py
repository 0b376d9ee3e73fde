"""A whole instance with the Telegram adapter on, talking to the fake Bot API over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.clock import FrozenClock
from core.model.accounts import Actor
from core.scheduler import JobRunner
from spacebridge.app import Instance, add_job_runners, build, start, stop
from spacebridge.config import load_settings
from tests.support.telegram_fake import Call, FakeBotAPI

GROUP = -1001234567890
HOST, FAN1, FAN2, FAN3 = 101, 102, 103, 104
# Flow tests send dozens of messages into one group within seconds; Telegram's real limits (20 a
# minute per group) are exercised by the limiter test and the broadcast benchmark instead.
FLOW_LIMITS = {"telegram_group_per_min": 10_000, "telegram_chat_per_s": 100.0}


@dataclass
class TG:
    fake: FakeBotAPI
    platform: Instance
    clock: FrozenClock
    runner: JobRunner

    @property
    def core(self):  # type: ignore[no-untyped-def]
        return self.platform.core

    async def say(self, chat: int, user: int, text: str, *, name: str = "", expect: str = "sendMessage",
                  reply_chat: int | None = None) -> str:
        """``user`` types ``text``; returns the text of the bot's answer in that chat."""
        mark = len(self.fake.calls)
        msg_id = await self.fake.send_text(chat, user, text, name=name)
        where = chat if reply_chat is None else reply_chat

        def answer(c: Call) -> bool:
            if c.method != expect or c.params.get("chat_id") != where:
                return False
            quoted = (c.params.get("reply_parameters") or {}).get("message_id")
            return where > 0 or quoted == msg_id  # in groups the bot quotes the command it answers

        call = await self.fake.wait_for(answer, after=mark)
        return str(call.params.get("text", ""))

    async def actor(self, user: int, name: str = "", admin: bool = False) -> Actor:
        acc = await self.core.ensure_account("telegram", str(user), name or f"User{user}")
        return Actor(account_id=acc.id, platform="telegram", is_community_admin=admin,
                     platform_roles=frozenset({"admin"}) if admin else frozenset())

    async def jobs(self) -> None:
        await self.runner.run_until_idle()


async def make_tg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeBotAPI, clock: FrozenClock,
                  db: str | None = None, **overrides: object) -> Instance:
    monkeypatch.setenv("SPACEBRIDGE_DATA_DIR", str(tmp_path))
    settings = load_settings(database_url=db or f"sqlite:///{tmp_path / 'tg.sqlite3'}", job_workers=0,
                             telegram_bot_token=fake.token, telegram_api_base=fake.base_url,
                             telegram_card_interval_s=0.05, **{**FLOW_LIMITS, **overrides})
    p = await build(settings, clock=clock)
    await start(p, "127.0.0.1", 0)
    return p


@pytest.fixture
async def tg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TG]:
    fake = await FakeBotAPI().start()
    fake.admins[GROUP] = {HOST}
    clock = FrozenClock()
    p = await make_tg(tmp_path, monkeypatch, fake, clock)
    add_job_runners(p, 1)  # driven by the test (run_until_idle), not started
    yield TG(fake, p, clock, p.runners[0])
    p.runners.clear()
    await stop(p)
    await fake.stop()
