"""The sorts of the actions list (GET /api/v1/actions?sort=…) at scale: p50/p95 per sort and filter.

    .venv/bin/python -m bench.sorts --actions 1000000 --backend sqlite|postgresql|both [--keep]

Data as ``bench/datagen.py`` writes it (the same generator as ``make bench``). For each sort and
filter: 10 first pages and 10 later pages (the cursor of a first page), ``ledger.service.list_actions``
with ``limit=50`` in ``db.read`` as the route runs it; p50 and p95 in ms. The default sort
(``-event_date``) is the tuned ``list_page``, measured by ``make bench``; it is here for comparison.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

from bench.backends import open_backend
from bench.datagen import generate, read_meta
from payoutdesk.kit import db
from payoutdesk.ledger import repository as repo
from payoutdesk.ledger import service as ledger


def _ms(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def run(backend_name: str, n: int, keep: bool) -> dict[str, Any]:
    backend = open_backend(backend_name, Path("data/bench"), f"sorts-{n}", keep)
    try:
        with db.read(backend.engine) as conn:
            try:
                meta = read_meta(conn)
            except Exception:
                meta = None
        if meta is None:
            meta = generate(backend, n, 42, print)
        rnd = random.Random(7)
        filters: dict[str, Any] = {
            "none": repo.Filters,
            "campaign": lambda: repo.Filters(campaign_id=rnd.choice(meta.campaigns)),
            "partner": lambda: repo.Filters(partner_id=rnd.choice(meta.partners)),
            "state REVERSED": lambda: repo.Filters(state="REVERSED"),
        }
        out: dict[str, Any] = {}
        for sort in repo.SORTS:
            for name, make in filters.items():
                first, later = [], []
                for _ in range(10):
                    f = make()
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
                out[f"{sort} | {name}"] = row
                print(f"{backend_name:10} {sort:14} {name:15} first p50 {row['first'][0]:8.1f} p95 "
                      f"{row['first'][1]:8.1f}   later p50 {row['later'][0] if later else 0:8.1f} p95 "
                      f"{row['later'][1] if later else 0:8.1f} ms", flush=True)
        return out
    finally:
        backend.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--actions", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    names = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results = {name: run(name, args.actions, args.keep) for name in names}
    out = Path("bench/results") / f"sorts-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{args.actions}.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
