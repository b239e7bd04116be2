"""Settings → Technical → File Submissions: every submission of the account from every channel, its live
progress, counts and payout change, its original file and its errors as CSV; upload a returns file with a
dry run first, review the preview, apply it; undo.

The upload is never held whole (DESIGN §6, "Bounded memory"): the multipart parser spools the file to
disk past 1 MiB (api/limits.py bounds the body to ``PAYOUTDESK_MAX_FILE_MB`` while it arrives), the
file's structure is checked from there (an unreadable file is refused before anything is stored), and
it is streamed into the file store before one short transaction queues the submission
(``submissions.service.create``, with its duplicate guard). Applying a dry run queues a real submission
of the same stored file (``service.apply_dry_run``: no byte is copied, the duplicate guard still holds).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, BinaryIO

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy import Connection, Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from payoutdesk.accounts.sessions import SignedIn
from payoutdesk.api.limits import MiB
from payoutdesk.api.plumbing import engine_of, upload_form
from payoutdesk.errors import FileTooLarge, NotFound, ValidationFailed, quote
from payoutdesk.kit import db
from payoutdesk.kit.chunks import read_in
from payoutdesk.kit.ids import MAX_ID32, parse_id
from payoutdesk.submissions import files as store
from payoutdesk.submissions import formats, result_file, service
from payoutdesk.web import render
from payoutdesk.web.session import Manager, Viewer, check_token, posted, read, write

router = APIRouter(include_in_schema=False)
BASE = "/settings/file-submissions"
CRUMBS = ["Settings", "Technical", "File Submissions"]
PAGE_SIZE = 50
FIRST_ERRORS = 20
FIRST_RESULTS = 50
LIVE_MAX = 100  # submissions one poll asks about
ACTIVE = ("QUEUED", "IN_PROGRESS")
STATUS = {"QUEUED": ("Queued", "status-QUEUED"), "IN_PROGRESS": ("In progress", "status-RUNNING"),
          "COMPLETE": ("Complete", "status-COMPLETED"), "FAILED": ("Failed", "status-FAILED")}
CHANNELS = {"web": "Upload (pages)", "file": "File (API)", "api": "API rows", "ftp": "FTP upload",
            "ftp_pull": "FTP pull", "email": "E-mail", "salesforce": "Salesforce", "system": "System"}
ACCEPT = ".csv,.txt,.tsv,.xml,.xlsx,.zip,.gz"
FORCE_HINT = 'upload it again with "Submit even if this file was submitted before" checked'


def _status(value: str) -> dict[str, str]:
    text, css = STATUS.get(value, (value.replace("_", " ").capitalize(), "status-QUEUED"))
    return {"text": text, "css": css}


def _channel(sub: dict[str, Any]) -> str:
    if sub.get("undo_of"):
        return "Undo"
    return CHANNELS.get(str(sub["channel"]), str(sub["channel"]))


def _decorate(sub: dict[str, Any], campaigns: dict[int, str]) -> dict[str, Any]:
    """A submission as the pages show it: its status label and style, channel, campaign name."""
    return {**sub, "status_view": _status(str(sub["status"])), "channel_view": _channel(sub),
            "campaign_name": campaigns.get(int(sub["campaign_id"]), f"Campaign {sub['campaign_id']}"),
            "active": sub["status"] in ACTIVE}


def _live(sub: dict[str, Any]) -> dict[str, Any]:
    """What the page's script needs to move a progress bar: the submission with its status label."""
    view = _status(str(sub["status"]))
    return {**sub, "status_text": view["text"], "status_class": view["css"], "active": sub["status"] in ACTIVE}


# --- the list and the upload form ----------------------------------------------------------------


@router.get(BASE)
def list_page(request: Request, user: Viewer, cursor: str | None = None) -> Response:
    def load(conn: Connection) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return service.list_latest(conn, user.account.id, PAGE_SIZE, cursor), \
            service.campaign_choices(conn, user.account.id)

    listing, campaigns = read(request, load)
    names = {int(c["id"]): str(c["name"]) for c in campaigns}
    items = [_decorate(s, names) for s in listing["items"]]
    return render.page(request, "files.html", title="File Submissions", user=user, section="file-submissions",
                       crumbs=CRUMBS, items=items, next_cursor=listing["next_cursor"], first_page=not cursor,
                       campaigns=campaigns, accept=ACCEPT, max_file_mb=request.app.state.settings.max_file_mb)


