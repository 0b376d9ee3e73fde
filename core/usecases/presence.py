"""Presence: join (group-committed), leave, disconnect with a grace period, and its expiry."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from dataclasses import dataclass

from core import events as ev
from core.errors import DomainError, NotFound
from core.ids import new_id
from core.model.accounts import Actor
from core.model.space import Role, Space, SpaceState
from core.ports import NewJob, UnitOfWork
from core.usecases.batching import GroupCommit
from core.usecases.context import Context, access_error

EXPIRE_JOB = "presence.expire"  # a kept seat's grace period ran out (core/presence.py runs it)


@dataclass(frozen=True)
class JoinResult:
    space_id: str
    account_id: str
    role: Role
    listener_count: int


class Presence:
    """Who is in a Space. A person may have several connections; only the last one dropping counts."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.joins: GroupCommit[tuple[str, str, str | None], JoinResult] = GroupCommit(self._join_batch)

    async def join(self, actor: Actor, space_id: str, *, connection: str | None = None) -> JoinResult:
        """Enter a live Space. Joins arriving together share one transaction (group commit), and
        each returns only once its own presence is committed.

        ``connection`` (a new id per socket) records a live connection of this process: presence
        then lasts while any of the person's connections does (``disconnect``). Someone who was
        away (their seat kept) is back."""
        return await self.joins.submit((actor.account_id, space_id, connection))

    async def _join_batch(self, batch: list[tuple[str, str, str | None]]) -> list[JoinResult | DomainError]:
        out: list[JoinResult | DomainError | None] = [None] * len(batch)
        by_space: dict[str, list[int]] = {}
        for i, (_, space_id, _conn) in enumerate(batch):
            by_space.setdefault(space_id, []).append(i)
        async with self.ctx.uow() as uow:
            now = self.ctx.now()
            for space_id, idx in by_space.items():
                try:
                    space = await uow.spaces.get(space_id)
                except DomainError as e:
                    for i in idx:
                        out[i] = e
                    continue
                accounts = list({batch[i][0] for i in idx})
                blocked = await uow.spaces.blocked_among(space.host_id, accounts)
                paid = await uow.tickets.paid_among(space.id, accounts) if space.ticketing else set()
                if space.ticketing and space.ticketing.free_tier_id:  # the host's subscribers who need no ticket
                    paid |= await uow.subscriptions.reaching(space.host_id, space.ticketing.free_tier_id,
                                                             [a for a in accounts if a not in paid], now)
                subscribed = (await uow.subscriptions.reaching(space.host_id, space.subscribers.tier_id, accounts, now)
                              if space.subscribers else set())
                admitted: list[str] = []
                for i in idx:
                    account = batch[i][0]
                    err = access_error(space, account, account in blocked, account in paid, account in subscribed, now)
                    if err is None:
                        admitted.append(account)
                    else:
                        out[i] = err
                new = await uow.spaces.set_present_many(space_id, sorted(set(admitted)), now)
                await uow.presence.connect_many([(c, space_id, batch[i][0]) for i in idx
                                                 if out[i] is None and (c := batch[i][2]) is not None],
                                                self.ctx.node_id, now)
                back = await uow.presence.back(space_id, sorted(set(admitted)))
                count = await uow.spaces.present_count(space_id) if admitted else 0
                for i in idx:
                    if out[i] is None:
                        account = batch[i][0]
                        role = space.role_of(account) or Role.LISTENER
                        out[i] = JoinResult(space_id, account, role, count)
                        if account in new:
                            new.discard(account)
                            uow.emit(ev.ParticipantJoined(space_id=space_id, account_id=account, role=role.value,
                                                          listener_count=count, at=now))
                        if account in back:
                            back.remove(account)
                            uow.emit(ev.ParticipantBack(space_id=space_id, account_id=account, role=role.value,
                                                        at=now))
            await uow.commit()
        for r in out:
            if isinstance(r, JoinResult):
                self.ctx.access.grant(r.space_id, r.account_id)
        if uow.events:
            await self.ctx.bus.publish(uow.events)
        return [r for r in out if r is not None]

    async def may_join(self, account_id: str, space_id: str) -> None:
        """Raises the same refusal ``join`` would (for adapters that check before connecting)."""
        async with self.ctx.uow() as uow:
            await self.ctx.check_access(uow, await uow.spaces.get(space_id), account_id)

    async def leave(self, actor: Actor, space_id: str) -> Space:
        async def op(uow: UnitOfWork) -> Space:
            space = await uow.spaces.get(space_id)
            now = self.ctx.now()
            before = copy.deepcopy(space)
            space.leave(actor.account_id, now)
            if space != before:  # a listener leaving changes only presence: no write to the Space row,
                await uow.spaces.save(space)  # so a crowd leaving does not queue on its version
            if await uow.spaces.set_absent(space_id, actor.account_id, now):
                await uow.flush()
                uow.emit(ev.ParticipantLeft(space_id=space_id, account_id=actor.account_id, reason="left",
                                            listener_count=await uow.spaces.present_count(space_id), at=now))
            if space.state == SpaceState.ENDED:
                await uow.spaces.clear_presence(space_id, now)
            return space

        space = await self.ctx.run(op)
        self.ctx.access.revoke(space_id, actor.account_id)
        return space

    async def disconnect(self, space_id: str, account_id: str, connection: str) -> None:
        """A connection went away without a ``leave`` (network, reload, crash, a closed tab). Only the
        person's last connection counts: then they are no longer present, and a seat they hold is
        kept for a grace period (``presence.expire`` applies the leave if they are not back)."""
        async def op(uow: UnitOfWork) -> None:
            await uow.presence.drop(connection)
            await self._gone_if_unconnected(uow, space_id, account_id)

        try:
            await self.ctx.run(op)
        except Exception:  # the database is away: owed, retried by the presence keeper, never kept fresh
            self.ctx.owed_disconnects[connection] = (space_id, account_id)
            raise
        self.ctx.owed_disconnects.pop(connection, None)
        self.ctx.wake_jobs()

    async def retry_disconnects(self) -> int:
        """Record the disconnects the database missed; returns how many are still owed."""
        for connection, (space_id, account_id) in list(self.ctx.owed_disconnects.items()):
            with contextlib.suppress(Exception):
                await self.disconnect(space_id, account_id, connection)
        return len(self.ctx.owed_disconnects)

    async def forget_connections(self, pairs: Sequence[tuple[str, str]]) -> None:
        """People whose connections were swept (their process died): each counts as a disconnect."""
        for space_id, account_id in pairs:
            async def op(uow: UnitOfWork, space_id: str = space_id, account_id: str = account_id) -> None:
                await self._gone_if_unconnected(uow, space_id, account_id)

            with contextlib.suppress(NotFound):
                await self.ctx.run(op)
        if pairs:
            self.ctx.wake_jobs()

    async def _gone_if_unconnected(self, uow: UnitOfWork, space_id: str, account_id: str) -> None:
        now = self.ctx.now()
        if await uow.presence.live_count(space_id, account_id, now - self.ctx.presence_stale):
            return  # another tab, or the reloaded page, is still (or already again) connected
        try:
            space = await uow.spaces.get(space_id)
        except NotFound:
            return
        if await uow.spaces.set_absent(space_id, account_id, now):
            await uow.flush()
            uow.emit(ev.ParticipantLeft(space_id=space_id, account_id=account_id, reason="disconnected",
                                        listener_count=await uow.spaces.present_count(space_id), at=now))
        if space.state != SpaceState.LIVE or not space.holds_seat(account_id):
            return
        role = space.role_of(account_id) or Role.LISTENER
        until = now + (self.ctx.host_grace if role == Role.HOST else self.ctx.speaker_grace)
        away_id = new_id()
        if await uow.presence.set_away(space_id, account_id, away_id, now, until):
            await uow.jobs.enqueue(NewJob(EXPIRE_JOB, {"space_id": space_id, "account_id": account_id,
                                                       "away_id": away_id},
                                          due_at=until, dedupe_key=f"{EXPIRE_JOB}:{away_id}",
                                          group_key=f"{space_id}:presence"))
            uow.emit(ev.ParticipantAway(space_id=space_id, account_id=account_id, role=role.value, until=until,
                                        at=now))

    async def expire_away(self, away_id: str) -> bool:
        """A grace period ran out: if they are still away, the leave they did not ask for applies now
        (a host hands over to a connected co-host, or the Space ends "host_disconnected"). True if so."""
        async def op(uow: UnitOfWork) -> bool:
            away = await uow.presence.take_away(away_id)
            if away is None:
                return False  # back (or the Space ended) meanwhile
            now = self.ctx.now()
            space = await uow.spaces.get(away.space_id)
            if await uow.spaces.is_present(away.space_id, away.account_id):
                # back by a way that did not clear the record (a join racing the disconnect)
                role = space.role_of(away.account_id) or Role.LISTENER
                uow.emit(ev.ParticipantBack(space_id=space.id, account_id=away.account_id, role=role.value, at=now))
                return False
            present = set(await uow.spaces.present_accounts(space.id))
            before = copy.deepcopy(space)
            space.leave(away.account_id, now, reason="host_disconnected", prefer=present)
            if space != before:
                await uow.spaces.save(space)
            if space.state == SpaceState.ENDED:
                await uow.spaces.clear_presence(space.id, now)
            return True

        expired = await self.ctx.run(op)
        return expired
