"""Super Follows: creators' subscription tiers, subscriptions, their payments, and a Space's subscriber rule

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 20:00:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import core.storage.base

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = core.storage.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table('spaces', schema=None) as batch_op:
        batch_op.add_column(sa.Column('subscribers', sa.JSON().with_variant(
            postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True))
    op.create_table(
        'sub_tiers',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('creator_id', sa.String(length=32), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('price_minor', sa.BigInteger(), nullable=False),
        sa.Column('currency', sa.String(length=8), nullable=False),
        sa.Column('perks', sa.Text(), nullable=False),
        sa.Column('archived', sa.Boolean(), server_default='0', nullable=False),
        sa.Column('stripe_product', sa.String(length=255), nullable=True),
        sa.Column('stripe_price', sa.String(length=255), nullable=True),
        sa.Column('created_at', UTC, nullable=False),
        sa.ForeignKeyConstraint(['creator_id'], ['accounts.id'], name=op.f('fk_sub_tiers_creator_id_accounts'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_sub_tiers')),
    )
    with op.batch_alter_table('sub_tiers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sub_tiers_creator_id'), ['creator_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sub_tiers_stripe_price'), ['stripe_price'], unique=False)
    op.create_table(
        'subscriptions',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('account_id', sa.String(length=32), nullable=False),
        sa.Column('creator_id', sa.String(length=32), nullable=False),
        sa.Column('tier_id', sa.String(length=32), nullable=False),
        sa.Column('provider', sa.String(length=32), nullable=False),
        sa.Column('provider_ref', sa.String(length=255), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('current_period_end', UTC, nullable=True),
        sa.Column('cancel_at_period_end', sa.Boolean(), nullable=False),
        sa.Column('prior_tier_id', sa.String(length=32), nullable=True),
        sa.Column('prior_tier_until', UTC, nullable=True),
        sa.Column('event_at', UTC, nullable=True),
        sa.Column('event_id', sa.String(length=255), nullable=True),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('updated_at', UTC, nullable=False),
        sa.Column('ended_at', UTC, nullable=True),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_subscriptions_account_id_accounts'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['creator_id'], ['accounts.id'], name=op.f('fk_subscriptions_creator_id_accounts'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['tier_id'], ['sub_tiers.id'], name=op.f('fk_subscriptions_tier_id_sub_tiers')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_subscriptions')),
        sa.UniqueConstraint('provider', 'provider_ref', name=op.f('uq_subscriptions_provider')),
    )
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.create_index('ix_subscriptions_account_creator', ['account_id', 'creator_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_subscriptions_creator_id'), ['creator_id'], unique=False)
    op.create_table(
        'subscription_payments',
        sa.Column('provider', sa.String(length=32), nullable=False),
        sa.Column('invoice_ref', sa.String(length=255), nullable=False),
        sa.Column('subscription_ref', sa.String(length=255), nullable=False),
        sa.Column('creator_id', sa.String(length=32), nullable=True),
        sa.Column('amount_minor', sa.BigInteger(), nullable=False),
        sa.Column('currency', sa.String(length=8), nullable=False),
        sa.Column('fee_minor', sa.BigInteger(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('failures', sa.Integer(), nullable=False),
        sa.Column('payment_ref', sa.String(length=255), nullable=True),
        sa.Column('at', UTC, nullable=False),
        sa.PrimaryKeyConstraint('provider', 'invoice_ref', name=op.f('pk_subscription_payments')),
    )
    with op.batch_alter_table('subscription_payments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_subscription_payments_creator_id'), ['creator_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_subscription_payments_subscription_ref'), ['subscription_ref'],
                              unique=False)


def downgrade() -> None:
    op.drop_table('subscription_payments')
    op.drop_table('subscriptions')
    op.drop_table('sub_tiers')
    with op.batch_alter_table('spaces', schema=None) as batch_op:
        batch_op.drop_column('subscribers')
