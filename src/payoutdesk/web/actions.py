"""Engage → Transactions → Pending Payouts: the Actions and Reversed tabs (DESIGN §4, "Pages").

One list query per page (``ledger.list_actions``, keyset-paged, 50 rows), the partners' and event types'
names from one small lookup each, no query per row. A row's drop-down approves, reverses (with a reason
from the list and the event type's disposition codes) or leads to Modify Item Details (``web.modify``);
approving a reversed action restores it. Expanding a row shows its items and its whole history; several
rows are approved or reversed together; "Download as CSV" streams exactly the filtered list. Every change
goes through ``ledger.change`` as the signed-in user on the ``web`` channel; a refusal shows the rule's
message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from payoutdesk.accounts.sessions import SignedIn
from payoutdesk.api.plumbing import export_stream
from payoutdesk.catalog import repository as catalog_repo
from payoutdesk.context import Actor
from payoutdesk.errors import NotFound, PayoutdeskError, ValidationFailed, shorten
from payoutdesk.kit.ids import MAX_ID, parse_id, ref32
from payoutdesk.kit.time import utcnow
from payoutdesk.ledger import repository as ledger_repo
from payoutdesk.ledger import reprocess
from payoutdesk.ledger import service as ledger
from payoutdesk.ledger import workflow as wf
from payoutdesk.models import event_types, partners
from payoutdesk.web import fields, render
from payoutdesk.web.session import Manager, Viewer, posted, read, write

router = APIRouter(include_in_schema=False)

BASE = "/pending-payouts"
TABS = {"actions": "Actions", "reversed": "Reversed"}
PAGE_SIZE = 50
MAX_BULK = 500
MAX_NOTE = 2000
ACTION_STATES = {"PENDING": "Pending", "APPROVED": "Approved (locked)", "ALL": "All states"}
SORTABLE = (  # column, its heading, the descending and ascending sort values
    ("event_date", "Event date", "-event_date", "event_date"),
    ("locking_date", "Locking date", "-locking_date", "locking_date"),
    ("amount", "Sale amount", "-amount", "amount"),
    ("payout", "Payout", "-payout", "payout"),
)
FILTER_FIELDS = ("state", "partner_id", "event_type_id", "order_id", "action_id", "promo_code", "reason",
                 "event_date_from", "event_date_to")


# --- reading the filters ---------------------------------------------------------------------------


def _day_text(params: Mapping[str, str], name: str, what: str) -> str | None:
    day = fields.day(params, name, what)
    return day.isoformat() if day is not None else None


def filters_of(params: Mapping[str, str], tab: str) -> tuple[ledger_repo.Filters, dict[str, str]]:
    """The list filters of a tab from the query (empty fields left out), and the form's values."""
    form = {name: (params.get(name) or "").strip()[:200] for name in FILTER_FIELDS}
    if tab == "reversed":
        state: str | None = "REVERSED"
        form["state"] = ""
        reason = fields.text(params, "reason", "Reversal Reason", 64)
    else:
        chosen = form["state"] or "PENDING"
        if chosen not in ACTION_STATES:
            raise ValidationFailed(f"State must be one of {', '.join(ACTION_STATES)}.")
        form["state"] = chosen
        state = None if chosen == "ALL" else chosen
        reason = None
        form["reason"] = ""
    filters = ledger_repo.Filters(
        state=state,
        partner_id=ref32(fields.ident(params, "partner_id", "Partner")),
        event_type_id=ref32(fields.ident(params, "event_type_id", "Event Type")),
        order_id=fields.text(params, "order_id", "Order ID"),
        action_id=fields.ident(params, "action_id", "Action ID"),
        promo_code=fields.text(params, "promo_code", "Promo code"),
        reason=reason,
        event_date_from=ledger.day_bound(_day_text(params, "event_date_from", "Event date from"), "Event date from",
                                          end=False),
        event_date_to=ledger.day_bound(_day_text(params, "event_date_to", "Event date to"), "Event date to", end=True),
    )
    return filters, form


