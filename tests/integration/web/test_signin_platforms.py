"""Sign in with Discord (OAuth2 + PKCE against the fake Discord's OAuth2 endpoints) and with Telegram
(the bot confirms a code over the fake Bot API; the Login Widget's signature), linking a second
method, and a replayed passkey challenge: through a real aiohttp client that follows redirects."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cbor2 import dumps as cbor
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from yarl import URL

from core.clock import FrozenClock
from core.storage.passkeys import Passkey
from spacebridge.app import Instance, build, start, stop
from spacebridge.config import load_settings
from spacebridge.web_auth_telegram import widget_hash
from tests.support.discord_fake import FakeDiscord
from tests.support.telegram_fake import FakeBotAPI

SECRET = "oauth-client-secret-for-tests"
ALICE, BOB = 300000000000000001, 300000000000000002  # Discord users
TG_USER = 555


@dataclass
class Site:
    p: Instance
    discord: FakeDiscord
    telegram: FakeBotAPI
    clock: FrozenClock

    @property
    def base(self) -> str:
        return self.p.url.rstrip("/")


@pytest.fixture
async def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Site]:
    discord, telegram = await FakeDiscord().start(), await FakeBotAPI().start()
    discord.users[ALICE] = {"id": str(ALICE), "username": "alice", "global_name": "Alice", "discriminator": "0",
                            "avatar": None}
    monkeypatch.setenv("SPACEBRIDGE_DATA_DIR", str(tmp_path))
    clock = FrozenClock()
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'w.sqlite3'}", job_workers=0,
                             discord_api_base=discord.api_base, discord_client_id=str(100000000000000001),
                             discord_client_secret=SECRET, telegram_bot_token=telegram.token,
                             telegram_api_base=telegram.base_url, telegram_bot_username="spacebridge_bot",
                             telegram_login_widget=True, telegram_card_interval_s=0.05)
    p = await build(settings, clock=clock)
    await start(p, "127.0.0.1", 0)
    discord.oauth_app(SECRET, [f"{p.url.rstrip('/')}/signin/discord/callback"])
    yield Site(p, discord, telegram, clock)
    await stop(p)
    await telegram.stop()
    await discord.stop()


def browser() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def csrf(b: aiohttp.ClientSession, site: Site) -> str:
    async with b.get(f"{site.base}/api/me") as r:
        return str((await r.json())["csrf"])


async def me(b: aiohttp.ClientSession, site: Site) -> dict[str, Any] | None:
    async with b.get(f"{site.base}/api/me") as r:
        account: dict[str, Any] | None = (await r.json())["account"]
        return account


def status_text(html: str) -> str:
    m = re.search(r'<p id="auth-status"[^>]*>(.*?)</p>', html, re.S)
    return unescape(m.group(1)).strip() if m else ""


async def discord_signin(b: aiohttp.ClientSession, site: Site) -> tuple[int, str]:
    """Press "Sign in with Discord", consent on the fake, land back: (status, page)."""
    async with b.post(f"{site.base}/signin/discord", data={"csrf": await csrf(b, site), "next": ""}) as r:
        return r.status, await r.text()


async def authorize_url(b: aiohttp.ClientSession, site: Site) -> str:
    """Start the flow but stop before Discord: the consent page's address."""
    async with b.post(f"{site.base}/signin/discord", data={"csrf": await csrf(b, site)},
                      allow_redirects=False) as r:
        assert r.status == 303
        return r.headers["Location"]


async def consent(url: str) -> str:
    """The fake Discord's answer to the consent page: the callback address with code and state."""
    async with aiohttp.ClientSession() as d, d.get(url, allow_redirects=False) as r:
        assert r.status == 302, await r.text()
        return r.headers["Location"]


async def test_sign_in_with_discord_makes_then_finds_the_account(site: Site) -> None:
    site.discord.consent(ALICE)
    async with browser() as b:
        status, page = await discord_signin(b, site)
        assert status == 200 and 'id="account-name">Alice<' in page
        assert "Linked: Discord." in page
        first = await me(b, site)
        assert first is not None and first["display_name"] == "Alice"
    # what Discord was asked: identify only, PKCE S256, the public URL's callback; the code was
    # exchanged with the client secret (Basic) and the verifier that matches the challenge
    ask = site.discord.oauth_requests[-1]
    assert ask["scope"] == "identify" and ask["code_challenge_method"] == "S256"
    assert ask["redirect_uri"] == f"{site.base}/signin/discord/callback"
    sent = site.discord.oauth_token_requests[-1]
    assert sent["client_id"] == "100000000000000001" and "client_secret" not in sent
    assert base64.urlsafe_b64encode(hashlib.sha256(sent["code_verifier"].encode()).digest()).rstrip(b"=").decode() \
        == ask["code_challenge"]
    async with browser() as b:  # another browser, the same Discord user: the same account
        await discord_signin(b, site)
        again = await me(b, site)
        assert again is not None and again["id"] == first["id"]


