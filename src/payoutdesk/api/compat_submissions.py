"""The impact.com-compatible submissions (DESIGN §4): ``APISubmissions/{BatchId}`` and ``FTPFileSubmissions``
with their ``ErrorDetails``, in impact.com's shapes (docs/COMPAT.md); ``api_submission`` is the one shape of
an API submission, which the list of api/compat_reads.py uses too."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import Connection, Row

from payoutdesk.accounts.service import AccountRef
from payoutdesk.api import plumbing
from payoutdesk.api.compat_common import (
    BASE,
    CompatRoute,
    Owner,
    campaign_currency,
    envelope,
    lower_bound,
    page_of,
    query_id,
    query_of,
    upper_bound,
    when,
)
from payoutdesk.catalog import repository as catalog_repo
from payoutdesk.catalog.service import get_owned
from payoutdesk.errors import NotFound, quote
from payoutdesk.kit.money import format_amount
from payoutdesk.ledger import repository as ledger_repo
from payoutdesk.models import campaigns
from payoutdesk.submissions import repository as sub_repo
from payoutdesk.submissions import service as sub_service

SUBMISSIONS_PAGE = (100, 20_000)  # impact.com's clients ask for 20,000 a page (tap-impact does)
ERRORS_PAGE = (1000, 20_000)
MAX_INLINE_ERRORS = 100  # errors shown inside an APISubmission
MAX_PAYLOAD_BYTES = 64 * 1024  # an APISubmission shows its row only when the batch is this small

_STATUS = {"QUEUED": "Queued", "IN_PROGRESS": "In Progress", "COMPLETE": "Complete", "FAILED": "Failed"}
_ERROR_STATUS = {"VALIDATION": "Validation", "CONTRACT": "Contract Error"}

router = APIRouter(route_class=CompatRoute, tags=["impact.com-compatible"])


# --- submissions -------------------------------------------------------------------------------


def _error_dict(campaign_id: int, r: Any, a: Any) -> dict[str, Any]:
    """One row with an error; ``a``: its action's ``event_type_id``, ``order_id``, ``partner_id`` (or None)."""
    return {
        "Line": r.row_no,
        "Row": r.row_no,
        "Column": r.column_name or "",
        "Status": _ERROR_STATUS.get(r.error_type or "", r.error_type or ""),
        "Type": r.error_type or "",
        "Code": r.code or "",
        "Reason": (r.code or "").upper(),
        "Message": r.message or "",
        "ActionId": str(r.action_id) if r.action_id is not None else "",
        "CampaignId": campaign_id,
        "ActionTrackerId": a.event_type_id if a is not None else "",
        "OrderId": a.order_id if a is not None else "",
        "MediaPartnerId": a.partner_id if a is not None else "",
    }


def _error_dicts(conn: Connection, sub: Row[Any], rows: Sequence[Row[Any]]) -> list[dict[str, Any]]:
    found = ledger_repo.order_keys(conn, int(sub.account_id), [int(r.action_id) for r in rows
                                                               if r.action_id is not None])
    return [_error_dict(sub.campaign_id, r, found.get(int(r.action_id)) if r.action_id is not None else None)
            for r in rows]


def _file_failure(sub: Row[Any]) -> dict[str, Any]:
    return {"Line": 0, "Row": 0, "Column": "", "Status": "Validation", "Type": "VALIDATION",
            "Code": "file_rejected", "Reason": "FILE_REJECTED", "Message": sub.failure or "", "ActionId": "",
            "CampaignId": sub.campaign_id, "ActionTrackerId": "", "OrderId": "", "MediaPartnerId": ""}


def _common(sub: Row[Any], currency: str) -> dict[str, Any]:
    label = sub_service.label(sub)
    return {
        "Id": label,
        "BatchId": label,
        "AccountId": sub.account_id,
        "CampaignId": sub.campaign_id,
        "Status": _STATUS.get(sub.status, sub.status),
        "StatusCode": sub.status,
        "Channel": sub.channel,
        "DryRun": bool(sub.dry_run),
        "SubmissionDate": when(sub.created_at),
        "CreatedDate": when(sub.created_at),
        "StartedDate": when(sub.started_at),
        "CompletionDate": when(sub.finished_at),
        "TotalRecords": sub.total_records or 0,
        "ProcessedRecords": sub.processed_records,
        "Applied": sub.applied,
        "Unchanged": sub.unchanged,
        "TotalErrors": sub.errors,
        "ErrorCount": sub.errors,
        "AmountDelta": format_amount(sub.amount_delta, currency),
        "PayoutDelta": format_amount(sub.payout_delta, currency),
        "Currency": currency,
        "Failure": sub.failure or "",
    }