def _query(form: Mapping[str, str], **more: str | None) -> str:
    """The query text of the filters (only those set) and ``more``."""
    pairs = [(k, v) for k, v in form.items() if v]
    pairs += [(k, v) for k, v in more.items() if v]
    return urlencode(pairs)


# --- lookups -----------------------------------------------------------------------------------------


def names(conn: Connection, account_id: int) -> tuple[dict[int, str], dict[int, str]]:
    """The account's partners and event types by id (one small query each)."""
    return (
        {int(r.id): r.name for r in catalog_repo.list_rows(conn, partners, account_id)},
        {int(r.id): r.name for r in catalog_repo.list_rows(conn, event_types, account_id)},
    )


def reason_choices(conn: Connection, account_id: int) -> list[dict[str, str]]:
    """The reasons a person may give: the predefined ones (not the system's, not RESET) and the disposition
    codes of the account's event types, each once (one query)."""
    out = [{"code": code, "name": name} for code, name in wf.PREDEFINED_REASONS.items()
           if code not in wf.SYSTEM_ONLY_REASONS and code != "RESET"]
    seen = {r["code"] for r in out}
    for c in ledger_repo.disposition_codes_of_account(conn, account_id):
        if c.code not in seen:
            seen.add(c.code)
            out.append({"code": c.code, "name": f"{c.name} ({c.code})"})
    return out


def reasons_for(conn: Connection, account_id: int, event_type_id: int) -> list[dict[str, str]]:
    """The reasons for one action: ``ledger.list_reasons`` less what a person cannot give."""
    return [{"code": r["code"], "name": f"{r['name']} ({r['code']})" if r["custom"] else r["name"]}
            for r in ledger.list_reasons(conn, account_id, event_type_id)
            if not r["system_only"] and r["code"] != "RESET"]


def controls(action: Mapping[str, Any], today: str) -> dict[str, bool]:
    """Which changes apply to an action now: nothing once it is final (locked, or its locking date came)."""
    final = bool(action["locked_at"]) or bool(action["lock_due"] and action["lock_due"] <= today)
    state = action["state"]
    return {
        "final": final,
        "approve": not final and state in ("PENDING", "REVERSED"),
        "reverse": not final and state == "PENDING",
        "modify": not final and state == "PENDING",
    }


def reason_names(choices: list[dict[str, str]]) -> dict[str, str]:
    """Each reason's name by code: the predefined names (the system's too) and ``choices``."""
    return {**wf.PREDEFINED_REASONS, **{r["code"]: r["name"] for r in choices}}


def _decorate(action: dict[str, Any], partner_names: Mapping[int, str], type_names: Mapping[int, str],
              today: str, reason_name: Mapping[str, str] | None = None) -> dict[str, Any]:
    names_of = reason_name or wf.PREDEFINED_REASONS
    detail = action["status_detail"]
    action["reason_name"] = names_of.get(detail, detail) if detail else ""
    for u in action.get("updates") or ():
        u["reason_name"] = names_of.get(u["reason"], u["reason"]) if u["reason"] else ""
    action["partner_name"] = partner_names.get(action["partner_id"], f"Partner {action['partner_id']}")
    action["event_type_name"] = type_names.get(action["event_type_id"], f"Event type {action['event_type_id']}")
    action["can"] = controls(action, today)
    action["shown_state"] = "LOCKED" if action["locked_at"] else action["state"]
    return action


# --- the tabs ----------------------------------------------------------------------------------------


