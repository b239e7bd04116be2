"""Clicks at volume: ``POST /api/v1/clicks/bulk`` (a JSON array, a CSV body or a multipart ``file``).

Tracking data that arrives late comes in batches of up to 100,000 clicks. The body is spooled as it
arrives (api/limits.py bounds it while it is read), read row by row (ijson for JSON, the csv module
for CSV) and checked in a read transaction; the valid rows are then inserted set-based in one short
write transaction (``catalog.service.insert_clicks``). A row that fails its check is refused with its
error and the others are inserted: the answer counts both.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator
from typing import Any, BinaryIO

import ijson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import Field
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from payoutdesk.api.plumbing import Account, IdemKey, engine_of, spool_body, upload_form, write
from payoutdesk.api.schemas import Shape
from payoutdesk.catalog import service as catalog
from payoutdesk.context import Actor
from payoutdesk.errors import MalformedJson, ValidationFailed, quote
from payoutdesk.kit import db
from payoutdesk.kit.chunks import read_in

router = APIRouter()


class ClickRowError(Shape):
    row: int = Field(description="The element of the JSON array (from 1), or the CSV line (the header is 1).")
    column: str | None
    code: str = Field(examples=["validation_error"])
    message: str


class ClickBatchReport(Shape):
    """What a batch of clicks did: the rows inserted, the rows refused and the first 1,000 refusals."""

    inserted: int
    refused: int
    errors: list[ClickRowError]
    errors_truncated: bool = Field(description="More rows were refused than `errors` shows.")
BULK_PATH = "/api/v1/clicks/bulk"
_READ = 1024 * 1024

# each element is checked on its own: one that is not a click is refused in the answer's report (200), not
# the whole batch; the schema therefore describes the elements without constraining them
_CLICK_SCHEMA = {"description": "A click {campaign_id, customer_id, partner_id, clicked_at} (all four required; "
                                "an element that is not one is refused in the answer's errors).",
                 "example": {"campaign_id": 1, "customer_id": "c-55", "partner_id": 7,
                             "clicked_at": "2026-11-10T09:00:00Z"}}
BULK_BODY = {"required": True, "content": {
    "application/json": {"schema": {"type": "array", "items": _CLICK_SCHEMA, "maxItems": catalog.MAX_BULK_CLICKS}},
    "text/csv": {"schema": {"type": "string"},
                 "example": "campaign_id,customer_id,partner_id,clicked_at\r\n1,c-55,7,2026-11-10T09:00:00Z\r\n"},
    "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string",
                                                                                 "format": "binary"}},
                                       "required": ["file"]}}}}


def json_rows(stream: BinaryIO) -> Iterator[tuple[int, Any]]:
    """The elements of a JSON array, numbered from 1, read as a stream."""
    head = stream.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"["):
        raise ValidationFailed("Send a JSON array of clicks [{campaign_id, customer_id, partner_id, clicked_at}].")
    stream.seek(0)
    try:
        yield from enumerate(ijson.items(stream, "item", use_float=False, buf_size=_READ), 1)
    except ijson.JSONError as exc:
        raise MalformedJson(f"The body is not valid JSON: {quote(str(exc))}.") from None
    except UnicodeDecodeError:
        raise MalformedJson("The body is not UTF-8 JSON.") from None


def csv_rows(stream: BinaryIO) -> Iterator[tuple[int, Any]]:
    """The rows of a CSV file with the header ``campaign_id,customer_id,partner_id,clicked_at`` (any order,
    any case), numbered by line (the header is line 1)."""
    reader = csv.reader(io.TextIOWrapper(stream, encoding="utf-8-sig", newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise ValidationFailed("The CSV file is empty; its first line names the columns "
                                   "campaign_id,customer_id,partner_id,clicked_at.")
        names = [h.strip().lower() for h in header]
        if sorted(names) != sorted(catalog.CLICK_COLUMNS):
            raise ValidationFailed(f"The CSV header must name the columns {','.join(catalog.CLICK_COLUMNS)} "
                                   f"(in any order), not {quote(','.join(header))}.")
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue
            line = reader.line_num
            if len(record) != len(names):
                yield line, catalog.BadRow(f"{len(record)} cells where the header has {len(names)}.")
                continue
            yield line, dict(zip(names, record, strict=True))
    except UnicodeDecodeError:
        raise ValidationFailed("The CSV file is not UTF-8 text.") from None
    except csv.Error as exc:
        raise ValidationFailed(f"The CSV file cannot be read: {quote(str(exc))}.") from None


def _check(engine: Any, account_id: int, rows: Iterator[tuple[int, Any]], from_text: bool) -> catalog.ClickBatch:
    with db.read(engine) as conn:
        return catalog.check_clicks(conn, account_id, rows, from_text=from_text)


def _digest(stream: BinaryIO) -> str:
    h = hashlib.sha256()
    stream.seek(0)
    for part in read_in(stream, _READ):
        h.update(part)
    stream.seek(0)
    return h.hexdigest()


@router.post("/clicks/bulk", status_code=200, tags=["conversions"], openapi_extra={"requestBody": BULK_BODY})
async def record_clicks(request: Request, account: Account, key: IdemKey = None) -> Response:
    """Record up to 100,000 clicks at once: a JSON array of `{campaign_id, customer_id, partner_id, clicked_at}`,
    a `text/csv` body or a multipart `file` with those columns. Answers the counts: `inserted`, `refused`, and
    the refused rows' `errors` (row, column, message; the first 1,000)."""
    ctype = request.headers.get("content-type", "").lower()
    engine = engine_of(request)
    if ctype.startswith("multipart/form-data"):
        form = await upload_form(request, 5)
        try:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ValidationFailed("Send the CSV file of clicks in the multipart field 'file'.")
            stream: BinaryIO = upload.file
            digest = await run_in_threadpool(_digest, stream)
            batch = await run_in_threadpool(_check, engine, account.id, csv_rows(stream), True)
        finally:
            await form.close()
    elif ctype.startswith(("text/csv", "application/json")):
        body = await spool_body(request, _READ)
        try:
            digest = await run_in_threadpool(_digest, body)
            rows = csv_rows(body) if ctype.startswith("text/csv") else json_rows(body)
            batch = await run_in_threadpool(_check, engine, account.id, rows, ctype.startswith("text/csv"))
        finally:
            body.close()
    else:
        raise ValidationFailed("Send application/json (an array of clicks), text/csv, or multipart/form-data "
                               "with a file.")

    def handler(conn: Connection, actor: Actor) -> tuple[int, Any]:
        return 200, catalog.insert_clicks(conn, actor, batch)

    return await run_in_threadpool(write, request, account, key, ["clicks", digest], handler)
