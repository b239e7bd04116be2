"""The impact.com-compatible API (DESIGN §4): impact's brand paths, parameter names and shapes.

A thin adapter. Reads use the ledger's filters and the submissions' results; a PUT or DELETE on
``/Actions`` becomes a one-row ``A-…`` submission (the same row a returns file would carry),
queued for the worker, and is answered ``{"Status": "QUEUED", "QueuedUri": …}`` as impact.com does.
What is covered and what differs is written down in docs/COMPAT.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import Connection, Row
from starlette.exceptions import HTTPException

from payoutdesk.accounts.service import AccountRef
from payoutdesk.api import plumbing
from payoutdesk.api.compat_common import (
    BASE,
    CompatRoute,
    Owner,
    Refused,
    day_of,
    day_time,
    digits,
    envelope,
    lower_bound,
    page_of,
    query_id,
    query_of,
    text_ok,
    upper_bound,
    when,
)
from payoutdesk.api.plumbing import IdemKey
from payoutdesk.catalog import repository as catalog_repo
from payoutdesk.catalog.service import get_owned
from payoutdesk.context import Actor
from payoutdesk.errors import MalformedMultipart, NotFound, ValidationFailed, quote, shorten
from payoutdesk.kit.ids import MAX_ID32, parse_id, ref32
from payoutdesk.kit.money import format_amount
from payoutdesk.ledger import repository as ledger_repo
from payoutdesk.ledger import workflow as wf
from payoutdesk.models import campaigns, event_types, partners
from payoutdesk.submissions import repository as sub_repo
from payoutdesk.submissions import service as sub_service
from payoutdesk.submissions.rows import RowError, command_for, interpret

ACTIONS_PAGE = (2000, 20_000)  # default and largest PageSize of GET /Actions
SUBMISSIONS_PAGE = (100, 1000)
ERRORS_PAGE = (1000, 20_000)
MAX_INLINE_ERRORS = 100  # errors shown inside an APISubmission
MAX_PAYLOAD_BYTES = 64 * 1024  # an APISubmission shows its row only when the batch is this small

_STATUS = {"QUEUED": "Queued", "IN_PROGRESS": "In Progress", "COMPLETE": "Complete", "FAILED": "Failed"}
_ERROR_STATUS = {"VALIDATION": "Validation", "CONTRACT": "Contract Error"}
_STATES = ("PENDING", "APPROVED", "REVERSED")


router = APIRouter(route_class=CompatRoute, tags=["impact.com-compatible"])


# --- actions -----------------------------------------------------------------------------------


def _action_dicts(conn: Connection, sid: str, rows: Sequence[Row[Any]]) -> list[dict[str, Any]]:
    camp = catalog_repo.names_of(conn, campaigns, {r.campaign_id for r in rows})
    ets = catalog_repo.names_of(conn, event_types, {r.event_type_id for r in rows})
    parts = catalog_repo.names_of(conn, partners, {r.partner_id for r in rows})
    last = ledger_repo.newest_changes(conn, [r.id for r in rows])
    out = []
    for r in rows:
        c = r.currency
        change = last.get(int(r.id))
        out.append({
            "Id": str(r.id),
            "CampaignId": r.campaign_id,
            "CampaignName": camp.get(r.campaign_id, ""),
            "ActionTrackerId": r.event_type_id,
            "ActionTrackerName": ets.get(r.event_type_id, ""),
            "EventTypeId": r.event_type_id,
            "MediaPartnerId": r.partner_id,
            "MediaPartnerName": parts.get(r.partner_id, ""),
            "State": r.state,
            "StateDetail": r.reason or "",
            "Amount": format_amount(r.amount, c),
            "Payout": format_amount(r.payout, c),
            "DeltaAmount": format_amount(change.delta_amount if change is not None else r.amount, c),
            "DeltaPayout": format_amount(change.delta_payout if change is not None else r.payout, c),
            "IntendedAmount": format_amount(r.intended_amount, c),
            "IntendedPayout": format_amount(r.intended_payout, c),
            "Currency": c,
            "EventDate": when(r.event_date),
            "CreationDate": when(r.created_at),
            "UpdateDate": when(change.at if change is not None else r.created_at),
            "LockingDate": day_time(r.locking_date),
            "LockedDate": when(r.locked_at),
            "Oid": r.order_id,
            "CustomerId": r.customer_id or "",
            "PromoCode": r.promo_code or "",
            "Note": (change.note or "") if change is not None else "",
            "Uri": f"/Advertisers/{sid}/Actions/{r.id}",
        })
    return out


def _items(conn: Connection, action: Row[Any]) -> list[dict[str, Any]]:
    """The action's items in impact.com's shape."""
    currency = action.currency
    return [{
        "Sku": i.sku,
        "ItemName": i.name or "",
        "Category": i.category or "",
        "Quantity": str(i.quantity),
        "SaleAmount": format_amount(i.amount, currency),
        "SaleAmountCurrency": currency,
        "Payout": format_amount(i.payout, currency),
        "PayoutCurrency": currency,
        "IntendedQuantity": str(i.intended_quantity),
        "IntendedSaleAmount": format_amount(i.intended_amount, currency),
        "IntendedPayout": format_amount(i.intended_payout, currency),
    } for i in ledger_repo.items_of(conn, int(action.id))]


def _action_filters(conn: Connection, account: AccountRef, q: Mapping[str, str]) -> ledger_repo.Filters:
    campaign_id = query_id(q, "CampaignId")
    if campaign_id is not None:
        get_owned(conn, campaigns, account.id, campaign_id, "campaign")
    state = (q.get("state") or "").strip().upper() or None
    if state is not None and state not in _STATES:
        raise ValidationFailed(f"State must be PENDING, APPROVED or REVERSED, not {quote(q['state'])}.")
    order_id = q.get("oid") or q.get("orderid") or None
    return ledger_repo.Filters(
        state=state,
        campaign_id=campaign_id,
        partner_id=ref32(query_id(q, "MediaPartnerId")),  # a 32-bit table's id beyond 2^31-1 names nothing
        event_type_id=ref32(query_id(q, "ActionTrackerId") or query_id(q, "EventTypeId")),
        order_id=order_id,
        event_date_from=lower_bound(q, "StartDate", "ActionDateStart"),
        event_date_to=upper_bound(q, "EndDate", "ActionDateEnd"),
        locking_date_from=day_of(q, "LockingDateStart", end=False),
        locking_date_to=day_of(q, "LockingDateEnd", end=True),
    )


@router.get(BASE + "/Actions")
def list_actions(request: Request, account: Owner) -> Response:
    """impact.com's List Actions: newest first, paged with Page/PageSize."""
    q = query_of(request)
    page, size = page_of(q, ACTIONS_PAGE)

    def read(conn: Connection) -> dict[str, Any]:
        f = _action_filters(conn, account, q)
        total = ledger_repo.count(conn, account.id, f)
        rows = ledger_repo.offset_page(conn, account.id, f, (page - 1) * size, size)
        return envelope(request, "Actions", _action_dicts(conn, account.sid, rows), page, size, total)

    return plumbing.read(request, read)


