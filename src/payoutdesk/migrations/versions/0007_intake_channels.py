"""intake channels

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 00:11:59.992930

The tables of the intake channels (DESIGN §3, models/intake.py): runs of pulls, polls and intakes,
remote files taken, Salesforce notifications seen, poll cursors, results to deliver, failure spells.
``accounts.alert_email`` (where failures are mailed) and ``event_types.outbound_token`` (the unguessable
part of the Salesforce Outbound Message address; every existing event type gets one). Columns are added
in place (no batch rebuild of a table other tables refer to).
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import payoutdesk.models.types

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('result_deliveries',
    sa.Column('submission_id', sa.BigInteger(), nullable=False),
    sa.Column('channel', sa.String(length=12), nullable=False),
    sa.Column('target', sa.Text(), nullable=False),
    sa.Column('created_at', payoutdesk.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('next_attempt_at', payoutdesk.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('delivered_at', payoutdesk.models.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('gave_up_at', payoutdesk.models.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('submission_id', name=op.f('pk_result_deliveries'))
    )
    with op.batch_alter_table('result_deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_result_deliveries_due', ['next_attempt_at'], unique=False, sqlite_where=sa.text('delivered_at IS NULL AND gave_up_at IS NULL'), postgresql_where=sa.text('delivered_at IS NULL AND gave_up_at IS NULL'))

    op.create_table('alert_spells',
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=80), nullable=False),
    sa.Column('failing_since', payoutdesk.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_failure_at', payoutdesk.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('failures', sa.Integer(), server_default='1', nullable=False),
    sa.Column('last_error', sa.Text(), nullable=False),
    sa.Column('alerted_at', payoutdesk.models.types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_alert_spells_account_id_accounts')),
    sa.PrimaryKeyConstraint('account_id', 'source', name=op.f('pk_alert_spells'))
    )
    op.create_table('intake_runs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('event_type_id', sa.Integer(), nullable=True),
    sa.Column('channel', sa.String(length=12), nullable=False),
    sa.Column('trigger', sa.String(length=20), nullable=False),
    sa.Column('started_at', payoutdesk.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', payoutdesk.models.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('outcome', sa.String(length=10), nullable=False),
    sa.Column('files_taken', sa.Integer(), server_default='0', nullable=False),
    sa.Column('duplicates', sa.Integer(), server_default='0', nullable=False),
    sa.Column('skipped', sa.Integer(), server_default='0', nullable=False),
    sa.Column('submissions', sa.Text(), server_default='[]', nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_intake_runs_account_id_accounts')),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_intake_runs_campaign_id_campaigns')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_intake_runs'))
    )
    with op.batch_alter_table('intake_runs', schema=None) as batch_op:
        batch_op.create_index('ix_intake_runs_campaign', ['account_id', 'campaign_id', 'id'], unique=False)
        batch_op.create_index('ix_intake_runs_event_type', ['account_id', 'event_type_id', 'id'], unique=False)

    op.create_table('intake_cursors',
    sa.Column('event_type_id', sa.Integer(), nullable=False),
    sa.Column('cursor', sa.String(length=100), nullable=False),
    sa.Column('updated_at', payoutdesk.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['event_type_id'], ['event_types.id'], name=op.f('fk_intake_cursors_event_type_id_event_types')),
    sa.PrimaryKeyConstraint('event_type_id', name=op.f('pk_intake_cursors'))
    )
    op.create_table('remote_files',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('event_type_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=500), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('mtime', sa.String(length=40), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('submission_id', sa.BigInteger(), nullable=True),
    sa.Column('outcome', sa.String(length=12), nullable=False),
    sa.Column('taken_at', payoutdesk.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('after_done', sa.String(length=12), nullable=True),
    sa.Column('run_id', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['event_type_id'], ['event_types.id'], name=op.f('fk_remote_files_event_type_id_event_types')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_remote_files')),
    sa.UniqueConstraint('event_type_id', 'name', 'size', 'mtime', name='uq_remote_files_seen')
    )
    op.create_table('salesforce_notifications',
    sa.Column('event_type_id', sa.Integer(), nullable=False),
    sa.Column('notification_id', sa.String(length=40), nullable=False),
    sa.Column('submission_id', sa.BigInteger(), nullable=True),
    sa.Column('received_at', payoutdesk.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['event_type_id'], ['event_types.id'], name=op.f('fk_salesforce_notifications_event_type_id_event_types')),
    sa.PrimaryKeyConstraint('event_type_id', 'notification_id', name=op.f('pk_salesforce_notifications'))
    )
    op.add_column('accounts', sa.Column('alert_email', sa.String(length=320), nullable=True))
    op.add_column('event_types', sa.Column('outbound_token', sa.String(length=64), nullable=True))
    bind = op.get_bind()
    for (et_id,) in bind.execute(sa.text('SELECT id FROM event_types')).all():
        bind.execute(sa.text('UPDATE event_types SET outbound_token = :t WHERE id = :i'),
                     {'t': secrets.token_hex(16), 'i': et_id})
    op.create_index('uq_event_types_outbound_token', 'event_types', ['outbound_token'], unique=True)


def downgrade() -> None:
    op.drop_index('uq_event_types_outbound_token', table_name='event_types')
    op.drop_column('event_types', 'outbound_token')
    op.drop_column('accounts', 'alert_email')

    op.drop_table('salesforce_notifications')
    op.drop_table('remote_files')
    op.drop_table('intake_cursors')
    with op.batch_alter_table('intake_runs', schema=None) as batch_op:
        batch_op.drop_index('ix_intake_runs_event_type')
        batch_op.drop_index('ix_intake_runs_campaign')

    op.drop_table('intake_runs')
    op.drop_table('alert_spells')
    with op.batch_alter_table('result_deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_result_deliveries_due', sqlite_where=sa.text('delivered_at IS NULL AND gave_up_at IS NULL'), postgresql_where=sa.text('delivered_at IS NULL AND gave_up_at IS NULL'))

    op.drop_table('result_deliveries')

