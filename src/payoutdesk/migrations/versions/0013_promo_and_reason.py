"""the list's promo code and reversal reason filters

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08 04:00:00.000000

Two partial indexes on ``actions``: ``(account_id, promo_code, id) WHERE promo_code IS NOT NULL`` and
``(account_id, reason, id) WHERE reason IS NOT NULL``. The Pending Payouts page filters by promo code
and, on its Reversed tab, by reversal reason; without them a promo code that few actions carry scanned
every action of the account (5.3 s at 5,000,000) and a rare reversal reason every reversed one (0.3 s
for 176,000). A promo code never changes; the reason is set by a reversal and cleared by a restore,
which change the state (and ``ix_actions_state``) anyway: a change of amount or payout alone stays a
HOT update (migration 0004). Partial: most actions carry neither.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {"ix_actions_promo": "promo_code", "ix_actions_reason": "reason"}


def upgrade() -> None:
    for name, column in INDEXES.items():
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(name, "actions", ["account_id", column, "id"], unique=False, sqlite_where=where,
                        postgresql_where=where)
    bind = op.get_bind()
    if bind.dialect.name == "sqlite" and bind.exec_driver_sql(
            "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").first() is not None:
        for name in INDEXES:  # an analyzed database (the bench's) needs statistics for them too (see 0012)
            op.execute(f"ANALYZE {name}")


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="actions")
