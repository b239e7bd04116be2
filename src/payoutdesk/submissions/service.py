"""Submissions: accept a batch (its file already in the file store, or small bytes), queue it, show its
progress and results, undo it."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import Connection, Row
from sqlalchemy.exc import IntegrityError

from payoutdesk.catalog.service import get_owned
from payoutdesk.context import Actor
from payoutdesk.errors import Conflict, DuplicateFile, FileDeleted, FileTooLarge, NotFound, ValidationFailed, quote
from payoutdesk.kit import logs
from payoutdesk.kit.ids import parse_id as parse_whole_id
from payoutdesk.kit.money import format_amount
from payoutdesk.kit.time import iso, utcnow
from payoutdesk.models import campaigns
from payoutdesk.submissions import files
from payoutdesk.submissions import repository as repo
from payoutdesk.submissions.files import StoredFile
from payoutdesk.submissions.jsonrows import validate_rows

MAX_FILE_BYTES = 200 * 1024 * 1024  # the default of PAYOUTDESK_MAX_FILE_MB; the API and CLI pass the setting
FILE_CHANNELS = ("file", "ftp", "ftp_pull", "email", "web")

__all__ = ["FileTooLarge", "StoredFile"]


def parse_id(value: str | int) -> int:
    """'F-17', 'A-17', 'R-17' (re-processing, R13) or '17' -> 17."""
    text = str(value).strip().upper()
    if len(text) > 2 and text[0] in "FAR" and text[1] == "-":
        text = text[2:]
    number = parse_whole_id(text)  # ASCII digits, 1 … 2^63-1 (a superscript digit passes str.isdigit)
    if number is None:
        raise NotFound(f"No submission {quote(value)}.")
    return number


def label(row: Row[Any]) -> str:
    return f"{row.kind}-{row.id}"


def submission_dict(row: Row[Any], currency: str, conn: Connection | None = None) -> dict[str, Any]:
    undo_of = None
    if row.undo_of is not None:
        original = repo.get(conn, int(row.undo_of)) if conn is not None else None
        undo_of = label(original) if original is not None else f"F-{row.undo_of}"
    out: dict[str, Any] = {
        "id": label(row),
        "campaign_id": row.campaign_id,
        "status": row.status,
        "channel": row.channel,
        "file_name": row.file_name,
        "format": row.format,
        "dry_run": bool(row.dry_run),
        "force": bool(row.force),
        "total_records": row.total_records,
        "processed_records": row.processed_records,
        "applied": row.applied,
        "unchanged": row.unchanged,
        "errors": row.errors,
        "amount_delta": format_amount(row.amount_delta, currency),
        "payout_delta": format_amount(row.payout_delta, currency),
        "currency": currency,
        "failure": row.failure,
        "undo_of": undo_of,
        "undone_by": f"A-{row.undone_by}" if row.undone_by is not None else None,
        "sha256": row.sha256,
        "size": row.size,
        "created_at": iso(row.created_at),
        "started_at": iso(row.started_at),
        "finished_at": iso(row.finished_at),
        "file_deleted_at": iso(row.file_deleted_at),  # the original file's retention ran (docs/SUBMISSIONS.md)
        "actor": row.actor,
    }
    if row.kind == "R" and conn is not None:  # a re-processing job (R13): its counts so far
        from payoutdesk.ledger.reprocess import job_counts

        out["reprocess"] = job_counts(conn, int(row.id))
    return out


def _currency(conn: Connection, campaign_id: int) -> str:
    return str(conn.execute(campaigns.select().where(campaigns.c.id == campaign_id)).one().currency)


def check_campaign(conn: Connection, account_id: int, campaign_id: int) -> None:
    """NotFound unless the campaign is the account's: checked before a file is stored, and again by ``create``."""
    get_owned(conn, campaigns, account_id, campaign_id, "campaign")