def _list_page(request: Request, user: SignedIn, tab: str) -> Response:
    params = request.query_params
    error = ""
    sort = params.get("sort") or ledger_repo.DEFAULT_SORT
    cursor = (params.get("cursor") or "").strip() or None
    filters: ledger_repo.Filters | None
    try:
        filters, form = filters_of(params, tab)
        if sort not in ledger_repo.SORTS:
            raise ValidationFailed(f"Sort must be one of {', '.join(ledger_repo.SORTS)}.")
    except PayoutdeskError as exc:
        error, filters, sort, cursor = exc.detail, None, ledger_repo.DEFAULT_SORT, None
        form = {name: (params.get(name) or "").strip()[:200] for name in FILTER_FIELDS}
    account_id = user.account.id
    today = utcnow().date().isoformat()

    def load(conn: Connection) -> dict[str, Any]:
        partner_names, type_names = names(conn, account_id)
        page: dict[str, Any] = {"items": [], "next_cursor": None}
        if filters is not None:
            try:
                page = ledger.list_actions(conn, account_id, filters, PAGE_SIZE, cursor, sort)
            except PayoutdeskError as exc:  # a cursor of another sort, say
                page["error"] = exc.detail
        reasons = reason_choices(conn, account_id)
        return {"partners": partner_names, "event_types": type_names, "page": page, "reasons": reasons}

    data = read(request, load)
    error = error or data["page"].get("error", "")
    known = reason_names(data["reasons"])
    rows = [_decorate(a, data["partners"], data["event_types"], today, known) for a in data["page"]["items"]]
    here = f"{BASE}/{tab}"
    filter_query = _query(form)
    headers = []
    for column, heading, desc, asc in SORTABLE:
        current = "descending" if sort == desc else "ascending" if sort == asc else ""
        target = asc if sort == desc else desc
        headers.append({"column": column, "heading": heading, "aria": current,
                        "href": f"{here}?{_query(form, sort=target)}",
                        "arrow": "▼" if current == "descending" else "▲" if current == "ascending" else ""})
    back = f"{here}?{request.url.query}" if request.url.query else here
    kept_sort = None if sort == ledger_repo.DEFAULT_SORT else sort
    next_cursor = data["page"]["next_cursor"]
    return render.page(
        request, "actions.html", title=f"Pending Payouts · {TABS[tab]}", user=user, section="actions",
        tab=tab, tabs=TABS, rows=rows, form=form, error=error, sort=sort, cursor=cursor,
        headers=headers, states=ACTION_STATES, partners=data["partners"], event_types=data["event_types"],
        reasons=data["reasons"], back=back,
        next_href=f"{here}?{_query(form, sort=kept_sort, cursor=next_cursor)}" if next_cursor else "",
        first_href=f"{here}?{_query(form, sort=kept_sort)}" if cursor else "",
        csv_href=f"{here}/export.csv" + (f"?{filter_query}" if filter_query else ""),
        max_bulk=MAX_BULK,
    )


@router.get(BASE)
@router.get(BASE + "/")
def pending_payouts(request: Request, user: Viewer) -> Response:
    return render.redirect(f"{BASE}/actions")


@router.get(BASE + "/actions")
def actions_tab(request: Request, user: Viewer) -> Response:
    return _list_page(request, user, "actions")


@router.get(BASE + "/reversed")
def reversed_tab(request: Request, user: Viewer) -> Response:
    return _list_page(request, user, "reversed")


def _export(request: Request, user: SignedIn, tab: str) -> StreamingResponse:
    filters, _ = filters_of(request.query_params, tab)
    name = "reversed-actions.csv" if tab == "reversed" else "pending-actions.csv"
    return export_stream(request, user.account.id, filters,
                         {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})


@router.get(BASE + "/actions/export.csv")
def export_actions(request: Request, user: Viewer) -> StreamingResponse:
    return _export(request, user, "actions")


@router.get(BASE + "/reversed/export.csv")
def export_reversed(request: Request, user: Viewer) -> StreamingResponse:
    return _export(request, user, "reversed")


# --- one action --------------------------------------------------------------------------------------


def action_id_of(raw: str) -> int:
    number = parse_id(raw)
    if number is None or number > MAX_ID:
        raise NotFound(f"No action {shorten(raw, 40)} here.")
    return number


def action_view(conn: Connection, account_id: int, action_id: int) -> dict[str, Any]:
    """An action with its history, its partner's and event type's names and what may be done to it."""
    action = ledger.get_action(conn, account_id, action_id)
    partner_names, type_names = names(conn, account_id)
    known = reason_names(reasons_for(conn, account_id, action["event_type_id"]))
    return _decorate(action, partner_names, type_names, utcnow().date().isoformat(), known)


