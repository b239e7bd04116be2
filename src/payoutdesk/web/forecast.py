"""Engage → Transactions → Lock Forecast: what locks on which date (``ledger.forecast``), drawn as a chart
(server-rendered SVG, one bar per locking date of the payout total, one chart per currency), with the same
numbers as a table beside it for screen readers, the open-ended actions, and per date the payout per partner.
Read-only; the filters (campaign, partner, locking date from/to) live in the address."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Connection

from payoutdesk.catalog import repository as catalog_repo
from payoutdesk.errors import PayoutdeskError
from payoutdesk.kit.ids import ref32
from payoutdesk.kit.money import format_amount
from payoutdesk.ledger import forecast as lf
from payoutdesk.models import campaigns, partners
from payoutdesk.web import fields, render
from payoutdesk.web.session import Viewer, read

router = APIRouter(include_in_schema=False)

PATH = "/pending-payouts/forecast"
FIELDS = ("campaign_id", "partner_id", "locking_date_from", "locking_date_to")
# the chart's geometry (SVG user units): plot area inside the margins
WIDTH, HEIGHT = 760, 280
LEFT, RIGHT, TOP, BOTTOM = 84, 16, 16, 58
MAX_LABELS = 12  # dates labelled under the axis at most (every k-th beyond)


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str  # the date
    text: str  # "2026-12-17: 12.00 USD, 2 actions"
    tick: bool  # the date is written under the axis


def filters_of(params: Mapping[str, str]) -> tuple[lf.ForecastFilters, dict[str, str]]:
    """The forecast's filters from the query, and the form's values."""
    form = {name: (params.get(name) or "").strip()[:40] for name in FIELDS}
    return lf.ForecastFilters(ref32(fields.ident(form, "campaign_id", "Campaign")),
                              ref32(fields.ident(form, "partner_id", "Partner")),
                              fields.day(form, "locking_date_from", "Locking date from"),
                              fields.day(form, "locking_date_to", "Locking date to")), form


def charts(rows: list[lf.ForecastRow]) -> list[dict[str, Any]]:
    """One chart per currency: a bar per locking date of the payout total (minor units scaled to the
    tallest bar), the y axis's top value, and the table of the same numbers."""
    sums: dict[str, dict[date, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for r in rows:
        if r.locking_date is not None:
            cell = sums[r.currency][r.locking_date]
            cell[0] += r.count
            cell[1] += r.payout
    out = []
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    for currency, by_day in sorted(sums.items()):
        days = sorted(by_day)
        top = max(*(v[1] for v in by_day.values()), 1)
        slot = plot_w / len(days)
        every = -(-len(days) // MAX_LABELS)
        bars = []
        for i, d in enumerate(days):
            n, payout = by_day[d]
            h = round(plot_h * max(payout, 0) / top, 1)
            text = f"{d.isoformat()}: {format_amount(payout, currency)} {currency}, {n} action{'' if n == 1 else 's'}"
            bars.append(Bar(round(LEFT + i * slot + slot * 0.15, 1), round(TOP + plot_h - h, 1),
                            round(max(slot * 0.7, 1.0), 1), h, d.isoformat(), text, i % every == 0))
        out.append({
            "currency": currency, "bars": bars, "top": format_amount(top, currency),
            "rows": [(d.isoformat(), by_day[d][0], format_amount(by_day[d][1], currency)) for d in days],
            "first": days[0].isoformat(), "last": days[-1].isoformat(),
        })
    return out


def money(payout: Mapping[str, str]) -> str:
    """{"USD": "12.00"} as "12.00 USD" (several currencies joined with "; ")."""
    return "; ".join(f"{v} {cur}" for cur, v in payout.items()) or "0"


@router.get(PATH, response_class=HTMLResponse)
def forecast_page(request: Request, user: Viewer) -> Response:
    account_id = user.account.id
    error = ""
    filters: lf.ForecastFilters | None
    try:
        filters, form = filters_of(request.query_params)
    except PayoutdeskError as exc:
        error, filters = exc.detail, None
        form = {name: (request.query_params.get(name) or "").strip()[:40] for name in FIELDS}

    def load(conn: Connection) -> dict[str, Any]:
        camps = catalog_repo.by_name(conn, campaigns, account_id)
        people = catalog_repo.by_name(conn, partners, account_id)
        if filters is None:
            return {"campaigns": camps, "partners": people, "rows": [], "forecast": None}
        return {"campaigns": camps, "partners": people, "rows": lf.forecast_rows(conn, account_id, filters),
                "forecast": lf.forecast(conn, account_id, filters)}

    data = read(request, load)
    result = data["forecast"]
    columns: list[dict[str, Any]] = []  # the partners that appear, in name order
    if result is not None:
        seen: dict[int, str] = {}
        for group in [*result["dates"], result["open_ended"]]:
            group["by_partner"] = {p["partner_id"]: p for p in group["partners"]}
            for p in group["partners"]:
                seen[p["partner_id"]] = p["partner_name"] or f"Partner {p['partner_id']}"
        ordered = sorted(seen.items(), key=lambda kv: (kv[1].lower(), kv[0]))
        columns = [{"id": pid, "name": name} for pid, name in ordered]
    return render.page(
        request, "forecast.html", title="Lock Forecast", user=user, section="forecast", form=form, error=error,
        campaigns=data["campaigns"], partners=data["partners"], forecast=result, charts=charts(data["rows"]),
        columns=columns, money=money, width=WIDTH, height=HEIGHT, left=LEFT, right=RIGHT, top=TOP,
        bottom=BOTTOM, filtered=any(form.values()),
    )
