"""The profile page's Subscribe, form by form, against localstripe behind the strict Stripe front: a
guest is sent to sign in, a post without the session's CSRF token, a tier of someone else's and a
second subscription to the same creator are refused and make no Checkout session; Checkout's return
says it is confirming until Stripe's webhook made the subscription, then that it is on."""

from __future__ import annotations

from urllib.parse import unquote

from core.model.accounts import Actor
from tests.integration.billing.test_subscriptions import Env, env, until
from tests.integration.web.test_studio import CSRF, call

__all__ = ["env"]


async def test_subscribe_forms_refuse_bad_posts_and_the_return_waits_for_stripe(env: Env) -> None:
    p, hana = env.p, env.creator
    tier = await env.sales.create_tier(Actor(account_id=hana.id), "Supporter", 500, "eur", "Members-only Spaces")
    other = await p.core.ensure_account("web", "otto", "Otto")
    others = await env.sales.create_tier(Actor(account_id=other.id), "Otto's", 300, "eur")
    fan = await p.core.ensure_account("web", "fan", "Fan")

    status, html, _ = await call(p, "GET", f"/u/{hana.id}")
    assert status == 200 and "€5.00/month" in html and "Members-only Spaces" in html
    assert "Sign in to subscribe" in html
    status, html, _ = await call(p, "GET", f"/u/{hana.id}", hana)
    assert "Your tier." in html and "Subscribe · " not in html

    status, _, where = await call(p, "POST", f"/u/{hana.id}/subscribe", None, {"tier": tier.id})
    assert status == 303 and unquote(where) == f"/signin?next=/u/{hana.id}"
    status, _, _ = await call(p, "POST", f"/u/{hana.id}/subscribe", fan, {"tier": tier.id})
    assert status == 403
    status, _, _ = await call(p, "POST", f"/u/{hana.id}/subscribe", fan, {"csrf": CSRF, "tier": others.id})
    assert status == 404
    status, _, _ = await call(p, "POST", f"/u/{hana.id}/subscribe", fan, {"csrf": CSRF})
    assert status == 400
    assert env.fake.sessions == {}, "a refused post made a Checkout session"

    status, _, where = await call(p, "POST", f"/u/{hana.id}/subscribe", fan, {"csrf": CSRF, "tier": tier.id})
    assert status == 303 and where.startswith(f"{env.fake.base}/pay/cs_"), where
    session_id = where.rsplit("/", 1)[1]
    status, html, _ = await call(p, "GET", f"/u/{hana.id}?subscribed={tier.id}", fan)  # back before the webhook
    assert status == 200 and "Confirming your subscription" in html and "data-reload-after" in html
    await env.fake.subs.complete(session_id)

    async def on() -> bool:
        return "You're subscribed: Supporter" in (await call(p, "GET", f"/u/{hana.id}?subscribed={tier.id}", fan))[1]

    await until(on, "the profile never said the subscription is on")
    status, html, _ = await call(p, "POST", f"/u/{hana.id}/subscribe", fan, {"csrf": CSRF, "tier": tier.id})
    assert status == 409 and "You already subscribe to this creator" in html
    assert len(env.fake.sessions) == 1