class _Action:
    """The keys of a result's action, as the bulk query of ``first_results_of`` carries them."""

    __slots__ = ("event_type_id", "id", "order_id", "partner_id")

    def __init__(self, r: Row[Any]) -> None:
        self.id, self.event_type_id, self.order_id, self.partner_id = (
            r.a_id, r.a_event_type_id, r.a_order_id, r.a_partner_id)


def _action_of(r: Row[Any]) -> _Action | None:
    return _Action(r) if r.a_id is not None else None


def _payload(sub: Row[Any], files: dict[int, bytes]) -> list[dict[str, Any]] | None:
    if not _may_show_payload(sub):
        return None
    try:
        rows = json.loads(files.get(int(sub.id), b""))
    except ValueError:
        return None
    return rows if isinstance(rows, list) else None


def _may_show_payload(sub: Row[Any]) -> bool:
    return sub.undo_of is None and sub.content_type == "application/json" and sub.size <= MAX_PAYLOAD_BYTES


def api_submissions(conn: Connection, account: AccountRef, subs: Sequence[Row[Any]]) -> list[dict[str, Any]]:
    """API submissions (A-…) of the account as impact.com's APISubmission, each with its row (a one-row
    submission) and its first errors: a constant number of queries whatever the number of submissions
    (the account's campaigns, the small files, the first result of the one-row submissions, the first
    ``MAX_INLINE_ERRORS`` errors of each, with their actions)."""
    if not subs:
        return []
    currency = {int(r.id): str(r.currency) for r in catalog_repo.list_rows(conn, campaigns, account.id)}
    ids = [int(s.id) for s in subs]
    files = sub_repo.small_files_of(conn, [i for s, i in zip(subs, ids, strict=True) if _may_show_payload(s)],
                                    MAX_PAYLOAD_BYTES)
    payloads = {i: _payload(s, files) for s, i in zip(subs, ids, strict=True)}
    ones: dict[int, dict[str, Any]] = {}
    for i, rows in payloads.items():
        if rows is not None and len(rows) == 1 and isinstance(rows[0], dict):
            ones[i] = rows[0]
    firsts = sub_repo.first_results_of(conn, account.id, list(ones), errors_only=False, limit=2)
    errors_of = sub_repo.first_results_of(conn, account.id, ids, errors_only=True, limit=MAX_INLINE_ERRORS)
    out = []
    for sub, i in zip(subs, ids, strict=True):
        cid = int(sub.campaign_id)
        cur = currency[cid] if cid in currency else campaign_currency(conn, account, cid)
        out.append(_api_submission(account, sub, cur, ones.get(i), firsts.get(i, []), errors_of.get(i, [])))
    return out


def api_submission(conn: Connection, account: AccountRef, sub: Row[Any]) -> dict[str, Any]:
    return api_submissions(conn, account, [sub])[0]


def _api_submission(account: AccountRef, sub: Row[Any], currency: str, one: dict[str, Any] | None,
                    results: Sequence[Row[Any]], error_rows: Sequence[Row[Any]]) -> dict[str, Any]:
    out = _common(sub, currency)
    first = results[0] if len(results) == 1 and one is not None else None
    action = _action_of(first) if first is not None and first.action_id is not None else None
    if sub.undo_of is not None:
        kind = "Undo"
    elif one is not None:
        kind = str(one.get("Type") or "Modification")
    else:
        kind = "Modification"
    payload = "" if one is None else urlencode(
        [(k, str(v)) for k, v in one.items() if k not in ("Type", "Method") and v not in (None, "")])
    errors = [_error_dict(sub.campaign_id, r, _action_of(r)) for r in error_rows]
    if sub.status == "FAILED":
        errors.insert(0, _file_failure(sub))
    out.update({
        "Type": kind,
        "ActionId": str(action.id) if action is not None else str((one or {}).get("ActionId") or ""),
        "ActionTrackerId": action.event_type_id if action is not None else (one or {}).get("ActionTrackerId", ""),
        "OrderId": action.order_id if action is not None else (one or {}).get("Oid", ""),
        "MediaPartnerId": action.partner_id if action is not None else "",
        "Payload": payload,
        "Outcome": first.outcome if first is not None else "",
        "ErrorType": errors[0]["Status"] if errors else "",
        "ErrorReason": " ".join(dict.fromkeys(e["Reason"] for e in errors)),
        "ErrorMessage": errors[0]["Message"] if errors else "",
        "Errors": errors,
        "Uri": f"/Advertisers/{account.sid}/APISubmissions/{sub_service.label(sub)}",
    })
    return out


