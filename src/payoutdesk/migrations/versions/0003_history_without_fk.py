"""history rows without a foreign key to their action

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 13:40:00.000000

``action_updates.action_id`` no longer has a FOREIGN KEY to ``actions.id``. Actions are never
deleted, and history rows are only written by the ledger service for an action it has just read or
changed in the same transaction, so the check could never fail; it cost, per history row, a lookup
of the action (and on PostgreSQL an RI trigger that also takes a KEY SHARE lock on the action's row,
one more WAL record): about 13 % of a lock run on PostgreSQL and 10-15 % of its CPU on SQLite
(docs/PERFORMANCE.md, lock run).
"""

import warnings
from collections.abc import Sequence

from alembic import op
from sqlalchemy.exc import SAWarning

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # on SQLite a batch operation: the table is rebuilt without the constraint (its rows copied). Reflecting
    # it also reflects `actions`, whose expression index SQLAlchemy cannot reflect and says so; that index
    # is not touched (only action_updates is rebuilt).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=SAWarning, message="Skipped unsupported reflection")
        with op.batch_alter_table('action_updates', schema=None) as batch_op:
            batch_op.drop_constraint('fk_action_updates_action_id_actions', type_='foreignkey')


def downgrade() -> None:
    with op.batch_alter_table('action_updates', schema=None) as batch_op:
        batch_op.create_foreign_key('fk_action_updates_action_id_actions', 'actions', ['action_id'], ['id'])

