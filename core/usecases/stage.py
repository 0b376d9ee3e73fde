"""The stage and its queue: hands, approve/deny, invites, promote/demote, mute, remove/block."""

from __future__ import annotations

from core import events as ev
from core.errors import Forbidden, Invalid
from core.model.accounts import Actor
from core.model.space import Role, Space
from core.ports import UnitOfWork
from core.usecases.context import Context


class Stage:
    """Use cases that change who speaks."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def raise_hand(self, actor: Actor, space_id: str) -> int:
        """Raise the caller's hand; their queue position.

        Whether they are the host's subscriber is read here, in the raise's own unit of work and only
        while subscriber priority is on, with the join token's rule (``Context.paying``), and stored on
        the Hand: the aggregate orders hands without I/O, and the order stays what it was when each
        hand went up. A subscription that ends (or starts) later does not move a hand already up: the
        hand keeps its place until it is lowered, or until a moderator turns the priority off and on
        again, which reads every raised hand afresh."""
        await self.ctx.guard(actor, space_id, "hand")
        async def op(uow: UnitOfWork) -> int:
            space = await uow.spaces.get(space_id)
            await self.ctx.check_access(uow, space, actor.account_id)
            subscriber = space.subscriber_priority and actor.account_id in await self.ctx.paying(
                uow, space.host_id, [actor.account_id])
            pos = space.raise_hand(actor.account_id, self.ctx.now(), subscriber)
            await uow.spaces.save(space)
            await uow.spaces.set_present(space_id, actor.account_id, self.ctx.now())
            return pos

        return await self.ctx.run(op)

    async def lower_hand(self, actor: Actor, space_id: str) -> Space:
        return await self.ctx.mutate(space_id, lambda s: s.lower_hand(actor.account_id, self.ctx.now()))

    async def approve(self, actor: Actor, space_id: str, account_id: str) -> Space:
        return await self.ctx.mutate(space_id, lambda s: s.approve(actor.account_id, account_id, self.ctx.now(),
                                                                override=actor.is_operator))

    async def deny(self, actor: Actor, space_id: str, account_id: str) -> Space:
        return await self.ctx.mutate(space_id, lambda s: s.deny(actor.account_id, account_id, self.ctx.now(),
                                                             override=actor.is_operator))

    async def set_subscriber_priority(self, actor: Actor, space_id: str, on: bool | None = None) -> Space:
        """Host and co-hosts: the host's subscribers' hands first (``on``), or raise order again; None
        toggles. Turning it on reads which raised hands are subscribers' now; a host who has never
        had a tier is refused (``queue.no_tiers``). The setting is saved with the Space."""
        async def op(uow: UnitOfWork) -> Space:
            space = await uow.spaces.get(space_id)
            want = not space.subscriber_priority if on is None else on
            has_tiers = bool(await uow.subscriptions.tiers_of(space.host_id, archived=True)) if want else True
            subscribers = (await self.ctx.paying(uow, space.host_id, [h.account_id for h in space.hands])
                           if want and has_tiers else set())
            space.set_subscriber_priority(actor.account_id, want, self.ctx.now(), has_tiers=has_tiers,
                                          subscribers=subscribers, override=actor.is_operator)
            await uow.spaces.save(space)
            return space

        return await self.ctx.run(op)

    async def clear_queue(self, actor: Actor, space_id: str) -> Space:
        return await self.ctx.mutate(space_id, lambda s: s.clear_queue(actor.account_id, self.ctx.now(),
                                                                    override=actor.is_operator))

    async def invite(self, actor: Actor, space_id: str, account_id: str) -> Space:
        async def op(uow: UnitOfWork) -> Space:
            space = await uow.spaces.get(space_id)
            await uow.accounts.get(account_id)
            await self.ctx.check_access(uow, space, account_id)
            space.invite(actor.account_id, account_id, self.ctx.now(), override=actor.is_operator)
            await uow.spaces.save(space)
            return space

        return await self.ctx.run(op)

    async def accept_invite(self, actor: Actor, space_id: str) -> Space:
        return await self.ctx.mutate(space_id, lambda s: s.accept_invite(actor.account_id, self.ctx.now()))

    async def promote(self, actor: Actor, space_id: str, account_id: str, role: str) -> Space:
        try:
            r = Role(role)
        except ValueError:
            raise Invalid("role.bad_target", role=role, allowed=["cohost", "speaker"]) from None

        async def op(uow: UnitOfWork) -> Space:
            space = await uow.spaces.get(space_id)
            await uow.accounts.get(account_id)
            await self.ctx.check_access(uow, space, account_id)
            space.promote(actor.account_id, account_id, r, self.ctx.now(), override=actor.is_operator)
            await uow.spaces.save(space)
            await uow.spaces.set_present(space_id, account_id, self.ctx.now())
            return space

        return await self.ctx.run(op)

    async def demote(self, actor: Actor, space_id: str, account_id: str) -> Space:
        return await self.ctx.mutate(space_id, lambda s: s.demote(actor.account_id, account_id, self.ctx.now(),
                                                               override=actor.is_operator))

    async def mute(self, actor: Actor, space_id: str, account_id: str, muted: bool = True) -> Space:
        if muted:
            return await self.ctx.mutate(space_id, lambda s: s.mute(actor.account_id, account_id, self.ctx.now(),
                                                                 override=actor.is_operator))
        return await self.ctx.mutate(space_id, lambda s: s.unmute(actor.account_id, account_id, self.ctx.now(),
                                                               override=actor.is_operator))

    async def mute_all(self, actor: Actor, space_id: str) -> Space:
        return await self.ctx.mutate(space_id, lambda s: s.mute_all(actor.account_id, self.ctx.now(),
                                                                 override=actor.is_operator))

    async def remove(self, actor: Actor, space_id: str, account_id: str, *, block: bool = False,
                     reason: str = "") -> Space:
        """Remove someone from the Space; with ``block`` they cannot rejoin this host's Spaces."""
        reason = reason.strip()[:500]

        async def op(uow: UnitOfWork) -> Space:
            space = await uow.spaces.get(space_id)
            await uow.accounts.get(account_id)
            now = self.ctx.now()
            space.remove(actor.account_id, account_id, now, override=actor.is_operator)
            await uow.spaces.save(space)
            if block:
                await uow.spaces.block(space.host_id, account_id, actor.account_id, reason, now)
                uow.emit(ev.AccountBlocked(space_id=space_id, host_id=space.host_id, account_id=account_id,
                                           by=actor.account_id, reason=reason, at=now))
            if await uow.spaces.set_absent(space_id, account_id, now) or block:
                await uow.flush()
                uow.emit(ev.ParticipantLeft(space_id=space_id, account_id=account_id,
                                            reason="blocked" if block else "removed",
                                            listener_count=await uow.spaces.present_count(space_id), at=now,
                                            by=actor.account_id, why=reason))
            return space

        space = await self.ctx.run(op)
        self.ctx.access.revoke(space_id, account_id)
        return space

    async def unblock(self, actor: Actor, host_id: str, account_id: str) -> bool:
        if actor.account_id != host_id and not actor.is_operator:
            raise Forbidden("role.host_required")

        async def op(uow: UnitOfWork) -> bool:
            return await uow.spaces.unblock(host_id, account_id)

        return await self.ctx.run(op)
