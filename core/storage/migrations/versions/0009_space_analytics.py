"""host's console analytics: listening spans per person and per-Space tallies (reactions, hands, comments)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-12 10:00:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.storage.base

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'listening_spans',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('space_id', sa.String(length=32), nullable=False),
        sa.Column('account_id', sa.String(length=32), nullable=False),
        sa.Column('started_at', core.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column('ended_at', core.storage.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['space_id'], ['spaces.id'], name=op.f('fk_listening_spans_space_id_spaces'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_listening_spans')),
    )
    with op.batch_alter_table('listening_spans', schema=None) as batch_op:
        batch_op.create_index('ix_listening_spans_space', ['space_id', 'account_id'], unique=False)
    op.create_table(
        'space_tallies',
        sa.Column('space_id', sa.String(length=32), nullable=False),
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('value', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['space_id'], ['spaces.id'], name=op.f('fk_space_tallies_space_id_spaces'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('space_id', 'name', name=op.f('pk_space_tallies')),
    )


def downgrade() -> None:
    op.drop_table('space_tallies')
    with op.batch_alter_table('listening_spans', schema=None) as batch_op:
        batch_op.drop_index('ix_listening_spans_space')
    op.drop_table('listening_spans')
