"""The CSV export built by the database (``ledger.export``) is byte for byte the export as it was
written in Python (``csv.writer`` over the rows of the keyset stream), kept here as the reference.

Compared on both backends over nasty data: quotes, commas, CR/LF inside cells, cells starting with
= + - @, tabs, CRs and spaces, unicode, empty strings and NULLs, negative and huge amounts,
currencies with 0, 2, 3 and 4 decimals, open-ended (NULL) locking dates, locked and unlocked
actions, times with and without microseconds; with filters, and with batches small enough that
every keyset step runs.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, String, func, insert, select, type_coerce

from payoutdesk.catalog import service as catalog
from payoutdesk.contracts.terms import payment_date
from payoutdesk.kit import db
from payoutdesk.kit.db import is_sqlite
from payoutdesk.kit.money import exponent, format_amount
from payoutdesk.kit.time import utcnow
from payoutdesk.ledger import export, schedule
from payoutdesk.ledger import repository as repo
from payoutdesk.ledger import service as ledger
from payoutdesk.ledger.schedule import pay_periods
from payoutdesk.models import actions
from tests.helpers import World, make_world

# --- the reference: the export as it was before ledger.export (frozen copy) -------------------

_DANGEROUS = ("=", "+", "-", "@", "\t", "\r")


def _neutralise(cell: str | None) -> str:
    if cell is None:
        return ""
    return "'" + cell if cell.startswith(_DANGEROUS) else cell


def _amount_format(currency: str) -> Callable[[int], str]:
    if exponent(currency) != 2:
        return lambda minor: format_amount(minor, currency)

    def fmt(minor: int) -> str:
        return f"{minor // 100}.{minor % 100:02d}" if minor >= 0 else format_amount(minor, currency)

    return fmt


def _iso_time(conn: Connection, col: Any) -> Any:
    if is_sqlite(conn):
        return func.strftime("%Y-%m-%dT%H:%M:%SZ", col)
    return func.to_char(func.timezone("UTC", col), 'YYYY-MM-DD"T"HH24:MI:SS"Z"')


def _iso_day(conn: Connection, col: Any) -> Any:
    if is_sqlite(conn):
        return type_coerce(col, String)
    return func.to_char(col, "YYYY-MM-DD")


def _stream(conn: Connection, account_id: int, f: repo.Filters, batch: int = 10_000) -> Iterator[Sequence[Any]]:
    a = actions.c
    cols = [
        a.id, a.campaign_id, a.event_type_id, a.partner_id, a.order_id, a.customer_id, a.promo_code,
        _iso_time(conn, a.event_date), a.state, a.reason, a.currency, a.amount, a.payout, a.intended_amount,
        a.intended_payout, _iso_day(conn, a.locking_date), _iso_time(conn, a.locked_at), a.contract_id,
    ]
    last = 0
    while True:
        stmt = repo.filtered(select(*cols), account_id, f).where(a.id > last)
        rows = conn.execute(stmt.order_by(a.id).limit(batch)).all()
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def reference_export(conn: Connection, account_id: int, filters: repo.Filters) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(ledger.EXPORT_COLUMNS)
    formats: dict[str, Callable[[int], str]] = {}

    today = utcnow().date()

    def clearing(r: Sequence[Any]) -> date | None:
        """R16 (contracts.terms.payment_date) of the UTC day of locked_at, APPROVED only."""
        if r[8] != "APPROVED" or not r[16]:
            return None
        try:
            return payment_date(date.fromisoformat(r[16][:10]), pay_periods(conn, [r[17]])[r[17]])
        except (ValueError, OverflowError):
            return None

    def line(r: Sequence[Any]) -> tuple[Any, ...]:
        c = r[10]
        fmt = formats.get(c)
        if fmt is None:
            fmt = formats[c] = _amount_format(c)
        day = clearing(r)
        detail = schedule.status_detail(r[8], r[9], date(1, 1, 1) if r[15] else None, day, today) or ""
        return (
            r[0], r[1], r[2], r[3], _neutralise(r[4]), _neutralise(r[5]), _neutralise(r[6]), r[7], r[8],
            detail, c, fmt(r[11]), fmt(r[12]), fmt(r[13]), fmt(r[14]), r[15] or "", r[16] or "",
            day.isoformat() if day else "",
        )

    for batch in _stream(conn, account_id, filters):
        for start in range(0, len(batch), 2000):
            writer.writerows(map(line, batch[start:start + 2000]))
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


# --- nasty data --------------------------------------------------------------------------------

PIECES = [
    ",", '"', "\r", "\n", "\r\n", "'", "=", "+", "-", "@", " ", "\t", ";", "|", "\\", "%", "%s", "%d", "é", "☃",
    "日本", "😀", "a", "Z", "0", "9", "x y", '""', ",,", "=1+1", "NULL", "null", "\u00a0", "\u2028", "€",
]
# the fullwidth - and = at the end are not dangerous
FIRSTS = ["", "=", "+", "-", "@", "\t", "\r", "\n", " ", '"', ",", "'", "é", "\uff0d", "\uff1d"]
CURRENCIES = ["USD", "EUR", "JPY", "KRW", "KWD", "BHD", "CLF", "UYW", "ISK", "GBP"]
AMOUNTS = [0, 1, 5, 9, 10, 99, 100, 101, 999, 1000, 1001, 9999, 10_000, 12_345, 123_456_789, 10**15, 10**15 - 1,
           -1, -5, -99, -100, -101, -1001, -12_345, -(10**15)]
STATES = ["PENDING", "APPROVED", "REVERSED", "LOCKED"]
REASONS = [None, "", "Wrong_Size", "a,b", 'say "no"', "line\nbreak", "cr\rhere", "=cmd", "-1", "ünïcödé", " pad "]


def _text(rnd: random.Random, *, nullable: bool) -> str | None:
    r = rnd.random()
    if nullable and r < 0.12:
        return None
    if r < 0.2:
        return ""
    s = rnd.choice(FIRSTS) + "".join(rnd.choice(PIECES) for _ in range(rnd.randrange(0, 6)))
    return s[:200] or "x"


def _time(rnd: random.Random) -> datetime:
    r = rnd.random()
    if r < 0.05:
        return datetime(1, 1, 1, tzinfo=UTC)
    if r < 0.1:
        return datetime(9998, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    base = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=rnd.randrange(10 * 365 * 86400))
    return base + timedelta(microseconds=rnd.choice((0, 0, 1, 500_000, 999_499, 999_500, 999_999,
                                                    rnd.randrange(1_000_000))))


def _fill(engine: Engine, n: int, seed: int) -> tuple[World, list[int]]:
    rnd = random.Random(seed)
    w, other = make_world(engine), make_world(engine)
    with db.write(engine) as conn:
        c2 = catalog.create_campaign(conn, w.actor, "Yen", "JPY", None, "mail.test")["id"]
    rows: list[dict[str, Any]] = []
    with db.write(engine) as conn:
        ids = repo.reserve_action_ids(conn, n + n // 5)
        for k, i in enumerate(ids):
            acc = w if k % 6 else other
            at = _time(rnd)
            cur = rnd.choice(CURRENCIES)
            lock_day = None if rnd.random() < 0.25 else date(2020, 1, 1) + timedelta(days=rnd.randrange(4000))
            locked = None if rnd.random() < 0.5 else _time(rnd)
            signed = rnd.random() < 0.15
            amount = [rnd.choice(AMOUNTS) if signed else abs(rnd.choice(AMOUNTS)) for _ in range(4)]
            if rnd.random() < 0.3:
                amount = [rnd.randrange(0, 10**rnd.randrange(1, 16)) for _ in range(4)]
            rows.append({
                "id": i, "account_id": acc.account_id,
                "campaign_id": rnd.choice((w.campaign_id, c2)) if acc is w else acc.campaign_id,
                "event_type_id": rnd.choice((acc.sale, acc.lead)), "partner_id": rnd.choice(acc.partners),
                "contract_id": acc.contract_id, "order_id": _text(rnd, nullable=False),
                "customer_id": _text(rnd, nullable=True), "promo_code": _text(rnd, nullable=True),
                "event_date": at, "state": rnd.choice(STATES), "reason": rnd.choice(REASONS), "currency": cur,
                "amount": amount[0], "payout": amount[1], "intended_amount": amount[2],
                "intended_payout": amount[3], "locking_date": lock_day, "lock_due": lock_day or date(2030, 1, 1),
                "locked_at": locked, "version": 1, "update_count": 1, "restore": None, "created_at": at,
            })
        conn.execute(insert(actions), rows)
        if is_sqlite(conn):
            # times stored in other forms than SQLAlchemy's (a hand-written or older row): strftime's way
            mine = [i for i, r in zip(ids, rows, strict=True) if r["account_id"] == w.account_id]
            for j, stored in enumerate(("2026-01-15 10:00:00", "2026-01-15T10:00:00", "2026-01-15 10:00:00+00:00",
                                        "2026-01-15T10:00:00.123Z", "2026-01-15 10:00", "9999-12-31 23:59:59.999999",
                                        "2026-01-15 10:00:00.123456789", "not a time")):
                conn.exec_driver_sql("UPDATE actions SET event_date = ?, locked_at = ? WHERE id = ?",
                                     (stored, stored, mine[j]))
    return w, [c2]


@pytest.fixture(scope="module")
def data(engine: Engine) -> tuple[World, list[int]]:
    return _fill(engine, 1500, 11)


def _both(engine: Engine, account_id: int, f: repo.Filters) -> tuple[str, str]:
    with db.read(engine) as conn:
        old = "".join(reference_export(conn, account_id, f))
        new = "".join(ledger.export_rows(conn, account_id, f))
    return old, new


def test_export_is_byte_for_byte_the_reference(engine: Engine, data: tuple[World, list[int]]) -> None:
    w, _ = data
    old, new = _both(engine, w.account_id, repo.Filters())
    assert old.count("\r\n") > 1250  # every action of the tenant (and no other tenant's)
    for k, (a, b) in enumerate(zip(old.split("\r\n"), new.split("\r\n"), strict=False)):
        assert a == b, f"line {k}"
    assert new == old
    assert next(csv.reader(io.StringIO(new, newline=""))) == list(ledger.EXPORT_COLUMNS)
    # R16's status details all occur, and clearing dates (the last column) of APPROVED actions
    details = {row[9] for row in csv.reader(io.StringIO(new, newline=""))}
    assert {"PAID", "PAYMENT_PENDING", "OPEN", ""} <= details
    assert any(line.endswith(("-20", "-21")) for line in new.split("\r\n") if ",APPROVED," in line)


@pytest.mark.parametrize("batch", [1, 7, 250, 10_000])
def test_every_batch_size(engine: Engine, data: tuple[World, list[int]], batch: int) -> None:
    w, _ = data
    with db.read(engine) as conn:
        old = "".join(reference_export(conn, w.account_id, repo.Filters()))
        new = "".join(export.csv_lines(conn, w.account_id, repo.Filters(), batch=batch))
    assert old.split("\r\n", 1)[1] == new


def test_filters(engine: Engine, data: tuple[World, list[int]]) -> None:
    w, (yen,) = data
    cases = [
        repo.Filters(state="REVERSED"), repo.Filters(campaign_id=yen), repo.Filters(partner_id=w.partners[1]),
        repo.Filters(event_type_id=w.lead), repo.Filters(state="LOCKED", campaign_id=w.campaign_id),
        repo.Filters(event_date_from=datetime(2024, 1, 1, tzinfo=UTC)),
        repo.Filters(event_date_from=datetime(2022, 3, 1, 12, tzinfo=UTC),
                     event_date_to=datetime(2026, 5, 1, tzinfo=UTC)),
        repo.Filters(locking_date_from=date(2025, 1, 1), locking_date_to=date(2027, 6, 30)),
        repo.Filters(state="NOTHING"), repo.Filters(order_id=""),
    ]
    for f in cases:
        old, new = _both(engine, w.account_id, f)
        assert new == old, f


def test_an_empty_export_is_the_header(engine: Engine) -> None:
    w = make_world(engine)
    old, new = _both(engine, w.account_id, repo.Filters())
    assert new == old == ",".join(ledger.EXPORT_COLUMNS) + "\r\n"
