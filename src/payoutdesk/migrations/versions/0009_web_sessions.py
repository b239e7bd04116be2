"""the pages' sign-ins

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 03:00:00.000000

``web_sessions``: one row per signed-in browser (web/session.py). The cookie carries a random token
and the table its SHA-256, so a copy of the database signs nobody in; ``csrf_token`` is the token every
form of that sign-in must send back. Signing out deletes the row; expired rows are deleted at the next
sign-in.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import payoutdesk.models.types

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('web_sessions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('csrf_token', sa.String(length=64), nullable=False),
    sa.Column('created_at', payoutdesk.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', payoutdesk.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_web_sessions_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_web_sessions')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_web_sessions_token_hash'))
    )
    op.create_index(op.f('ix_web_sessions_user_id'), 'web_sessions', ['user_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_web_sessions_user_id'), table_name='web_sessions')
    op.drop_table('web_sessions')
