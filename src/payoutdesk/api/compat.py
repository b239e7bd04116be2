"""The impact.com-compatible API (DESIGN §4): impact's brand paths, parameter names and shapes.

A thin adapter. Reads use the ledger's filters and the submissions' results; a PUT or DELETE on
``/Actions`` becomes a one-row ``A-…`` submission (the same row a returns file would carry),
queued for the worker, and is answered ``{"Status": "QUEUED", "QueuedUri": …}`` as impact.com does.
What is covered and what differs is written down in docs/COMPAT.md.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from sqlalchemy import Connection, Row
from starlette.exceptions import HTTPException

from payoutdesk.accounts.service import AccountRef
from payoutdesk.api import plumbing
from payoutdesk.api.plumbing import IdemKey, authenticate, problem
from payoutdesk.catalog import repository as catalog_repo
from payoutdesk.catalog.service import get_owned, parse_time
from payoutdesk.context import Actor
from payoutdesk.errors import MalformedMultipart, NotFound, PayoutdeskError, ValidationFailed, quote, shorten
from payoutdesk.kit.ids import MAX_ID, MAX_ID32, parse_id, ref32
from payoutdesk.kit.money import format_amount
from payoutdesk.kit.time import iso
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


# --- errors: problem+json, plus impact.com's Status/Message ------------------------------------


class _Refused(Exception):
    """A request refused with a code of the submission engine (a row error met up front)."""

    def __init__(self, status: int, code: str, detail: str, column: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.column = status, code, detail, column


class _CompatRoute(APIRoute):
    """Every refusal of these routes keeps problem+json and adds impact.com's `Status`/`Message`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        inner = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await inner(request)
            except PayoutdeskError as exc:
                exc.extra.setdefault("Status", "ERROR")
                exc.extra.setdefault("Message", exc.detail)
                raise
            except _Refused as exc:
                extra: dict[str, Any] = {"Status": "ERROR", "Message": exc.detail}
                if exc.column:
                    extra["column"] = exc.column
                return problem(exc.status, exc.code, "Invalid request", exc.detail,
                               plumbing.request_rate_headers(request), **extra)

        return handler


router = APIRouter(route_class=_CompatRoute, tags=["impact.com-compatible"])


# The query parameters of each route (docs/COMPAT.md), matched case-insensitively; any other is refused
# (a misspelt filter must never widen a list, DESIGN §6). PUT and DELETE take every parameter of
# ``_NAMES`` in the query string too (``_row`` refuses the others). Add a route's new parameters here.
QUERY_PARAMETERS: dict[tuple[str, str], tuple[str, ...]] = {
    ("GET", "/Actions"): ("CampaignId", "State", "StartDate", "EndDate", "ActionDateStart", "ActionDateEnd",
                          "LockingDateStart", "LockingDateEnd", "ActionTrackerId", "EventTypeId", "MediaPartnerId",
                          "Oid", "OrderId", "Page", "PageSize"),
    ("GET", "/Actions/{ActionId}"): (),
    ("GET", "/Actions/{ActionId}/Items"): (),
    ("GET", "/APISubmissions/{BatchId}"): (),
    ("GET", "/FTPFileSubmissions"): ("SubmissionDateStart", "SubmissionDateEnd", "CompletedDateStart",
                                     "CompletedDateEnd", "CampaignId", "Page", "PageSize"),
    ("GET", "/FTPFileSubmissions/{BatchId}"): (),
    ("GET", "/FTPFileSubmissions/{BatchId}/ErrorDetails"): ("Page", "PageSize"),
}


def _known_query(request: Request) -> None:
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    names = QUERY_PARAMETERS.get((request.method, route.path.removeprefix(BASE)))
    if names is None:
        return
    known = {n.lower() for n in names}
    unknown = [k for k in request.query_params if k.lower() not in known]
    plumbing.refuse_unknown(unknown, frozenset(names))


def _owner(request: Request, AccountSID: str,  # noqa: N803
           account: Annotated[AccountRef, Depends(authenticate)]) -> AccountRef:
    """The AccountSID of the path must be the signed-in account's; any other answers 404. Then the query
    string may hold only the route's parameters."""
    if AccountSID != account.sid:
        raise NotFound("No account with this AccountSID for these credentials; the path names the Account SID "
                       "you sign in with.")
    _known_query(request)
    return account


Owner = Annotated[AccountRef, Depends(_owner)]
BASE = "/Advertisers/{AccountSID}"


# --- small parsers -----------------------------------------------------------------------------


def _query(request: Request) -> dict[str, str]:
    """Query parameters by lower-case name (impact.com's names are matched case-insensitively)."""
    out: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        k = key.lower()
        if k in out and out[k] != value:
            raise ValidationFailed(f"{shorten(key, 60)} is given twice with different values.")
        _text_ok(value, key)
        out[k] = value
    return out


