"""The impact.com-compatible API (DESIGN §4): impact's brand paths, parameter names and shapes; here the
Actions (the submissions are in compat_submissions.py, the other reads in compat_reads.py).

A thin adapter. Reads use the ledger's filters; a PUT or DELETE on
``/Actions`` becomes a one-row ``A-…`` submission (the same row a returns file would carry),
queued for the worker, and is answered ``{"Status": "QUEUED", "QueuedUri": …}`` as impact.com does.
What is covered and what differs is written down in docs/COMPAT.md.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import Connection, Row, String, cast, func, select, text, true, type_coerce
from starlette.exceptions import HTTPException

from payoutdesk.accounts.service import AccountRef
from payoutdesk.api import idempotency, plumbing
from payoutdesk.api.compat_common import (
    BASE,
    CompatRoute,
    Owner,
    Refused,
    campaign_currency,
    day_of,
    digits,
    envelope,
    lower_bound,
    page_key,
    page_of,
    query_id,
    query_of,
    text_ok,
    upper_bound,
)
from payoutdesk.api.plumbing import IdemKey
from payoutdesk.catalog import repository as catalog_repo
from payoutdesk.catalog.service import get_owned
from payoutdesk.context import Actor
from payoutdesk.errors import MalformedMultipart, NotFound, ValidationFailed, quote, shorten
from payoutdesk.kit import db
from payoutdesk.kit.db import is_sqlite
from payoutdesk.kit.ids import MAX_ID32, parse_id, ref32
from payoutdesk.kit.money import exponent, format_amount
from payoutdesk.kit.time import utcnow
from payoutdesk.ledger import repository as ledger_repo
from payoutdesk.ledger import schedule
from payoutdesk.ledger import workflow as wf
from payoutdesk.models import action_updates, actions, campaigns, event_types, partners
from payoutdesk.submissions import service as sub_service
from payoutdesk.submissions.rows import RowError, command_for, interpret

ACTIONS_PAGE = (2000, 20_000)  # default and largest PageSize of GET /Actions

_STATES = ("PENDING", "APPROVED", "REVERSED")


router = APIRouter(route_class=CompatRoute, tags=["impact.com-compatible"])


# --- actions -----------------------------------------------------------------------------------


# The Action object is written straight to JSON text with one %-template per action, from a SELECT of
# plain values (times as text): about twice as fast as dicts, ``iso()`` and ``json.dumps`` for 20,000
# actions a page (bench/compat_paging.py, docs/PERFORMANCE.md). Money is a JSON number written
# with its exact decimals (``80.00``, ``-20.00``; ``1250`` for JPY), as the tap's schema types it.
_ACTION_JSON = (
    '{"Id":"%d","CampaignId":%d,"CampaignName":%s,"ActionTrackerId":%d,"ActionTrackerName":%s,'
    '"EventTypeId":%d,"MediaPartnerId":%d,"MediaPartnerName":%s,"State":"%s","StateDetail":%s,'
    '"Amount":%s,"Payout":%s,"DeltaAmount":%s,"DeltaPayout":%s,"IntendedAmount":%s,"IntendedPayout":%s,'
    '"Currency":"%s","EventDate":"%s","CreationDate":"%s","UpdateDate":"%s","LockingDate":"%s",'
    '"LockedDate":"%s","Oid":%s,"CustomerId":%s,"PromoCode":%s,"Note":%s,"Uri":"%s%d"}'
)
_NOT_LOCKED = text("u_n.kind <> 'LOCKED'")  # written literally (not bound), as ix_action_updates_at's condition


def _money_writer(currency: str) -> Callable[[int], str]:
    """``format_amount`` for one currency, as fast as it can be for the usual two decimals."""
    if exponent(currency) != 2:
        return functools.partial(format_amount, currency=currency)

    def two(minor: int) -> str:
        return "%d.%02d" % divmod(minor, 100) if minor >= 0 else "-%d.%02d" % divmod(-minor, 100)  # noqa: UP031
    return two


def _sqlite_time(value: str | None) -> str:
    """SQLite keeps UTC times as ``2026-01-15 10:00:00.000000``: ``2026-01-15T10:00:00Z``."""
    return f"{value[:10]}T{value[11:19]}Z" if value else ""


def _pg_time(value: str | None) -> str:
    return value or ""


def _time_columns(conn: Connection) -> Callable[[Any], Any]:
    """A time column as text the renderer finishes (``_sqlite_time``/``_pg_time``)."""
    if is_sqlite(conn):
        return lambda col: type_coerce(col, String)  # the stored text, read as it is
    return lambda col: func.to_char(func.timezone("UTC", col), 'YYYY-MM-DD"T"HH24:MI:SS"Z"', type_=String)


def _newest_change_id(action_id: Any) -> Any:
    """The newest history entry of an action that is not a lock (impact.com's UpdateDate: a lock is a state
    transition, not an update)."""
    u_n = action_updates.alias("u_n")
    return (select(func.max(u_n.c.id)).where(u_n.c.action_id == action_id, _NOT_LOCKED)
            .correlate_except(u_n).scalar_subquery())


def _updated_between(low: datetime | None, high: datetime | None) -> Any:
    """Actions whose last update (``_newest_change_id``) falls in ``[low, high)``: the window's changes are
    found on ``ix_action_updates_at`` (the append-only history by time, without the locks), each kept if it
    is its action's newest."""
    u_w = action_updates.alias("u_w")
    conds: list[Any] = [text("u_w.kind <> 'LOCKED'"), u_w.c.id == _newest_change_id(u_w.c.action_id)]
    if low is not None:
        conds.append(u_w.c.at >= low)
    if high is not None:
        conds.append(u_w.c.at < high)
    return actions.c.id.in_(select(u_w.c.action_id).where(*conds))