def _owned_action(conn: Connection, account: AccountRef, raw: str) -> Row[Any]:
    number = parse_id(raw.strip())
    row = None if number is None else ledger_repo.load(conn, account.id, number, for_update=False)
    if row is None:
        raise NotFound(f"No action with id {quote(raw)}.")
    return row


@router.get(BASE + "/Actions/{ActionId}")
def get_action(request: Request, ActionId: str, account: Owner) -> Response:  # noqa: N803 - impact.com's name
    """One action in impact.com's shape, with its items (extra field `Items`)."""

    def read(conn: Connection) -> dict[str, Any]:
        row = _owned_action(conn, account, ActionId)
        out = _action_dicts(conn, account.sid, [row])[0]
        out["Items"] = _items(conn, row)
        return out

    return plumbing.read(request, read)


@router.get(BASE + "/Actions/{ActionId}/Items")
def get_action_items(request: Request, ActionId: str, account: Owner) -> Response:  # noqa: N803
    return plumbing.read(request, lambda conn: {"ActionItems": _items(conn, _owned_action(conn, account, ActionId))})


# --- PUT and DELETE /Actions: one queued row ---------------------------------------------------

_NAMES = {
    "actionid": "ActionId", "actiontrackerid": "ActionTrackerId", "eventtypeid": "ActionTrackerId",
    "orderid": "Oid", "oid": "Oid", "amount": "Amount", "reason": "Reason", "dispositioncode": "DispositionCode",
    "note": "Note", "customerstatus": "CustomerStatus", "currencycode": "CurrencyCode",
    "sku": "Sku1", "quantity": "Quantity1", "category": "Category1",
}
_ITEM = re.compile(r"^(sku|quantity|amount|category)(\d{1,4})$")
_ITEM_NAMES = {"sku": "Sku", "quantity": "Quantity", "amount": "Amount", "category": "Category"}
_NOT_SUPPORTED = {
    "itemsubtotaldelta": "ItemSubTotalDelta (a relative item change) is not supported; give the item's new "
                         "Quantity and, when it changes otherwise, its new Amount.",
}
MAX_PARAMS = 4 * 1000 + 20