def _text_ok(value: Any, name: str) -> None:
    try:
        plumbing.check_text(value, name)
    except ValueError as exc:
        raise ValidationFailed(str(exc) + ".") from None


def _int(q: Mapping[str, str], name: str) -> int | None:
    """A whole number 0 … 2^31-1 (Page, PageSize)."""
    raw = q.get(name.lower())
    if raw is None or not raw.strip():
        return None
    number = _digits(raw, MAX_ID32)
    if number is None:
        raise ValidationFailed(f"{name} must be a whole number, not {quote(raw)}.")
    return number


def _id(q: Mapping[str, str], name: str) -> int | None:
    """An id of the query: 1 … 2^63-1 (validation_error otherwise, DESIGN §6)."""
    raw = q.get(name.lower())
    if raw is None or not raw.strip():
        return None
    number = parse_id(raw.strip())
    if number is None:
        raise ValidationFailed(f"{name} must be an id, a whole number from 1 to {MAX_ID}, not {quote(raw)}.")
    return number


def _digits(raw: str, maximum: int) -> int | None:
    """A whole number 0..maximum written in ASCII digits, else None (never a huge int parse)."""
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > maximum:
        return None
    return int(text)


def _page(q: Mapping[str, str], sizes: tuple[int, int]) -> tuple[int, int]:
    default, largest = sizes
    page = _int(q, "Page")
    page = 1 if page is None else page
    size = _int(q, "PageSize")
    if page < 1 or page > 10**9:
        raise ValidationFailed("Page must be 1 or more.")
    if size is None:
        size = default
    if not 1 <= size <= largest:
        raise ValidationFailed(f"PageSize must be between 1 and {largest:,}.")
    return page, size


def _time(q: Mapping[str, str], name: str) -> tuple[datetime, bool] | None:
    """An ISO 8601 time, or a date (whole day): (value, was_a_date)."""
    raw = q.get(name.lower())
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if len(text) == 10:
        try:
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC), True
        except ValueError:
            pass
    try:
        return parse_time(text, name), False
    except ValidationFailed:
        raise ValidationFailed(f"{name} must be a time like 2026-01-15T10:00:00Z or a date like 2026-01-15, "
                               f"not {quote(raw)}.") from None


def _lower(q: Mapping[str, str], *names: str) -> datetime | None:
    """The latest of several inclusive lower bounds."""
    found = [t for t, _ in filter(None, (_time(q, n) for n in names))]
    return max(found) if found else None


def _upper(q: Mapping[str, str], *names: str) -> datetime | None:
    """The earliest of several inclusive upper bounds, as an exclusive bound (a date means its whole day)."""
    found = []
    for n in names:
        got = _time(q, n)
        if got is not None:
            value, whole_day = got
            try:
                found.append(value + (timedelta(days=1) if whole_day else timedelta(microseconds=1)))
            except OverflowError:
                continue  # the end of time bounds nothing
    return min(found) if found else None


def _day(q: Mapping[str, str], name: str, *, end: bool) -> date | None:
    got = _time(q, name)
    if got is None:
        return None
    value, _ = got
    day = value.date()
    if not end and value.timetz().replace(tzinfo=None) != time() and day < date.max:
        day += timedelta(days=1)  # a locking date is midnight: a start later that day excludes it
    return day


def _when(value: datetime | None) -> str:
    return iso(value) or ""


def _day_time(value: date | None) -> str:
    return "" if value is None else f"{value.isoformat()}T00:00:00Z"


