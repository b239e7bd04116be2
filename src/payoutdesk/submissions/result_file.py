"""A submission's results as a CSV file (``result_<file name>.csv``): what each row did, streamed a page of
rows at a time, each page in a short read transaction. Channels send it back the way the file came: our
FTP server's ``results/`` folder, the brand's server of a pull, a reply mail.

Columns: ``Row,Outcome,ActionId,AmountBefore,AmountAfter,PayoutBefore,PayoutAfter,State,Column,Type,Code,
Message``. A file that failed whole has one line with the reason (Outcome ``failed``). A text cell that
begins with ``=``, ``+``, ``-`` or ``@`` gets a leading quote, as in the export (DESIGN §6); numbers stay
numbers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine

from payoutdesk.kit import db
from payoutdesk.kit.money import format_amount
from payoutdesk.models import campaigns
from payoutdesk.submissions import repository as repo

PAGE = 10_000
HEADER = ("Row", "Outcome", "ActionId", "AmountBefore", "AmountAfter", "PayoutBefore", "PayoutAfter", "State",
          "Column", "Type", "Code", "Message")
_DANGEROUS = ("=", "+", "-", "@", "\t", "\r")


def result_name(file_name: str | None, label: str) -> str:
    """``result_<file name>.csv`` (``result_returns.csv.csv`` is avoided: ``result_returns.csv``)."""
    base = (file_name or label).replace("/", "_").replace("\\", "_")
    return f"result_{base}" if base.lower().endswith(".csv") else f"result_{base}.csv"


def _text(value: str | None) -> str:
    if not value:
        return ""
    return "'" + value if value.startswith(_DANGEROUS) else value


def _line(cells: tuple[Any, ...]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(cells)
    return out.getvalue().encode()


def csv_chunks(engine: Engine, submission_id: int) -> Iterator[bytes]:
    """The result file of a submission that is done (COMPLETE or FAILED), in pieces of about 1 MB."""
    with db.read(engine) as conn:
        sub = repo.get(conn, submission_id)
        if sub is None:
            return
        currency = str(conn.execute(campaigns.select().where(campaigns.c.id == sub.campaign_id)).one().currency)

    def money(v: int | None) -> str:
        return "" if v is None else format_amount(v, currency)

    yield b"\xef\xbb\xbf" + _line(HEADER)  # a byte-order mark: spreadsheets then read UTF-8
    if sub.status == "FAILED":
        yield _line(("", "failed", "", "", "", "", "", "", "", "VALIDATION", "file_failed", _text(sub.failure)))
        return
    after = 0
    while True:
        with db.read(engine) as conn:
            rows = repo.results(conn, submission_id, errors_only=False, after_row=after, limit=PAGE)
        if not rows:
            return
        buf = bytearray()
        for r in rows:
            buf += _line((r.row_no, r.outcome, r.action_id or "", money(r.amount_before), money(r.amount_after),
                          money(r.payout_before), money(r.payout_after), r.state_after or "",
                          _text(r.column_name), r.error_type or "", r.code or "", _text(r.message)))
        after = int(rows[-1].row_no)
        yield bytes(buf)


ERROR_HEADER = ("Row", "ActionId", "OrderId", "Column", "Type", "Code", "Message")


def errors_csv_chunks(engine: Engine, submission_id: int) -> Iterator[bytes]:
    """A submission's errors as CSV (the pages' "Download errors as CSV"): one line per row in error with
    its action and order id when known, streamed a page at a time, each page in a short read transaction;
    text cells neutralised as in the result file. A file that failed whole has one line with the reason."""
    with db.read(engine) as conn:
        sub = repo.get(conn, submission_id)
    if sub is None:
        return
    yield b"\xef\xbb\xbf" + _line(ERROR_HEADER)
    if sub.status == "FAILED" and sub.failure:
        yield _line(("", "", "", "", "VALIDATION", "file_failed", _text(sub.failure)))
        return
    after = 0
    while True:
        with db.read(engine) as conn:
            rows = repo.errors_with_orders(conn, submission_id, after, PAGE)
        if not rows:
            return
        buf = bytearray()
        for r in rows:
            buf += _line((r.row_no, r.action_id or "", _text(r.order_id), _text(r.column_name), r.error_type or "",
                          r.code or "", _text(r.message)))
        after = int(rows[-1].row_no)
        yield bytes(buf)