@router.get(BASE + "/live")
def live(request: Request, user: Viewer, ids: str = "") -> Response:
    """The progress of several submissions at once (the list's script): ``?ids=F-1,A-2``."""
    wanted = [part for part in ids.split(",") if part.strip()][:LIVE_MAX]

    def load(conn: Connection) -> list[dict[str, Any]]:
        found = []
        for sid in wanted:
            try:
                found.append(_live(service.get(conn, user.account.id, sid)))
            except NotFound:
                continue
        return found

    return JSONResponse({"items": read(request, load)})


# --- one submission ------------------------------------------------------------------------------


@router.get(BASE + "/{submission_id}/progress")
def progress(request: Request, submission_id: str, user: Viewer) -> Response:
    return JSONResponse(_live(read(request, lambda conn: service.get(conn, user.account.id, submission_id))))


@router.get(BASE + "/{submission_id}")
def detail_page(request: Request, submission_id: str, user: Viewer) -> Response:
    def load(conn: Connection) -> dict[str, Any]:
        row = service.owned(conn, user.account.id, submission_id)
        sub = service.get(conn, user.account.id, submission_id)
        names = {int(c["id"]): str(c["name"]) for c in service.campaign_choices(conn, user.account.id)}
        done = sub["status"] not in ACTIVE
        applied = service.applied_as(conn, row)
        return {
            "sub": _decorate(sub, names),
            "errors": service.errors(conn, user.account.id, submission_id, 0, FIRST_ERRORS)["items"] if done else [],
            "results": service.results(conn, user.account.id, submission_id, 0, FIRST_RESULTS)["items"]
            if done else [],
            "has_file": row.file_id is not None,
            "applied_as": service.label(applied) if applied is not None else None,
        }

    ctx = read(request, load)
    sub = ctx["sub"]
    can = user.can_change
    ctx["can_apply"] = (can and sub["dry_run"] and sub["status"] == "COMPLETE" and sub["id"].startswith("F-")
                        and ctx["has_file"] and ctx["applied_as"] is None)
    ctx["can_undo"] = (can and not sub["dry_run"] and sub["status"] == "COMPLETE" and not sub["undo_of"]
                       and not sub["undone_by"])
    return render.page(request, "submission.html", title=f"{sub['id']} · File Submissions", user=user,
                       section="file-submissions", crumbs=[*CRUMBS, sub["id"]], **ctx)


@router.get(BASE + "/{submission_id}/file")
def original_file(request: Request, submission_id: str, user: Viewer) -> Response:
    """The original file as received, streamed chunk by chunk from the store; 410 once retention deleted it."""
    engine = engine_of(request)
    with db.read(engine) as conn:
        row, stored = service.original_file(conn, user.account.id, submission_id)
    name = _attachment_name(row.file_name or f"{service.label(row)}.json")
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    media_type = row.content_type or "application/octet-stream"
    if stored is None:  # an undo has no file
        return Response(b"", media_type=media_type, headers=headers)
    headers["Content-Length"] = str(stored.size)
    return StreamingResponse(store.read_chunks(engine, stored), media_type=media_type, headers=headers)


