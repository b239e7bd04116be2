"""Submissions endpoints of the native API."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import AfterValidator
from sqlalchemy import Connection, Engine
from starlette.concurrency import run_in_threadpool

from payoutdesk.accounts.service import AccountRef
from payoutdesk.api import limits
from payoutdesk.api.plumbing import (
    Account,
    IdemKey,
    QueryId,
    WholeNumber,
    engine_of,
    read,
    request_rate_headers,
    spool_body,
    upload_form,
    whole_between,
    write,
)
from payoutdesk.context import Actor
from payoutdesk.errors import ValidationFailed, quote
from payoutdesk.kit import db
from payoutdesk.kit.chunks import read_in
from payoutdesk.kit.ids import MAX_ID32, parse_id, ref32
from payoutdesk.ledger.workflow import Channel
from payoutdesk.submissions import files, jsonrows, service
from payoutdesk.submissions.files import StoredFile

router = APIRouter(tags=["submissions"])
Cursor = Annotated[int, WholeNumber, AfterValidator(lambda n: min(n, MAX_ID32))]  # row numbers are 32-bit
PageSize = Annotated[int, whole_between(1, 1_000_000)]  # then at most 10,000


def _flag(value: Any, name: str) -> bool:
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValidationFailed(f"{name} must be true or false, not {quote(value)}.")


def _campaign(value: Any) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValidationFailed("campaign_id is required: the campaign the rows belong to.")
    number = parse_id(value.strip() if isinstance(value, str) else value)
    if number is None or number > MAX_ID32:
        raise ValidationFailed(f"campaign_id must be a whole number, the id of one of your campaigns, "
                               f"not {quote(value)}.")
    return number


@router.post("/submissions", status_code=202, openapi_extra={"requestBody": {"content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "string", "format": "binary"}, "campaign_id": {"type": "integer"},
        "dry_run": {"type": "boolean"}, "force": {"type": "boolean"}}, "required": ["file", "campaign_id"]}},
    "application/json": {"schema": {"type": "object", "properties": {
        "campaign_id": {"type": "integer"}, "dry_run": {"type": "boolean"},
        "rows": {"type": "array", "items": {"type": "object"}}}, "required": ["campaign_id", "rows"]}}}}})
async def create_submission(request: Request, account: Account, key: IdemKey = None) -> Response:
    """Queue a returns file (multipart `file`) or a JSON batch of rows; answers 202 with the submission.

    The body is never held whole (DESIGN §6, "Bounded memory"): a file part is spooled to disk by the
    multipart parser, a JSON batch is spooled as it arrives, and either is then streamed into the file
    store (submissions/files.py) before one short transaction queues the submission."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        return await _file_submission(request, account, key)
    if ctype.startswith("application/json"):
        return await _rows_submission(request, account, key)
    raise ValidationFailed("Send multipart/form-data with a file, or application/json with rows.")


async def _file_submission(request: Request, account: AccountRef, key: str | None) -> Response:
    form = await upload_form(request, 20)
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ValidationFailed("Send the returns file in the multipart field 'file'.")
        campaign_id = _campaign(form.get("campaign_id"))
        dry_run, force = _flag(form.get("dry_run"), "dry_run"), _flag(form.get("force"), "force")
        name, content_type = upload.filename, upload.content_type
        engine = engine_of(request)
        max_bytes = request.app.state.settings.max_file_mb * limits.MiB
        await run_in_threadpool(_check_campaign, engine, account, campaign_id)
        stored = await run_in_threadpool(files.store_stream, engine, read_in(upload.file, files.CHUNK_BYTES),
                                         max_bytes=max_bytes)
    finally:
        await form.close()  # the spooled upload's temporary file

    def handler(conn: Connection, actor: Actor) -> tuple[int, Any]:
        file_actor = dataclasses.replace(actor, channel=Channel.FILE)
        return 202, service.create(conn, file_actor, campaign_id, stored, file_name=name, content_type=content_type,
                                   dry_run=dry_run, force=force, max_bytes=max_bytes)

    fingerprint = ["file", campaign_id, dry_run, force, name, stored.sha256]
    return await _queue(request, account, key, fingerprint, handler, stored)


