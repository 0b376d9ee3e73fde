"""chat cards: messages that show a Space and are edited as it changes

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 22:00:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.storage.base

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'chat_cards',
        sa.Column('platform', sa.String(length=16), nullable=False),
        sa.Column('chat_id', sa.String(length=64), nullable=False),
        sa.Column('message_id', sa.String(length=64), nullable=False),
        sa.Column('space_id', sa.String(length=32), nullable=False),
        sa.Column('rendered', sa.String(length=64), nullable=False),
        sa.Column('created_at', core.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', core.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['space_id'], ['spaces.id'], name=op.f('fk_chat_cards_space_id_spaces'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('platform', 'chat_id', 'message_id', name=op.f('pk_chat_cards')),
    )
    with op.batch_alter_table('chat_cards', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chat_cards_space_id'), ['space_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('chat_cards', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_chat_cards_space_id'))
    op.drop_table('chat_cards')
