"""Submissions endpoints of the native API."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import AfterValidator
from sqlalchemy import Connection

from payoutdesk.api.plumbing import Account, IdemKey, QueryId, WholeNumber, problem, read, whole_between, write
from payoutdesk.context import Actor
from payoutdesk.errors import ValidationFailed
from payoutdesk.kit.ids import MAX_ID32, ref32
from payoutdesk.ledger.workflow import Channel
from payoutdesk.submissions import service

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
    raise ValidationFailed(f"{name} must be true or false, not '{value}'.")


def _campaign(value: Any) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        raise ValidationFailed("campaign_id is required: the campaign the rows belong to.") from None


@router.post("/submissions", status_code=202, openapi_extra={"requestBody": {"content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "string", "format": "binary"}, "campaign_id": {"type": "integer"},
        "dry_run": {"type": "boolean"}, "force": {"type": "boolean"}}, "required": ["file", "campaign_id"]}},
    "application/json": {"schema": {"type": "object", "properties": {
        "campaign_id": {"type": "integer"}, "dry_run": {"type": "boolean"},
        "rows": {"type": "array", "items": {"type": "object"}}}, "required": ["campaign_id", "rows"]}}}}})
async def create_submission(request: Request, account: Account, key: IdemKey = None) -> Response:
    """Queue a returns file (multipart `file`) or a JSON batch of rows; answers 202 with the submission."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ValidationFailed("Send the returns file in the multipart field 'file'.")
        data = await upload.read()
        campaign_id = _campaign(form.get("campaign_id"))
        dry_run, force = _flag(form.get("dry_run"), "dry_run"), _flag(form.get("force"), "force")
        name, content_type = upload.filename, upload.content_type

        def handler(conn: Connection, actor: Actor) -> tuple[int, Any]:
            file_actor = dataclasses.replace(actor, channel=Channel.FILE)
            return 202, service.create(conn, file_actor, campaign_id, data, file_name=name,
                                       content_type=content_type, dry_run=dry_run, force=force)

        fingerprint: Any = ["file", campaign_id, dry_run, force, name, hashlib.sha256(data).hexdigest()]
    elif ctype.startswith("application/json"):
        try:
            body = await request.json()
        except ValueError:
            return problem(400, "malformed_json", "Invalid request", "The request body is not valid JSON.")
        if not isinstance(body, dict):
            raise ValidationFailed("The body is an object {campaign_id, rows, dry_run?}.")
        unknown = set(body) - {"campaign_id", "rows", "dry_run"}
        if unknown:
            raise ValidationFailed(f"{', '.join(sorted(unknown))}: not a field of this request.")
        campaign_id = _campaign(body.get("campaign_id"))
        dry_run = _flag(body.get("dry_run"), "dry_run")
        rows = body.get("rows")

        def handler(conn: Connection, actor: Actor) -> tuple[int, Any]:
            return 202, service.create_from_rows(conn, actor, campaign_id, rows, dry_run=dry_run)

        fingerprint = body
    else:
        raise ValidationFailed("Send multipart/form-data with a file, or application/json with rows.")
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(write, request, account, key, fingerprint, handler)


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
    from payoutdesk.kit import db

    with db.read(request.app.state.engine) as conn:
        row, data = service.original_file(conn, account.id, submission_id)
    name = (row.file_name or f"{service.label(row)}.json").replace('"', "")
    return Response(data, media_type=row.content_type or "application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{name}"',
                             **getattr(request.state, "rate_headers", {})})


@router.post("/submissions/{submission_id}/undo", status_code=202)
def undo_submission(request: Request, submission_id: str, account: Account, key: IdemKey = None) -> Response:
    return write(request, account, key, ["undo", submission_id],
                 lambda conn, actor: (202, service.undo(conn, actor, submission_id)))

