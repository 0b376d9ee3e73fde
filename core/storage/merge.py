"""Account merge (linking): everything of one account moves to the survivor, in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    Table,
    Text,
    UniqueConstraint,
    cast,
    delete,
    distinct,
    exists,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import Conflict, NotFound
from core.model.accounts import Tier
from core.ports import StaleAggregate
from core.storage.base import Base, dialect_name
from core.storage.passkeys import PasskeyRow, WebEpochRow
from core.storage.tables import (
    AccountRow,
    BlockRow,
    CaptionRow,
    ParticipantRow,
    PluginDataRow,
    SpaceRow,
    TicketRow,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MergeReport:
    """What a link did: rows moved per table, duplicates dropped, and Spaces both accounts paid for."""

    survivor: str
    merged: str
    moved: dict[str, int]
    duplicates_dropped: dict[str, int]
    both_paid: list[str]  # Space ids: both paid tickets kept; the person may ask the host for a refund


def _swap(value: Any, source: str, target: str) -> Any:
    """``value`` (JSON) with every string equal to ``source`` replaced by ``target``."""
    if isinstance(value, str):
        return target if value == source else value
    if isinstance(value, list):
        return [_swap(v, source, target) for v in value]
    if isinstance(value, dict):
        return {k: _swap(v, source, target) for k, v in value.items()}
    return value


def _unique(ids: Sequence[str], drop: Collection[str] = ()) -> list[str]:
    out: list[str] = []
    for i in ids:
        if i not in out and i not in drop:
            out.append(i)
    return out


def _account_refs() -> list[tuple[Table, Column[Any]]]:
    """Every column of every mapped table that references ``accounts.id`` (so a table added later
    moves with the person without this code knowing it)."""
    return [(t, c) for t in Base.metadata.sorted_tables for c in t.columns
            if any(fk.column.table.name == "accounts" and fk.column.name == "id" for fk in c.foreign_keys)]


class AccountMerge:
    """Linking merges the redeeming account into the survivor in the caller's transaction; nothing
    the person had is lost.

    Moved: identities, tickets (if both paid for one Space both rows stay, reported in
    ``MergeReport.both_paid``), follows both ways (deduplicated; a follow between the two goes),
    reminders, attendance (one row per Space, present if either was), blocks on either account (a
    block follows the person; a block between the two goes), blocks they made (``by`` too), hosted
    Spaces and their seats in other Spaces' stages (co-host, speaker, muted, invited, hands, pins;
    the Space's version moves on, so a command racing the link retries on fresh state), captions,
    link codes, presence rows, plugin data (keys with the id as a ``:``-separated part, e.g. a
    recording opt-out, and the id anywhere in values, e.g. audit entries), the payout account (kept;
    two different Connect accounts refuse the link) and the higher tier. Any other table that
    references ``accounts.id`` moves the same way. Web sign-in: the merged account's passkeys
    move (they sign in to the survivor from then on), and the survivor's web session epoch is the
    one that stands (its browsers stay signed in; the merged account's cookies name an id that no
    longer exists, so they are signed out, as "sign out everywhere" on it would have). Only rows
    that duplicate one the survivor already
    has (the same follow, reminder or attendance, merged first) are dropped, then the emptied
    account row is deleted: its id stops existing rather than living on as a second, empty account.
    """

    def __init__(self, session: AsyncSession, source: str, target: str) -> None:
        if source == target:
            raise ValueError("an account cannot be merged into itself")
        self.s, self.source, self.target = session, source, target
        self.moved: dict[str, int] = {}
        self.dropped: dict[str, int] = {}

    def _count(self, into: dict[str, int], name: str, n: int | None) -> None:
        if n:
            into[name] = into.get(name, 0) + n

    async def run(self) -> MergeReport:
        await self._accounts()
        both_paid = await self._both_paid()
        await self._spaces()
        await self._attendance()
        await self._web_signin()
        refs = _account_refs()
        for table, col in refs:
            if (table.name, col.name) != ("spaces", "host_id"):
                await self._move(table, col)
        await self._drop_self_rows(refs)
        for table, col in refs:  # what is left names the merged account and duplicates the survivor's
            res = await self.s.execute(delete(table).where(col == self.source))
            self._count(self.dropped, table.name, res.rowcount)  # type: ignore[attr-defined]
        await self.s.execute(update(BlockRow).where(BlockRow.by == self.source).values(by=self.target))
        res = await self.s.execute(update(CaptionRow).where(CaptionRow.speaker_id == self.source)
                                   .values(speaker_id=self.target))
        self._count(self.moved, "captions", res.rowcount)  # type: ignore[attr-defined]
        await self._plugin_data()
        await self.s.execute(delete(AccountRow).where(AccountRow.id == self.source))
        log.info("account %s merged into %s: moved %s, duplicates dropped %s", self.source, self.target,
                 self.moved, self.dropped)
        if both_paid:  # the operator (or the host) decides whether to refund one
            log.warning("account %s merged into %s: both held a paid ticket for Space(s) %s; both kept",
                        self.source, self.target, ", ".join(both_paid))
        return MergeReport(survivor=self.target, merged=self.source, moved=self.moved,
                           duplicates_dropped=self.dropped, both_paid=both_paid)

    async def _accounts(self) -> None:
        """Lock both rows (on PostgreSQL: nobody adds rows naming the merged account meanwhile); keep
        the payout account and the higher tier."""
        q = select(AccountRow.id, AccountRow.tier, AccountRow.stripe_account).where(
            AccountRow.id.in_([self.source, self.target]))
        if dialect_name(self.s) == "postgresql":
            q = q.with_for_update()
        rows = {r.id: r for r in (await self.s.execute(q)).all()}
        for account_id in (self.source, self.target):
            if account_id not in rows:
                raise NotFound("account.not_found", account_id=account_id)
        src, dst = rows[self.source], rows[self.target]
        if src.stripe_account and dst.stripe_account and src.stripe_account != dst.stripe_account:
            raise Conflict("link.two_payout_accounts",
                           hint="both accounts receive payouts to different Stripe accounts; "
                                "ask the operator to move one first")
        values: dict[str, Any] = {}
        if src.stripe_account and not dst.stripe_account:
            values["stripe_account"] = src.stripe_account
        if Tier.PAID.value in (src.tier, dst.tier) and dst.tier != Tier.PAID.value:
            values["tier"] = Tier.PAID.value
        if values:
            await self.s.execute(update(AccountRow).where(AccountRow.id == self.target).values(**values))

    async def _web_signin(self) -> None:
        """Passkeys move; the survivor keeps its own session epoch (taking the merged account's
        would sign the survivor's browsers out whenever that one had ever signed out everywhere)."""
        res = await self.s.execute(update(PasskeyRow).where(PasskeyRow.account_id == self.source)
                                   .values(account_id=self.target))
        self._count(self.moved, "passkeys", res.rowcount)  # type: ignore[attr-defined]
        await self.s.execute(delete(WebEpochRow).where(WebEpochRow.account_id == self.source))

    async def _both_paid(self) -> list[str]:
        q = (select(TicketRow.space_id)
             .where(TicketRow.status == "paid", TicketRow.account_id.in_([self.source, self.target]))
             .group_by(TicketRow.space_id).having(func.count(distinct(TicketRow.account_id)) == 2)
             .order_by(TicketRow.space_id))
        return list((await self.s.scalars(q)).all())

    async def _spaces(self) -> None:
        """Hosted Spaces and seats in any Space's stage, saved like the aggregate (version checked)."""
        t = SpaceRow.__table__
        q = select(t.c.id, t.c.host_id, t.c.stage, t.c.version).where(
            (t.c.host_id == self.source) | cast(t.c.stage, Text).contains(self.source, autoescape=True))
        for row in (await self.s.execute(q)).all():
            host = self.target if row.host_id == self.source else row.host_id
            st = _swap(dict(row.stage), self.source, self.target)
            cohosts = _unique(st.get("cohosts", []), drop={host})
            speakers = _unique(st.get("speakers", []), drop={host, *cohosts})
            stage_ids = {host, *cohosts, *speakers}
            hands, seen = [], set()
            for h in st.get("hands", []):
                if h["a"] not in seen and h["a"] not in stage_ids:
                    seen.add(h["a"])
                    hands.append(h)
            st.update(cohosts=cohosts, speakers=speakers, hands=hands,
                      muted=sorted(set(st.get("muted", [])) & stage_ids),
                      invited=sorted(set(st.get("invited", [])) - stage_ids))
            res = await self.s.execute(update(SpaceRow).where(SpaceRow.id == row.id, SpaceRow.version == row.version)
                                       .values(host_id=host, stage=st, version=row.version + 1))
            if res.rowcount != 1:  # type: ignore[attr-defined]
                raise StaleAggregate(row.id)
            self._count(self.moved, "spaces", 1)

    async def _attendance(self) -> None:
        """Where both attended one Space, the survivor's row says present if either is, from the first join."""
        both = (select(ParticipantRow.space_id)
                .where(ParticipantRow.account_id.in_([self.source, self.target]))
                .group_by(ParticipantRow.space_id).having(func.count() == 2))
        rows = (await self.s.execute(select(ParticipantRow.__table__).where(
            ParticipantRow.space_id.in_(both), ParticipantRow.account_id.in_([self.source, self.target])))).all()
        by_space: dict[str, list[Any]] = {}
        for r in rows:
            by_space.setdefault(r.space_id, []).append(r)
        for space_id, pair in by_space.items():
            present = any(r.present for r in pair)
            left = None if present else max((r.left_at for r in pair if r.left_at), default=None)
            await self.s.execute(update(ParticipantRow).where(ParticipantRow.space_id == space_id,
                                                              ParticipantRow.account_id == self.target)
                                 .values(present=present, joined_at=min(r.joined_at for r in pair), left_at=left))

    async def _move(self, table: Table, col: Column[Any]) -> None:
        """Point ``col`` at the survivor wherever that does not collide with a row it already has."""
        stmt = update(table).where(col == self.source)
        keys = [list(table.primary_key.columns)] + [list(u.columns) for u in table.constraints
                                                      if isinstance(u, UniqueConstraint)]
        for key in keys:
            if any(c is col for c in key):
                other = table.alias()
                stmt = stmt.where(~exists().where(other.c[col.name] == self.target,
                                                  *(other.c[c.name] == c for c in key if c is not col)))
        res = await self.s.execute(stmt.values({col.name: self.target}))
        self._count(self.moved, f"{table.name}.{col.name}", res.rowcount)  # type: ignore[attr-defined]

    async def _drop_self_rows(self, refs: list[tuple[Table, Column[Any]]]) -> None:
        """A follow or block between the two accounts would now be the person following or
        blocking themselves: dropped."""
        per_table: dict[str, list[Column[Any]]] = {}
        tables: dict[str, Table] = {}
        for table, col in refs:
            per_table.setdefault(table.name, []).append(col)
            tables[table.name] = table
        for name, cols in per_table.items():
            if len(cols) > 1:
                res = await self.s.execute(delete(tables[name]).where(*(c == self.target for c in cols)))
                self._count(self.dropped, name, res.rowcount)  # type: ignore[attr-defined]

    async def _plugin_data(self) -> None:
        q = select(PluginDataRow.plugin, PluginDataRow.key, PluginDataRow.value).where(
            PluginDataRow.key.contains(self.source, autoescape=True)
            | cast(PluginDataRow.value, Text).contains(self.source, autoescape=True))
        for plugin, key, value in (await self.s.execute(q)).all():
            new_key = ":".join(self.target if part == self.source else part for part in key.split(":"))
            new_value = _swap(value, self.source, self.target)
            where = (PluginDataRow.plugin == plugin, PluginDataRow.key == key)
            if new_key != key and await self.s.scalar(select(func.count()).select_from(PluginDataRow).where(
                    PluginDataRow.plugin == plugin, PluginDataRow.key == new_key)):
                await self.s.execute(delete(PluginDataRow).where(*where))  # the survivor's entry stands
                self._count(self.dropped, "plugin_data", 1)
                continue
            if new_key != key or new_value != value:
                await self.s.execute(update(PluginDataRow).where(*where).values(key=new_key, value=new_value))
                self._count(self.moved, "plugin_data", 1)