def create(
    conn: Connection,
    actor: Actor,
    campaign_id: int,
    data: StoredFile | bytes,
    *,
    file_name: str | None,
    content_type: str | None,
    dry_run: bool = False,
    force: bool = False,
    kind: str = "F",
    force_hint: str = "send it again with force=true",
    max_bytes: int = MAX_FILE_BYTES,
) -> dict[str, Any]:
    """Queue a submission of a stored file (``files.store_stream``), or of small bytes stored here in this
    transaction. Only the duplicate guard looks at the content (its SHA-256). ``force_hint`` tells the
    sender of a duplicate how to send it anyway (the CLI's flag, the API's field)."""
    campaign = get_owned(conn, campaigns, actor.account_id, campaign_id, "campaign")
    size = data.size if isinstance(data, StoredFile) else len(data)
    if not size:
        raise ValidationFailed("The file is empty.")
    if size > max_bytes:
        raise FileTooLarge(f"The file has {size:,} bytes; at most {max_bytes:,} are accepted "
                           "(PAYOUTDESK_MAX_FILE_MB).", limit_bytes=max_bytes)
    sha = data.sha256 if isinstance(data, StoredFile) else hashlib.sha256(data).hexdigest()
    dedupe = f"{campaign_id}:{sha}" if kind == "F" and not dry_run and not force else None
    if dedupe is not None:
        first = repo.by_dedupe_key(conn, dedupe)
        if first is not None:
            raise DuplicateFile(
                f"This file was already submitted for campaign {campaign_id} as {label(first)} on "
                f"{iso(first.created_at)}; {force_hint} to process it once more.",
                first_submission=label(first),
            )
    now = utcnow()
    try:
        with conn.begin_nested():
            stored = data if isinstance(data, StoredFile) else files.store_bytes(conn, data)
            sid = repo.insert_submission(conn, {
                "account_id": actor.account_id, "campaign_id": campaign_id, "kind": kind,
                "channel": actor.channel.value, "actor": actor.name, "file_name": (file_name or None),
                "content_type": content_type, "size": size, "sha256": sha, "dry_run": dry_run,
                "force": force, "dedupe_key": dedupe, "status": "QUEUED", "processed_records": 0,
                "applied": 0, "unchanged": 0, "errors": 0, "amount_delta": 0, "payout_delta": 0,
                "created_at": now, "file_id": stored.id,
            })
    except IntegrityError:
        raise DuplicateFile(
            f"This file is being submitted for campaign {campaign_id} at the same moment; it is processed once."
        ) from None
    row = repo.get(conn, sid)
    assert row is not None
    logs.submission_queued(row)
    return submission_dict(row, campaign.currency)


def create_from_rows(conn: Connection, actor: Actor, campaign_id: int, rows: Any, *, dry_run: bool = False
                     ) -> dict[str, Any]:
    body = json.dumps(validate_rows(rows), separators=(",", ":"), default=str).encode()
    return create(conn, actor, campaign_id, body, file_name=None, content_type="application/json",
                  dry_run=dry_run, kind="A")


def get(conn: Connection, account_id: int, submission_id: str | int) -> dict[str, Any]:
    row = owned(conn, account_id, submission_id)
    return submission_dict(row, _currency(conn, row.campaign_id), conn)


def owned(conn: Connection, account_id: int, submission_id: str | int) -> Row[Any]:
    sid = parse_id(submission_id)
    row = repo.get(conn, sid, account_id)
    if row is None:
        raise NotFound(f"No submission {submission_id}.")
    return row


def list_latest(conn: Connection, account_id: int, limit: int = 50, cursor: str | None = None,
                campaign_id: int | None = None) -> dict[str, Any]:
    if not 1 <= limit <= 500:
        raise ValidationFailed("limit must be between 1 and 500.")
    before = parse_whole_id(cursor) if cursor else None
    if cursor and before is None:
        raise ValidationFailed("cursor is not one this API gave out; use next_cursor of the previous page.")
    rows = repo.latest(conn, account_id, limit + 1, before, campaign_id)
    more = len(rows) > limit
    rows = rows[:limit]
    currencies: dict[int, str] = {}
    items = []
    for r in rows:
        if r.campaign_id not in currencies:
            currencies[r.campaign_id] = _currency(conn, r.campaign_id)
        items.append(submission_dict(r, currencies[r.campaign_id], conn))
    return {"items": items, "next_cursor": str(rows[-1].id) if more and rows else None}


def _check_page(after_row: int, limit: int) -> None:
    """A page of rows: ``limit`` 1 or more (a database takes a negative LIMIT as none, or fails on it)."""
    if limit < 1:
        raise ValidationFailed("limit must be 1 or more.")
    if after_row < 0:
        raise ValidationFailed("cursor must be 0 or the next_cursor of the previous page.")


def errors(conn: Connection, account_id: int, submission_id: str | int, after_row: int = 0,
           limit: int = 1000) -> dict[str, Any]:
    _check_page(after_row, limit)
    row = owned(conn, account_id, submission_id)
    items = repo.results(conn, int(row.id), errors_only=True, after_row=after_row, limit=limit + 1)
    more = len(items) > limit
    items = items[:limit]
    return {
        "items": [{"row": r.row_no, "column": r.column_name, "type": r.error_type, "code": r.code,
                   "message": r.message, "action_id": r.action_id} for r in items],
        "next_cursor": str(items[-1].row_no) if more and items else None,
    }


def results(conn: Connection, account_id: int, submission_id: str | int, after_row: int = 0,
            limit: int = 1000) -> dict[str, Any]:
    """What each row did (or, in a dry run, would do): before and after amount and payout."""
    _check_page(after_row, limit)
    row = owned(conn, account_id, submission_id)
    currency = _currency(conn, row.campaign_id)
    items = repo.results(conn, int(row.id), errors_only=False, after_row=after_row, limit=limit + 1)
    more = len(items) > limit
    items = items[:limit]

    def money(v: int | None) -> str | None:
        return None if v is None else format_amount(v, currency)

    return {
        "items": [{"row": r.row_no, "outcome": r.outcome, "action_id": r.action_id,
                   "amount_before": money(r.amount_before), "amount_after": money(r.amount_after),
                   "payout_before": money(r.payout_before), "payout_after": money(r.payout_after),
                   "state_after": r.state_after, "column": r.column_name, "type": r.error_type, "code": r.code,
                   "message": r.message} for r in items],
        "next_cursor": str(items[-1].row_no) if more and items else None,
    }