@router.get(BASE + "/{submission_id}/errors.csv")
def errors_csv(request: Request, submission_id: str, user: Viewer) -> Response:
    row = read(request, lambda conn: service.owned(conn, user.account.id, submission_id))
    name = _attachment_name(f"errors_{service.label(row)}.csv")
    return StreamingResponse(result_file.errors_csv_chunks(engine_of(request), int(row.id)),
                             media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _attachment_name(name: str) -> str:
    """A file name safe inside a Content-Disposition header (printable ASCII, no quote or backslash)."""
    safe = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    return safe[:200] or "file"


@router.post(BASE + "/{submission_id}/apply")
async def apply(request: Request, submission_id: str, user: Manager) -> Response:
    await posted(request, user)
    max_bytes = request.app.state.settings.max_file_mb * MiB
    new = await run_in_threadpool(write, request, user, lambda conn, who: service.apply_dry_run(
        conn, who, submission_id, force_hint=FORCE_HINT, max_bytes=max_bytes))
    return render.redirect(f"{BASE}/{new['id']}", f"{new['id']} is queued: the file is being applied.")


@router.post(BASE + "/{submission_id}/undo")
async def undo(request: Request, submission_id: str, user: Manager) -> Response:
    await posted(request, user)
    new = await run_in_threadpool(write, request, user, lambda conn, who: service.undo(conn, who, submission_id))
    return render.redirect(f"{BASE}/{new['id']}", f"{new['id']} is queued: it puts back what {submission_id} changed.")


# --- the upload ----------------------------------------------------------------------------------


def _campaign(value: Any) -> int:
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed("Choose the campaign the file belongs to.")
    number = parse_id(value.strip())
    if number is None or number > MAX_ID32:
        raise ValidationFailed(f"No campaign {quote(value)}; choose one of the list.")
    return number


def _size_of(stream: BinaryIO) -> int:
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(0)
    return size


def _check_readable(upload: UploadFile, size: int) -> None:
    """``FileRejected`` with the reader's message when the file cannot be used as a whole (empty, not a table,
    wrong encoding, a required column missing ...): read from the spooled upload, nothing held whole."""
    if not size:
        raise ValidationFailed("The file is empty.")
    blob = formats.FileBlob(os.dup(upload.file.fileno()), size)  # fileno() moves a small upload to disk
    try:
        formats.parse(blob, upload.filename)
    finally:
        blob.close()


def _from_start(stream: BinaryIO) -> Iterator[bytes]:
    stream.seek(0)
    return read_in(stream, store.CHUNK_BYTES)


def _check_campaign(engine: Engine, user: SignedIn, campaign_id: int) -> None:
    with db.read(engine) as conn:
        service.check_campaign(conn, user.account.id, campaign_id)


@router.post(BASE)
async def upload(request: Request, user: Manager) -> Response:
    """Queue an uploaded returns file (a dry run unless unchecked) and show its page."""
    form = await upload_form(request, 20)
    try:
        token = form.get("csrf_token")
        check_token(request, user, token if isinstance(token, str) else "")
        upload_file = form.get("file")
        if not isinstance(upload_file, UploadFile) or not upload_file.filename:
            raise ValidationFailed("Choose the returns file to upload.")
        campaign_id = _campaign(form.get("campaign_id"))
        dry_run, force = form.get("dry_run") is not None, form.get("force") is not None
        name, content_type = upload_file.filename, upload_file.content_type
        engine = engine_of(request)
        max_bytes = request.app.state.settings.max_file_mb * MiB
        await run_in_threadpool(_check_campaign, engine, user, campaign_id)
        size = await run_in_threadpool(_size_of, upload_file.file)
        if size > max_bytes:
            raise FileTooLarge(f"The file has {size:,} bytes, more than the limit of "
                               f"{request.app.state.settings.max_file_mb} MB (PAYOUTDESK_MAX_FILE_MB); split it "
                               "into smaller files.", limit_bytes=max_bytes)
        await run_in_threadpool(_check_readable, upload_file, size)
        stored = await run_in_threadpool(store.store_stream, engine, _from_start(upload_file.file), max_bytes=max_bytes)
    finally:
        await form.close()
    try:
        sub = await run_in_threadpool(write, request, user, lambda conn, who: service.create(
            conn, who, campaign_id, stored, file_name=name, content_type=content_type, dry_run=dry_run, force=force,
            force_hint=FORCE_HINT, max_bytes=max_bytes))
    finally:
        await run_in_threadpool(store.discard, engine, stored.id)  # when no submission uses it after all
    what = "a dry run: nothing changes until you apply it" if dry_run else "it is being applied"
    return render.redirect(f"{BASE}/{sub['id']}", f"{sub['id']} is queued ({what}).")

