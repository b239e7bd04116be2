"""The lock forecast: what locks on which date, per partner and in total, and what is open-ended.

One GROUP BY over the account's unlocked, unreversed actions (``locked_at IS NULL AND state <>
'REVERSED'``: PENDING, and APPROVED that has not locked, which approve never leaves), by locking date,
partner and currency, on ``ix_actions_locking_date (account_id, locking_date, id)``; open-ended actions
(no locking date) form their own group. Money stays integers in minor units until ``forecast_dict``
formats it per currency.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select

from payoutdesk.kit.money import format_amount
from payoutdesk.models import actions, partners


@dataclass(frozen=True)
class ForecastFilters:
    campaign_id: int | None = None
    partner_id: int | None = None
    locking_date_from: date | None = None
    locking_date_to: date | None = None


@dataclass(frozen=True)
class ForecastRow:
    locking_date: date | None  # None: open-ended
    partner_id: int
    currency: str
    count: int
    payout: int  # minor units


def forecast_rows(conn: Connection, account_id: int, f: ForecastFilters) -> list[ForecastRow]:
    """The groups (locking date, partner, currency) with their count and payout; open-ended actions are
    counted whatever the date range (they have no locking date)."""
    a = actions.c
    stmt = (select(a.locking_date, a.partner_id, a.currency, func.count().label("n"), func.sum(a.payout).label("p"))
            .where(a.account_id == account_id, a.locked_at.is_(None), a.state != "REVERSED"))
    if f.campaign_id is not None:
        stmt = stmt.where(a.campaign_id == f.campaign_id)
    if f.partner_id is not None:
        stmt = stmt.where(a.partner_id == f.partner_id)
    dated = []
    if f.locking_date_from is not None:
        dated.append(a.locking_date >= f.locking_date_from)
    if f.locking_date_to is not None:
        dated.append(a.locking_date <= f.locking_date_to)
    if dated:
        stmt = stmt.where(or_(a.locking_date.is_(None), and_(*dated)))
    stmt = stmt.group_by(a.locking_date, a.partner_id, a.currency)
    return [ForecastRow(r.locking_date, int(r.partner_id), str(r.currency), int(r.n), int(r.p or 0))
            for r in conn.execute(stmt)]


def _money(sums: dict[str, int]) -> dict[str, str]:
    return {cur: format_amount(v, cur) for cur, v in sorted(sums.items())}


def _group(rows: list[ForecastRow], names: dict[int, str]) -> dict[str, Any]:
    count = sum(r.count for r in rows)
    total: dict[str, int] = defaultdict(int)
    per: dict[int, tuple[int, dict[str, int]]] = {}
    for r in rows:
        total[r.currency] += r.payout
        n, sums = per.setdefault(r.partner_id, (0, defaultdict(int)))
        sums[r.currency] += r.payout
        per[r.partner_id] = (n + r.count, sums)
    return {
        "count": count,
        "payout": _money(total),
        "partners": [{"partner_id": pid, "partner_name": names.get(pid), "count": n, "payout": _money(sums)}
                     for pid, (n, sums) in sorted(per.items())],
    }


def forecast(conn: Connection, account_id: int, f: ForecastFilters) -> dict[str, Any]:
    """The forecast as the API answers it: ``dates`` (each locking date, soonest first, with its count, payout
    per currency and per partner), ``open_ended`` and ``total`` (dated and open-ended together). A range
    whose start is after its end holds no date (as the actions list's filters)."""
    rows = forecast_rows(conn, account_id, f)
    ids = {r.partner_id for r in rows}
    names = {int(r.id): str(r.name) for r in conn.execute(
        select(partners.c.id, partners.c.name).where(partners.c.id.in_(sorted(ids))))} if ids else {}
    by_date: dict[date, list[ForecastRow]] = defaultdict(list)
    for r in rows:
        if r.locking_date is not None:
            by_date[r.locking_date].append(r)
    total = _group(rows, names)
    return {
        "dates": [{"locking_date": d.isoformat(), **_group(rs, names)} for d, rs in sorted(by_date.items())],
        "open_ended": _group([r for r in rows if r.locking_date is None], names),
        "total": {"count": total["count"], "payout": total["payout"]},
    }
