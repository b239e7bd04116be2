"""One CSV export (or its bare-SQL floor) in a fresh process, so that its peak memory is its own.

``python -m bench.export_child URL ACCOUNT_ID EVENT_DATE_FROM service|floor`` prints one JSON line.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from payoutdesk.kit import db
from payoutdesk.ledger import repository as repo
from payoutdesk.ledger import service as ledger
from payoutdesk.models.types import UTCDateTime

from .stats import reset_peak_rss, rss_kb

FLOOR_SQL = (
    "SELECT id, campaign_id, event_type_id, partner_id, order_id, customer_id, promo_code, event_date, state, "
    "reason, currency, amount, payout, intended_amount, intended_payout, locking_date, locked_at "
    "FROM actions WHERE account_id = {p} AND event_date >= {p} ORDER BY id"
)


def run_service(engine: Engine, account_id: int, since: datetime) -> tuple[int, int]:
    rows = nbytes = 0
    with db.read(engine) as conn:
        for chunk in ledger.export_rows(conn, account_id, repo.Filters(event_date_from=since)):
            nbytes += len(chunk)
            rows += chunk.count("\n")
    return rows - 1, nbytes  # minus the header line


def run_floor(engine: Engine, account_id: int, since: datetime) -> tuple[int, int]:
    """The same rows fetched by one bare SELECT on the DBAPI connection (no conversion, no CSV)."""
    proc = UTCDateTime().bind_processor(engine.dialect)
    bound = proc(since) if proc else since
    raw = engine.raw_connection()
    try:
        dbapi: Any = raw.driver_connection
        sqlite = engine.dialect.name == "sqlite"
        cur = dbapi.cursor()
        cur.execute(FLOOR_SQL.format(p="?" if sqlite else "%s"), (account_id, bound))
        rows = 0
        while True:
            batch = cur.fetchmany(10_000)
            if not batch:
                break
            rows += len(batch)
        cur.close()
        if not sqlite:
            dbapi.rollback()
    finally:
        raw.close()
    return rows, 0


def main(argv: list[str]) -> int:
    url, account, since_s, mode = argv
    engine = db.make_engine(url, pool_size=1) if not url.startswith("sqlite") else db.make_engine(url)
    since = datetime.fromisoformat(since_s)
    with db.read(engine) as conn:  # connect and load the modules before measuring
        conn.exec_driver_sql("SELECT 1")
    gc.collect()
    base = rss_kb()
    peak_reset = reset_peak_rss()
    t0 = time.perf_counter()
    fn = run_service if mode == "service" else run_floor
    rows, nbytes = fn(engine, int(account), since)
    secs = time.perf_counter() - t0
    out = {"rows": rows, "bytes": nbytes, "seconds": secs, "rss_base_kb": base,
           "rss_peak_kb": rss_kb("VmHWM"), "peak_reset": peak_reset, "rss_end_kb": rss_kb()}
    print(json.dumps(out))
    engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
