"""the history's locks by time, for impact.com's ActionUpdates windows and next pages

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08 03:20:00.000000

``ix_action_updates_locked_at`` on ``action_updates (at, action_id)``, the ``LOCKED`` rows alone: the
companion of ``ix_action_updates_at`` (migration 0008), which leaves them out. The compatible
``GET /Advertisers/{AccountSID}/ActionUpdates`` lists locks too; its ``StartDate``/``EndDate`` window and
the keyset position of its ``@nextpageuri`` are two index ranges, one on each index, merged in time
order (ledger/repository.py ``history_page``), instead of the locks found through every action of the
account. A lock run appends its rows at the end of this index.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_action_updates_locked_at', 'action_updates', ['at', 'action_id'], unique=False,
                    sqlite_where=sa.text("kind = 'LOCKED'"), postgresql_where=sa.text("kind = 'LOCKED'"))


def downgrade() -> None:
    op.drop_index('ix_action_updates_locked_at', table_name='action_updates',
                  sqlite_where=sa.text("kind = 'LOCKED'"), postgresql_where=sa.text("kind = 'LOCKED'"))
