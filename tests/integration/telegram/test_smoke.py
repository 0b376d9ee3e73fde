from __future__ import annotations

from tests.integration.telegram.conftest import FAN1, TG


async def test_start_in_private_chat_welcomes(tg: TG) -> None:
    text = await tg.say(FAN1, FAN1, "/start")
    assert "Welcome" in text and "/space" in text