def _scalar(value: Any, name: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, dict, list)):
        raise ValidationFailed(f"{shorten(name, 60)} must be text or a number.")
    if isinstance(value, float):
        return str(Decimal(repr(value)))
    return str(value).strip()


async def _params(request: Request) -> list[tuple[str, str]]:
    """The request's parameters: query string, then a form-encoded, multipart or JSON body."""
    pairs = [(k, v.strip()) for k, v in request.query_params.multi_items()]
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        try:
            form = await request.form(max_fields=MAX_PARAMS)
        except HTTPException as exc:  # the form parser's refusals (a missing boundary, too many fields ...)
            if ctype == "multipart/form-data":
                raise MalformedMultipart(f"The multipart body cannot be read: {exc.detail}") from None
            raise ValidationFailed(f"The form body cannot be read: {exc.detail}") from None
        for k, v in form.multi_items():
            if not isinstance(v, str):
                raise ValidationFailed(f"{shorten(k, 60)}: files are not parameters of this request.")
            pairs.append((k, v.strip()))
    elif ctype == "application/json" or ctype.endswith("+json"):
        raw = await request.body()
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                raise ValidationFailed("The request body is not valid JSON.") from None
            if not isinstance(body, dict):
                raise ValidationFailed("A JSON body is an object of impact.com's parameter names, like "
                                       '{"ActionId": "…", "Amount": "80.00", "Reason": "ORDER_UPDATE"}.')
            pairs += [(str(k), _scalar(v, str(k))) for k, v in body.items()]
    elif (await request.body()).strip():
        raise ValidationFailed("Send the parameters form-encoded (application/x-www-form-urlencoded), as JSON, "
                               "or in the query string.")
    if len(pairs) > MAX_PARAMS:
        raise ValidationFailed("Too many parameters.")
    for k, v in pairs:
        text_ok(k, "a parameter name")
        text_ok(v, k)
    return pairs


