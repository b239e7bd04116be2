"""The sorts of the actions list (GET /api/v1/actions?sort=…) at scale: p50/p95 per sort and filter.

    .venv/bin/python -m bench.sorts --backend sqlite|postgresql|both [--keep] [--actions 5000000]
        [--samples 8] [--sorts locking_date,-amount] [--filters none,state,partner_id]

The data of ``make bench`` (``bench/datagen.py``, seed 42, the same tag, so ``--keep`` reuses the
5,000,000 actions that ``python -m bench --keep`` generated). For each sort and filter (the filters
the Pending Payouts page offers: none, state, partner, event type, order id, action id, promo code,
the reversal reason, event-date ranges; random values): ``--samples`` first pages and as many later
pages (the first page's ``next_cursor``), ``ledger.service.list_actions`` with ``limit=50`` in
``db.read`` as the route runs it; p50 and p95 in ms. The default sort (``-event_date``) is the
tuned ``list_page``, measured by ``make bench``; it is here for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import datagen
from bench.backends import machine, open_backend
from bench.work import list_filters
from payoutdesk.kit import db
from payoutdesk.kit.db import migrate
from payoutdesk.ledger import repository as repo
from payoutdesk.ledger import service as ledger

FILTERS = ("none", "state", "partner_id", "event_type_id", "order_id", "action_id", "promo_code", "reason",
           "event_date(7d)", "event_date(120d)", "event_date(from)", "event_date(to)", "state+event_date(7d)",
           "partner_id+event_date(7d)", "state=REVERSED+partner_id")


def _ms(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def filters_of(meta: datagen.Meta) -> dict[str, Callable[[random.Random], repo.Filters]]:
    specs = list_filters(meta)
    specs["promo_code"] = lambda r: repo.Filters(promo_code=r.choice(("SPRING10", "WELCOME", "BF2026")))
    specs["reason"] = lambda r: repo.Filters(state="REVERSED", reason="ITEM_RETURNED")  # the Reversed tab
    return specs


def run(backend_name: str, n: int, keep: bool, samples: int, sorts: list[str], names: list[str]) -> dict[str, Any]:
    tag = f"bench-{n}-s42-g{datagen.GENERATOR_VERSION}"
    backend = open_backend(backend_name, Path("data/bench"), tag, keep)
    try:
        meta = None
        try:
            with db.read(backend.engine) as conn:
                meta = datagen.read_meta(conn)
        except Exception:
            meta = None
        if meta is None or meta.actions != n:
            meta = datagen.generate(backend, n, 42, print)
        else:
            migrate(backend.url)
            datagen.sync_indexes(backend, print)
        specs = filters_of(meta)
        out: dict[str, Any] = {"machine": machine([backend]), "load_average_start": os.getloadavg(), "cases": {}}
        for sort in sorts:
            for name in names:
                rnd = random.Random(f"{sort}|{name}")
                first, later = [], []
                for _ in range(samples):
                    f = specs[name](rnd)
                    t0 = time.perf_counter()
                    with db.read(backend.engine) as conn:
                        page = ledger.list_actions(conn, meta.account_id, f, 50, None, sort)
                    first.append((time.perf_counter() - t0) * 1000)
                    if page["next_cursor"]:
                        t0 = time.perf_counter()
                        with db.read(backend.engine) as conn:
                            ledger.list_actions(conn, meta.account_id, f, 50, page["next_cursor"], sort)
                        later.append((time.perf_counter() - t0) * 1000)
                row = {"first": _ms(first), "later": _ms(later) if later else None}
                out["cases"][f"{sort} | {name}"] = row
                (fp50, fp95), (lp50, lp95) = _ms(first), _ms(later) if later else (0.0, 0.0)
                print(f"{backend_name:10} {sort:14} {name:26} first p50 {fp50:8.1f} p95 {fp95:8.1f}   "
                      f"later p50 {lp50:8.1f} p95 {lp95:8.1f} ms", flush=True)
        out["load_average_end"] = os.getloadavg()
        return out
    finally:
        backend.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--actions", type=int, default=5_000_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--sorts", default=",".join(s for s in repo.SORTS if s != repo.DEFAULT_SORT))
    parser.add_argument("--filters", default=",".join(FILTERS))
    parser.add_argument("--tag", default="", help="a word for the result file's name")
    args = parser.parse_args()
    names = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    sorts, filters = args.sorts.split(","), args.filters.split(",")
    results = {name: run(name, args.actions, args.keep, args.samples, sorts, filters) for name in names}
    stamp = time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())
    out = Path("bench/results") / f"sorts-{stamp}-{args.actions}{'-' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
