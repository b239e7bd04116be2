"""The CSV export, each line built by the database.

The database renders every action as one finished CSV line (text cells neutralised and quoted,
amounts formatted with the currency's exponent, times as ISO text, ``\\r\\n`` at the end) and
joins a batch of lines into one text value; Python only passes the text on. The output is byte
for byte what ``csv.writer`` (``QUOTE_MINIMAL``, ``lineterminator="\\r\\n"``) writes for the
row ``service.export_rows`` describes: ``tests/test_export_fast.py`` keeps that reference
implementation and compares both on both backends.

Batches are keyset pages by id (``id > last ORDER BY id LIMIT batch``), so memory stays flat
whatever the size of the export.

The rules, as SQL, per column:

- ``order_id``, ``customer_id``, ``promo_code``: neutralised (a quote in front of a cell
  that starts with ``= + - @``, a tab or a carriage return; NULL is empty), then quoted;
- ``status_detail`` (R16, as ``ledger.schedule.status_detail``): REVERSED the reversal reason (quoted,
  NULL is empty); APPROVED ``PAID`` from the clearing date on, else ``PAYMENT_PENDING``; any other
  state ``OPEN`` without a locking date, else empty;
- ``clearing_date`` (the last column, R16, as ``contracts.terms.payment_date`` of the UTC day of
  ``locked_at`` under the contract's ``pay_after``): APPROVED actions only, ``YYYY-MM-DD``; a time the
  database cannot read as a date, or a date past 9999-12-31, is empty;
- quoting as ``QUOTE_MINIMAL`` does it: in double quotes, inner quotes doubled, when the cell
  holds a comma, a double quote, ``\\r`` or ``\\n``;
- ``state`` and ``currency`` are written as they are: a workflow state and an ISO 4217 code never
  hold a character that needs quoting;
- amounts: ``kit.money.format_amount`` (integer division by 10^exponent, the exponent chosen by
  the currency as ``kit.money.exponent`` does; a minus sign in front of negative amounts);
- ``event_date``, ``locked_at``: ``kit.time.iso``; ``locking_date``: ``YYYY-MM-DD``; NULL is empty.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Select, bindparam, literal_column, select

from payoutdesk.kit.db import is_sqlite
from payoutdesk.kit.money import _EXPONENT_EXCEPTIONS
from payoutdesk.kit.time import utcnow
from payoutdesk.ledger.repository import Filters, filtered
from payoutdesk.models import actions

BATCH = 10_000

# the first characters that get a quote put in front of a text cell: = + - @ \t \r
_DANGEROUS_CODES = (61, 43, 45, 64, 9, 13)
_AMOUNTS = ("amount", "payout", "intended_amount", "intended_payout")
_TEXT_COLS = (
    "id", "campaign_id", "event_type_id", "partner_id", "order_id", "customer_id", "promo_code", "event_date",
    "state", "reason", "currency", "amount", "payout", "intended_amount", "intended_payout", "locking_date",
    "locked_at",
)


def _exponent_groups() -> dict[int, list[str]]:
    """The currencies whose exponent is not 2, by exponent (``kit.money.exponent``)."""
    groups: dict[int, list[str]] = {}
    for code, exp in sorted(_EXPONENT_EXCEPTIONS.items()):
        groups.setdefault(exp, []).append(code)
    return groups


def _in_list(codes: Sequence[str]) -> str:
    return ", ".join(f"'{c}'" for c in codes)


# --- SQLite ----------------------------------------------------------------------------------

_SQLITE_SPECIAL = "'*[,\"\r\n]*'"  # GLOB: holds a comma, a double quote, \r or \n


def _sqlite_danger(col: str) -> str:
    whens = " ".join(f"WHEN {c} THEN 1" for c in _DANGEROUS_CODES)
    return f"CASE unicode({col}) {whens} ELSE 0 END"


def _sqlite_cell(col: str, *, neutralise: bool) -> str:
    """A text cell, NULL as empty (printf's %s writes NULL as nothing)."""
    quoted = f"'\"' || replace({col}, '\"', '\"\"') || '\"'"
    if not neutralise:
        return f"CASE WHEN {col} GLOB {_SQLITE_SPECIAL} THEN {quoted} ELSE {col} END"
    danger = _sqlite_danger(col)
    quoted_n = f"'\"' || CASE WHEN {danger} THEN '''' ELSE '' END || replace({col}, '\"', '\"\"') || '\"'"
    return (f"CASE WHEN {col} GLOB {_SQLITE_SPECIAL} THEN {quoted_n} "
            f"WHEN {danger} THEN '''' || {col} ELSE {col} END")


def _sqlite_time(col: str) -> str:
    """``kit.time.iso`` of a stored UTC time, NULL as NULL.

    SQLAlchemy stores a time as ``YYYY-MM-DD HH:MM:SS.ffffff``: for that form (before the year 9999,
    where ``strftime`` gives up) the text is cut and pasted, which is what ``strftime`` writes for
    it; any other stored form goes through ``strftime``.
    """
    # (the unary + drops the column's NUMERIC affinity, which would compare '9999' as a number)
    return (f"CASE WHEN length({col}) = 26 AND +{col} < '9999' "
            f"THEN substr({col}, 1, 10) || 'T' || substr({col}, 12, 8) || 'Z' "
            f"ELSE strftime('%Y-%m-%dT%H:%M:%SZ', {col}) END")


def _sqlite_clearing() -> str:
    """R16's clearing date of the row (text ``YYYY-MM-DD``), NULL unless APPROVED: the last day of the month
    ``pay_months`` after the month of ``locked_at``, + ``pay_days``, from the action's contract (SQLite's
    date() answers NULL past the year 9999, as Python's date cannot go there)."""
    clearing = ("date(actions.locked_at, 'start of month', '+' || (pc.pay_months + 1) || ' months', '-1 day', "
                "'+' || pc.pay_days || ' days')")
    return (f"CASE WHEN state = 'APPROVED' THEN (SELECT {clearing} FROM contracts AS pc "
            "WHERE pc.id = actions.contract_id) END")


def _sqlite_detail(today: str) -> str:
    """R16's status detail as a cell (``ledger.schedule.status_detail``)."""
    return (f"CASE state WHEN 'REVERSED' THEN {_sqlite_cell('reason', neutralise=False)} "
            f"WHEN 'APPROVED' THEN CASE WHEN ({_sqlite_clearing()}) <= '{today}' THEN 'PAID' "
            "ELSE 'PAYMENT_PENDING' END "
            "ELSE CASE WHEN locking_date IS NULL THEN 'OPEN' ELSE '' END END")


def _sqlite_line(exp: int, *, signed: bool, today: str) -> str:
    """printf of one whole line for a currency exponent (amounts never negative unless ``signed``)."""
    if exp == 0:
        amount_fmt = ",".join(["%d"] * 4)
        amount_args = list(_AMOUNTS)
    elif signed:
        amount_fmt = ",".join([f"%s%d.%0{exp}d"] * 4)
        amount_args = [a for m in _AMOUNTS for a in (f"iif({m} < 0, '-', '')", f"abs({m}) / {10**exp}",
                                                      f"abs({m}) % {10**exp}")]
    else:
        amount_fmt = ",".join([f"%d.%0{exp}d"] * 4)
        amount_args = [a for m in _AMOUNTS for a in (f"{m} / {10**exp}", f"{m} % {10**exp}")]
    fmt = f"%d,%d,%d,%d,%s,%s,%s,%s,%s,%s,%s,{amount_fmt},%s,%s,%s"
    args = [
        "id", "campaign_id", "event_type_id", "partner_id",
        _sqlite_cell("order_id", neutralise=True), _sqlite_cell("customer_id", neutralise=True),
        _sqlite_cell("promo_code", neutralise=True), _sqlite_time("event_date"), "state",
        _sqlite_detail(today), "currency", *amount_args, "locking_date",
        _sqlite_time("locked_at"), _sqlite_clearing(),
    ]
    return f"printf('{fmt}' || char(13, 10), {', '.join(args)})"


def _sqlite_exp_line(exp: int, today: str) -> str:
    if exp == 0:
        return _sqlite_line(0, signed=False, today=today)
    return (f"CASE WHEN min({', '.join(_AMOUNTS)}) >= 0 THEN {_sqlite_line(exp, signed=False, today=today)} "
            f"ELSE {_sqlite_line(exp, signed=True, today=today)} END")


def _sqlite_line_sql(today: str) -> str:
    groups = _exponent_groups()
    whens = " ".join(f"WHEN currency IN ({_in_list(codes)}) THEN {_sqlite_exp_line(exp, today)}"
                     for exp, codes in groups.items())
    everyone = _in_list([c for codes in groups.values() for c in codes])
    return (f"CASE WHEN currency IN ({everyone}) THEN CASE {whens} END "
            f"ELSE {_sqlite_exp_line(2, today)} END")


# --- PostgreSQL ------------------------------------------------------------------------------


def _pg_cell(col: str, *, neutralise: bool) -> str:
    """A text cell, NULL as empty."""
    special = " OR ".join(f"strpos({col}, {c}) > 0" for c in ("','", "'\"'", "E'\\r'", "E'\\n'"))
    danger = f"ascii({col}) IN ({', '.join(str(c) for c in _DANGEROUS_CODES)})"
    prefix = f"CASE WHEN {danger} THEN '''' ELSE '' END || " if neutralise else ""
    quoted = f"'\"' || {prefix}replace({col}, '\"', '\"\"') || '\"'"
    plain = f"CASE WHEN {danger} THEN '''' || {col} ELSE {col} END" if neutralise else col
    return f"coalesce(CASE WHEN {special} THEN {quoted} ELSE {plain} END, '')"


def _pg_time(col: str) -> str:
    return f"coalesce(to_char(timezone('UTC', {col}), 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '')"


def _pg_unit() -> str:
    """10^-exponent of the row's currency, as a numeric of that scale (amount * unit is formatted)."""
    def unit(exp: int) -> str:
        return "1::numeric" if exp == 0 else "0." + "0" * (exp - 1) + "1"

    groups = _exponent_groups()
    whens = " ".join(f"WHEN currency IN ({_in_list(codes)}) THEN {unit(exp)}" for exp, codes in groups.items())
    everyone = _in_list([c for codes in groups.values() for c in codes])
    return f"CASE WHEN currency IN ({everyone}) THEN CASE {whens} END ELSE {unit(2)} END"


def _pg_clearing() -> str:
    """R16's clearing date (a date; NULL unless APPROVED, or past 9999-12-31): the last day of the month
    ``pay_months`` after the month of ``locked_at`` (UTC), + ``pay_days``, from the action's contract."""
    clearing = ("((date_trunc('month', timezone('UTC', actions.locked_at)) + make_interval(months => pc.pay_months + 1)"
                " - interval '1 day')::date + pc.pay_days)")
    return (f"CASE WHEN state = 'APPROVED' THEN (SELECT CASE WHEN {clearing} <= DATE '9999-12-31' THEN {clearing} "
            "END FROM contracts AS pc WHERE pc.id = actions.contract_id) END")


def _pg_line_sql(today: str) -> str:
    """One line without its terminator (the lines of a batch are joined with \\r\\n); ``clearing`` is the
    page's column of ``_pg_clearing``."""
    args = [
        "id", "campaign_id", "event_type_id", "partner_id",
        _pg_cell("order_id", neutralise=True), _pg_cell("customer_id", neutralise=True),
        _pg_cell("promo_code", neutralise=True), _pg_time("event_date"), "state",
        (f"CASE state WHEN 'REVERSED' THEN {_pg_cell('reason', neutralise=False)} "
         f"WHEN 'APPROVED' THEN CASE WHEN clearing <= DATE '{today}' THEN 'PAID' ELSE 'PAYMENT_PENDING' END "
         "ELSE CASE WHEN locking_date IS NULL THEN 'OPEN' ELSE '' END END"),
        "currency", *(f"{m} * unit" for m in _AMOUNTS),
        # a date has no to_char of its own: as a timestamp, not the timestamptz it would become
        "coalesce(to_char(locking_date::timestamp, 'YYYY-MM-DD'), '')", _pg_time("locked_at"),
        "coalesce(to_char(clearing::timestamp, 'YYYY-MM-DD'), '')",
    ]
    return f"concat_ws(',', {', '.join(args)})"


# --- the export ------------------------------------------------------------------------------


def _batch_statement(conn: Connection, account_id: int, f: Filters, batch: int) -> tuple[Select[Any], bool]:
    """The statement that returns one batch as (text, last id, rows); True when lines lack \\r\\n."""
    a = actions.c
    today = utcnow().date().isoformat()  # R16: PAID from the clearing date on (our own text, inlined)
    if is_sqlite(conn):
        page = filtered(select(a.id, literal_column(_sqlite_line_sql(today)).label("line")), account_id, f)
        page_sq = page.where(a.id > bindparam("last")).order_by(a.id).limit(batch).subquery("page")
        # before SQLite 3.44 an aggregate has no ORDER BY: it takes the rows in the page's order
        ordered = " ORDER BY page.id" if sqlite3.sqlite_version_info >= (3, 44) else ""
        agg: Any = literal_column(f"group_concat(page.line, ''{ordered})")
        return select(agg, literal_column("max(page.id)"), literal_column("count(*)")).select_from(page_sq), False
    cols = [a[c] for c in _TEXT_COLS]
    page = filtered(select(*cols, literal_column(_pg_unit()).label("unit"),
                           literal_column(_pg_clearing()).label("clearing")), account_id, f)
    page_sq = page.where(a.id > bindparam("last")).order_by(a.id).limit(batch).subquery("page")
    agg = literal_column(f"string_agg({_pg_line_sql(today)}, E'\\r\\n' ORDER BY page.id)")
    return select(agg, literal_column("max(page.id)"), literal_column("count(*)")).select_from(page_sq), True


def csv_lines(conn: Connection, account_id: int, f: Filters, batch: int = BATCH) -> Iterator[str]:
    """The CSV lines of every matching action in id order (no header), one text per batch."""
    stmt, add_terminator = _batch_statement(conn, account_id, f, batch)
    last = 0
    while True:
        text, top, count = conn.execute(stmt, {"last": last}).one()
        if not count:
            return
        yield text + "\r\n" if add_terminator else text
        if count < batch:
            return
        last = top
