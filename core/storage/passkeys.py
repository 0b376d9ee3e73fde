"""Web sign-in storage: passkey credentials (WebAuthn), each account's web session epoch, and
the one-time values (challenges, OAuth states) a browser has already spent.

A passkey belongs to one account; the epoch is a counter a web session cookie carries, so "sign out
everywhere" is one increment that every older cookie stops matching (cookies cannot be recalled).
A cookie can be copied, so what it carries once (a WebAuthn challenge, an OAuth ``state``) is
recorded here when used (``spend``): a second use of the same value, from any copy, is refused.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import ForeignKey, Integer, LargeBinary, String, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from core.model.accounts import MAX_PASSKEYS, Passkey
from core.storage.base import Base
from core.storage.tables import PluginDataRow

__all__ = ["MAX_PASSKEYS", "SPENT_NS", "Passkey", "PasskeyRepository", "PasskeyRow", "WebEpochRow"]

SPENT_NS = "spacebridge.web"  # plugin_data namespace of spent one-time values ("spent:<sha256>")


class PasskeyRow(Base):
    __tablename__ = "passkeys"
    credential_id: Mapped[str] = mapped_column(String(1400), primary_key=True)  # base64url, as browsers send it
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    sign_count: Mapped[int] = mapped_column(Integer, default=0)
    transports: Mapped[str] = mapped_column(String(200), default="")  # comma separated (usb,internal,...)
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]


class WebEpochRow(Base):
    __tablename__ = "web_session_epochs"
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, default=0)


def _passkey(r: PasskeyRow) -> Passkey:
    return Passkey(credential_id=r.credential_id, account_id=r.account_id, public_key=r.public_key,
                   sign_count=r.sign_count, transports=tuple(t for t in r.transports.split(",") if t),
                   created_at=r.created_at, last_used_at=r.last_used_at)


class PasskeyRepository:
    """``uow.passkeys`` (``core.ports.Passkeys``): credentials, session epochs and spent one-time
    values, inside the unit of work's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, credential_id: str) -> Passkey | None:
        row = await self.session.get(PasskeyRow, credential_id)
        return None if row is None else _passkey(row)

    async def for_account(self, account_id: str) -> list[Passkey]:
        rows = await self.session.scalars(select(PasskeyRow).where(PasskeyRow.account_id == account_id)
                                          .order_by(PasskeyRow.created_at).limit(MAX_PASSKEYS))
        return [_passkey(r) for r in rows]

    async def add(self, p: Passkey) -> None:
        self.session.add(PasskeyRow(credential_id=p.credential_id, account_id=p.account_id, public_key=p.public_key,
                                    sign_count=p.sign_count, transports=",".join(p.transports)[:200],
                                    created_at=p.created_at, last_used_at=p.last_used_at))

    async def used(self, credential_id: str, sign_count: int, now: datetime) -> None:
        await self.session.execute(update(PasskeyRow).where(PasskeyRow.credential_id == credential_id)
                                   .values(sign_count=sign_count, last_used_at=now))

    async def epoch(self, account_id: str) -> int:
        row = await self.session.get(WebEpochRow, account_id)
        return 0 if row is None else row.epoch

    async def bump_epoch(self, account_id: str) -> int:
        """End every web session of the account: the new epoch, which no existing cookie carries."""
        row = await self.session.get(WebEpochRow, account_id)
        if row is None:
            row = WebEpochRow(account_id=account_id, epoch=0)
            self.session.add(row)
        row.epoch = (row.epoch or 0) + 1
        await self.session.flush()
        return row.epoch

    async def spend(self, value: str, now: datetime, ttl_s: float) -> bool:
        """Record a one-time ``value`` as used: True the first time, False on any later use (a
        replayed cookie copy). Kept ``ttl_s`` (the value's own lifetime; older ones are pruned here),
        under a digest so the stored key says nothing. Inserted at once, so two concurrent uses
        cannot both win."""
        digest = hashlib.sha256(value.encode()).hexdigest()
        await self.session.execute(delete(PluginDataRow).where(
            PluginDataRow.plugin == SPENT_NS, PluginDataRow.key.startswith("spent:"),
            PluginDataRow.updated_at < now - timedelta(seconds=ttl_s)))
        try:
            async with self.session.begin_nested():
                self.session.add(PluginDataRow(plugin=SPENT_NS, key=f"spent:{digest}", value={}, updated_at=now))
        except IntegrityError:
            return False
        return True