def original_file(conn: Connection, account_id: int, submission_id: str | int) -> tuple[Row[Any], StoredFile | None]:
    """The submission and its stored file (None for an undo, which has no file); ``FileDeleted`` once the
    retention job deleted it. Read the bytes with ``files.read_chunks``."""
    row = owned(conn, account_id, submission_id)
    if row.file_deleted_at is not None:
        raise FileDeleted(
            f"The original file of {label(row)} was deleted on {iso(row.file_deleted_at)}: files are kept "
            "PAYOUTDESK_FILE_RETENTION_DAYS days (90 by default). Its counts, results and errors stay.",
            deleted_at=iso(row.file_deleted_at),
        )
    if row.file_id is None:
        return row, None
    stored = files.stored(conn, int(row.file_id))
    if stored is None:
        raise NotFound(f"The file of {label(row)} is not in the store.")
    return row, stored


def undo(conn: Connection, actor: Actor, submission_id: str | int) -> dict[str, Any]:
    """Queue the undo of a whole submission: each action it changed goes back as it was before it."""
    row = owned(conn, actor.account_id, submission_id)
    if row.kind == "R":
        raise Conflict(f"{label(row)} is a re-processing run (R13); it cannot be undone.")
    if row.dry_run:
        raise Conflict(f"{label(row)} is a dry run; it changed nothing to undo.")
    if row.undo_of is not None:
        raise Conflict(f"{label(row)} is itself an undo; submit the file again instead.")
    if row.status != "COMPLETE":
        raise Conflict(f"{label(row)} is {row.status}; only a COMPLETE submission can be undone.")
    if row.undone_by is not None:
        raise Conflict(f"{label(row)} was already undone by A-{row.undone_by}.")
    now = utcnow()
    try:
        with conn.begin_nested():
            sid = _insert_undo(conn, actor, row, now)
    except IntegrityError:
        raise Conflict(f"{label(row)} is being undone already.") from None
    new = repo.get(conn, sid)
    assert new is not None
    logs.submission_queued(new)
    return submission_dict(new, _currency(conn, row.campaign_id), conn)


def _insert_undo(conn: Connection, actor: Actor, row: Row[Any], now: Any) -> int:
    return repo.insert_submission(conn, {
        "account_id": actor.account_id, "campaign_id": row.campaign_id, "kind": "A", "channel": actor.channel.value,
        "actor": actor.name, "file_name": None, "content_type": "application/x-undo", "size": 0,
        "sha256": hashlib.sha256(f"undo:{row.id}".encode()).hexdigest(), "dry_run": False, "force": False,
        "dedupe_key": f"undo:{row.id}", "undo_of": row.id, "status": "QUEUED", "processed_records": 0,
        "applied": 0, "unchanged": 0, "errors": 0, "amount_delta": 0, "payout_delta": 0, "created_at": now,
    })


# --- the pages (web/files.py) ---------------------------------------------------------------------


def campaign_choices(conn: Connection, account_id: int) -> list[dict[str, Any]]:
    """The account's campaigns for a picker: id, name and currency, by name."""
    rows = conn.execute(campaigns.select().where(campaigns.c.account_id == account_id)
                        .order_by(campaigns.c.name, campaigns.c.id))
    return [{"id": r.id, "name": r.name, "currency": r.currency} for r in rows]


def applied_as(conn: Connection, row: Row[Any]) -> Row[Any] | None:
    """For a dry run of a file: the real (not forced) submission of the same file for the same campaign,
    when there is one (the one the duplicate guard would name)."""
    if not row.dry_run or row.kind != "F":
        return None
    return repo.by_dedupe_key(conn, f"{row.campaign_id}:{row.sha256}")


def apply_dry_run(conn: Connection, actor: Actor, submission_id: str | int, *,
                  force_hint: str = "send it again with force=true", max_bytes: int = MAX_FILE_BYTES
                  ) -> dict[str, Any]:
    """Queue the real submission of a completed dry run's file: a new submission that uses the same stored
    file (no byte is copied), through ``create`` and so its duplicate guard (applying twice is refused as a
    duplicate, naming the first)."""
    row = owned(conn, actor.account_id, submission_id)
    if not row.dry_run or row.kind != "F" or row.undo_of is not None:
        raise Conflict(f"{label(row)} is not a dry run of a file; there is nothing to apply.")
    if row.status != "COMPLETE":
        raise Conflict(f"{label(row)} is {row.status}; a dry run is applied once it is COMPLETE.")
    _, stored = original_file(conn, actor.account_id, submission_id)
    if stored is None:
        raise NotFound(f"The file of {label(row)} is not in the store.")
    return create(conn, actor, int(row.campaign_id), stored, file_name=row.file_name, content_type=row.content_type,
                  dry_run=False, force_hint=force_hint, max_bytes=max_bytes)
