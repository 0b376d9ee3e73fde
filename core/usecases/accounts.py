"""Accounts and identities: who a platform user is, linking, tiers, follows."""

from __future__ import annotations

from datetime import timedelta

from core import events as ev
from core.errors import Conflict, Forbidden, Invalid
from core.ids import new_code, new_id
from core.model.accounts import LINK_CODE_TTL_S, Account, Actor, Identity, LinkCode, Tier, check_platform
from core.ports import UnitOfWork
from core.usecases.context import Context


class Accounts:
    """Use cases about people, independent of any Space."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def ensure_account(self, platform: str, external_id: str, display_name: str) -> Account:
        """The Account behind a platform user, created on first sight."""
        check_platform(platform)
        if not external_id or len(external_id) > 64:
            raise Invalid("identity.bad_id", platform=platform)
        display_name = (display_name or external_id).strip()[:200]

        async def op(uow: UnitOfWork) -> Account:
            ident = await uow.accounts.identity(platform, external_id)
            if ident is not None:
                return await uow.accounts.get(ident.account_id)
            now = self.ctx.now()
            account = Account(id=new_id(), display_name=display_name, created_at=now)
            await uow.accounts.add(account)
            await uow.flush()
            await uow.accounts.add_identity(Identity(platform=platform, external_id=external_id,
                                                     account_id=account.id, display_name=display_name,
                                                     created_at=now))
            return account

        # two first messages from the same new user at once: the loser's insert is DuplicateKey and
        # run() tries again, finding the winner's identity
        return await self.ctx.run(op)

    async def create_account(self, display_name: str) -> Account:
        name = display_name.strip()
        if not 1 <= len(name) <= 200:
            raise Invalid("account.name_length", max=200)
        return await self.ensure_account("web", new_id(), name)

    async def account(self, account_id: str) -> Account:
        async with self.ctx.uow() as uow:
            return await uow.accounts.get(account_id)

    async def identities(self, account_id: str) -> list[Identity]:
        async with self.ctx.uow() as uow:
            await uow.accounts.get(account_id)
            return await uow.accounts.identities(account_id)

    async def set_tier(self, actor: Actor, account_id: str, tier: Tier) -> None:
        if not actor.is_operator:
            raise Forbidden("account.operator_required")

        async def op(uow: UnitOfWork) -> None:
            await uow.accounts.get(account_id)
            await uow.accounts.set_tier(account_id, tier)

        await self.ctx.run(op)

    async def set_reachable(self, platform: str, external_id: str, reachable: bool) -> None:
        """Adapters report a user who blocked the bot (or came back)."""
        async def op(uow: UnitOfWork) -> None:
            await uow.accounts.update_identity(platform, external_id, reachable=reachable)

        await self.ctx.run(op)

    async def set_dm_opt_in(self, actor: Actor, platform: str, external_id: str, on: bool) -> None:
        async def op(uow: UnitOfWork) -> None:
            ident = await uow.accounts.identity(platform, external_id)
            if ident is None or ident.account_id != actor.account_id:
                raise Forbidden("identity.not_yours", platform=platform)
            await uow.accounts.update_identity(platform, external_id, dm_opt_in=on)

        await self.ctx.run(op)

    async def issue_link_code(self, actor: Actor) -> LinkCode:
        async def op(uow: UnitOfWork) -> LinkCode:
            await uow.accounts.get(actor.account_id)
            code = LinkCode(code=new_code(), account_id=actor.account_id, issued_on=actor.platform,
                            expires_at=self.ctx.now() + timedelta(seconds=LINK_CODE_TTL_S))
            await uow.accounts.add_link_code(code)
            return code

        return await self.ctx.run(op)

    async def redeem_link_code(self, actor: Actor, code: str) -> Account:
        """Join the caller's account to the account that issued ``code`` (single use, 10 minutes).

        The issuer's account survives; the caller's is merged into it (``AccountMerge``: everything
        moves, nothing the person had is lost) and its id stops existing.
        """
        if not isinstance(code, str):
            raise Invalid("link.bad_code")
        code = code.strip().upper()
        if not code.isascii() or not code.isalnum() or len(code) > 16:
            raise Invalid("link.bad_code")

        async def op(uow: UnitOfWork) -> Account:
            used = await uow.accounts.use_link_code(code, self.ctx.now())
            if used is None:
                raise Invalid("link.code_invalid", hint="codes work once and expire after 10 minutes")
            if used.issued_on == actor.platform:
                raise Invalid("link.same_platform", platform=actor.platform)
            if used.account_id == actor.account_id:
                raise Conflict("link.already_linked")
            target = await uow.accounts.get(used.account_id)
            mine = await uow.accounts.identities(actor.account_id)
            await uow.accounts.merge_into(actor.account_id, target.id)  # logs what it moved
            target = await uow.accounts.get(target.id)
            for i in mine:
                uow.emit(ev.IdentityLinked(account_id=target.id, platform=i.platform, external_id=i.external_id,
                                           at=self.ctx.now()))
            return target

        return await self.ctx.run(op)

    async def follow(self, actor: Actor, host_id: str, on: bool = True) -> int:
        if host_id == actor.account_id:
            raise Invalid("follow.self")

        async def op(uow: UnitOfWork) -> int:
            await uow.accounts.get(host_id)
            changed = (await uow.accounts.follow(actor.account_id, host_id, self.ctx.now()) if on
                       else await uow.accounts.unfollow(actor.account_id, host_id))
            count = await uow.accounts.follower_count(host_id)
            if changed:
                uow.emit(ev.Followed(follower_id=actor.account_id, host_id=host_id, following=on, followers=count,
                                     at=self.ctx.now()))
            return count

        return await self.ctx.run(op)

    async def follower_count(self, account_id: str) -> int:
        async with self.ctx.uow() as uow:
            await uow.accounts.get(account_id)
            return await uow.accounts.follower_count(account_id)
