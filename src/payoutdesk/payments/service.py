"""Payments owed: per partner and clearing date, the locked APPROVED actions' count and payout, and the
payments recorded against them (table ``payments``, migration 0010).

An action's clearing date depends only on the month it locked in and its contract's ``pay_after``
(``contracts.terms.payment_date``), so the owed side is one GROUP BY of the account's locked APPROVED
actions by partner, contract, currency and locking month; the few groups are then dated in Python
and merged per (partner, clearing date, currency). Money stays in minor units until formatted.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Connection, String, func, insert, select, type_coerce

from payoutdesk.catalog.service import get_owned
from payoutdesk.context import Actor
from payoutdesk.contracts.terms import payment_date
from payoutdesk.errors import ValidationFailed, quote
from payoutdesk.kit.db import is_sqlite
from payoutdesk.kit.money import check_currency, format_amount, parse_amount
from payoutdesk.kit.time import iso, utcnow
from payoutdesk.ledger.schedule import pay_periods
from payoutdesk.models import actions, partners, payments

CSV_COLUMNS = ("partner_id", "partner_name", "clearing_date", "currency", "actions", "owed", "paid", "difference",
               "due")


@dataclass(frozen=True)
class PaymentFilters:
    partner_id: int | None = None
    clearing_date_from: date | None = None
    clearing_date_to: date | None = None


Key = tuple[int, date, str]  # partner, clearing date, currency


def owed_groups(conn: Connection, account_id: int, partner_id: int | None = None) -> dict[Key, list[int]]:
    """(partner, clearing date, currency) -> [actions, payout owed] of the locked APPROVED actions."""
    a = actions.c
    if is_sqlite(conn):
        month: Any = func.substr(type_coerce(a.locked_at, String), 1, 7)
    else:
        month = func.to_char(func.timezone("UTC", a.locked_at), "YYYY-MM")
    stmt = (select(a.partner_id, a.contract_id, a.currency, month.label("m"), func.count().label("n"),
                   func.sum(a.payout).label("p"))
            .where(a.account_id == account_id, a.state == "APPROVED", a.locked_at.is_not(None))
            .group_by(a.partner_id, a.contract_id, a.currency, month))
    if partner_id is not None:
        stmt = stmt.where(a.partner_id == partner_id)
    rows = list(conn.execute(stmt))
    periods = pay_periods(conn, {int(r.contract_id) for r in rows})
    out: dict[Key, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        try:
            locked_month = date.fromisoformat(f"{r.m}-01")
            clearing = payment_date(locked_month, periods[int(r.contract_id)])
        except (ValueError, OverflowError, KeyError):
            continue  # a time the database could not give as a month, or a clearing date past the year 9999
        group = out[(int(r.partner_id), clearing, str(r.currency))]
        group[0] += int(r.n)
        group[1] += int(r.p or 0)
    return dict(out)


def paid_groups(conn: Connection, account_id: int, partner_id: int | None = None) -> dict[Key, int]:
    p = payments.c
    stmt = (select(p.partner_id, p.clearing_date, p.currency, func.sum(p.amount).label("s"))
            .where(p.account_id == account_id).group_by(p.partner_id, p.clearing_date, p.currency))
    if partner_id is not None:
        stmt = stmt.where(p.partner_id == partner_id)
    return {(int(r.partner_id), r.clearing_date, str(r.currency)): int(r.s) for r in conn.execute(stmt)}


def report(conn: Connection, account_id: int, f: PaymentFilters, today: date | None = None) -> dict[str, Any]:
    """Per partner and clearing date (soonest first): actions, owed, paid, difference (owed - paid), due
    (the clearing date has come) and cleared (paid covers what was owed); totals per currency."""
    today = today or utcnow().date()
    owed = owed_groups(conn, account_id, f.partner_id)
    paid = paid_groups(conn, account_id, f.partner_id)
    keys = [k for k in owed.keys() | paid.keys()
            if (f.clearing_date_from is None or k[1] >= f.clearing_date_from)
            and (f.clearing_date_to is None or k[1] <= f.clearing_date_to)]
    keys.sort(key=lambda k: (k[1], k[0], k[2]))
    ids = {k[0] for k in keys}
    names = {int(r.id): str(r.name) for r in conn.execute(
        select(partners.c.id, partners.c.name).where(partners.c.id.in_(sorted(ids))))} if ids else {}
    items = []
    totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for pid, day, cur in keys:
        n, owed_minor = owed.get((pid, day, cur), [0, 0])
        paid_minor = paid.get((pid, day, cur), 0)
        due = day <= today
        items.append({
            "partner_id": pid, "partner_name": names.get(pid), "clearing_date": day.isoformat(), "currency": cur,
            "actions": n, "owed": format_amount(owed_minor, cur), "paid": format_amount(paid_minor, cur),
            "difference": format_amount(owed_minor - paid_minor, cur), "due": due,
            "cleared": paid_minor >= owed_minor,
        })
        t = totals[cur]
        t["actions"] += n
        t["owed"] += owed_minor
        t["paid"] += paid_minor
        if due:
            t["due"] += owed_minor
    return {
        "items": items,
        "totals": [{"currency": cur, "actions": t["actions"], "owed": format_amount(t["owed"], cur),
                    "due": format_amount(t["due"], cur), "paid": format_amount(t["paid"], cur),
                    "difference": format_amount(t["owed"] - t["paid"], cur)} for cur, t in sorted(totals.items())],
    }


def _cell(value: object) -> object:
    """A CSV text cell neutralised as the export does it (a quote before = + - @, tab or CR)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def report_csv(conn: Connection, account_id: int, f: PaymentFilters) -> Iterator[str]:
    """The report's lines as CSV (``CSV_COLUMNS``); numbers stay numbers."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    for r in report(conn, account_id, f)["items"]:
        w.writerow([r["partner_id"], _cell(r["partner_name"]), r["clearing_date"], r["currency"], r["actions"],
                    r["owed"], r["paid"], r["difference"], "yes" if r["due"] else "no"])
    yield buf.getvalue()


def record_payment(conn: Connection, actor: Actor, data: Mapping[str, Any]) -> dict[str, Any]:
    """Record a payment ``{partner_id, clearing_date, amount, reference?, currency?}``; the currency is the
    one of the partner's actions owed on that clearing date unless given (needed when there are several,
    or none)."""
    partner_id = data.get("partner_id")
    if isinstance(partner_id, bool) or not isinstance(partner_id, int):
        raise ValidationFailed("partner_id is required, the id of one of your partners.")
    get_owned(conn, partners, actor.account_id, partner_id, "partner")
    raw_day = data.get("clearing_date")
    try:
        day = date.fromisoformat(raw_day) if isinstance(raw_day, str) and len(raw_day) == 10 else None
    except ValueError:
        day = None
    if day is None:
        raise ValidationFailed(f"clearing_date must be a date like 2026-12-20, not {quote(raw_day)}.")
    currency = data.get("currency")
    if currency is None:
        owed = {k[2] for k in owed_groups(conn, actor.account_id, partner_id) if k[1] == day}
        if len(owed) != 1:
            raise ValidationFailed(f"Give the currency: partner {partner_id} is owed "
                                   f"{'nothing' if not owed else 'in several currencies'} on {day.isoformat()}.")
        currency = owed.pop()
    currency = check_currency(str(currency))
    amount = parse_amount(data.get("amount"), currency)
    reference = data.get("reference")
    if reference is not None and (not isinstance(reference, str) or len(reference) > 200):
        raise ValidationFailed("reference is a text of at most 200 characters.")
    now = utcnow()
    pk = conn.execute(insert(payments).values(
        account_id=actor.account_id, partner_id=partner_id, clearing_date=day, currency=currency, amount=amount,
        reference=reference, actor=actor.name, created_at=now)).inserted_primary_key
    assert pk is not None
    return {"id": int(pk[0]), "partner_id": partner_id, "clearing_date": day.isoformat(), "currency": currency,
            "amount": format_amount(amount, currency), "reference": reference, "created_at": iso(now)}