async def test_bad_state_code_and_verifier_are_refused(site: Site) -> None:
    site.discord.consent(ALICE)
    async with browser() as b:
        back = await consent(await authorize_url(b, site))
        forged = re.sub(r"state=[^&]+", "state=forged", back)
        async with b.get(forged) as r:
            assert r.status == 400
            assert "did not start in this browser" in status_text(await r.text())
        assert await me(b, site) is None

    async with browser() as b:  # a code Discord never issued
        back = await consent(await authorize_url(b, site))
        async with b.get(re.sub(r"code=[^&]+", "code=0123456789abcdef", back)) as r:
            assert r.status == 400
            assert status_text(await r.text()) == "Discord did not confirm the sign-in (invalid_grant). Try again."
        assert await me(b, site) is None

    # code injection: an attacker's code (issued for the attacker's PKCE challenge) delivered to
    # the victim's callback with the victim's own state fails the verifier check at Discord
    async with browser() as attacker, browser() as victim:
        stolen = re.search(r"code=([^&]+)", await consent(await authorize_url(attacker, site)))
        assert stolen is not None
        victims = await consent(await authorize_url(victim, site))
        async with victim.get(re.sub(r"code=[^&]+", f"code={stolen.group(1)}", victims)) as r:
            assert r.status == 400
            assert "(invalid_grant)" in status_text(await r.text())
        assert await me(victim, site) is None


async def test_a_replayed_callback_and_cancel_are_refused(site: Site) -> None:
    site.discord.consent(ALICE)
    async with browser() as b:
        url = await authorize_url(b, site)
        saved = [c for c in b.cookie_jar]  # a copy of the cookie that holds this state
        back = await consent(url)
        async with b.get(back) as r:
            assert r.status == 200 and "Signed in as" in await r.text()
        async with browser() as copy:  # the old cookie copy, the same (now used) state
            for c in saved:
                copy.cookie_jar.update_cookies({c.key: c.value}, URL(site.base))
            async with copy.get(back) as r:
                assert r.status == 400 and "did not start in this browser" in status_text(await r.text())
            assert await me(copy, site) is None
    site.discord.consent(None)  # the person presses Cancel on Discord
    async with browser() as b:
        status, page = await discord_signin(b, site)
        assert status == 400
        assert status_text(page).startswith("Discord did not sign you in (The resource owner")
        assert await me(b, site) is None


async def telegram_signin(b: aiohttp.ClientSession, site: Site, user: int) -> dict[str, Any]:
    token = await csrf(b, site)
    headers = {"X-CSRF-Token": token}
    async with b.post(f"{site.base}/api/auth/telegram/code", headers=headers) as r:
        assert r.status == 200, await r.text()
        code = await r.json()
    assert code["url"] == f"https://t.me/spacebridge_bot?start=login_{code['code']}"
    async with b.post(f"{site.base}/api/auth/telegram/poll", headers=headers) as r:
        assert (await r.json()) == {"status": "pending"}
    mark = len(site.telegram.calls)
    await site.telegram.send_text(user, user, f"/start login_{code['code']}", name="Tess")
    reply = await site.telegram.reply_to(user, mark)
    assert "Confirmed" in str(reply.params["text"])
    async with b.post(f"{site.base}/api/auth/telegram/poll", headers=headers) as r:
        done: dict[str, Any] = await r.json()
    done["code"] = code["code"]
    return done


async def test_telegram_deep_link_signs_in_once(site: Site) -> None:
    async with browser() as b:
        done = await telegram_signin(b, site, TG_USER)
        assert done["status"] == "signed_in" and done["account"]["display_name"] == "Tess"
        tg = await site.p.core.ensure_account("telegram", str(TG_USER), "x")
        assert (await me(b, site)) == {"id": tg.id, "display_name": "Tess"}
        # the code is single use: the bot refuses it a second time
        mark = len(site.telegram.calls)
        await site.telegram.send_text(TG_USER, TG_USER, f"/start login_{done['code']}")
        assert "expired or was used" in str((await site.telegram.reply_to(TG_USER, mark)).params["text"])


async def test_telegram_codes_expire_after_five_minutes(site: Site) -> None:
    async with browser() as b:
        headers = {"X-CSRF-Token": await csrf(b, site)}
        async with b.post(f"{site.base}/api/auth/telegram/code", headers=headers) as r:
            code = (await r.json())["code"]
        site.clock.advance(seconds=301)
        mark = len(site.telegram.calls)
        await site.telegram.send_text(TG_USER, TG_USER, f"/start login_{code}")
        assert "expired" in str((await site.telegram.reply_to(TG_USER, mark)).params["text"])
        async with b.post(f"{site.base}/api/auth/telegram/poll", headers=headers) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "login.code_expired"
        assert await me(b, site) is None


