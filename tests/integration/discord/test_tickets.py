"""Ticketed Spaces on Discord: a Stripe Checkout link in an ephemeral reply, the ticket role given
when the payment's signed webhook lands, and taken back when the ticket is refunded."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web

from core.clock import SystemClock
from core.model.accounts import Actor
from core.model.space import Ticketing
from spacebridge.app import add_job_runners, stop
from tests.integration.discord.conftest import make_dc
from tests.support.discord_fake import STAGE, TEXT, FakeDiscord, Mention
from tests.support.stripe_fake import FakeStripe, LocalStripe, free_port

SECRET = "whsec_discord"


@pytest.mark.slow
async def test_paid_ticket_grants_the_role_and_a_refund_takes_it_back(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ls = LocalStripe()
    await ls.start()
    stripe = FakeStripe(localstripe=ls.url, webhook_secret=SECRET)
    front = web.AppRunner(stripe.app())
    await front.setup()
    fport = free_port()
    await web.TCPSite(front, "127.0.0.1", fport).start()
    stripe.base = f"http://127.0.0.1:{fport}"
    fake = await FakeDiscord().start()
    guild = fake.add_guild("Paid")
    host, fan = 300000000000000030, 300000000000000031
    fake.add_member(guild, host, "Hana")
    fake.add_member(guild, fan, "Finn")
    ticket_role = fake.add_role(guild, "Ticket holder")
    p = await make_dc(tmp_path, monkeypatch, fake, SystemClock(), discord_voice=False,  # type: ignore[arg-type]
                      stripe_api_key="sk_test_discord", stripe_webhook_secret=SECRET, stripe_api_base=stripe.base)
    add_job_runners(p, 1)
    try:
        stripe.webhook_url = f"{p.url}/webhooks/stripe"
        await ls.send_webhooks_to(stripe.webhook_url, SECRET)
        await fake.reply(await fake.interact(guild, guild.owner_id, "spacebridge", "setup", {
            "stage_channel": Mention("channel", fake.channel_of(guild, STAGE)),
            "announce_channel": Mention("channel", fake.channel_of(guild, TEXT)),
            "host_rule": "everyone", "ticketing": True, "ticket_role": Mention("role", ticket_role)}))
        host_acc = await p.core.ensure_account("discord", str(host), "Hana")
        operator = Actor(account_id=host_acc.id, is_operator=True)
        community = (await p.core.communities())[-1]
        space = await p.core.create_space(operator, "Masterclass", start_at=p.core.now() + timedelta(hours=2),
                                          community_id=community.id)
        await p.core.set_ticketing(operator, space.id, Ticketing(price_minor=1500, currency="eur", capacity=5))

        r = await fake.reply(await fake.interact(guild, fan, "space", "ticket", {"space": space.id}))
        assert r["flags"] & 64, "the checkout link is for the buyer only"
        url = r["components"][0]["components"][0]["url"]
        sid = next(iter(stripe.sessions))
        assert stripe.sessions[sid]["url"] == url and stripe.sessions[sid]["amount_total"] == 1500
        assert "yours for 31 min" in r["content"], "the link is held as long as Checkout's session lives"
        await stripe.complete_session(sid)
        put = await fake.wait_for(lambda c: c.method == "PUT" and c.path == f"/guilds/{guild.id}/members/{fan}"
                                  f"/roles/{ticket_role}", timeout=15)
        assert put and str(ticket_role) in guild.members[fan]["roles"]

        r = await fake.reply(await fake.interact(guild, host, "space", "cancel", {"space": space.id}))
        assert "refunded" in r["content"]
        for _ in range(100):
            await p.runners[0].run_until_idle()
            if str(ticket_role) not in guild.members[fan]["roles"]:
                break
            await asyncio.sleep(0.1)
        assert str(ticket_role) not in guild.members[fan]["roles"], "a refund takes the ticket role back"
        assert fake.find("DELETE", f"/guilds/{guild.id}/members/{fan}/roles/{ticket_role}")
    finally:
        p.runners.clear()
        await stop(p)
        await fake.stop()
        await front.cleanup()
        ls.stop()
