"""Engage → Transactions → Payments: per partner and clearing date the locked approved actions owed, what was
paid against them and the difference (``payments.service.report``), the same rows as CSV, and "Record a
payment" (managers and admins) through ``payments.service.record_payment``; a refusal shows the rule's
message beside the posted values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from payoutdesk.accounts.sessions import SignedIn
from payoutdesk.catalog import repository as catalog_repo
from payoutdesk.errors import PayoutdeskError, ValidationFailed
from payoutdesk.kit.ids import parse_id, ref32
from payoutdesk.models import partners
from payoutdesk.payments import service
from payoutdesk.web import fields, render
from payoutdesk.web.session import Manager, Viewer, posted, read, write

router = APIRouter(include_in_schema=False)

PATH = "/payments"
FIELDS = ("partner_id", "clearing_date_from", "clearing_date_to")
ENTRY = ("partner_id", "clearing_date", "amount", "currency", "reference")


def filters_of(params: Mapping[str, str]) -> tuple[service.PaymentFilters, dict[str, str]]:
    """The report's filters from the query, and the form's values."""
    form = {name: (params.get(name) or "").strip()[:40] for name in FIELDS}
    return service.PaymentFilters(ref32(fields.ident(form, "partner_id", "Partner")),
                                  fields.day(form, "clearing_date_from", "Clearing date from"),
                                  fields.day(form, "clearing_date_to", "Clearing date to")), form


def _page(request: Request, user: SignedIn, entry: Mapping[str, str] | None = None, entry_error: str = "",
          status: int = 200) -> Response:
    params = request.query_params
    account_id = user.account.id
    error = ""
    filters: service.PaymentFilters | None
    try:
        filters, form = filters_of(params)
    except PayoutdeskError as exc:
        error, filters = exc.detail, None
        form = {name: (params.get(name) or "").strip()[:40] for name in FIELDS}

    def load(conn: Connection) -> dict[str, Any]:
        people = catalog_repo.by_name(conn, partners, account_id)
        result = service.report(conn, account_id, filters) if filters is not None else {"items": [], "totals": []}
        return {"partners": people, "report": result}

    data = read(request, load)
    query = request.url.query
    return render.page(
        request, "payments.html", title="Payments", user=user, section="payments", status=status, form=form,
        error=error, partners=data["partners"], report=data["report"], filtered=any(form.values()),
        csv_href=f"{PATH}/export.csv" + (f"?{query}" if query else ""),
        entry=entry or dict.fromkeys(ENTRY, ""), entry_error=entry_error,
    )


@router.get(PATH, response_class=HTMLResponse)
def payments_page(request: Request, user: Viewer) -> Response:
    return _page(request, user)


@router.get(PATH + "/export.csv")
def payments_csv(request: Request, user: Viewer) -> Response:
    filters, _ = filters_of(request.query_params)
    text = "".join(read(request, lambda conn: list(service.report_csv(conn, user.account.id, filters))))
    return Response(text, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="payments.csv"',
                             "Cache-Control": "no-store"})


def payment_of(form: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The service's input from the posted form, and the values to show again after a refusal."""
    entry = {name: str(form.get(name) or "").strip()[:200] for name in ENTRY}
    partner_id = parse_id(entry["partner_id"]) if entry["partner_id"] else None
    data: dict[str, Any] = {"partner_id": ref32(partner_id) if partner_id is not None else None,
                            "clearing_date": entry["clearing_date"], "amount": entry["amount"]}
    if not entry["amount"]:
        raise ValidationFailed("Give the amount paid, like 120.50.")
    if entry["currency"]:
        data["currency"] = entry["currency"].upper()
    if entry["reference"]:
        data["reference"] = entry["reference"]
    return data, entry


@router.post(PATH, response_class=HTMLResponse)
async def record(request: Request, user: Manager) -> Response:
    form = await posted(request, user)
    entry = {name: str(form.get(name) or "").strip()[:200] for name in ENTRY}
    try:
        data, entry = payment_of(form)
        paid = await run_in_threadpool(write, request, user,
                                       lambda conn, actor: service.record_payment(conn, actor, data))
    except PayoutdeskError as exc:
        return _page(request, user, entry, exc.detail, status=exc.status)
    name = next((str(p.name) for p in read(request, lambda conn: catalog_repo.list_rows(
        conn, partners, user.account.id)) if p.id == paid["partner_id"]), f"partner {paid['partner_id']}")
    ref = f" (reference {paid['reference']})" if paid.get("reference") else ""
    return render.redirect(PATH, f"Payment of {paid['amount']} {paid['currency']} to {name} for "
                                 f"{paid['clearing_date']} recorded{ref}.")
