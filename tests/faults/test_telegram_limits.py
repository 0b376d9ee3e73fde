"""The Telegram limiter holds Telegram's limits however the network bunches our requests.

Telegram counts messages when they arrive. On a busy machine (or a congested link) requests let go
evenly can arrive bunched, and pacing alone then puts more than 30 into one second at Telegram
(the bench saw 2-3 x 429 per 1,500 DMs). Here a TCP proxy between the bot and the fake Bot API
(which enforces the limits on arrival, like Telegram) holds every byte for a while and then lets
everything through at once: no request may be refused.
"""

from __future__ import annotations

import asyncio

from telegram.ext import ExtBot

from adapters.telegram.limits import BULK, FloodLimiter, FloodLimits
from tests.support.faultproxy import FaultProxy
from tests.support.telegram_fake import FakeBotAPI, Limits

DMS = 120
BEFORE_STALL = 20


async def _until(cond: object, what: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.01)


async def test_requests_bunched_in_transit_break_no_limit() -> None:
    fake = await FakeBotAPI(limits=Limits()).start()
    proxy = FaultProxy("127.0.0.1", fake.port)
    proxy.start()
    limiter = FloodLimiter(FloodLimits(max_retries=0))  # a 429 is not retried: it fails its send
    bot = ExtBot(fake.token, base_url=proxy.url(fake.base_url), rate_limiter=limiter)
    try:
        async with bot:
            sends = asyncio.gather(*[bot.send_message(10_000 + i, "live now", rate_limit_args=BULK)
                                     for i in range(DMS)], return_exceptions=True)
            await _until(lambda: len(fake.sent("sendMessage")) >= BEFORE_STALL, "the first DMs never arrived")
            await asyncio.to_thread(proxy.stall)
            # the limiter keeps letting requests go while none arrives; wait until a whole window is in flight
            await _until(lambda: limiter.stats["requests"] >= BEFORE_STALL + 25, "the limiter stopped early")
            await asyncio.to_thread(proxy.restore)  # everything held arrives at once
            results = await asyncio.wait_for(sends, 120)
    finally:
        proxy.close()
        await fake.stop()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == [] and fake.rejected_429 == 0, (fake.rejected_429, errors[:3])
    assert {c.params["chat_id"] for c in fake.sent("sendMessage")} == {10_000 + i for i in range(DMS)}