def widget_data(site: Site, *, age_s: int = 5, **extra: str) -> dict[str, str]:
    data = {"id": str(TG_USER), "first_name": "Tess", "username": "tess",
            "auth_date": str(int(site.clock.now().timestamp()) - age_s), **extra}
    data["hash"] = widget_hash(data, site.telegram.token)
    return data


async def test_login_widget_data_is_verified(site: Site) -> None:
    async def post(b: aiohttp.ClientSession, data: dict[str, str]) -> tuple[int, dict[str, Any]]:
        async with b.post(f"{site.base}/signin/telegram/widget", json=data,
                          headers={"X-CSRF-Token": await csrf(b, site)}) as r:
            return r.status, await r.json()

    async with browser() as b:
        forged = {**widget_data(site), "id": "1"}  # someone else's id under Tess's signature
        status, body = await post(b, forged)
        assert status == 403 and body["error"]["code"] == "telegram.widget_invalid"
        status, body = await post(b, widget_data(site, age_s=3600))
        assert status == 403 and body["error"]["code"] == "telegram.widget_stale"
        assert await me(b, site) is None
        good = widget_data(site)
        status, body = await post(b, good)
        assert status == 200 and body["account"]["display_name"] == "Tess"
    async with browser() as b:  # the same signed data again (a replay) is refused
        status, body = await post(b, good)
        assert status == 403 and body["error"]["code"] == "telegram.widget_stale"


async def test_a_second_method_links_to_the_same_account(site: Site) -> None:
    site.discord.consent(ALICE)
    async with browser() as b:
        signed = await telegram_signin(b, site, TG_USER)
        _, page = await discord_signin(b, site)
        assert "Linked: Discord, Telegram." in page
        assert (await me(b, site)) == signed["account"]
    async with browser() as b:  # Discord alone now signs in to that account
        await discord_signin(b, site)
        assert (await me(b, site)) == signed["account"]
    # Bob's Telegram account is someone else; Alice's Discord is already theirs: refused, nothing moves
    async with browser() as b:
        bob = await telegram_signin(b, site, TG_USER + 1)
        status, page = await discord_signin(b, site)
        assert status == 409
        assert status_text(page).startswith("This Discord account already belongs to another Spacebridge account "
                                             "(Tess).")
        assert (await me(b, site)) == bob["account"]
        assert {i.platform for i in await site.p.core.identities(bob["account"]["id"])} == {"telegram"}


# ---- a passkey challenge is answered once, even from an older copy of the cookie ----------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_a_replayed_passkey_challenge_is_refused(site: Site) -> None:
    """A software authenticator whose counter stays 0 (as synced passkeys report), so only the
    server's record of spent challenges stops the replay."""
    key = ec.generate_private_key(ec.SECP256R1())
    nums = key.public_key().public_numbers()
    cose = cbor({1: 2, 3: -7, -1: 1, -2: nums.x.to_bytes(32, "big"), -3: nums.y.to_bytes(32, "big")})
    account = await site.p.core.create_account("Pat")
    cred_id = _b64(b"software-authenticator-1")
    async with site.p.core.uow() as uow:
        await uow.passkeys.add(Passkey(credential_id=cred_id, account_id=account.id, public_key=cose, sign_count=0,
                                       transports=(), created_at=site.p.core.now(), last_used_at=None))
        await uow.commit()
    host = URL(site.base)
    async with browser() as b:
        headers = {"X-CSRF-Token": await csrf(b, site)}
        async with b.post(f"{site.base}/api/auth/passkey/signin/options", headers=headers) as r:
            options = await r.json()
        copy = {c.key: c.value for c in b.cookie_jar}  # the cookie holding the challenge
        client = json.dumps({"type": "webauthn.get", "challenge": options["challenge"],
                             "origin": f"{host.scheme}://{host.host}:{host.port}"}).encode()
        auth_data = hashlib.sha256(options["rpId"].encode()).digest() + bytes([0x05]) + (0).to_bytes(4, "big")
        sig = key.sign(auth_data + hashlib.sha256(client).digest(), ec.ECDSA(hashes.SHA256()))
        answer = {"credential": {"id": cred_id, "rawId": cred_id, "type": "public-key", "response": {
            "clientDataJSON": _b64(client), "authenticatorData": _b64(auth_data), "signature": _b64(sig)}}}
        async with b.post(f"{site.base}/api/auth/passkey/signin/verify", json=answer, headers=headers) as r:
            assert r.status == 200, await r.text()
        assert (await me(b, site)) == {"id": account.id, "display_name": "Pat"}
    async with browser() as thief:  # the copied cookie and the recorded answer, within 5 minutes
        thief.cookie_jar.update_cookies(copy, host)
        async with thief.post(f"{site.base}/api/auth/passkey/signin/verify", json=answer, headers=headers) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "passkey.challenge_expired"
        assert await me(thief, site) is None
