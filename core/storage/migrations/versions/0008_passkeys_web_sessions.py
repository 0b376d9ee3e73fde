"""web sign-in: passkey credentials and each account's web session epoch (sign out everywhere)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10 10:00:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.storage.base

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'passkeys',
        sa.Column('credential_id', sa.String(length=1400), nullable=False),
        sa.Column('account_id', sa.String(length=32), nullable=False),
        sa.Column('public_key', sa.LargeBinary(), nullable=False),
        sa.Column('sign_count', sa.Integer(), nullable=False),
        sa.Column('transports', sa.String(length=200), nullable=False),
        sa.Column('created_at', core.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column('last_used_at', core.storage.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_passkeys_account_id_accounts'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('credential_id', name=op.f('pk_passkeys')),
    )
    with op.batch_alter_table('passkeys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_passkeys_account_id'), ['account_id'], unique=False)
    op.create_table(
        'web_session_epochs',
        sa.Column('account_id', sa.String(length=32), nullable=False),
        sa.Column('epoch', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'],
                                name=op.f('fk_web_session_epochs_account_id_accounts'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('account_id', name=op.f('pk_web_session_epochs')),
    )


def downgrade() -> None:
    op.drop_table('web_session_epochs')
    with op.batch_alter_table('passkeys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_passkeys_account_id'))
    op.drop_table('passkeys')