def _action_page(conn: Connection, account: AccountRef, f: ledger_repo.Filters, extra: Sequence[Any], size: int,
                 offset: int = 0, before: int | None = None) -> list[Any]:
    """A page of the account's actions that match, newest (largest id) first, from row ``offset`` on or
    (keyset) below the id ``before``: the values of ``_ACTION_JSON``, each action with its newest change.

    The page's ids come first (on the account's index, newest first); each id then reads its action and
    its newest change by index. PostgreSQL is told so with LATERAL joins (left to itself it hashed the
    whole of both tables, seconds a page); SQLite joins by index as written."""
    a = actions.c
    conds = list(extra)
    if before is not None:
        conds.append(a.id < before)
    inner = ledger_repo.filtered(select(a.id), account.id, f).where(*conds).order_by(a.id.desc()).limit(size)
    if offset:
        inner = inner.offset(offset)
    page = inner.subquery("page")
    t = _time_columns(conn)
    if is_sqlite(conn):
        ids = select(page.c.id, _newest_change_id(page.c.id).label("uid")).subquery("p")
        u = action_updates.alias("u")
        stmt = (
            select(a.id, a.campaign_id, a.event_type_id, a.partner_id, a.state, a.reason, a.currency, a.amount,
                   a.payout, u.c.delta_amount, u.c.delta_payout, a.intended_amount, a.intended_payout,
                   t(a.event_date), t(a.created_at), t(u.c.at), cast(a.locking_date, String), t(a.locked_at),
                   a.order_id, a.customer_id, a.promo_code, u.c.note, a.contract_id)
            .select_from(ids.join(actions, a.id == ids.c.id).outerjoin(u, u.c.id == ids.c.uid))
            .order_by(a.id.desc())
        )
        return list(conn.execute(stmt))
    act = (select(a.id, a.campaign_id, a.event_type_id, a.partner_id, a.state, a.reason, a.currency, a.amount,
                  a.payout, a.intended_amount, a.intended_payout, t(a.event_date).label("ev"),
                  t(a.created_at).label("cr"), cast(a.locking_date, String).label("lk"),
                  t(a.locked_at).label("ld"), a.order_id, a.customer_id, a.promo_code, a.contract_id)
           .where(a.id == page.c.id).limit(1).lateral("a"))  # LIMIT: not flattened into a hash join
    u_n = action_updates.alias("u_n")
    change = (select(u_n.c.delta_amount, u_n.c.delta_payout, t(u_n.c.at).label("at"), u_n.c.note)
              .where(u_n.c.action_id == page.c.id, _NOT_LOCKED).order_by(u_n.c.id.desc()).limit(1).lateral("u"))
    c = act.c
    stmt = (
        select(c.id, c.campaign_id, c.event_type_id, c.partner_id, c.state, c.reason, c.currency, c.amount, c.payout,
               change.c.delta_amount, change.c.delta_payout, c.intended_amount, c.intended_payout, c.ev, c.cr,
               change.c.at, c.lk, c.ld, c.order_id, c.customer_id, c.promo_code, change.c.note, c.contract_id)
        .select_from(page.join(act, true()).outerjoin(change, true()))
        .order_by(page.c.id.desc())
    )
    # compiling the plan (JIT) cost more than running it; the page's rows are sorted in memory
    conn.exec_driver_sql("SET LOCAL jit = off; SET LOCAL work_mem = '64MB'")
    return list(conn.execute(stmt))