def _row(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """impact.com's parameter names -> the returns file's column names (one row)."""
    fields: dict[str, str] = {}
    unknown: list[str] = []
    has_sku = any(v and (k.lower() == "sku" or re.fullmatch(r"sku\d{1,4}", k.lower())) for k, v in pairs)
    for key, value in pairs:
        k = key.lower()
        if k in _NOT_SUPPORTED:
            raise ValidationFailed(_NOT_SUPPORTED[k])
        name = _NAMES.get(k)
        if name == "Amount" and has_sku:
            name = "Amount1"  # with Sku, Amount is the item's new amount (impact.com's item update)
        m = _ITEM.match(k)
        if name is None and m and 1 <= int(m.group(2)) <= 1000:
            name = f"{_ITEM_NAMES[m.group(1)]}{int(m.group(2))}"
        if name is None:
            unknown.append(key)
            continue
        if not value:
            continue
        if name in fields and fields[name] != value:
            raise ValidationFailed(f"{name} is given twice with different values ({quote(fields[name])} and "
                                   f"{quote(value)}; Sku/Quantity/Amount are the same as Sku1/Quantity1/Amount1).")
        fields[name] = value
    if unknown:
        names = ", ".join(shorten(n, 60) for n in sorted(set(unknown))[:10])
        raise ValidationFailed(f"Not a parameter of this request: {names}. See docs/COMPAT.md for the parameters "
                               "payoutdesk takes.")
    reason, code = fields.pop("Reason", None), fields.pop("DispositionCode", None)
    if reason and code and reason != code:
        raise ValidationFailed(f"Reason {quote(reason)} and DispositionCode {quote(code)} differ; give one of them.")
    if reason or code:
        fields["Reason"] = reason or code or ""
    return fields


def _identify(conn: Connection, account: AccountRef, fields: Mapping[str, str]) -> tuple[int, int, dict[str, str]]:
    """(campaign id, event type id, the row's identifying columns); unknown actions answer 404."""
    if fields.get("ActionId"):
        row = _owned_action(conn, account, fields["ActionId"])
        return int(row.campaign_id), int(row.event_type_id), {"ActionId": str(row.id)}
    et_raw, oid = fields.get("ActionTrackerId"), fields.get("Oid")
    if not et_raw or not oid:
        missing = "ActionTrackerId" if not et_raw else "OrderId"
        raise Refused(422, "missing_id", f"{missing} is missing: name the action by ActionId, or by "
                       "ActionTrackerId and OrderId.", missing)
    et_id = digits(et_raw, MAX_ID32)
    if et_id is None:
        raise NotFound(f"No event type (ActionTrackerId) {quote(et_raw)}.")
    et = get_owned(conn, event_types, account.id, et_id, "event type (ActionTrackerId)")
    action = ledger_repo.newest_by_order(conn, account.id, int(et.id), oid)
    if action is None:
        raise NotFound(f"No action of event type {et.id} with order id {quote(oid)}.")
    return int(et.campaign_id), int(et.id), {"ActionTrackerId": str(et.id), "Oid": oid}


def _refuse(err: RowError) -> Refused:
    return Refused(422, err.code, err.message, err.column)


def _queue(conn: Connection, actor: Actor, account: AccountRef, fields: dict[str, str], method: str
           ) -> dict[str, Any]:
    campaign_id, et_id, ident = _identify(conn, account, fields)
    row = {**ident, **{k: v for k, v in fields.items() if k not in ("ActionId", "ActionTrackerId", "Oid")}}
    currency = _currency(conn, account, campaign_id)
    has_change = any(k == "Amount" or k.startswith(("Sku", "Quantity", "Amount")) for k in row)
    if method == "DELETE":
        if has_change:
            raise ValidationFailed("DELETE reverses the whole action; to change its amount or items use PUT.")
        row.setdefault("Reason", wf.DEFAULT_REVERSE_REASON)
    elif has_change:
        row.setdefault("Reason", wf.DEFAULT_MODIFY_REASON)
    elif not row.get("Reason"):
        raise ValidationFailed("Nothing to change: give Amount (the new order total), Sku and Quantity (an item), "
                               "or Reason APPROVED or RESET; to reverse, use DELETE.")
    intent = interpret(1, row, currency)
    if isinstance(intent, RowError):
        raise _refuse(intent)
    codes = {c.code: c.operation for c in catalog_repo.codes_of(conn, et_id)}
    if method == "DELETE" and codes.get(row["Reason"], "reverse") != "reverse":
        raise ValidationFailed(f"DELETE reverses; disposition code {row['Reason']} does not ({codes[row['Reason']]}). "
                               "Use PUT for it.")
    command = command_for(intent, codes)
    if isinstance(command, RowError):
        raise _refuse(command)
    if method == "DELETE" and not isinstance(command, wf.Reverse):
        raise ValidationFailed(f"DELETE reverses; {quote(row['Reason'])} does not. Use PUT to approve, reset or "
                               "modify.")
    if method == "PUT" and isinstance(command, wf.Reverse) and row["Reason"] not in codes:
        raise ValidationFailed(f"PUT with Reason {row['Reason']} and nothing to change would reverse the action; "
                               "use DELETE to reverse, or give Amount or Sku and Quantity.")
    reverses = isinstance(command, wf.Reverse) or (intent.amount == 0 and not intent.items)
    kind = "Reversal" if reverses else "Modification"
    sub = sub_service.create_from_rows(conn, actor, campaign_id, [{**row, "Type": kind, "Method": method}])
    return {"Status": "QUEUED", "QueuedUri": f"/Advertisers/{account.sid}/APISubmissions/{sub['id']}",
            "BatchId": sub["id"]}


async def _change(request: Request, account: AccountRef, key: str | None, method: str) -> Response:
    pairs = await _params(request)
    fields = _row(pairs)
    from starlette.concurrency import run_in_threadpool

    def handler(conn: Connection, actor: Actor) -> tuple[int, Any]:
        return 200, _queue(conn, actor, account, fields, method)

    return await run_in_threadpool(plumbing.write, request, account, key, [method, sorted(fields.items())], handler)


@router.put(BASE + "/Actions")
async def update_action(request: Request, account: Owner, key: IdemKey = None) -> Response:
    """Modify (Amount), change items (Sku/Quantity/Amount), approve or reset an action; queued."""
    return await _change(request, account, key, "PUT")


@router.delete(BASE + "/Actions")
async def reverse_action(request: Request, account: Owner, key: IdemKey = None) -> Response:
    """Reverse an action (DispositionCode or Reason, default REJECTED); queued."""
    return await _change(request, account, key, "DELETE")


# --- submissions -------------------------------------------------------------------------------


def _currency(conn: Connection, account: AccountRef, campaign_id: int) -> str:
    return str(get_owned(conn, campaigns, account.id, campaign_id, "campaign").currency)


def _error_dicts(conn: Connection, sub: Row[Any], rows: Sequence[Row[Any]]) -> list[dict[str, Any]]:
    found = ledger_repo.order_keys(conn, int(sub.account_id), [int(r.action_id) for r in rows
                                                               if r.action_id is not None])
    out = []
    for r in rows:
        a = found.get(int(r.action_id)) if r.action_id is not None else None
        out.append({
            "Line": r.row_no,
            "Row": r.row_no,
            "Column": r.column_name or "",
            "Status": _ERROR_STATUS.get(r.error_type or "", r.error_type or ""),
            "Type": r.error_type or "",
            "Code": r.code or "",
            "Reason": (r.code or "").upper(),
            "Message": r.message or "",
            "ActionId": str(r.action_id) if r.action_id is not None else "",
            "CampaignId": sub.campaign_id,
            "ActionTrackerId": a.event_type_id if a is not None else "",
            "OrderId": a.order_id if a is not None else "",
            "MediaPartnerId": a.partner_id if a is not None else "",
        })
    return out


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


def _payload(conn: Connection, sub: Row[Any]) -> list[dict[str, Any]] | None:
    if sub.undo_of is not None or sub.content_type != "application/json" or sub.size > MAX_PAYLOAD_BYTES:
        return None
    try:
        rows = json.loads(sub_repo.file_of(conn, int(sub.id)))
    except ValueError:
        return None
    return rows if isinstance(rows, list) else None


def _api_submission(conn: Connection, account: AccountRef, sub: Row[Any]) -> dict[str, Any]:
    out = _common(sub, _currency(conn, account, sub.campaign_id))
    rows = _payload(conn, sub)
    one = rows[0] if rows is not None and len(rows) == 1 and isinstance(rows[0], dict) else None
    results = sub_repo.results(conn, int(sub.id), errors_only=False, after_row=0, limit=2)
    first = results[0] if len(results) == 1 and one is not None else None
    action = None
    if first is not None and first.action_id is not None:
        action = ledger_repo.load(conn, sub.account_id, int(first.action_id), for_update=False)
    if sub.undo_of is not None:
        kind = "Undo"
    elif one is not None:
        kind = str(one.get("Type") or "Modification")
    else:
        kind = "Modification"
    payload = "" if one is None else urlencode(
        [(k, str(v)) for k, v in one.items() if k not in ("Type", "Method") and v not in (None, "")])
    errors = _error_dicts(conn, sub, sub_repo.results(conn, int(sub.id), errors_only=True, after_row=0,
                                                      limit=MAX_INLINE_ERRORS))
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
def get_api_submission(request: Request, BatchId: str, account: Owner) -> Response:  # noqa: N803
    """An API submission (A-…): status, counts and, for a one-row submission, why it failed."""
    return plumbing.read(request, lambda conn: _api_submission(conn, account,
                                                               _owned_submission(conn, account, BatchId, "A")))


def _file_dict(sid: str, sub: Row[Any], currency: str) -> dict[str, Any]:
    out = _common(sub, currency)
    label = sub_service.label(sub)
    out.update({
        "FileName": sub.file_name or "",
        "Format": sub.format or "",
        "Type": "Modification",
        "ErrorsUri": f"/Advertisers/{sid}/FTPFileSubmissions/{label}/ErrorDetails",
        "Uri": f"/Advertisers/{sid}/FTPFileSubmissions/{label}",
    })
    return out


@router.get(BASE + "/FTPFileSubmissions")
def list_file_submissions(request: Request, account: Owner) -> Response:
    """Every file submission of the account (F-…, whatever channel brought it), newest first."""
    q = query_of(request)
    page, size = page_of(q, SUBMISSIONS_PAGE)
    campaign_id = query_id(q, "CampaignId")
    created_from, created_to = lower_bound(q, "SubmissionDateStart"), upper_bound(q, "SubmissionDateEnd")
    finished_from, finished_to = lower_bound(q, "CompletedDateStart"), upper_bound(q, "CompletedDateEnd")

    def read(conn: Connection) -> dict[str, Any]:
        if campaign_id is not None:
            get_owned(conn, campaigns, account.id, campaign_id, "campaign")
        total, rows = sub_repo.files_page(
            conn, account.id, (page - 1) * size, size, campaign_id=campaign_id, created_from=created_from,
            created_to=created_to, finished_from=finished_from, finished_to=finished_to)
        currency = {int(r.id): str(r.currency) for r in catalog_repo.list_rows(conn, campaigns, account.id)}
        items = [_file_dict(account.sid, r, currency[int(r.campaign_id)]) for r in rows]
        return envelope(request, "FTPFileSubmissions", items, page, size, total)

    return plumbing.read(request, read)


@router.get(BASE + "/FTPFileSubmissions/{BatchId}")
def get_file_submission(request: Request, BatchId: str, account: Owner) -> Response:  # noqa: N803
    def read(conn: Connection) -> dict[str, Any]:
        sub = _owned_submission(conn, account, BatchId, "F")
        return _file_dict(account.sid, sub, _currency(conn, account, sub.campaign_id))

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