@router.get(BASE + "/actions/{action_id}/details")
def action_details(request: Request, action_id: str, user: Viewer) -> Response:
    number = action_id_of(action_id)
    action = read(request, lambda conn: action_view(conn, user.account.id, number))
    return render.fragment("_action_details.html", action=action)


@router.get(BASE + "/actions/{action_id}")
def action_page(request: Request, action_id: str, user: Viewer) -> Response:
    number = action_id_of(action_id)
    action = read(request, lambda conn: action_view(conn, user.account.id, number))
    return render.page(request, "action.html", title=f"Action {number}", user=user, section="actions",
                       action=action, back=back_of(request.query_params.get("back")))


def back_of(value: Any) -> str:
    """Where to go after a change: a page of the list (a path of ours), else the Actions tab."""
    if isinstance(value, str) and value.startswith(BASE + "/") and "\n" not in value and "\\" not in value:
        return value[:2000]
    return f"{BASE}/actions"


def note_of(form: Any) -> str | None:
    value = form.get("note")
    if not isinstance(value, str) or not value.strip():
        return None
    if len(value) > MAX_NOTE:
        raise ValidationFailed(f"A note has at most {MAX_NOTE:,} characters.")
    return value.strip()


def reason_of(form: Any) -> str | None:
    value = form.get("reason")
    return value.strip()[:200] if isinstance(value, str) and value.strip() else None


DONE = {"APPROVED": "approved", "RESTORED": "restored (pending again)", "REVERSED": "reversed",
        "MODIFIED": "modified"}


def done_message(action_id: int, answer: Mapping[str, Any]) -> str:
    if answer.get("outcome") == "unchanged":
        return f"Action {action_id} was already so; nothing changed."
    kind = answer["updates"][-1]["kind"] if answer.get("updates") else ""
    return f"Action {action_id} {DONE.get(kind, 'changed')}."


@router.post(BASE + "/actions/{action_id}/approve")
async def approve(request: Request, action_id: str, user: Manager) -> Response:
    form = await posted(request, user)
    number = action_id_of(action_id)
    note = note_of(form)
    answer = await run_in_threadpool(write, request, user, lambda conn, actor: ledger.change(
        conn, actor, number, wf.Approve(), note=note, commit=True))
    return render.redirect(back_of(form.get("back")), done_message(number, answer))


def action_with_reasons(conn: Connection, account_id: int, action_id: int) -> dict[str, Any]:
    """An action as the pages show it, and the reasons its event type offers (a reversal's, a modification's)."""
    action = action_view(conn, account_id, action_id)
    return {"action": action, "reasons": reasons_for(conn, account_id, action["event_type_id"])}


@router.get(BASE + "/actions/{action_id}/reverse")
def reverse_form(request: Request, action_id: str, user: Manager) -> Response:
    number = action_id_of(action_id)
    data = read(request, lambda conn: action_with_reasons(conn, user.account.id, number))
    back = back_of(request.query_params.get("back"))
    if request.query_params.get("part") == "form":
        return render.fragment("_action_reverse.html", csrf=user.csrf_token, back=back, in_dialog=True, **data)
    return render.page(request, "action_reverse.html", title=f"Reverse action {number}", user=user,
                       section="actions", back=back, **data)


@router.post(BASE + "/actions/{action_id}/reverse")
async def reverse(request: Request, action_id: str, user: Manager) -> Response:
    form = await posted(request, user)
    number = action_id_of(action_id)
    reason, note = reason_of(form), note_of(form)
    if reason is None:
        raise ValidationFailed("Choose a reason for the reversal.")
    answer = await run_in_threadpool(write, request, user, lambda conn, actor: ledger.change(
        conn, actor, number, wf.Reverse(reason), note=note, commit=True))
    return render.redirect(back_of(form.get("back")), done_message(number, answer))


# --- several actions ---------------------------------------------------------------------------------


