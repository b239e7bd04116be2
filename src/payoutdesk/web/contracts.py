"""Contracts: the terms per partner, read-only (DESIGN §4): payout per event type (percent or fixed, category
percents), the locking period (lock after), the payment period (pay after) and the referral window."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Connection

from payoutdesk.catalog import repository as catalog_repo
from payoutdesk.catalog import service as catalog
from payoutdesk.kit.ids import parse_id
from payoutdesk.models import campaigns, contracts, event_types, partners
from payoutdesk.web import render
from payoutdesk.web.session import Viewer, read

router = APIRouter(include_in_schema=False)


def period_text(period: dict[str, int]) -> str:
    """{"months": 1, "days": 3} as "1 month 3 days"; nothing as "none"."""
    parts = []
    for key, one in (("months", "month"), ("days", "day")):
        n = int(period.get(key, 0))
        if n:
            parts.append(f"{n} {one}{'' if n == 1 else 's'}")
    return " ".join(parts) or "none"


def contract_rows(conn: Connection, account_id: int, partner_id: int | None = None) -> list[dict[str, Any]]:
    """The account's contracts (of one partner when given), by partner, campaign and start, each with
    ``catalog.contract_dict``'s terms, the names of its partner, campaign and event types, and ``ends_on``
    (the day before the next contract of the same partner and campaign starts; None while open)."""
    camps = {r.id: r for r in catalog_repo.list_rows(conn, campaigns, account_id)}
    names = {r.id: r.name for r in catalog_repo.list_rows(conn, partners, account_id)}
    ets = {r.id: r.name for r in catalog_repo.list_rows(conn, event_types, account_id)}
    rows = catalog_repo.list_rows(conn, contracts, account_id, partner_id=partner_id)
    out = []
    for row in rows:
        currency = camps[row.campaign_id].currency
        c = catalog.contract_dict(conn, row, currency)
        c["partner"] = names.get(row.partner_id, f"#{row.partner_id}")
        c["campaign"] = camps[row.campaign_id].name
        c["currency"] = currency
        c["payout_lines"] = [
            (ets.get(p["event_type_id"], f"#{p['event_type_id']}"),
             f"{p['percent']} %" if "percent" in p else f"{p['fixed']} {currency} fixed")
            for p in c["payout"]
        ]
        c["lock_text"] = period_text(c["lock_after"])
        c["pay_text"] = period_text(c["pay_after"])
        out.append(c)
    out.sort(key=lambda c: (c["partner"].lower(), c["partner_id"], c["campaign"].lower(), c["campaign_id"],
                            c["starts_on"], c["id"]))
    for i, c in enumerate(out):
        nxt = out[i + 1] if i + 1 < len(out) else None
        same = nxt is not None and (nxt["partner_id"], nxt["campaign_id"]) == (c["partner_id"], c["campaign_id"])
        c["ends_on"] = (date.fromisoformat(nxt["starts_on"]) - timedelta(days=1)).isoformat() if same and nxt else None
    return out


@router.get("/contracts", response_class=HTMLResponse)
def contracts_page(request: Request, user: Viewer, partner: str = "") -> Response:
    partner_id = parse_id(partner) if partner else None

    def load(conn: Connection) -> tuple[list[Any], list[dict[str, Any]]]:
        options = catalog_repo.by_name(conn, partners, user.account.id)
        chosen = partner_id if partner_id is not None and any(r.id == partner_id for r in options) else None
        if partner and chosen is None:
            return options, []
        return options, contract_rows(conn, user.account.id, chosen)

    options, items = read(request, load)
    return render.page(request, "contracts.html", title="Contracts", user=user, section="contracts",
                       partners=options, chosen=partner_id, items=items, filtered=bool(partner))
