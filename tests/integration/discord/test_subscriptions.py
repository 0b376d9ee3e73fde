"""Super Follows on Discord, through the unmodified discord.py and the fake Discord: a server maps a
creator's tier to a role in /spacebridge setup; the subscriber holds it in every server that maps
it while the subscription opens the tier (given when Stripe's event lands, taken back when it ends
or lapses with time); /space join refuses non-subscribers with the way to subscribe; /space
subscribe answers with a Checkout link, or says where a Stars-only tier is sold."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from billing.webhooks import StripeWebhooks
from core.clock import FrozenClock, SystemClock
from core.model.accounts import Actor
from core.model.subscription import GRACE, SubscriberAccess, Tier
from spacebridge.app import Instance, add_job_runners, stop
from tests.integration.discord.conftest import make_dc
from tests.support.discord_fake import Call, FakeDiscord, Guild, Mention
from tests.support.stripe_fake import LocalStripe, free_port
from tests.support.stripe_strict import StrictStripe

HOST, FAN, OTHER = 300000000000000041, 300000000000000042, 300000000000000043
SECRET = "whsec_discord_subs"


def subscription(ref: str, tier: Tier, account: str, status: str, end: int) -> dict[str, Any]:
    return {"id": ref, "object": "subscription", "status": status, "cancel_at_period_end": False,
            "metadata": {"account_id": account, "tier_id": tier.id, "creator_id": tier.creator_id},
            "items": {"data": [{"id": "si_1", "current_period_end": end, "price": {"id": tier.stripe_price}}]}}


class Stripe:
    """Stripe's subscription events handed to the webhook's apply step (signatures are tested elsewhere)."""

    def __init__(self, p: Instance, clock: FrozenClock) -> None:
        self.hooks, self.clock, self.n = StripeWebhooks(p.ledger, "whsec_x"), clock, 0

    async def send(self, kind: str, obj: dict[str, Any]) -> None:
        self.n += 1
        assert await self.hooks.apply({"id": f"evt_{self.n}", "type": kind, "data": {"object": obj},
                                       "created": int(self.clock.now().timestamp()) + self.n}) == "processed"


def role_call(method: str, g: Guild, uid: int, role: int) -> Callable[[Call], bool]:
    return lambda c: c.method == method and c.path == f"/guilds/{g.id}/members/{uid}/roles/{role}"


def holds(g: Guild, uid: int, role: int) -> bool:
    return str(role) in g.members[uid]["roles"]


async def test_tier_roles_follow_the_subscription_in_every_server_that_maps_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = await FakeDiscord().start()
    guilds = [fake.add_guild("Fan club"), fake.add_guild("Second home"), fake.add_guild("Unmapped")]
    for g in guilds:
        for uid, name in ((HOST, "Hana"), (FAN, "Finn"), (OTHER, "Olga")):
            fake.add_member(g, uid, name)
    roles = [fake.add_role(g, "Inner circle") for g in guilds]
    clock = FrozenClock()
    p = await make_dc(tmp_path, monkeypatch, fake, clock, discord_voice=False)
    add_job_runners(p, 1)
    try:
        host = await p.core.ensure_account("discord", str(HOST), "Hana")
        creator = Actor(account_id=host.id, is_operator=True)
        tier = await p.core.memberships.set_provider_ids(
            (await p.core.memberships.create_tier(creator, "Inner circle", 500, "eur")).id, "prod_i", "price_i")

        # an unknown tier, or a role without its tier, is refused and changes nothing
        r = await fake.reply(await fake.interact(guilds[0], guilds[0].owner_id, "spacebridge", "setup",
                                                 {"subscriber_tier": "nosuchtier00"}))
        assert "no tier nosuchtier00" in r["content"]
        r = await fake.reply(await fake.interact(guilds[0], guilds[0].owner_id, "spacebridge", "setup",
                                                 {"subscriber_role": Mention("role", roles[0])}))
        assert "subscriber_tier" in r["content"]
        # a member who is not an admin cannot map one
        r = await fake.reply(await fake.interact(guilds[0], OTHER, "spacebridge", "setup", {
            "subscriber_tier": tier.id, "subscriber_role": Mention("role", roles[0])}))
        assert "Subscriber roles" not in r["content"]
        assert not any(c.settings.tier_roles for c in await p.core.communities())
        for g, role in zip(guilds[:2], roles[:2], strict=True):
            r = await fake.reply(await fake.interact(g, g.owner_id, "spacebridge", "setup", {
                "subscriber_tier": tier.id, "subscriber_role": Mention("role", role)}))
            assert f"tier `{tier.id}` → <@&{role}>" in r["content"]

        fan = await p.core.ensure_account("discord", str(FAN), "Finn")
        stripe = Stripe(p, clock)
        end = int((clock.now() + timedelta(days=30)).timestamp())
        mark = len(fake.calls)
        await stripe.send("customer.subscription.created", subscription("sub_f", tier, fan.id, "active", end))
        for g, role in zip(guilds[:2], roles[:2], strict=True):
            await fake.wait_for(role_call("PUT", g, FAN, role), after=mark)
            assert holds(g, FAN, role)
        assert not holds(guilds[2], FAN, roles[2]), "a server that maps no tier gives no role"
        assert not any(holds(g, OTHER, r) for g, r in zip(guilds, roles, strict=True))

        # the subscriber-only Space: the subscriber gets a link, someone else is told how to subscribe
        space = await p.core.create_space(creator, "Members AMA", start_at=clock.now() + timedelta(hours=1))
        await p.core.memberships.set_subscriber_access(creator, space.id, SubscriberAccess(tier.id))
        await p.core.start_space(creator, space.id)
        r = await fake.reply(await fake.interact(guilds[0], FAN, "space", "join", {"space": space.id}))
        assert "personal link" in r["content"]
        refusal = f"This Space is for the host's subscribers: subscribe to join (/space subscribe tier:{space.id})."
        r = await fake.reply(await fake.interact(guilds[0], OTHER, "space", "join", {"space": space.id}))
        assert refusal in r["content"], r  # never subscribed

        # Stripe ends it: the role goes in both servers, and the link is refused
        mark = len(fake.calls)
        await stripe.send("customer.subscription.deleted", subscription("sub_f", tier, fan.id, "canceled", end))
        for g, role in zip(guilds[:2], roles[:2], strict=True):
            await fake.wait_for(role_call("DELETE", g, FAN, role), after=mark)
            assert not holds(g, FAN, role)
        r = await fake.reply(await fake.interact(guilds[0], FAN, "space", "join", {"space": space.id}))
        assert refusal in r["content"], r  # ended

        # a second subscription lapses with time alone (a renewal failed and the grace ran out)
        other = await p.core.ensure_account("discord", str(OTHER), "Olga")
        mark = len(fake.calls)
        await stripe.send("customer.subscription.created", subscription("sub_o", tier, other.id, "active", end))
        await stripe.send("customer.subscription.updated", subscription("sub_o", tier, other.id, "past_due", end))
        await fake.wait_for(role_call("PUT", guilds[0], OTHER, roles[0]), after=mark)
        clock.advance(days=30)
        await p.discord.sync_tier_roles()  # type: ignore[union-attr]
        assert holds(guilds[0], OTHER, roles[0]), "within the grace it stays"
        clock.advance(seconds=int(GRACE.total_seconds()) + 1)
        await p.discord.sync_tier_roles()  # type: ignore[union-attr]
        assert not holds(guilds[0], OTHER, roles[0]) and not holds(guilds[1], OTHER, roles[1])
        r = await fake.reply(await fake.interact(guilds[0], OTHER, "space", "join", {"space": space.id}))
        assert refusal in r["content"], r  # lapsed: past the grace

        # unmapping: setup with the tier and no role
        r = await fake.reply(await fake.interact(guilds[1], guilds[1].owner_id, "spacebridge", "setup",
                                                 {"subscriber_tier": tier.id}))
        assert "Subscriber roles" not in r["content"]

        # /space subscribe: no Stripe here, so it is refused; a tier sold in Stars points at Telegram
        r = await fake.reply(await fake.interact(guilds[0], OTHER, "space", "subscribe", {"tier": space.id}))
        assert "Subscriptions are off" in r["content"] and r["flags"] & 64
        await p.core.memberships.set_stars(creator, tier.id, 250)
        r = await fake.reply(await fake.interact(guilds[0], OTHER, "space", "subscribe", {"tier": tier.id}))
        assert f"/subscribe {tier.id}" in r["content"] and "Telegram" in r["content"]
    finally:
        p.runners.clear()
        await stop(p)
        await fake.stop()


@pytest.mark.slow
async def test_subscribe_from_discord_through_checkout_grants_the_tier_role(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ls = LocalStripe()
    await ls.start()
    stripe = StrictStripe(ls.url, webhook_secret=SECRET)
    front = web.AppRunner(stripe.app())
    await front.setup()
    fport = free_port()
    await web.TCPSite(front, "127.0.0.1", fport).start()
    stripe.base = f"http://127.0.0.1:{fport}"
    fake = await FakeDiscord().start()
    guild = fake.add_guild("Paid club")
    for uid, name in ((HOST, "Hana"), (FAN, "Finn")):
        fake.add_member(guild, uid, name)
    role = fake.add_role(guild, "Supporter")
    p = await make_dc(tmp_path, monkeypatch, fake, SystemClock(), discord_voice=False,
                      stripe_api_key="sk_test_discord_subs", stripe_webhook_secret=SECRET, stripe_api_base=stripe.base)
    add_job_runners(p, 1)
    try:
        stripe.webhook_url = f"{p.url}/webhooks/stripe"
        await ls.send_webhooks_to(stripe.webhook_url, SECRET)
        host = await p.core.ensure_account("discord", str(HOST), "Hana")
        tier = await p.core.memberships.create_tier(Actor(account_id=host.id), "Supporter", 500, "eur")
        await fake.reply(await fake.interact(guild, guild.owner_id, "spacebridge", "setup", {
            "subscriber_tier": tier.id, "subscriber_role": Mention("role", role)}))

        r = await fake.reply(await fake.interact(guild, FAN, "space", "subscribe", {"tier": tier.id}))
        assert r["flags"] & 64, "the checkout link is for the subscriber only"
        url = r["components"][0]["components"][0]["url"]
        [(sid, session)] = stripe.sessions.items()
        assert url == session["url"] and session["mode"] == "subscription"
        fan = await p.core.ensure_account("discord", str(FAN), "Finn")
        assert session["_subscription_data"]["metadata"] == {"account_id": fan.id, "tier_id": tier.id,
                                                             "creator_id": host.id}
        mark = len(fake.calls)
        await stripe.subs.complete(sid)
        await fake.wait_for(role_call("PUT", guild, FAN, role), timeout=20, after=mark)
        assert holds(guild, FAN, role)
        # subscribing again while it is open is refused
        r = await fake.reply(await fake.interact(guild, FAN, "space", "subscribe", {"tier": tier.id}))
        assert "already subscribe" in r["content"]
    finally:
        p.runners.clear()
        await stop(p)
        await fake.stop()
        await front.cleanup()
        ls.stop()
    assert stripe.refused == [], "a request Stripe would refuse"