def _owned_submission(conn: Connection, account: AccountRef, raw: str, kind: str) -> Row[Any]:
    what = "API submission" if kind == "A" else "file submission"
    text = raw.strip().upper()
    if text[:2] in ("A-", "F-") and text[0] != kind:
        raise NotFound(f"No {what} {quote(raw)}.")
    try:
        sub = sub_service.owned(conn, account.id, raw)
    except NotFound:
        raise NotFound(f"No {what} {quote(raw)}.") from None
    if sub.kind != kind:
        raise NotFound(f"No {what} {quote(raw)}.")
    return sub


@router.get(BASE + "/APISubmissions/{BatchId}")
def getapi_submission(request: Request, BatchId: str, account: Owner) -> Response:  # noqa: N803
    """An API submission (A-…): status, counts and, for a one-row submission, why it failed."""
    return plumbing.read(request, lambda conn: api_submission(conn, account,
                                                               _owned_submission(conn, account, BatchId, "A")))


def _file_dict(sid: str, sub: Row[Any], currency: str) -> dict[str, Any]:
    out = _common(sub, currency)
    label = sub_service.label(sub)
    out.update({
        "FileName": sub.file_name or "",
        "Format": sub.format or "",
        "TotalErrors": str(sub.errors),  # a text in impact.com's FtpSubmission (tap-impact's schema)
        "Type": "Modification",
        "ErrorsUri": f"/Advertisers/{sid}/FTPFileSubmissions/{label}/ErrorDetails",
        "Uri": f"/Advertisers/{sid}/FTPFileSubmissions/{label}",
    })
    return out


def submissions_list(request: Request, account: AccountRef, kind: str, key: str, sizes: tuple[int, int],
                     render: Callable[[Connection, Sequence[Row[Any]]], list[dict[str, Any]]]) -> Response:
    """A paged list of the account's submissions of ``kind``, newest first, under ``key``: the filters
    ``CampaignId``, ``SubmissionDateStart``/``End``, ``CompletedDateStart``/``End``, ``Page``, ``PageSize``."""
    q = query_of(request)
    page, size = page_of(q, sizes)
    campaign_id = query_id(q, "CampaignId")
    created_from, created_to = lower_bound(q, "SubmissionDateStart"), upper_bound(q, "SubmissionDateEnd")
    finished_from, finished_to = lower_bound(q, "CompletedDateStart"), upper_bound(q, "CompletedDateEnd")

    def read(conn: Connection) -> dict[str, Any]:
        if campaign_id is not None:
            get_owned(conn, campaigns, account.id, campaign_id, "campaign")
        total, rows = sub_repo.submissions_page(
            conn, account.id, kind, (page - 1) * size, size, campaign_id=campaign_id, created_from=created_from,
            created_to=created_to, finished_from=finished_from, finished_to=finished_to)
        return envelope(request, key, render(conn, rows), page, size, total)

    return plumbing.read(request, read)


@router.get(BASE + "/FTPFileSubmissions")
def list_file_submissions(request: Request, account: Owner) -> Response:
    """Every file submission of the account (F-…, whatever channel brought it), newest first."""

    def render(conn: Connection, rows: Sequence[Row[Any]]) -> list[dict[str, Any]]:
        currency = {int(r.id): str(r.currency) for r in catalog_repo.list_rows(conn, campaigns, account.id)}
        return [_file_dict(account.sid, r, currency[int(r.campaign_id)]) for r in rows]

    return submissions_list(request, account, "F", "FTPFileSubmissions", SUBMISSIONS_PAGE, render)


@router.get(BASE + "/FTPFileSubmissions/{BatchId}")
def get_file_submission(request: Request, BatchId: str, account: Owner) -> Response:  # noqa: N803
    def read(conn: Connection) -> dict[str, Any]:
        sub = _owned_submission(conn, account, BatchId, "F")
        return _file_dict(account.sid, sub, campaign_currency(conn, account, sub.campaign_id))

    return plumbing.read(request, read)


@router.get(BASE + "/FTPFileSubmissions/{BatchId}/ErrorDetails")
def file_submission_errors(request: Request, BatchId: str, account: Owner) -> Response:  # noqa: N803
    """The rows of a file that had errors (a file refused as a whole shows one entry, Line 0)."""
    q = query_of(request)
    page, size = page_of(q, ERRORS_PAGE)

    def read(conn: Connection) -> dict[str, Any]:
        sub = _owned_submission(conn, account, BatchId, "F")
        total, rows = sub_repo.errors_page(conn, int(sub.id), (page - 1) * size, size)
        items = _error_dicts(conn, sub, rows)
        if sub.status == "FAILED":
            total += 1
            if page == 1:
                items.insert(0, _file_failure(sub))
        return envelope(request, "ErrorDetail", items, page, size, total)

    return plumbing.read(request, read)
