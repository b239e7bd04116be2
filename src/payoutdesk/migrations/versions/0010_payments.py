"""payments recorded against what is owed

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08 03:05:00.000000

``payments``: a payment a brand made to a partner for one clearing date (R16), in the currency of the
actions it pays; the payments report (payments/service.py) shows it beside what was owed.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import payoutdesk.models.types

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('payments',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('partner_id', sa.Integer(), nullable=False),
    sa.Column('clearing_date', sa.Date(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('reference', sa.String(length=200), nullable=True),
    sa.Column('actor', sa.String(length=320), nullable=True),
    sa.Column('created_at', payoutdesk.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_payments_account_id_accounts')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_payments_partner_id_partners')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payments'))
    )
    op.create_index('ix_payments_partner', 'payments', ['account_id', 'partner_id', 'clearing_date'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_payments_partner', table_name='payments')
    op.drop_table('payments')
