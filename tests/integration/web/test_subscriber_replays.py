"""Subscriber-only replays and clips: a recorded Space for subscribers keeps its replay for the
host's subscribers at or above its tier (and its host). Anyone else's request for the replay page is
sent to the Space's page, which names the tier and links to Subscribe (or Sign in); its audio and
timeline answer 403; a subscriber's ended subscription closes them again. A Space open to everyone
keeps its replay open (tests/integration/web/test_pages.py)."""

from __future__ import annotations

from datetime import timedelta

import aiohttp

from core.model.accounts import Actor
from core.model.subscription import SubscriberAccess, Subscription, SubscriptionProvider, SubscriptionStatus
from spacebridge.app import Instance
from tests.integration.web.test_pages import get, signed_in


async def status_of(p: Instance, path: str, cookies: dict[str, str] | None) -> int:
    """The status of a file's request (audio is not text)."""
    async with aiohttp.ClientSession(cookies=cookies) as http, http.get(p.url + path, allow_redirects=False) as r:
        await r.read()
        return r.status


async def test_a_members_replay_is_for_members(platform: Instance) -> None:
    core = platform.core
    hana = await core.ensure_account("web", "hana", "Hana")
    host = Actor(account_id=hana.id, is_community_admin=True)
    tier = await core.memberships.create_tier(host, "Supporter", 500, "eur")
    space = await core.create_space(host, "Members AMA", start_at=core.now() + timedelta(hours=1))
    await core.memberships.set_subscriber_access(host, space.id, SubscriberAccess(tier.id))
    await core.start_space(host, space.id)
    reply = await platform.plugins.invoke("record", host, space.id, {"action": "start"}, "web")
    await platform.plugins.invoke("record", host, space.id, {"action": "stop"}, "web")
    await core.end_space(host, space.id)
    assert reply.url is not None
    rec = reply.url.removeprefix(platform.url)

    fan = await core.ensure_account("web", "fan", "Fan")
    stranger = await core.ensure_account("web", "stranger", "Stranger")
    now = core.now()
    sub = Subscription(id="S1", account_id=fan.id, creator_id=hana.id, tier_id=tier.id,
                       provider=SubscriptionProvider.STRIPE, provider_ref="sub_fan", status=SubscriptionStatus.ACTIVE,
                       current_period_end=now + timedelta(days=20), cancel_at_period_end=False, created_at=now,
                       updated_at=now)
    async with core.uow() as uow:
        await uow.subscriptions.add(sub)
        await uow.commit()

    for who, cookies in (("guest", None), ("stranger", await signed_in(platform, stranger))):
        status, _, r = await get(platform, rec, cookies)
        assert status == 303 and r.headers["Location"] == f"/s/{space.id}", who
        assert await status_of(platform, rec + "/audio.ogg", cookies) == 403, who
        assert await status_of(platform, rec + "/timeline.json", cookies) == 403, who
        status, html, _ = await get(platform, f"/s/{space.id}", cookies)
        assert "for Hana's subscribers at Supporter (€5.00/month) or above." in html, who
        assert reply.url not in html, who  # no link to what it may not hear
    _, html, _ = await get(platform, f"/s/{space.id}", await signed_in(platform, stranger))
    assert "Subscribe to Hana" in html
    _, html, _ = await get(platform, f"/s/{space.id}")
    assert "Sign in to subscribe" in html

    for who in (fan, hana):
        cookies = await signed_in(platform, who)
        assert (await get(platform, rec, cookies))[0] == 200, who.display_name
        assert await status_of(platform, rec + "/audio.ogg", cookies) == 200, who.display_name
        _, html, _ = await get(platform, f"/s/{space.id}", cookies)
        assert f'href="{reply.url}"' in html and "Play the replay" in html, who.display_name

    sub.status, sub.ended_at = SubscriptionStatus.ENDED, now
    async with core.uow() as uow:
        await uow.subscriptions.save(sub)
        await uow.commit()
    assert await status_of(platform, rec + "/audio.ogg", await signed_in(platform, fan)) == 403
