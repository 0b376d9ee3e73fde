"""An instance selling through the strict Stripe front over localstripe, as the money tests need it.

One place for the wiring four test files had each written out: localstripe, the strict front (or a
subclass standing in for one of Stripe's hosted pages) on a port of its own, an instance whose
Stripe API base is that front, and, on the way out, the check that the instance never made a
request Stripe would refuse.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from spacebridge.app import Instance, build, start, stop
from spacebridge.config import load_settings
from tests.support.stripe_fake import LocalStripe, free_port
from tests.support.stripe_strict import StrictStripe

S = TypeVar("S", bound=StrictStripe)


@asynccontextmanager
async def stripe_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, front_cls: type[S], secret: str, *,
                      localstripe_webhooks: bool = True, **settings: Any) -> AsyncIterator[tuple[Instance, S]]:
    """Yields (instance, front). ``localstripe_webhooks``: localstripe signs and sends its own events to
    the instance (off where the front sends the events localstripe lacks)."""
    monkeypatch.setenv("SPACEBRIDGE_DATA_DIR", str(tmp_path))
    port = free_port()
    hook = f"http://127.0.0.1:{port}/webhooks/stripe"
    ls = LocalStripe()
    await ls.start()
    if localstripe_webhooks:
        await ls.send_webhooks_to(hook, secret)
    fake = front_cls(ls.url, webhook_url=hook, webhook_secret=secret)
    front = web.AppRunner(fake.app())
    await front.setup()
    fport = free_port()
    await web.TCPSite(front, "127.0.0.1", fport).start()
    fake.base = f"http://127.0.0.1:{fport}"
    p = await build(load_settings(database_url=f"sqlite:///{tmp_path / 'money.sqlite3'}", job_workers=1,
                                  stripe_api_key="sk_test_site", stripe_webhook_secret=secret,
                                  stripe_api_base=fake.base, **settings))
    await start(p, "127.0.0.1", port)
    try:
        yield p, fake
    finally:
        await stop(p)
        await front.cleanup()
        ls.stop()
    assert fake.refused == [], "a request Stripe would refuse"