def _render(conn: Connection, sid: str, rows: Sequence[Any]) -> list[str]:
    """Each action of ``_action_page`` as the JSON text of impact.com's Action object."""
    esc = encode_basestring
    camp = {k: esc(v) for k, v in catalog_repo.names_of(conn, campaigns, {r[1] for r in rows}).items()}
    ets = {k: esc(v) for k, v in catalog_repo.names_of(conn, event_types, {r[2] for r in rows}).items()}
    parts = {k: esc(v) for k, v in catalog_repo.names_of(conn, partners, {r[3] for r in rows}).items()}
    tm = _sqlite_time if is_sqlite(conn) else _pg_time
    uri = f"/Advertisers/{sid}/Actions/"
    money: dict[str, Callable[[int], str]] = {}
    out = []
    empty = '""'
    template = _ACTION_JSON
    # R16's status detail (ledger/schedule.py): an APPROVED action's from its clearing date
    pay = schedule.pay_periods(conn, {r[22] for r in rows if r[4] == "APPROVED"})
    today = utcnow().date()
    for (aid, cid, etid, pid, state, reason, cur, amount, payout, d_amount, d_payout, i_amount, i_payout, event,
         created, updated, locking, locked, oid, customer, promo, note, contract) in rows:
        detail = reason
        if state == "APPROVED":
            clearing = schedule.clearing_date(state, _locked_day(locked), pay.get(contract))
            detail = schedule.status_detail(state, reason, None, clearing, today)
        elif state == "PENDING" and not locking:
            detail = schedule.OPEN
        m = money.get(cur)
        if m is None:
            m = money[cur] = _money_writer(cur)
        made = tm(created)
        changed = d_amount is not None
        out.append(template % (
            aid, cid, camp.get(cid, empty), etid, ets.get(etid, empty), etid, pid, parts.get(pid, empty),
            state, esc(detail) if detail else empty,
            m(amount), m(payout), m(d_amount) if changed else m(amount), m(d_payout) if changed else m(payout),
            m(i_amount), m(i_payout), cur, tm(event), made, tm(updated) if changed else made,
            f"{locking}T00:00:00Z" if locking else "", tm(locked), esc(oid), esc(customer) if customer else empty,
            esc(promo) if promo else empty, esc(note) if note else empty, uri, aid))
    return out


def _locked_day(locked: str | None) -> datetime | None:
    """The day of a ``locked_at`` read as text (``YYYY-MM-DD…`` on both backends), as midnight UTC."""
    if not locked:
        return None
    try:
        return datetime.fromisoformat(locked[:10]).replace(tzinfo=UTC)
    except ValueError:
        return None


def _action_json(conn: Connection, account: AccountRef, row: Row[Any]) -> str:
    rows = _action_page(conn, account, ledger_repo.Filters(action_id=int(row.id)), (), 1)
    return _render(conn, account.sid, rows)[0]


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