def bulk_change(request: Request, user: SignedIn, ids: list[int], command: wf.Command,
                note: str | None) -> tuple[int, int, list[str]]:
    """``command`` on each action, each in a transaction of its own: (changed, unchanged, refusals)."""
    changed = unchanged = 0
    refused: list[str] = []
    for action_id in ids:
        def one(conn: Connection, actor: Actor, action_id: int = action_id) -> dict[str, Any]:
            return ledger.change(conn, actor, action_id, command, note=note, commit=True)

        try:
            answer = write(request, user, one)
        except PayoutdeskError as exc:
            refused.append(f"action {action_id}: {exc.detail.rstrip('.')}")
            continue
        if answer["outcome"] == "unchanged":
            unchanged += 1
        else:
            changed += 1
    return changed, unchanged, refused


def bulk_message(operation: str, changed: int, unchanged: int, refused: list[str]) -> str:
    verb = "approved" if operation == "approve" else "reversed"
    parts = [f"{changed} {verb}"]
    if unchanged:
        parts.append(f"{unchanged} unchanged")
    text = ", ".join(parts)
    if refused:
        text += f", {len(refused)} refused: " + "; ".join(refused[:3])
        if len(refused) > 3:
            text += f"; and {len(refused) - 3} more"
    return text + "."


@router.post(BASE + "/bulk")
async def bulk(request: Request, user: Manager) -> Response:
    form = await posted(request, user)
    back = back_of(form.get("back"))
    raw = [v for v in form.getlist("ids") if isinstance(v, str)]
    if len(raw) > MAX_BULK:
        raise ValidationFailed(f"At most {MAX_BULK} actions at once; {len(raw):,} were selected.")
    ids: list[int] = []
    for value in raw:
        number = parse_id(value)
        if number is None:
            raise ValidationFailed(f"{shorten(value, 40)} is not an action id.")
        if number not in ids:
            ids.append(number)
    if not ids:
        return render.redirect(back, "Select at least one action first.")
    operation = form.get("operation")
    command: wf.Command
    if operation == "approve":
        command = wf.Approve()
    elif operation == "reverse":
        reason = reason_of(form)
        if reason is None:
            raise ValidationFailed("Choose a reason to reverse the selected actions.")
        command = wf.Reverse(reason)
    else:
        raise ValidationFailed("Choose Approve selected or Reverse selected.")
    note = note_of(form)
    changed, unchanged, refused = await run_in_threadpool(bulk_change, request, user, ids, command, note)
    return render.redirect(back, bulk_message(str(operation), changed, unchanged, refused))


# --- re-processing the filtered list (R13, ledger.reprocess) ------------------------------------------


def reprocess_message(counts: Mapping[str, int]) -> str:
    """A sync run's counts in words."""
    chosen = counts.get("chosen", 0)
    text = (f"Re-processed {chosen} action{'' if chosen == 1 else 's'}: {counts['reattributed']} moved to another "
            f"partner, {counts['recalculated']} recalculated, {counts['unchanged']} unchanged, "
            f"{counts['skipped_locked']} skipped (locked or approved), {counts['skipped_reversed']} skipped "
            f"(reversed)")
    if counts.get("not_attributable"):
        text += f"; no click qualified for {counts['not_attributable']}"
    return text + "."


@router.post(BASE + "/reprocess")
async def reprocess_filtered(request: Request, user: Manager) -> Response:
    """Re-process the filtered list: its order id and event-date range are the criteria (partner, event type
    and the other filters do not narrow a run)."""
    form = await posted(request, user)
    values = {name: str(form.get(name) or "").strip()[:200] for name in ("order_id", "event_date_from",
                                                                       "event_date_to")}
    if not any(values.values()):
        raise ValidationFailed("Re-processing needs an Order ID or an event date range: filter the list by one "
                               "first, then choose Re-process.")
    criteria = reprocess.criteria(None, values["event_date_from"] or None, values["event_date_to"] or None,
                                  [values["order_id"]] if values["order_id"] else None)
    status, answer = await run_in_threadpool(write, request, user, lambda conn, actor: reprocess.start(
        conn, actor.account_id, criteria, asked_by=actor.name))
    if status == 202:
        return render.redirect(f"/settings/file-submissions/{answer['id']}",
                               f"More than {reprocess.SYNC_LIMIT:,} actions: re-processing runs as a job; its "
                               f"counts move here as it runs.")
    return render.redirect(back_of(form.get("back")), reprocess_message(answer))
