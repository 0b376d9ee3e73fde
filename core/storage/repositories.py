"""Repositories: load and save aggregates; the only place that knows the table layout."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    and_,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import NotFound
from core.model.accounts import Account, Identity, LinkCode, Tier
from core.model.community import Community, CommunitySettings
from core.model.space import Hand, Pin, Space, SpaceState, Ticketing, Visibility
from core.model.subscription import SubscriberAccess
from core.ports import DuplicateKey, StaleAggregate
from core.storage.base import dialect_name
from core.storage.merge import AccountMerge, MergeReport
from core.storage.tables import (
    AccountRow,
    BlockRow,
    CaptionRow,
    CommunityRow,
    FollowRow,
    IdentityRow,
    LinkCodeRow,
    ParticipantRow,
    ReminderRow,
    SpaceRow,
)

log = logging.getLogger(__name__)


def _insert_ignore(session: AsyncSession, table: Any, values: dict[str, Any] | list[dict[str, Any]],
                   keys: Sequence[str]) -> Any:
    dialect = dialect_name(session)
    if dialect == "postgresql":
        return pg_insert(table).values(values).on_conflict_do_nothing(index_elements=list(keys))
    if dialect == "sqlite":
        return sqlite_insert(table).values(values).on_conflict_do_nothing(index_elements=list(keys))
    raise NotImplementedError(dialect)


def _dt(v: str | None) -> datetime | None:
    return datetime.fromisoformat(v) if v else None


def space_from_row(r: SpaceRow) -> Space:
    st = r.stage
    t = r.ticketing
    return Space(
        id=r.id, host_id=r.host_id, title=r.title, state=SpaceState(r.state), created_at=r.created_at,
        community_id=r.community_id, visibility=Visibility(r.visibility), topics=list(r.topics.get("t", [])),
        scheduled_for=r.scheduled_for, started_at=r.started_at, ended_at=r.ended_at,
        cohosts=list(st.get("cohosts", [])), speakers=list(st.get("speakers", [])),
        muted=set(st.get("muted", [])), invited=set(st.get("invited", [])),
        hands=[Hand(h["a"], datetime.fromisoformat(h["t"]), bool(h.get("s")), int(h.get("n", i + 1)))
               for i, h in enumerate(st.get("hands", []))],  # rows from before "n" are in raise order
        pins=[Pin(id=p["id"], title=p["title"], url=p.get("url"), message_ref=p.get("ref"), by=p["by"],
                  at=datetime.fromisoformat(p["at"])) for p in st.get("pins", [])],
        captions_enabled=r.captions_enabled,
        subscriber_priority=bool(st.get("subscriber_priority")),  # with the queue it orders: no migration
        ticketing=None if t is None else Ticketing(
            price_minor=t["price_minor"], currency=t["currency"], capacity=t.get("capacity"),
            sales_start=_dt(t.get("sales_start")), sales_end=_dt(t.get("sales_end")),
            free_tier_id=t.get("free_tier_id"), discount_tier_id=t.get("discount_tier_id"),
            discount_percent=t.get("discount_percent")),
        subscribers=None if not r.subscribers else SubscriberAccess(
            tier_id=r.subscribers["tier_id"], early_minutes=int(r.subscribers.get("early_minutes", 0))),
        version=r.version,
    )


def _space_values(s: Space) -> dict[str, Any]:
    t = s.ticketing
    return {
        "host_id": s.host_id, "title": s.title, "state": s.state.value, "community_id": s.community_id,
        "visibility": s.visibility.value, "topics": {"t": list(s.topics)},
        "scheduled_for": s.scheduled_for, "started_at": s.started_at, "ended_at": s.ended_at,
        "stage": {
            "cohosts": s.cohosts, "speakers": s.speakers, "muted": sorted(s.muted), "invited": sorted(s.invited),
            "hands": [{"a": h.account_id, "t": h.raised_at.isoformat(), "s": h.subscriber, "n": h.seq}
                      for h in s.hands],
            "subscriber_priority": s.subscriber_priority,
            "pins": [{"id": p.id, "title": p.title, "url": p.url, "ref": p.message_ref, "by": p.by,
                      "at": p.at.isoformat()} for p in s.pins],
        },
        "captions_enabled": s.captions_enabled,
        "ticketing": None if t is None else {
            "price_minor": t.price_minor, "currency": t.currency, "capacity": t.capacity,
            "sales_start": t.sales_start.isoformat() if t.sales_start else None,
            "sales_end": t.sales_end.isoformat() if t.sales_end else None,
            "free_tier_id": t.free_tier_id,
            "discount_tier_id": t.discount_tier_id, "discount_percent": t.discount_percent,
        },
        "subscribers": None if s.subscribers is None else {"tier_id": s.subscribers.tier_id,
                                                           "early_minutes": s.subscribers.early_minutes},
    }


class SpaceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session
        self.seen: dict[str, Space] = {}

    async def get(self, space_id: str) -> Space:
        # A plain SELECT (no identity map): the aggregate is rebuilt from the row either way.
        row = (await self.s.execute(select(SpaceRow.__table__).where(SpaceRow.id == space_id))).first()
        if row is None:
            raise NotFound("space.not_found", space_id=space_id)
        space = space_from_row(row)  # type: ignore[arg-type]
        self.seen[space.id] = space
        return space

    async def add(self, space: Space) -> None:
        await self.s.execute(insert(SpaceRow).values(id=space.id, created_at=space.created_at, version=0,
                                                     **_space_values(space)))
        self.seen[space.id] = space

    async def save(self, space: Space) -> None:
        """Write the aggregate if nobody else did since we read it (else ``StaleAggregate``)."""
        res = await self.s.execute(
            update(SpaceRow)
            .where(SpaceRow.id == space.id, SpaceRow.version == space.version)
            .values(version=space.version + 1, **_space_values(space))
        )
        if res.rowcount != 1:  # type: ignore[attr-defined]
            raise StaleAggregate(space.id)
        space.version += 1

    async def find(self, *, states: Sequence[str] = (), host_id: str | None = None,
                   community_id: str | None = None, include_unlisted: bool = True,
                   limit: int = 100, title_contains: str = "", newest_first: bool = False) -> list[Space]:
        """``title_contains``: case-insensitive words (LIKE wildcards taken literally); ``newest_first``:
        by when the Space ended, started or was made, latest first (for replays and past Spaces)."""
        q = select(SpaceRow)
        if states:
            q = q.where(SpaceRow.state.in_(states))
        if host_id:
            q = q.where(SpaceRow.host_id == host_id)
        if community_id:
            q = q.where(SpaceRow.community_id == community_id)
        if not include_unlisted:
            q = q.where(SpaceRow.visibility == "public")
        if title_contains.strip():
            escaped = title_contains.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            q = q.where(func.lower(SpaceRow.title).like(f"%{escaped}%", escape="\\"))
        if newest_first:
            latest = func.coalesce(SpaceRow.ended_at, SpaceRow.started_at, SpaceRow.created_at)
            q = q.order_by(latest.desc(), SpaceRow.id).limit(limit)
        else:
            q = q.order_by(SpaceRow.state, SpaceRow.scheduled_for, SpaceRow.created_at).limit(limit)
        return [space_from_row(r) for r in (await self.s.scalars(q)).all()]

    async def count_scheduled(self, host_id: str) -> int:
        q = select(func.count()).select_from(SpaceRow).where(SpaceRow.host_id == host_id,
                                                              SpaceRow.state == "scheduled")
        return int((await self.s.execute(q)).scalar_one())

    # presence --------------------------------------------------------------------------------
    async def set_present(self, space_id: str, account_id: str, now: datetime) -> bool:
        """Mark present in one upsert; True if they were not present before."""
        ins = (pg_insert if dialect_name(self.s) == "postgresql" else sqlite_insert)(ParticipantRow)
        stmt = ins.values(space_id=space_id, account_id=account_id, present=True, joined_at=now).on_conflict_do_update(
            index_elements=["space_id", "account_id"], set_={"present": True, "left_at": None},
            where=ParticipantRow.present.is_(False))
        res = await self.s.execute(stmt)
        return bool(res.rowcount)  # type: ignore[attr-defined]

    async def set_present_many(self, space_id: str, account_ids: Sequence[str], now: datetime) -> set[str]:
        """Mark many present in one statement; returns those who were not present before."""
        if not account_ids:
            return set()
        ins = (pg_insert if dialect_name(self.s) == "postgresql" else sqlite_insert)(ParticipantRow)
        stmt = (ins.values([{"space_id": space_id, "account_id": a, "present": True, "joined_at": now}
                            for a in account_ids])
                .on_conflict_do_update(index_elements=["space_id", "account_id"],
                                       set_={"present": True, "left_at": None},
                                       where=ParticipantRow.present.is_(False))
                .returning(ParticipantRow.account_id))
        return set((await self.s.scalars(stmt)).all())

    async def blocked_among(self, host_id: str, account_ids: Sequence[str]) -> set[str]:
        q = select(BlockRow.account_id).where(BlockRow.host_id == host_id, BlockRow.account_id.in_(account_ids))
        return set((await self.s.scalars(q)).all())

    async def set_absent(self, space_id: str, account_id: str, now: datetime) -> bool:
        res = await self.s.execute(
            update(ParticipantRow)
            .where(ParticipantRow.space_id == space_id, ParticipantRow.account_id == account_id,
                   ParticipantRow.present.is_(True))
            .values(present=False, left_at=now)
        )
        return bool(res.rowcount)  # type: ignore[attr-defined]

    async def is_present(self, space_id: str, account_id: str) -> bool:
        row = await self.s.get(ParticipantRow, (space_id, account_id))
        return bool(row and row.present)

    async def present_count(self, space_id: str) -> int:
        q = select(func.count()).select_from(ParticipantRow).where(
            ParticipantRow.space_id == space_id, ParticipantRow.present.is_(True))
        return int((await self.s.execute(q)).scalar_one())

    async def present_accounts(self, space_id: str, limit: int = 1000) -> list[str]:
        q = select(ParticipantRow.account_id).where(ParticipantRow.space_id == space_id,
                                                    ParticipantRow.present.is_(True)).limit(limit)
        return list((await self.s.scalars(q)).all())

    async def clear_presence(self, space_id: str, now: datetime) -> None:
        await self.s.execute(update(ParticipantRow).where(ParticipantRow.space_id == space_id,
                                                          ParticipantRow.present.is_(True))
                             .values(present=False, left_at=now))

    async def attended(self, account_id: str) -> int:
        q = (select(func.count()).select_from(ParticipantRow).join(SpaceRow, SpaceRow.id == ParticipantRow.space_id)
             .where(ParticipantRow.account_id == account_id, SpaceRow.host_id != account_id))
        return int((await self.s.execute(q)).scalar_one())

    # blocks ----------------------------------------------------------------------------------
    async def block(self, host_id: str, account_id: str, by: str, reason: str, now: datetime) -> None:
        await self.s.execute(_insert_ignore(self.s, BlockRow, {"host_id": host_id, "account_id": account_id,
                                                               "by": by, "reason": reason, "created_at": now},
                                            ["host_id", "account_id"]))

    async def unblock(self, host_id: str, account_id: str) -> bool:
        res = await self.s.execute(delete(BlockRow).where(BlockRow.host_id == host_id,
                                                          BlockRow.account_id == account_id))
        return bool(res.rowcount)  # type: ignore[attr-defined]

    async def is_blocked(self, host_id: str, account_id: str) -> bool:
        return await self.s.get(BlockRow, (host_id, account_id)) is not None

    # reminders -------------------------------------------------------------------------------
    async def set_reminder(self, space_id: str, account_id: str, on: bool, now: datetime) -> bool:
        if on:
            res = await self.s.execute(_insert_ignore(self.s, ReminderRow, {"space_id": space_id,
                                                                             "account_id": account_id,
                                                                             "created_at": now},
                                                      ["space_id", "account_id"]))
        else:
            res = await self.s.execute(delete(ReminderRow).where(ReminderRow.space_id == space_id,
                                                                 ReminderRow.account_id == account_id))
        return bool(res.rowcount)  # type: ignore[attr-defined]

    async def has_reminder(self, space_id: str, account_id: str) -> bool:
        return await self.s.get(ReminderRow, (space_id, account_id)) is not None

    async def reminder_accounts(self, space_id: str, after: str = "", limit: int = 1000) -> list[str]:
        q = (select(ReminderRow.account_id).where(ReminderRow.space_id == space_id, ReminderRow.account_id > after)
             .order_by(ReminderRow.account_id).limit(limit))
        return list((await self.s.scalars(q)).all())

    # captions --------------------------------------------------------------------------------
    async def add_caption(self, space_id: str, speaker_id: str, text: str, start_s: float, end_s: float,
                          now: datetime) -> None:
        self.s.add(CaptionRow(space_id=space_id, speaker_id=speaker_id, text=text, start_s=start_s,
                              end_s=end_s, at=now))

    async def recent_captions(self, space_id: str, limit: int = 20) -> list[CaptionRow]:
        q = select(CaptionRow).where(CaptionRow.space_id == space_id).order_by(CaptionRow.id.desc()).limit(limit)
        return list(reversed((await self.s.scalars(q)).all()))


class AccountRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def get(self, account_id: str) -> Account:
        row = await self.s.get(AccountRow, account_id)
        if row is None:
            raise NotFound("account.not_found", account_id=account_id)
        return Account(id=row.id, display_name=row.display_name, created_at=row.created_at, tier=Tier(row.tier))

    async def payout_account(self, account_id: str) -> str | None:
        """The account's Stripe Connect account (where its ticket sales are paid), if any."""
        row = await self.s.get(AccountRow, account_id)
        if row is None:
            raise NotFound("account.not_found", account_id=account_id)
        return row.stripe_account

    async def set_payout_account(self, account_id: str, stripe_account: str) -> None:
        row = await self.s.get(AccountRow, account_id)
        if row is None:
            raise NotFound("account.not_found", account_id=account_id)
        row.stripe_account = stripe_account

    async def exists(self, account_id: str) -> bool:
        return await self.s.get(AccountRow, account_id) is not None

    async def add(self, account: Account) -> None:
        self.s.add(AccountRow(id=account.id, display_name=account.display_name, tier=account.tier.value,
                              created_at=account.created_at))

    async def set_tier(self, account_id: str, tier: Tier) -> None:
        await self.s.execute(update(AccountRow).where(AccountRow.id == account_id).values(tier=tier.value))

    async def identity(self, platform: str, external_id: str) -> Identity | None:
        row = await self.s.get(IdentityRow, (platform, external_id))
        return None if row is None else _identity(row)

    async def identities(self, account_id: str) -> list[Identity]:
        rows = await self.s.scalars(select(IdentityRow).where(IdentityRow.account_id == account_id))
        return [_identity(r) for r in rows]

    async def identities_for(self, account_ids: Sequence[str]) -> list[Identity]:
        if not account_ids:
            return []
        rows = await self.s.scalars(select(IdentityRow).where(IdentityRow.account_id.in_(account_ids)))
        return [_identity(r) for r in rows]

    async def add_identity(self, i: Identity) -> None:
        """Insert now, so that a race for the same platform user is ``DuplicateKey`` here."""
        self.s.add(IdentityRow(platform=i.platform, external_id=i.external_id, account_id=i.account_id,
                               display_name=i.display_name, dm_opt_in=i.dm_opt_in, reachable=i.reachable,
                               created_at=i.created_at))
        try:
            await self.s.flush()
        except IntegrityError as e:
            raise DuplicateKey(f"identity {i.platform}:{i.external_id}") from e

    async def update_identity(self, platform: str, external_id: str, **values: Any) -> None:
        await self.s.execute(update(IdentityRow).where(IdentityRow.platform == platform,
                                                       IdentityRow.external_id == external_id).values(**values))

    async def merge_into(self, source: str, target: str) -> MergeReport:
        """Move everything of ``source`` to ``target`` (linking: the same person) and delete the emptied
        ``source`` row. See ``AccountMerge`` for what moves where."""
        return await AccountMerge(self.s, source, target).run()

    # follows ---------------------------------------------------------------------------------
    async def follow(self, follower: str, host: str, now: datetime) -> bool:
        res = await self.s.execute(_insert_ignore(self.s, FollowRow, {"follower_id": follower, "host_id": host,
                                                                       "created_at": now},
                                                  ["follower_id", "host_id"]))
        return bool(res.rowcount)  # type: ignore[attr-defined]

    async def unfollow(self, follower: str, host: str) -> bool:
        res = await self.s.execute(delete(FollowRow).where(FollowRow.follower_id == follower,
                                                           FollowRow.host_id == host))
        return bool(res.rowcount)  # type: ignore[attr-defined]

    async def follower_count(self, host: str) -> int:
        q = select(func.count()).select_from(FollowRow).where(FollowRow.host_id == host)
        return int((await self.s.execute(q)).scalar_one())

    async def is_following(self, follower: str, host: str) -> bool:
        return await self.s.get(FollowRow, (follower, host)) is not None

    async def followers(self, host: str, after: str = "", limit: int = 1000) -> list[str]:
        q = (select(FollowRow.follower_id).where(FollowRow.host_id == host, FollowRow.follower_id > after)
             .order_by(FollowRow.follower_id).limit(limit))
        return list((await self.s.scalars(q)).all())

    async def bulk_follow(self, host: str, followers: Sequence[str], now: datetime) -> None:
        if followers:
            await self.s.execute(_insert_ignore(self.s, FollowRow, [{"follower_id": f, "host_id": host,
                                                                      "created_at": now} for f in followers],
                                                ["follower_id", "host_id"]))

    # link codes ------------------------------------------------------------------------------
    async def add_link_code(self, c: LinkCode) -> None:
        self.s.add(LinkCodeRow(code=c.code, account_id=c.account_id, issued_on=c.issued_on,
                               expires_at=c.expires_at, used_at=None))

    async def use_link_code(self, code: str, now: datetime) -> LinkCode | None:
        """Consume a valid code atomically (single use even under races); None if unusable."""
        res = await self.s.execute(update(LinkCodeRow).where(
            and_(LinkCodeRow.code == code, LinkCodeRow.used_at.is_(None), LinkCodeRow.expires_at > now)
        ).values(used_at=now))
        if res.rowcount != 1:  # type: ignore[attr-defined]
            return None
        row = await self.s.get(LinkCodeRow, code)
        assert row is not None
        return LinkCode(code=row.code, account_id=row.account_id, issued_on=row.issued_on,
                        expires_at=row.expires_at, used_at=now)