async def _rows_submission(request: Request, account: AccountRef, key: str | None) -> Response:
    engine = engine_of(request)
    body = await spool_body(request, files.CHUNK_BYTES)
    batch = jsonrows.Batch()
    try:
        stored = await run_in_threadpool(files.store_stream, engine, jsonrows.read_batch(body, batch))
    finally:
        body.close()
    try:
        campaign_id, dry_run = _batch_fields(batch)
    except BaseException:
        await run_in_threadpool(files.discard, engine, stored.id)
        raise

    def handler(conn: Connection, actor: Actor) -> tuple[int, Any]:
        return 202, service.create(conn, actor, campaign_id, stored, file_name=None, content_type="application/json",
                                   dry_run=dry_run, kind="A", max_bytes=jsonrows.MAX_BODY_BYTES)

    fingerprint = ["rows", campaign_id, dry_run, stored.sha256]
    return await _queue(request, account, key, fingerprint, handler, stored)


def _batch_fields(batch: jsonrows.Batch) -> tuple[int, bool]:
    """campaign_id and dry_run of a batch that was read, checked in the order of a body parsed whole."""
    if not batch.is_object:
        raise ValidationFailed("The body is an object {campaign_id, rows, dry_run?}.")
    if batch.unknown:
        raise ValidationFailed(f"{', '.join(sorted(set(batch.unknown)))}: not a field of this request.")
    campaign_id = _campaign(batch.campaign_id)
    dry_run = _flag(batch.dry_run, "dry_run")
    if batch.rows_error is not None:
        raise ValidationFailed(batch.rows_error)
    return campaign_id, dry_run


def _check_campaign(engine: Engine, account: AccountRef, campaign_id: int) -> None:
    with db.read(engine) as conn:
        service.check_campaign(conn, account.id, campaign_id)


async def _queue(request: Request, account: AccountRef, key: str | None, fingerprint: Any,
                 handler: Callable[[Connection, Actor], tuple[int, Any]], stored: StoredFile) -> Response:
    """The short transaction that queues the submission; the stored file is deleted when no submission
    uses it after all (a refused duplicate, an error, an Idempotency-Key answered from before)."""
    try:
        return await run_in_threadpool(write, request, account, key, fingerprint, handler)
    finally:
        await run_in_threadpool(files.discard, request.app.state.engine, stored.id)


@router.get("/submissions")
def list_submissions(request: Request, account: Account, limit: Annotated[int, whole_between(1, 500)] = 50,
                     cursor: str | None = None, campaign_id: QueryId = None) -> Response:
    return read(request, lambda conn: service.list_latest(conn, account.id, limit, cursor, ref32(campaign_id)))


@router.get("/submissions/{submission_id}")
def get_submission(request: Request, submission_id: str, account: Account) -> Response:
    return read(request, lambda conn: service.get(conn, account.id, submission_id))


@router.get("/submissions/{submission_id}/errors")
def submission_errors(request: Request, submission_id: str, account: Account, cursor: Cursor = 0,
                      limit: PageSize = 1000) -> Response:
    return read(request, lambda conn: service.errors(conn, account.id, submission_id, cursor, min(limit, 10_000)))


@router.get("/submissions/{submission_id}/results")
def submission_results(request: Request, submission_id: str, account: Account, cursor: Cursor = 0,
                       limit: PageSize = 1000) -> Response:
    return read(request, lambda conn: service.results(conn, account.id, submission_id, cursor, min(limit, 10_000)))


@router.get("/submissions/{submission_id}/file")
def submission_file(request: Request, submission_id: str, account: Account) -> Response:
    """The original file, streamed chunk by chunk from the store; 410 ``file_deleted`` once the retention
    job deleted it (PAYOUTDESK_FILE_RETENTION_DAYS)."""
    engine = engine_of(request)
    with db.read(engine) as conn:
        row, stored = service.original_file(conn, account.id, submission_id)
    name = (row.file_name or f"{service.label(row)}.json").replace('"', "")
    headers = {"Content-Disposition": f'attachment; filename="{name}"', **request_rate_headers(request)}
    media_type = row.content_type or "application/octet-stream"
    if stored is None:  # an undo has no file
        return Response(b"", media_type=media_type, headers=headers)
    headers["Content-Length"] = str(stored.size)
    return StreamingResponse(files.read_chunks(engine, stored), media_type=media_type, headers=headers)


@router.post("/submissions/{submission_id}/undo", status_code=202)
def undo_submission(request: Request, submission_id: str, account: Account, key: IdemKey = None) -> Response:
    return write(request, account, key, ["undo", submission_id],
                 lambda conn, actor: (202, service.undo(conn, actor, submission_id)))

