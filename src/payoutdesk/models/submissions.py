"""Submissions: the queue of batches, their stored files (in chunks) and per-row results."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, ForeignKey, Index, Integer, LargeBinary, String, Table, Text, text

from payoutdesk.models.tables import metadata
from payoutdesk.models.types import BigId, UTCDateTime

submissions = Table(
    "submissions",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("campaign_id", Integer, ForeignKey("campaigns.id"), nullable=False),
    Column("kind", String(1), nullable=False),  # F: a file, A: an API batch
    Column("channel", String(12), nullable=False),
    Column("actor", String(320), nullable=True),
    Column("file_name", String(300), nullable=True),
    Column("content_type", String(100), nullable=True),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("dry_run", Boolean, nullable=False),
    Column("force", Boolean, nullable=False),
    # set on the first real (not dry, not forced) submission of a file: the duplicate guard
    Column("dedupe_key", String(80), nullable=True, unique=True),
    Column("undo_of", BigInteger, ForeignKey("submissions.id"), nullable=True),
    Column("undone_by", BigInteger, nullable=True),
    Column("status", String(12), nullable=False),  # QUEUED, IN_PROGRESS, COMPLETE, FAILED
    Column("format", String(20), nullable=True),
    Column("total_records", Integer, nullable=True),
    Column("processed_records", Integer, nullable=False, server_default="0"),
    Column("applied", Integer, nullable=False, server_default="0"),
    Column("unchanged", Integer, nullable=False, server_default="0"),
    Column("errors", Integer, nullable=False, server_default="0"),
    Column("amount_delta", BigInteger, nullable=False, server_default="0"),
    Column("payout_delta", BigInteger, nullable=False, server_default="0"),
    Column("failure", Text, nullable=True),  # why the whole file failed
    Column("claimed_by", String(100), nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    # the original file (None for an undo, which has none, and once retention deleted it)
    Column("file_id", BigInteger, ForeignKey("stored_files.id"), nullable=True),
    Column("file_deleted_at", UTCDateTime, nullable=True),  # when retention deleted the original file
    Index("ix_submissions_account", "account_id", "id"),
    Index("ix_submissions_file", "file_id"),
    Index(
        "ix_submissions_queue",
        "status",
        "id",
        sqlite_where=text("status IN ('QUEUED', 'IN_PROGRESS')"),
        postgresql_where=text("status IN ('QUEUED', 'IN_PROGRESS')"),
    ),
)

# A stored file: its bytes are in stored_file_chunks, at most CHUNK_BYTES each (DESIGN §6, "Stored
# files"), written while the file streams in, each chunk in a short transaction of its own, and read
# back chunk by chunk. ``sha256`` is set once the last chunk is in: until then the file is incomplete.
# A file that no submission references after a day (a crash mid-upload, a refused duplicate, a file
# whose retention ran) is deleted by the retention job.
stored_files = Table(
    "stored_files",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("chunks", Integer, nullable=False),
    Column("sha256", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)

stored_file_chunks = Table(
    "stored_file_chunks",
    metadata,
    Column("file_id", BigInteger, ForeignKey("stored_files.id"), primary_key=True),
    Column("seq", Integer, primary_key=True),  # 0, 1, 2 ... in file order
    Column("data", LargeBinary, nullable=False),
)

submission_results = Table(
    "submission_results",
    metadata,
    # no foreign key (migration 0005): only the engine writes results, for the submission it holds claimed
    Column("submission_id", BigInteger, primary_key=True),
    Column("row_no", Integer, primary_key=True),
    Column("outcome", String(10), nullable=False),  # applied, unchanged, error
    Column("action_id", BigInteger, nullable=True),
    Column("amount_before", BigInteger, nullable=True),
    Column("amount_after", BigInteger, nullable=True),
    Column("payout_before", BigInteger, nullable=True),
    Column("payout_after", BigInteger, nullable=True),
    Column("state_after", String(10), nullable=True),
    Column("column_name", String(40), nullable=True),
    Column("error_type", String(10), nullable=True),  # VALIDATION or CONTRACT
    Column("code", String(40), nullable=True),
    Column("message", Text, nullable=True),
)

# one row per occurrence of a periodic job: the unique key lets exactly one process run it
job_runs = Table(
    "job_runs",
    metadata,
    Column("job", String(40), primary_key=True),
    Column("slot", String(40), primary_key=True),
    Column("worker", String(100), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("result", Text, nullable=True),
)

__all__ = ["job_runs", "stored_file_chunks", "stored_files", "submission_results", "submissions"]
