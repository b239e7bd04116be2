"""room for HOT updates in actions and action_items (PostgreSQL)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 15:15:00.000000

A change of an action (a modification, a file row) rewrites its row and its items' rows without
changing any indexed column, so PostgreSQL can keep the new row version on the same page and skip
every index ("HOT" update) — if the page has room. Tables filled to 100 % (the default) have none:
each change then adds an entry to each of the ten indexes of ``actions``. ``fillfactor = 85`` keeps
15 % of each page free for that. It applies to pages written from now on; an existing table gets
it for all its rows with ``VACUUM FULL actions; VACUUM FULL action_items;`` (locks the tables while
it runs; docs/CONFIGURATION.md). SQLite has no such setting: nothing to do there.
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("actions", "action_items")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} SET (fillfactor = 85)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
