"""row results without a foreign key to their submission

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 16:15:00.000000

``submission_results.submission_id`` no longer has a FOREIGN KEY to ``submissions.id``. Submissions
are never deleted, and results are only written by the submission engine for the submission it holds
claimed, in the same transaction that records its progress, so the check could never fail. On
PostgreSQL it was an RI trigger per row that looked the submission up and took a KEY SHARE lock on it:
of the binary COPY of a 200,000-row file's results it was 70 % (1.4 s of server time, 0.4 s without).
"""

import warnings
from collections.abc import Sequence

from alembic import op
from sqlalchemy.exc import SAWarning

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # on SQLite a batch operation: the table is rebuilt without the constraint (its rows copied)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=SAWarning, message="Skipped unsupported reflection")
        with op.batch_alter_table('submission_results', schema=None) as batch_op:
            batch_op.drop_constraint('fk_submission_results_submission_id_submissions', type_='foreignkey')


def downgrade() -> None:
    with op.batch_alter_table('submission_results', schema=None) as batch_op:
        batch_op.create_foreign_key('fk_submission_results_submission_id_submissions', 'submissions',
                                    ['submission_id'], ['id'])
