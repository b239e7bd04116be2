"""The intake channels (DESIGN §3): runs of pulls and polls, remote files taken, Salesforce notifications seen,
poll cursors, results to deliver and failure spells to alert on once."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer, String, Table, Text, UniqueConstraint, text

from payoutdesk.models.tables import metadata
from payoutdesk.models.types import BigId, UTCDateTime

# One row per run of a pull or a Salesforce poll, per mail received and per FTP upload: what came in and
# what became of it (files taken, duplicates, skipped, the submissions made, and for a failure, why).
intake_runs = Table(
    "intake_runs",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("campaign_id", Integer, ForeignKey("campaigns.id"), nullable=False),
    Column("event_type_id", Integer, nullable=True),  # pulls and polls; None for our FTP and SMTP servers
    Column("channel", String(12), nullable=False),  # ftp, ftp_pull, email, salesforce
    Column("trigger", String(20), nullable=False),  # schedule, run_now, upload, mail, outbound_message
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("outcome", String(10), nullable=False),  # running, ok, failed
    Column("files_taken", Integer, nullable=False, server_default="0"),
    Column("duplicates", Integer, nullable=False, server_default="0"),
    Column("skipped", Integer, nullable=False, server_default="0"),
    Column("submissions", Text, nullable=False, server_default="[]"),  # JSON list of labels, F-17 ...
    Column("detail", Text, nullable=True),  # for people: the error of a failed run, notes of the others
    Index("ix_intake_runs_event_type", "account_id", "event_type_id", "id"),
    Index("ix_intake_runs_campaign", "account_id", "campaign_id", "id"),
)

# A file taken from a brand's server (pull): taken once, by name, size and modification time.
remote_files = Table(
    "remote_files",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("event_type_id", Integer, ForeignKey("event_types.id"), nullable=False),
    Column("name", String(500), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("mtime", String(40), nullable=False),  # as the server gave it, normalised to ISO 8601 UTC
    Column("sha256", String(64), nullable=True),
    Column("submission_id", BigInteger, nullable=True),
    Column("outcome", String(12), nullable=False),  # queued, duplicate, refused
    Column("taken_at", UTCDateTime, nullable=False),
    Column("after_done", String(12), nullable=True),  # kept, deleted, moved (None until done)
    Column("run_id", BigInteger, nullable=True),
    UniqueConstraint("event_type_id", "name", "size", "mtime", name="uq_remote_files_seen"),
)

# A Salesforce Outbound Message notification already taken (Salesforce re-sends until acknowledged).
salesforce_notifications = Table(
    "salesforce_notifications",
    metadata,
    Column("event_type_id", Integer, ForeignKey("event_types.id"), primary_key=True),
    Column("notification_id", String(40), primary_key=True),
    Column("submission_id", BigInteger, nullable=True),
    Column("received_at", UTCDateTime, nullable=False),
)

# Where a poll left off (Salesforce: the last SystemModstamp taken).
intake_cursors = Table(
    "intake_cursors",
    metadata,
    Column("event_type_id", Integer, ForeignKey("event_types.id"), primary_key=True),
    Column("cursor", String(100), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# A result to send back once its submission is done (a mail reply, result_<name>.csv on the brand's server).
result_deliveries = Table(
    "result_deliveries",
    metadata,
    Column("submission_id", BigInteger, primary_key=True),
    Column("channel", String(12), nullable=False),
    Column("target", Text, nullable=False),  # JSON: where to (no secret: those stay in the settings)
    Column("created_at", UTCDateTime, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("delivered_at", UTCDateTime, nullable=True),
    Column("gave_up_at", UTCDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Index("ix_result_deliveries_due", "next_attempt_at",
          sqlite_where=text("delivered_at IS NULL AND gave_up_at IS NULL"),
          postgresql_where=text("delivered_at IS NULL AND gave_up_at IS NULL")),
)

# A failure spell of one source (a pull, a poll, a channel of a campaign): alerted once, closed by a success.
alert_spells = Table(
    "alert_spells",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id"), primary_key=True),
    Column("source", String(80), primary_key=True),  # event_type:12, campaign:3:email ...
    Column("failing_since", UTCDateTime, nullable=False),
    Column("last_failure_at", UTCDateTime, nullable=False),
    Column("failures", Integer, nullable=False, server_default="1"),
    Column("last_error", Text, nullable=False),
    Column("alerted_at", UTCDateTime, nullable=True),
)

__all__ = ["alert_spells", "intake_cursors", "intake_runs", "remote_files", "result_deliveries",
           "salesforce_notifications"]