def _identity(r: IdentityRow) -> Identity:
    return Identity(platform=r.platform, external_id=r.external_id, account_id=r.account_id,
                    display_name=r.display_name, created_at=r.created_at, dm_opt_in=r.dm_opt_in,
                    reachable=r.reachable)


# ---- linking: two accounts of one person become one ---------------------------------------------
class CommunityRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def get(self, community_id: str) -> Community:
        row = await self.s.get(CommunityRow, community_id)
        if row is None:
            raise NotFound("community.not_found", community_id=community_id)
        return _community(row)

    async def by_external(self, platform: str, external_id: str) -> Community | None:
        row = (await self.s.scalars(select(CommunityRow).where(CommunityRow.platform == platform,
                                                                CommunityRow.external_id == external_id))).first()
        return None if row is None else _community(row)

    async def add(self, c: Community) -> None:
        self.s.add(CommunityRow(id=c.id, platform=c.platform, external_id=c.external_id, name=c.name,
                                settings=c.settings.model_dump(mode="json"), created_at=c.created_at))

    async def save_settings(self, c: Community) -> None:
        await self.s.execute(update(CommunityRow).where(CommunityRow.id == c.id)
                             .values(settings=c.settings.model_dump(mode="json"), name=c.name))

    async def all(self) -> list[Community]:
        return [_community(r) for r in await self.s.scalars(select(CommunityRow).order_by(CommunityRow.created_at))]


def _community(r: CommunityRow) -> Community:
    return Community(id=r.id, platform=r.platform, external_id=r.external_id, name=r.name,
                     created_at=r.created_at, settings=CommunitySettings.model_validate(r.settings))
