"""presence: live connections per person (heartbeat, sweep) and seats kept while someone is away

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 10:00:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.storage.base

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'connections',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('space_id', sa.String(length=32), nullable=False),
        sa.Column('account_id', sa.String(length=32), nullable=False),
        sa.Column('node', sa.String(length=64), nullable=False),
        sa.Column('seen_at', core.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_connections_account_id_accounts'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['space_id'], ['spaces.id'], name=op.f('fk_connections_space_id_spaces'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_connections')),
    )
    with op.batch_alter_table('connections', schema=None) as batch_op:
        batch_op.create_index('ix_connections_person', ['space_id', 'account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_connections_node'), ['node'], unique=False)
        batch_op.create_index(batch_op.f('ix_connections_seen_at'), ['seen_at'], unique=False)
    op.create_table(
        'presence_away',
        sa.Column('space_id', sa.String(length=32), nullable=False),
        sa.Column('account_id', sa.String(length=32), nullable=False),
        sa.Column('away_id', sa.String(length=32), nullable=False),
        sa.Column('since', core.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column('until', core.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_presence_away_account_id_accounts'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['space_id'], ['spaces.id'], name=op.f('fk_presence_away_space_id_spaces'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('space_id', 'account_id', name=op.f('pk_presence_away')),
        sa.UniqueConstraint('away_id', name=op.f('uq_presence_away_away_id')),
    )


def downgrade() -> None:
    op.drop_table('presence_away')
    with op.batch_alter_table('connections', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_connections_seen_at'))
        batch_op.drop_index(batch_op.f('ix_connections_node'))
        batch_op.drop_index('ix_connections_person')
    op.drop_table('connections')
