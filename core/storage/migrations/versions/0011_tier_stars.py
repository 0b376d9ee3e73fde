"""Super Follows on Telegram: a tier's monthly price in Telegram Stars (null: not sold in Stars)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 20:20:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('sub_tiers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stars', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('sub_tiers', schema=None) as batch_op:
        batch_op.drop_column('stars')
