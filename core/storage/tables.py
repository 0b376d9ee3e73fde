"""Typed table mappings of the Spaces domain.

The Space row holds the stage, queue and pins as JSON next to a ``version`` column: the aggregate is
loaded and saved in one statement and two moderators racing for the last seat can never both win
(optimistic concurrency; see ``SpaceRepository.save``). Listeners are rows in ``participants``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.storage.base import Base


class AccountRow(Base):
    __tablename__ = "accounts"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    tier: Mapped[str] = mapped_column(String(16), default="free")
    stripe_account: Mapped[str | None] = mapped_column(String(64))  # Connect Express account for payouts
    created_at: Mapped[datetime]


class IdentityRow(Base):
    __tablename__ = "identities"
    platform: Mapped[str] = mapped_column(String(16), primary_key=True)
    external_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    display_name: Mapped[str] = mapped_column(String(200))
    dm_opt_in: Mapped[bool] = mapped_column(Boolean, default=True)
    reachable: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]


class FollowRow(Base):
    __tablename__ = "follows"
    follower_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    host_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime]
    __table_args__ = (Index("ix_follows_host", "host_id", "follower_id"),)


class LinkCodeRow(Base):
    __tablename__ = "link_codes"
    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    issued_on: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class CommunityRow(Base):
    __tablename__ = "communities"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    settings: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    __table_args__ = (UniqueConstraint("platform", "external_id"),)


class SpaceRow(Base):
    __tablename__ = "spaces"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), index=True)
    community_id: Mapped[str | None] = mapped_column(ForeignKey("communities.id"), index=True)
    visibility: Mapped[str] = mapped_column(String(16), default="public")
    topics: Mapped[dict[str, Any]]
    scheduled_for: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    stage: Mapped[dict[str, Any]]  # cohosts, speakers, muted, invited, hands, pins
    captions_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    ticketing: Mapped[dict[str, Any] | None]
    subscribers: Mapped[dict[str, Any] | None]  # SubscriberAccess (tier, early minutes)
    version: Mapped[int] = mapped_column(Integer, default=0)


class ParticipantRow(Base):
    """Presence and attendance: one row per account per Space, kept after they leave."""

    __tablename__ = "participants"
    space_id: Mapped[str] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    present: Mapped[bool] = mapped_column(Boolean, default=True)
    joined_at: Mapped[datetime]
    left_at: Mapped[datetime | None]
    __table_args__ = (
        Index("ix_participants_present", "space_id", "present"),
        Index("ix_participants_account", "account_id"),
    )


class BlockRow(Base):
    __tablename__ = "blocks"
    host_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    by: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]


class ReminderRow(Base):
    __tablename__ = "reminder_subscriptions"
    space_id: Mapped[str] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime]


class TicketRow(Base):
    __tablename__ = "tickets"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    space_id: Mapped[str] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(String(32))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    hold_expires_at: Mapped[datetime | None]
    provider_ref: Mapped[str | None] = mapped_column(String(255), index=True)
    fee_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    refundable: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")  # host moved the Space
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    __table_args__ = (
        Index("ix_tickets_space_status", "space_id", "status"),
        Index("ix_tickets_space_account", "space_id", "account_id"),
    )


class ProcessedEventRow(Base):
    """Every provider event id handled once (webhooks replayed by Stripe or Telegram are ignored)."""

    __tablename__ = "processed_events"
    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime]


class CaptionRow(Base):
    __tablename__ = "captions"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    space_id: Mapped[str] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"))
    speaker_id: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    start_s: Mapped[float] = mapped_column(Float)
    end_s: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime]
    __table_args__ = (Index("ix_captions_space", "space_id", "id"),)


class ChatCardRow(Base):
    """A message in a chat that shows a Space and is kept up to date by its adapter (a "Space card")."""

    __tablename__ = "chat_cards"
    platform: Mapped[str] = mapped_column(String(16), primary_key=True)
    chat_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    space_id: Mapped[str] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"), index=True)
    rendered: Mapped[str] = mapped_column(String(64), default="")  # hash of what the message shows now
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class PluginDataRow(Base):
    """A plugin's small store: JSON values under string keys, scanned by prefix in key order.

    Plugins own their key space (``plugin`` column); the platform keeps its own rows under the
    plugin name ``spacebridge`` (load status, per-Space badges).
    """

    __tablename__ = "plugin_data"
    plugin: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


class ConnectionRow(Base):
    """One live connection (a web socket) of a person to a Space, on one process (``node``).

    Presence is per person: they are present while any of their rows is fresh. Each process
    refreshes ``seen_at`` of all its rows in one statement per heartbeat, so rows of a process that
    died (SIGKILL, crash) go stale and are swept as disconnects (``core/presence.py``).
    """

    __tablename__ = "connections"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    space_id: Mapped[str] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    node: Mapped[str] = mapped_column(String(64), index=True)
    seen_at: Mapped[datetime] = mapped_column(index=True)
    __table_args__ = (Index("ix_connections_person", "space_id", "account_id"),)


class AwayRow(Base):
    """Someone who holds a seat (host, stage, a raised hand) lost their last connection: they keep
    it until ``until``, when the ``presence.expire`` job (keyed by ``away_id``) applies the leave."""

    __tablename__ = "presence_away"
    space_id: Mapped[str] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    away_id: Mapped[str] = mapped_column(String(32), unique=True)
    since: Mapped[datetime]
    until: Mapped[datetime]


class TierRow(Base):
    """A creator's subscription tier (Super Follows); the provider's product and price ids once made."""

    __tablename__ = "sub_tiers"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    creator_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    price_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    perks: Mapped[str] = mapped_column(Text, default="")
    archived: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    stripe_product: Mapped[str | None] = mapped_column(String(255))
    stripe_price: Mapped[str | None] = mapped_column(String(255), index=True)
    stars: Mapped[int | None] = mapped_column(Integer)  # the monthly price in Telegram Stars, if sold there
    created_at: Mapped[datetime]


class SubscriptionRow(Base):
    """An account's subscription to a creator's tier, as the newest provider event said it is."""

    __tablename__ = "subscriptions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    creator_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    tier_id: Mapped[str] = mapped_column(ForeignKey("sub_tiers.id"))
    provider: Mapped[str] = mapped_column(String(32))
    provider_ref: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    current_period_end: Mapped[datetime | None]
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    prior_tier_id: Mapped[str | None] = mapped_column(String(32))
    prior_tier_until: Mapped[datetime | None]
    event_at: Mapped[datetime | None]
    event_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    __table_args__ = (
        UniqueConstraint("provider", "provider_ref"),
        Index("ix_subscriptions_account_creator", "account_id", "creator_id"),
    )


class SubscriptionPaymentRow(Base):
    """One provider invoice (a period's payment) of a subscription: paid, failed or refunded."""

    __tablename__ = "subscription_payments"
    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    invoice_ref: Mapped[str] = mapped_column(String(255), primary_key=True)
    subscription_ref: Mapped[str] = mapped_column(String(255), index=True)
    creator_id: Mapped[str | None] = mapped_column(String(32), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    fee_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(16))  # paid | failed | refunded
    failures: Mapped[int] = mapped_column(Integer, default=0)
    payment_ref: Mapped[str | None] = mapped_column(String(255))  # the PaymentIntent a refund goes to
    at: Mapped[datetime]
