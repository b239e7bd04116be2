"""the list's locking-date sorts with a partner, event type or state filter

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08 03:30:00.000000

Three indexes on ``actions``: ``(account_id, partner_id, locking_date, id)``,
``(account_id, event_type_id, locking_date, id)`` and ``(account_id, state, locking_date, id)``.
``GET /api/v1/actions?sort=locking_date`` (and ``-locking_date``, the Pending Payouts page's sorts)
with one of those filters walked ``ix_actions_locking_date`` and checked the filter on each table
row: seconds at 5,000,000 actions for a pending state, an event type with open-ended locking or a
small partner (docs/PERFORMANCE.md). Partner, event type and locking date never change; the state
changes with a reversal, an approval and a lock, which already write ``ix_actions_state``: a change
of amount or payout alone stays a HOT update (migration 0004). The engine's cost is measured in
docs/PERFORMANCE.md.
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_actions_partner_locking": ["account_id", "partner_id", "locking_date", "id"],
    "ix_actions_event_type_locking": ["account_id", "event_type_id", "locking_date", "id"],
    "ix_actions_state_locking": ["account_id", "state", "locking_date", "id"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "actions", columns, unique=False, if_not_exists=True)
    bind = op.get_bind()
    if bind.dialect.name == "sqlite" and bind.exec_driver_sql(
            "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").first() is not None:
        # a database that was analyzed (the bench's are) needs statistics for the new indexes too: without
        # them SQLite takes each for a very selective one, and walked all 5,000,000 actions on one of them
        # for a plain first page
        for name in INDEXES:
            op.execute(f"ANALYZE {name}")


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="actions", if_exists=True)