def _envelope(request: Request, key: str, items: list[dict[str, Any]], page: int, size: int,
              total: int) -> dict[str, Any]:
    """impact.com's paged list: "@page", "@numpages", … (as strings, as impact.com sends them)."""
    pages = max(1, math.ceil(total / size))
    start = (page - 1) * size
    params = [(k, v) for k, v in request.query_params.multi_items() if k.lower() != "page"]

    def uri(n: int) -> str:
        return f"{request.url.path}?{urlencode([*params, ('Page', str(n))])}"

    return {
        "@page": str(page),
        "@numpages": str(pages),
        "@pagesize": str(size),
        "@total": str(total),
        "@start": str(start),
        "@end": str(start + max(len(items), 1) - 1),
        "@uri": uri(page),
        "@firstpageuri": uri(1),
        "@previouspageuri": uri(page - 1) if 1 < page <= pages + 1 else "",
        "@nextpageuri": uri(page + 1) if page < pages else "",
        "@lastpageuri": uri(pages),
        key: items,
    }


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
            "EventDate": _when(r.event_date),
            "CreationDate": _when(r.created_at),
            "UpdateDate": _when(change.at if change is not None else r.created_at),
            "LockingDate": _day_time(r.locking_date),
            "LockedDate": _when(r.locked_at),
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
    campaign_id = _id(q, "CampaignId")
    if campaign_id is not None:
        get_owned(conn, campaigns, account.id, campaign_id, "campaign")
    state = (q.get("state") or "").strip().upper() or None
    if state is not None and state not in _STATES:
        raise ValidationFailed(f"State must be PENDING, APPROVED or REVERSED, not {quote(q['state'])}.")
    order_id = q.get("oid") or q.get("orderid") or None
    return ledger_repo.Filters(
        state=state,
        campaign_id=campaign_id,
        partner_id=ref32(_id(q, "MediaPartnerId")),  # a 32-bit table's id beyond 2^31-1 names nothing
        event_type_id=ref32(_id(q, "ActionTrackerId") or _id(q, "EventTypeId")),
        order_id=order_id,
        event_date_from=_lower(q, "StartDate", "ActionDateStart"),
        event_date_to=_upper(q, "EndDate", "ActionDateEnd"),
        locking_date_from=_day(q, "LockingDateStart", end=False),
        locking_date_to=_day(q, "LockingDateEnd", end=True),
    )


@router.get(BASE + "/Actions")
def list_actions(request: Request, account: Owner) -> Response:
    """impact.com's List Actions: newest first, paged with Page/PageSize."""
    q = _query(request)
    page, size = _page(q, ACTIONS_PAGE)

    def read(conn: Connection) -> dict[str, Any]:
        f = _action_filters(conn, account, q)
        total = ledger_repo.count(conn, account.id, f)
        rows = ledger_repo.offset_page(conn, account.id, f, (page - 1) * size, size)
        return _envelope(request, "Actions", _action_dicts(conn, account.sid, rows), page, size, total)

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
        _text_ok(k, "a parameter name")
        _text_ok(v, k)
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
        raise _Refused(422, "missing_id", f"{missing} is missing: name the action by ActionId, or by "
                       "ActionTrackerId and OrderId.", missing)
    et_id = _digits(et_raw, MAX_ID32)
    if et_id is None:
        raise NotFound(f"No event type (ActionTrackerId) {quote(et_raw)}.")
    et = get_owned(conn, event_types, account.id, et_id, "event type (ActionTrackerId)")
    action = ledger_repo.newest_by_order(conn, account.id, int(et.id), oid)
    if action is None:
        raise NotFound(f"No action of event type {et.id} with order id {quote(oid)}.")
    return int(et.campaign_id), int(et.id), {"ActionTrackerId": str(et.id), "Oid": oid}


def _refuse(err: RowError) -> _Refused:
    return _Refused(422, err.code, err.message, err.column)


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
        "SubmissionDate": _when(sub.created_at),
        "CreatedDate": _when(sub.created_at),
        "StartedDate": _when(sub.started_at),
        "CompletionDate": _when(sub.finished_at),
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
    q = _query(request)
    page, size = _page(q, SUBMISSIONS_PAGE)
    campaign_id = _id(q, "CampaignId")
    created_from, created_to = _lower(q, "SubmissionDateStart"), _upper(q, "SubmissionDateEnd")
    finished_from, finished_to = _lower(q, "CompletedDateStart"), _upper(q, "CompletedDateEnd")

    def read(conn: Connection) -> dict[str, Any]:
        if campaign_id is not None:
            get_owned(conn, campaigns, account.id, campaign_id, "campaign")
        total, rows = sub_repo.files_page(
            conn, account.id, (page - 1) * size, size, campaign_id=campaign_id, created_from=created_from,
            created_to=created_to, finished_from=finished_from, finished_to=finished_to)
        currency = {int(r.id): str(r.currency) for r in catalog_repo.list_rows(conn, campaigns, account.id)}
        items = [_file_dict(account.sid, r, currency[int(r.campaign_id)]) for r in rows]
        return _envelope(request, "FTPFileSubmissions", items, page, size, total)

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
    q = _query(request)
    page, size = _page(q, ERRORS_PAGE)

    def read(conn: Connection) -> dict[str, Any]:
        sub = _owned_submission(conn, account, BatchId, "F")
        total, rows = sub_repo.errors_page(conn, int(sub.id), (page - 1) * size, size)
        items = _error_dicts(conn, sub, rows)
        if sub.status == "FAILED":
            total += 1
            if page == 1:
                items.insert(0, _file_failure(sub))
        return _envelope(request, "ErrorDetail", items, page, size, total)

    return plumbing.read(request, read)
