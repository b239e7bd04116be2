"""the history by time, for impact.com's last-update filter

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 01:10:00.000000

``ix_action_updates_at`` on ``action_updates (at, action_id)``, without the ``LOCKED`` rows: the
compatible ``GET /Advertisers/{AccountSID}/Actions`` filters ``StartDate``/``EndDate`` on an action's
last update (its newest change that is not a lock, impact.com's ``UpdateDate``) by finding the changes
of the window here. The history is append-only, so the index only grows at its end; an index on a
column of ``actions`` that every change rewrites would instead cost each change its HOT update
(migration 0004). Lock runs write one ``LOCKED`` row per action and add nothing to this index.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_action_updates_at', 'action_updates', ['at', 'action_id'], unique=False,
                    sqlite_where=sa.text("kind <> 'LOCKED'"), postgresql_where=sa.text("kind <> 'LOCKED'"))


def downgrade() -> None:
    op.drop_index('ix_action_updates_at', table_name='action_updates',
                  sqlite_where=sa.text("kind <> 'LOCKED'"), postgresql_where=sa.text("kind <> 'LOCKED'"))
