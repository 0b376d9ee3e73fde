"""Linking two accounts keeps what web sign-in stored (SQLite and PostgreSQL): the merged account's
passkeys belong to the survivor, and the survivor's browsers stay signed in."""

from __future__ import annotations

from core.model.accounts import Actor
from core.services import Core
from core.storage.passkeys import Passkey


async def test_merge_keeps_passkeys_and_the_survivors_session_epoch(core: Core) -> None:
    web = await core.ensure_account("web", "w1", "Wren")
    tg = await core.ensure_account("telegram", "t1", "Wren on Telegram")
    async with core.uow() as uow:
        for account, cred in ((web, "web-device-passkey-1"), (tg, "tg-device-passkey-01")):
            await uow.passkeys.add(Passkey(credential_id=cred, account_id=account.id, public_key=b"cose",
                                           sign_count=3, transports=("internal",), created_at=core.now(),
                                           last_used_at=None))
        await uow.passkeys.bump_epoch(tg.id)  # the Telegram side once signed out everywhere
        await uow.passkeys.bump_epoch(tg.id)
        await uow.commit()
    code = await core.issue_link_code(Actor(account_id=web.id, platform="web"))
    survivor = await core.redeem_link_code(Actor(account_id=tg.id, platform="telegram"), code.code)
    assert survivor.id == web.id
    async with core.uow() as uow:
        keys = await uow.passkeys.for_account(web.id)
        assert sorted(k.credential_id for k in keys) == ["tg-device-passkey-01", "web-device-passkey-1"]
        assert all(k.sign_count == 3 and k.transports == ("internal",) for k in keys)
        assert await uow.passkeys.for_account(tg.id) == []
        # the survivor's epoch stands (0): its signed-in browsers are not signed out by the merge
        assert await uow.passkeys.epoch(web.id) == 0
        assert await uow.passkeys.epoch(tg.id) == 0  # no row left for the merged id
