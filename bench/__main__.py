"""Entry point of ``make bench``: ``python -m bench [--actions N] [--backend ...] [--only ...] [--quick]``.

Generates (or, with ``--keep``, reuses) the data set on each backend, measures the actions list,
the CSV export, the lock run and single-action changes over the API, each beside its bare-SQL
floor, prints a table and writes the figures as JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import datagen
from .backends import Backend, machine, open_backend, reset_database
from .pages import bench_page
from .work import bench_api, bench_export, bench_list, bench_lock, count_actions

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
WORKS = ("list", "page", "export", "lock", "api")
TARGETS = {"list": 0.050, "page": 0.100, "export": 150_000, "lock": 200_000, "api": 500}


def log(msg: str) -> None:
    print(msg, flush=True)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--actions", type=int, default=None, help="actions in the data set (default 5,000,000)")
    p.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--only", default=",".join(WORKS), help="comma-separated subset of " + ",".join(WORKS))
    p.add_argument("--quick", action="store_true", help="50,000 actions, fewer samples, short API runs")
    p.add_argument("--rounds", type=int, default=3, help="runs per figure; medians are quoted (default 3)")
    p.add_argument("--lock-rounds", type=int, default=None, help="runs of the lock run (default: --rounds)")
    p.add_argument("--samples", type=int, default=None, help="list: samples per filter and round (default 20)")
    p.add_argument("--api-seconds", type=float, default=None, help="length of one API run (default 10 s)")
    p.add_argument("--api-clients", type=int, default=8, help="concurrent API clients (default 8)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--data-dir", type=Path, default=ROOT / "data" / "bench")
    p.add_argument("--keep", action="store_true",
                   help="keep the generated data (and the PostgreSQL cluster) for the next run, and reuse it")
    p.add_argument("--out", type=Path, default=None, help="JSON results file (default bench/results/...)")
    p.add_argument("--report", type=Path, default=None, help="only print the table of a results file")
    a = p.parse_args(argv)
    if a.actions is None:
        a.actions = 50_000 if a.quick else 5_000_000
    if a.samples is None:
        a.samples = 8 if a.quick else 20
    if a.api_seconds is None:
        a.api_seconds = 3.0 if a.quick else 10.0
    a.only = [w.strip() for w in a.only.split(",") if w.strip()]
    unknown = set(a.only) - set(WORKS)
    if unknown:
        p.error(f"unknown work: {', '.join(sorted(unknown))}")
    return a


def prepare(name: str, args: argparse.Namespace) -> tuple[Backend, datagen.Meta, float | None]:
    tag = f"bench-{args.actions}-s{args.seed}-g{datagen.GENERATOR_VERSION}"
    backend = open_backend(name, args.data_dir, tag, args.keep)
    meta = None
    if args.keep:
        try:
            with backend.engine.connect() as conn:
                meta = datagen.read_meta(conn)
        except Exception:
            meta = None
    if meta is not None and meta.actions == args.actions and meta.seed == args.seed:
        log(f"  reusing the {meta.actions:,} actions generated before ({backend.url})")
        datagen.db.migrate(backend.url)
        datagen.sync_indexes(backend, log)
        return backend, meta, None
    reset_database(backend)
    log(f"  generating {args.actions:,} actions (seed {args.seed}) ...")
    t0 = time.perf_counter()
    meta = datagen.generate(backend, args.actions, args.seed, log)
    return backend, meta, time.perf_counter() - t0


def run_backend(name: str, args: argparse.Namespace) -> dict[str, Any]:
    log(f"== {name}")
    backend, meta, gen_s = prepare(name, args)
    out: dict[str, Any] = {"backend": name, "actions": meta.actions, "generation_seconds": gen_s,
                           "load_average_start": os.getloadavg()}
    try:
        out["actions_in_db"] = count_actions(backend.engine)
        out["machine"] = machine([backend])
        if "list" in args.only:
            log("  actions list (service: db.read + ledger.list_actions, limit 50)")
            out["list"] = bench_list(backend, meta, args.rounds, args.samples, log)
        if "page" in args.only:
            log("  Pending Payouts page (HTML, server time; beside the list service)")
            out["page"] = bench_page(backend, meta, args.rounds, max(4, args.samples // 2), log)
        if "export" in args.only:
            log("  CSV export (ledger.export_rows)")
            out["export"] = bench_export(backend, meta, args.rounds, log)
        if "api" in args.only:
            log(f"  single-action changes over the API ({args.api_clients} clients)")
            out["api"] = bench_api(backend, meta, args.rounds, args.api_seconds, args.api_clients, log)
        if "lock" in args.only:
            log(f"  lock run of {meta.lock_due:,} due actions (ledger.lock_run)")
            out["lock"] = bench_lock(backend, meta, args.lock_rounds or args.rounds, log)
    finally:
        out["load_average_end"] = os.getloadavg()
        backend.close()
    return out


def summary(results: list[dict[str, Any]]) -> list[str]:
    lines = ["| backend | work | size | median | p95 | floor | ratio | target | met |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        b, n = r["backend"], r["actions"]
        if "list" in r:
            lst = r["list"]
            for name, f in lst["filters"].items():
                for kind in ("first", "later"):
                    p95, floor = f[f"{kind}_p95"], f[f"floor_{kind}_p95"]
                    if p95 != p95:  # nan: a single-row filter has no later page
                        continue
                    lines.append(
                        f"| {b} | list {name}, {kind} page | {n:,} | {f[f'{kind}_p50'] * 1e3:.1f} ms | "
                        f"{p95 * 1e3:.1f} ms | {floor * 1e3:.1f} ms | {p95 / floor if floor else 0:.1f}x | "
                        f"p95 <= 50 ms | {'yes' if p95 <= TARGETS['list'] else 'NO'} |")
        if "page" in r:
            for name, f in r["page"]["cases"].items():
                for kind in ("first", "later"):
                    p95, floor = f[f"{kind}_p95"], f[f"floor_{kind}_p95"]
                    if p95 != p95:  # nan: no later page
                        continue
                    lines.append(
                        f"| {b} | page {name}, {kind} page | {n:,} | {f[f'{kind}_p50'] * 1e3:.1f} ms | "
                        f"{p95 * 1e3:.1f} ms | {floor * 1e3:.1f} ms (list) | {p95 / floor if floor else 0:.1f}x | "
                        f"p95 <= 100 ms | {'yes' if p95 <= TARGETS['page'] else 'NO'} |")
        if "export" in r:
            e = r["export"]
            lines.append(
                f"| {b} | CSV export | {e['rows']:,} | {e['rows_per_s']:,.0f} rows/s | | "
                f"{e['floor_rows_per_s']:,.0f} rows/s | {e['rows_per_s'] / e['floor_rows_per_s']:.0%} | "
                f">= 150,000 rows/s | {'yes' if e['rows_per_s'] >= TARGETS['export'] else 'NO'} |")
            lines.append(
                f"| {b} | CSV export peak memory | {e['rows_small']:,} / {e['rows']:,} | "
                f"+{e['peak_growth_mb_small']:.0f} MB / +{e['peak_growth_mb']:.0f} MB | | | | constant | "
                f"{'yes' if e['peak_growth_mb'] <= e['peak_growth_mb_small'] + 20 else 'NO'} |")
        if "lock" in r:
            k = r["lock"]
            k["floor_per_s"] = k["floor_per_s"] or float("nan")
            lines.append(
                f"| {b} | lock run | {k['due']:,} | {k['per_s']:,.0f} actions/s | | {k['floor_per_s']:,.0f}/s | "
                f"{k['per_s'] / k['floor_per_s']:.0%} | >= 200,000/s | "
                f"{'yes' if k['per_s'] >= TARGETS['lock'] else 'NO'} |")
        if "api" in r:
            a = r["api"]
            lines.append(
                f"| {b} | API modify, {a['clients']} clients | {n:,} | {a['per_s']:,.0f} changes/s | "
                f"{a['lat_p95_ms']:.1f} ms | {a['floor_per_s']:,.0f}/s | {a['per_s'] / a['floor_per_s']:.0%} | "
                f">= 500/s | {'yes' if a['per_s'] >= TARGETS['api'] else 'NO'} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.report:
        for line in summary(json.loads(args.report.read_text())["results"]):
            log(line)
        return 0
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    started = datetime.now(UTC)
    cmd = "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv)
    results = []
    for name in backends:
        results.append(run_backend(name, args))
        _write(args, started, cmd, results)
    log("")
    for line in summary(results):
        log(line)
    path = _write(args, started, cmd, results)
    log(f"\nresults: {path}")
    return 0


def _write(args: argparse.Namespace, started: datetime, cmd: str, results: list[dict[str, Any]]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    suffix = ".tmp" if args.quick or args.actions < 5_000_000 else ".json"
    path = args.out or RESULTS / f"bench-{started:%Y%m%dT%H%M%SZ}-{args.actions}{suffix}"
    path.write_text(json.dumps({"started": started.isoformat(), "command": cmd, "results": results},
                               indent=2, default=str))
    return path


if __name__ == "__main__":
    raise SystemExit(main())