def _action_filters(conn: Connection, account: AccountRef, q: Mapping[str, str]
                    ) -> tuple[ledger_repo.Filters, list[Any]]:
    """impact.com's filters of List Actions: the ledger's filters, and the last-update window (StartDate,
    EndDate) as conditions of their own."""
    campaign_id = query_id(q, "CampaignId")
    if campaign_id is not None:
        get_owned(conn, campaigns, account.id, campaign_id, "campaign")
    state = (q.get("state") or "").strip().upper() or None
    if state is not None and state not in _STATES:
        raise ValidationFailed(f"State must be PENDING, APPROVED or REVERSED, not {quote(q['state'])}.")
    order_id = q.get("oid") or q.get("orderid") or None
    f = ledger_repo.Filters(
        state=state,
        campaign_id=campaign_id,
        partner_id=ref32(query_id(q, "MediaPartnerId")),  # a 32-bit table's id beyond 2^31-1 names nothing
        event_type_id=ref32(query_id(q, "ActionTrackerId") or query_id(q, "EventTypeId")),
        order_id=order_id,
        event_date_from=lower_bound(q, "ActionDateStart"),
        event_date_to=upper_bound(q, "ActionDateEnd"),
        locking_date_from=day_of(q, "LockingDateStart", end=False),
        locking_date_to=day_of(q, "LockingDateEnd", end=True),
    )
    updated_from, updated_to = lower_bound(q, "StartDate"), upper_bound(q, "EndDate")
    extra = [] if updated_from is None and updated_to is None else [_updated_between(updated_from, updated_to)]
    return f, extra


@router.get(BASE + "/Actions")
def list_actions(request: Request, account: Owner) -> Response:
    """impact.com's List Actions: newest first, paged with Page/PageSize; ``@nextpageuri`` carries a keyset
    position (``PageKey``), so that following it costs the same on the last page as on the first."""
    q = query_of(request)
    page, size = page_of(q, ACTIONS_PAGE)
    key = page_key(q)

    def read(conn: Connection) -> bytes:
        f, extra = _action_filters(conn, account, q)
        if key is not None:
            total = key[1]
            rows = _action_page(conn, account, f, extra, size, before=key[0])
        else:
            total = _count(conn, account.id, f, extra)
            rows = _action_page(conn, account, f, extra, size, offset=(page - 1) * size)
        after = [("PageKey", f"{rows[-1][0]}-{total}")] if rows else []
        head = envelope(request, "Actions", [], page, size, total, shown=len(rows), next_params=after)
        text_ = idempotency.dumps(head)
        assert text_.endswith(b"[]}")  # "Actions" is the envelope's last key
        return b"".join((text_[:-2], ",".join(_render(conn, account.sid, rows)).encode(), b"]}"))

    with db.read(plumbing.engine_of(request)) as conn:
        return plumbing.respond(request, 200, read(conn))


def _count(conn: Connection, account_id: int, f: ledger_repo.Filters, extra: Sequence[Any]) -> int:
    stmt = ledger_repo.filtered(select(func.count()).select_from(actions), account_id, f).where(*extra)
    return int(conn.execute(stmt).scalar_one())


def _owned_action(conn: Connection, account: AccountRef, raw: str) -> Row[Any]:
    number = parse_id(raw.strip())
    row = None if number is None else ledger_repo.load(conn, account.id, number, for_update=False)
    if row is None:
        raise NotFound(f"No action with id {quote(raw)}.")
    return row


@router.get(BASE + "/Actions/{ActionId}")
def get_action(request: Request, ActionId: str, account: Owner) -> Response:  # noqa: N803 - impact.com's name
    """One action in impact.com's shape, with its items (extra field `Items`)."""

    def read(conn: Connection) -> bytes:
        row = _owned_action(conn, account, ActionId)
        one = _action_json(conn, account, row)
        return f"{one[:-1]},\"Items\":".encode() + idempotency.dumps(_items(conn, row)) + b"}"

    with db.read(plumbing.engine_of(request)) as conn:
        return plumbing.respond(request, 200, read(conn))


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
    currency = campaign_currency(conn, account, campaign_id)
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
