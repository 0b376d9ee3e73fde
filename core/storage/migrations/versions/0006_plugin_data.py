"""plugin data: each plugin's small key-value store (audit log, recordings, opt-outs, badges)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 10:00:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import core.storage.base

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'plugin_data',
        sa.Column('plugin', sa.String(length=64), nullable=False),
        sa.Column('key', sa.String(length=255), nullable=False),
        sa.Column('value', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
        sa.Column('updated_at', core.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('plugin', 'key', name=op.f('pk_plugin_data')),
    )


def downgrade() -> None:
    op.drop_table('plugin_data')
