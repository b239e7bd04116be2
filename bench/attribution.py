"""Attribution and re-processing (issue 13): rows/s beside the floor of the required work, peak RSS.

1. Attribution: conversions without a partner recorded with ``ledger.service.record_conversion`` (which
   calls ``catalog.service.attribute_click``), ``--chunk`` conversions a transaction; floor: per conversion
   one indexed lookup of the latest qualifying click and the inserts of the action, its item and its
   CREATED history row, in bare SQL on the DBAPI connection, in the same transaction size.
2. Re-processing: ``ledger.reprocess.run_in_chunks`` (the service in chunks of ``JOB_CHUNK``, a chunk a
   transaction) over the unlocked PENDING actions of step 1, after every contract's rate went up one
   point (so each action is recalculated) and a newer click of another partner was added for a tenth of
   the customers (so those actions move); floor: the writes, set-based per chunk of the same size
   (recalculation: UPDATE of the actions' and items' payout + one history row each; a move: the reversal
   UPDATE + its history row + the new action, item and CREATED row).

Data: one account, one campaign (USD), a sale event type, 20 partners (percent contracts, 30-day
referral window, 60-day locking); clicks over the last 40 days for ``clicks / 5`` customers; every
conversion follows a click of its customer by up to 5 days (so each is attributable), order ids unique.
Seeded (42). The service rounds need fresh data (they write it), so every round regenerates.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

from payoutdesk.accounts.service import create_account
from payoutdesk.catalog import service as catalog
from payoutdesk.context import Actor
from payoutdesk.kit import db
from payoutdesk.ledger import reprocess
from payoutdesk.ledger import service as ledger
from payoutdesk.ledger import workflow as wf
from payoutdesk.models import actions, clicks

from .backends import Backend, machine, open_backend, reset_database
from .stats import median, reset_peak_rss

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
N_PARTNERS = 20
RATES = [5 + k % 5 for k in range(N_PARTNERS)]  # percent


def log(msg: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def peak_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _raw(conn: Any) -> Any:
    return conn.connection.driver_connection


def _sql(backend: Backend, sql: str) -> str:
    return sql if backend.name == "sqlite" else sql.replace("?", "%s")


def _ts(backend: Backend, value: datetime) -> Any:
    """A time as SQLAlchemy stores it (``UTCDateTime``): naive text on SQLite, aware on PostgreSQL."""
    if backend.name == "sqlite":
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    return value


# --- data ----------------------------------------------------------------------------------------


def generate(backend: Backend, n_clicks: int, n_conv: int, seed: int, now: datetime) -> dict[str, Any]:
    """Schema, catalog (through the services), clicks (bulk) and the conversions to record (in memory)."""
    reset_database(backend)
    db.migrate(backend.url)
    engine = backend.engine
    with db.write(engine) as conn:
        new = create_account(conn, "Bench Attribution")
        actor = Actor(new.account.id, "bench", wf.Channel.SYSTEM)
        from payoutdesk.kit.crypto import SecretBox
        box = SecretBox("bench-secret-key-bench-secret-key")
        camp = catalog.create_campaign(conn, actor, "Northwind US", "USD", "bench-ftp-password", "bench.local")
        sale = catalog.create_event_type(conn, actor, {"campaign_id": camp["id"], "name": "Online Sale"}, box)
        parts, contracts = [], {}
        for k in range(N_PARTNERS):
            pid = catalog.create_partner(conn, actor, f"Partner {k + 1:02d}")["id"]
            parts.append(pid)
            contracts[pid] = catalog.create_contract(conn, actor, {
                "campaign_id": camp["id"], "partner_id": pid, "starts_on": (now - timedelta(days=400)).date(),
                "payout": [{"event_type_id": sale, "percent": str(RATES[k])}],
                "lock_after": {"months": 0, "days": 60}, "pay_after": {"months": 0, "days": 20},
                "referral_window_days": 30})
    rnd = random.Random(seed)
    n_cust = max(1, n_clicks // 5)
    span = 40 * 86400
    start = now - timedelta(days=41)
    p_conv = n_conv / n_clicks
    conversions: list[tuple[str, datetime, int]] = []
    cols = ["account_id", "campaign_id", "partner_id", "customer_id", "clicked_at"]
    t0 = time.perf_counter()
    with engine.connect() as c0:
        conn = c0.execution_options(payoutdesk_write=True)
        with conn.begin():
            raw = _raw(conn)
            if backend.name == "sqlite":
                raw.execute("DROP INDEX IF EXISTS ix_clicks_customer")
            else:
                raw.execute("DROP INDEX IF EXISTS ix_clicks_customer")
            chunk = 50_000
            for first in range(0, n_clicks, chunk):
                rows = []
                for _ in range(min(chunk, n_clicks - first)):
                    cust = f"cust-{rnd.randrange(n_cust):07d}"
                    at = start + timedelta(seconds=rnd.random() * span)
                    rows.append((new.account.id, camp["id"], rnd.choice(parts), cust, at))
                    if len(conversions) < n_conv and rnd.random() < p_conv * 1.02:
                        ev = min(at + timedelta(seconds=rnd.random() * 5 * 86400), now - timedelta(minutes=5))
                        conversions.append((cust, ev, rnd.randrange(1000, 50000)))
                if backend.name == "sqlite":
                    raw.executemany(f"INSERT INTO clicks ({', '.join(cols)}) VALUES (?, ?, ?, ?, ?)",
                                    [(*r[:4], _ts(backend, r[4])) for r in rows])
                else:
                    with raw.cursor() as cur, cur.copy(f"COPY clicks ({', '.join(cols)}) FROM STDIN") as cp:
                        for r in rows:
                            cp.write_row(r)
            raw.execute("CREATE INDEX ix_clicks_customer ON clicks (campaign_id, customer_id, clicked_at)")
    while len(conversions) < n_conv:  # the rare shortfall of the draw: more conversions after drawn clicks
        cust, ev, amt = conversions[rnd.randrange(len(conversions))]
        conversions.append((cust, min(ev + timedelta(hours=1), now - timedelta(minutes=5)), amt))
    with engine.connect() as conn, conn.begin():
        conn.execute(text("ANALYZE"))
    log(f"  {backend.name}: {n_clicks:,} clicks loaded in {time.perf_counter() - t0:.1f} s")
    return {"account_id": new.account.id, "campaign_id": camp["id"], "event_type_id": sale, "partners": parts,
            "contracts": contracts, "conversions": conversions}


# --- attribution ---------------------------------------------------------------------------------


def attribution_service(backend: Backend, meta: dict[str, Any], chunk: int, now: datetime, tag: str) -> dict[str, Any]:
    actor = Actor(meta["account_id"], "bench", wf.Channel.SYSTEM)
    conv = meta["conversions"]
    et = meta["event_type_id"]
    gc.collect()
    reset_peak_rss()
    t0 = time.perf_counter()
    for first in range(0, len(conv), chunk):
        part = conv[first:first + chunk]

        def unit(conn: Any, first: int = first, part: list[tuple[str, datetime, int]] = part) -> None:
            for n, (cust, ev, amt) in enumerate(part, first):
                ledger.record_conversion(conn, actor, {
                    "event_type_id": et, "order_id": f"{tag}-{n}", "event_date": ev, "customer_id": cust,
                    "amount": f"{amt // 100}.{amt % 100:02d}"}, now)

        db.transaction(backend.engine, unit)
    secs = time.perf_counter() - t0
    return {"rows": len(conv), "seconds": secs, "rows_per_s": len(conv) / secs, "peak_rss_mb": peak_mb()}


def attribution_floor(backend: Backend, meta: dict[str, Any], chunk: int, now: datetime, tag: str) -> dict[str, Any]:
    """Bare SQL: the latest click of the customer within 30 days (index range, newest first, LIMIT 1),
    then INSERT action (+ its id back), item and CREATED history row; ``chunk`` conversions a transaction."""
    conv = meta["conversions"]
    acct, camp, et = meta["account_id"], meta["campaign_id"], meta["event_type_id"]
    rate = {pid: RATES[k] for k, pid in enumerate(meta["partners"])}
    contracts = meta["contracts"]
    pg = backend.name == "postgresql"
    lookup = _sql(backend, "SELECT id, partner_id, clicked_at FROM clicks WHERE campaign_id = ? AND customer_id = ?"
                  " AND clicked_at <= ? AND clicked_at >= ? ORDER BY clicked_at DESC LIMIT 1")
    ins_action = _sql(backend, "INSERT INTO actions (account_id, campaign_id, event_type_id, partner_id, contract_id,"
                      " order_id, customer_id, promo_code, event_date, state, reason, currency, amount, payout,"
                      " intended_amount, intended_payout, locking_date, lock_due, locked_at, version, update_count,"
                      " restore, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, 'PENDING', NULL, 'USD', ?, ?, ?, ?,"
                      " ?, ?, NULL, 1, 1, NULL, ?)" + (" RETURNING id" if pg else ""))
    ins_item = _sql(backend, "INSERT INTO action_items (action_id, position, sku, name, category, quantity, amount,"
                    " payout, intended_quantity, intended_amount, intended_payout)"
                    " VALUES (?, 0, 'ORDER', NULL, NULL, 1, ?, ?, 1, ?, ?)")
    ins_upd = _sql(backend, "INSERT INTO action_updates (action_id, at, kind, state, reason, note, delta_amount,"
                   " delta_payout, items, channel, submission_id, actor)"
                   " VALUES (?, ?, 'CREATED', 'PENDING', NULL, ?, ?, ?, ?, 'system', NULL, 'bench')")
    now_b = _ts(backend, now)
    window = timedelta(days=30)
    with backend.engine.connect() as c0:
        conn = c0.execution_options(payoutdesk_write=True)
        raw = _raw(conn)
        conn.commit()
        gc.collect()
        t0 = time.perf_counter()
        cur = raw.cursor()
        for first in range(0, len(conv), chunk):
            if not pg:
                cur.execute("BEGIN IMMEDIATE")
            for n, (cust, ev, amt) in enumerate(conv[first:first + chunk], first):
                cur.execute(lookup, (camp, cust, _ts(backend, ev), _ts(backend, ev - window)))
                click = cur.fetchone()
                pid = int(click[1])
                payout = amt * rate[pid] // 100
                day = ev.date() + timedelta(days=60)
                cur.execute(ins_action, (acct, camp, et, pid, contracts[pid], f"{tag}-{n}", cust, _ts(backend, ev),
                                         amt, payout, amt, payout, day, day, now_b))
                aid = cur.fetchone()[0] if pg else cur.lastrowid
                cur.execute(ins_item, (aid, amt, payout, amt, payout))
                cur.execute(ins_upd, (aid, now_b, f"last click {click[0]}", amt, payout,
                                      f'[["ORDER",null,null,1,{amt},{payout}]]'))
            raw.commit()
        secs = time.perf_counter() - t0
        cur.close()
    return {"rows": len(conv), "seconds": secs, "rows_per_s": len(conv) / secs}


# --- re-processing -------------------------------------------------------------------------------


def prepare_reprocess(backend: Backend, meta: dict[str, Any], share: int, tag: str) -> None:
    """Every rate one point up; for every ``share``-th action of the run ``tag`` a newer click of another
    partner just before its event (so re-processing moves it)."""
    parts = meta["partners"]
    with db.write(backend.engine) as conn:
        conn.execute(text("UPDATE contract_payouts SET rate_ppm = rate_ppm + 10000 WHERE rate_ppm IS NOT NULL"))
        rows = conn.execute(select(actions.c.id, actions.c.partner_id, actions.c.customer_id, actions.c.event_date)
                            .where(actions.c.order_id.like(f"{tag}-%")).order_by(actions.c.id)).all()
        new = []
        for k, r in enumerate(rows):
            if k % share == 0:
                other = parts[(parts.index(int(r.partner_id)) + 1) % len(parts)]
                ev = r.event_date
                new.append({"account_id": meta["account_id"], "campaign_id": meta["campaign_id"],
                            "partner_id": other, "customer_id": r.customer_id,
                            "clicked_at": ev - timedelta(seconds=1)})
        for first in range(0, len(new), 10_000):
            conn.execute(clicks.insert(), new[first:first + 10_000])


def reprocess_service(backend: Backend, meta: dict[str, Any]) -> dict[str, Any]:
    c = reprocess.criteria(campaign_id=meta["campaign_id"])
    gc.collect()
    reset_peak_rss()
    t0 = time.perf_counter()
    counts = reprocess.run_in_chunks(backend.engine, meta["account_id"], c, chunk=reprocess.JOB_CHUNK)
    secs = time.perf_counter() - t0
    out = counts.as_dict()
    rows = sum(v for k, v in out.items() if k in reprocess.COUNT_NAMES and k != "not_attributable")
    return {"rows": rows, "seconds": secs, "rows_per_s": rows / secs, "peak_rss_mb": peak_mb(), "counts": out,
            "moved": [list(m) for m in counts.moved]}


def reprocess_floor(backend: Backend, meta: dict[str, Any], moved: list[list[int]], chunk: int,
                    now: datetime) -> dict[str, Any]:
    """The writes of the run just measured, set-based per chunk on the same actions (bare SQL)."""
    pg = backend.name == "postgresql"
    with backend.engine.connect() as conn:
        ids = [int(r[0]) for r in conn.execute(text("SELECT id FROM actions WHERE campaign_id = :c AND id <= :m"
                                                    " ORDER BY id"),
                                               {"c": meta["campaign_id"],
                                                "m": min(m[1] for m in moved) - 1 if moved else 1 << 62})]
    move_to = {m[0]: m[1] for m in moved}
    parts = meta["partners"]
    now_b = _ts(backend, now)
    upd_hist = _sql(backend, "INSERT INTO action_updates (action_id, at, kind, state, reason, note, delta_amount,"
                    " delta_payout, items, channel, submission_id, actor) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?,"
                    " 'system', NULL, 'system')")
    ins_action = _sql(backend, "INSERT INTO actions (account_id, campaign_id, event_type_id, partner_id, contract_id,"
                      " order_id, customer_id, promo_code, event_date, state, reason, currency, amount, payout,"
                      " intended_amount, intended_payout, locking_date, lock_due, locked_at, version, update_count,"
                      " restore, created_at) SELECT account_id, campaign_id, event_type_id, ?, contract_id, order_id,"
                      " customer_id, promo_code, event_date, 'PENDING', NULL, currency, amount, payout,"
                      " intended_amount, intended_payout, locking_date, lock_due, NULL, 1, 1, NULL, ? FROM actions"
                      " WHERE id = ?" + (" RETURNING id" if pg else ""))
    ins_item = _sql(backend, "INSERT INTO action_items (action_id, position, sku, name, category, quantity, amount,"
                    " payout, intended_quantity, intended_amount, intended_payout) VALUES (?, 0, 'ORDER', NULL, NULL,"
                    " 1, 1000, 100, 1, 1000, 100)")
    with backend.engine.connect() as c0:
        conn = c0.execution_options(payoutdesk_write=True)
        raw = _raw(conn)
        conn.commit()
        cur = raw.cursor()
        t0 = time.perf_counter()
        for first in range(0, len(ids), chunk):
            part = ids[first:first + chunk]
            recalc = [i for i in part if i not in move_to]
            mv = [i for i in part if i in move_to]
            if not pg:
                cur.execute("BEGIN IMMEDIATE")
            if recalc:
                marks = ", ".join("?" * len(recalc))
                cur.execute(_sql(backend, "UPDATE actions SET payout = payout + 1, intended_payout = intended_payout"
                                 f" + 1, version = version + 1, update_count = update_count + 1 WHERE id IN ({marks})"),
                            recalc)
                cur.execute(_sql(backend, "UPDATE action_items SET payout = payout + 1, intended_payout ="
                                 f" intended_payout + 1 WHERE action_id IN ({marks})"), recalc)
                cur.executemany(upd_hist, [(i, now_b, "RECALC", "PENDING", None, "recalculated", 1,
                                            '[["ORDER",null,null,1,1000,101]]') for i in recalc])
            if mv:
                marks = ", ".join("?" * len(mv))
                cur.execute(_sql(backend, "UPDATE actions SET state = 'REVERSED', reason = 'REATTRIBUTED', restore ="
                                 " '[[1,1000]]', version = version + 1, update_count = update_count + 1"
                                 f" WHERE id IN ({marks})"), mv)
                cur.executemany(upd_hist, [(i, now_b, "REVERSED", "REVERSED", "REATTRIBUTED", "re-attributed",
                                            -100, '[["ORDER",null,null,0,0,0]]') for i in mv])
                for k, i in enumerate(mv):
                    cur.execute(ins_action, (parts[k % len(parts)], now_b, i))
                    aid = cur.fetchone()[0] if pg else cur.lastrowid
                    cur.execute(ins_item, (aid,))
                    cur.execute(upd_hist, (aid, now_b, "CREATED", "PENDING", None, "re-attributed", 100,
                                           '[["ORDER",null,null,1,1000,100]]'))
            raw.commit()
        secs = time.perf_counter() - t0
        cur.close()
    return {"rows": len(ids), "seconds": secs, "rows_per_s": len(ids) / secs, "moves": len(move_to)}


# --- the run -------------------------------------------------------------------------------------


def bench_backend(name: str, args: argparse.Namespace, now: datetime) -> dict[str, Any]:
    backend = open_backend(name, ROOT / "data" / "bench", f"attribution-{args.clicks}", keep=False)
    out: dict[str, Any] = {"backend": name, "rounds": []}
    try:
        out["machine"] = machine([backend])
        for r in range(args.rounds):
            meta = generate(backend, args.clicks, args.conversions, 42 + r, now)
            n_act = args.conversions
            rnd: dict[str, Any] = {}
            log(f"  {name} round {r + 1}: attribution floor ({n_act:,} conversions)")
            rnd["attribution_floor"] = attribution_floor(backend, meta, args.chunk, now, "floor")
            with db.write(backend.engine) as conn:  # the floor's rows go: the service records the same orders
                conn.execute(text("DELETE FROM action_updates WHERE action_id IN"
                                  " (SELECT id FROM actions WHERE order_id LIKE 'floor-%')"))
                conn.execute(text("DELETE FROM action_items WHERE action_id IN"
                                  " (SELECT id FROM actions WHERE order_id LIKE 'floor-%')"))
                conn.execute(text("DELETE FROM actions WHERE order_id LIKE 'floor-%'"))
            log(f"  {name} round {r + 1}: attribution service")
            rnd["attribution"] = attribution_service(backend, meta, args.chunk, now, "svc")
            log(f"    floor {rnd['attribution_floor']['rows_per_s']:,.0f}/s, service "
                f"{rnd['attribution']['rows_per_s']:,.0f}/s, peak {rnd['attribution']['peak_rss_mb']:.0f} MB")
            del meta["conversions"]
            gc.collect()
            prepare_reprocess(backend, meta, args.move_share, "svc")
            with backend.engine.connect() as conn, conn.begin():
                conn.execute(text("ANALYZE"))
            log(f"  {name} round {r + 1}: re-processing service")
            svc = reprocess_service(backend, meta)
            moved = svc.pop("moved")
            rnd["reprocess"] = svc
            log(f"    service {svc['rows_per_s']:,.0f}/s {svc['counts']}, peak {svc['peak_rss_mb']:.0f} MB")
            rnd["reprocess_floor"] = reprocess_floor(backend, meta, moved, reprocess.JOB_CHUNK, now)
            log(f"    floor {rnd['reprocess_floor']['rows_per_s']:,.0f}/s")
            out["rounds"].append(rnd)
    finally:
        backend.close()
    for key in ("attribution", "attribution_floor", "reprocess", "reprocess_floor"):
        out[key] = median([rd[key]["rows_per_s"] for rd in out["rounds"]])
    out["attribution_peak_rss_mb"] = max(rd["attribution"]["peak_rss_mb"] for rd in out["rounds"])
    out["reprocess_peak_rss_mb"] = max(rd["reprocess"]["peak_rss_mb"] for rd in out["rounds"])
    return out


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| backend | work | service rows/s | floor rows/s | service ÷ floor | peak RSS MB |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for res in results:
        for work, key in (("attribution", "attribution"), ("re-processing", "reprocess")):
            svc, floor = res[key], res[key + "_floor"]
            lines.append(f"| {res['backend']} | {work} | {svc:,.0f} | {floor:,.0f} | {svc / floor:.0%} |"
                         f" {res[key + '_peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.attribution", description=__doc__.split("\n")[0])
    p.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--conversions", type=int, default=100_000, help="conversions to attribute (and re-process)")
    p.add_argument("--clicks", type=int, default=1_000_000)
    p.add_argument("--chunk", type=int, default=1000, help="conversions a transaction (service and floor)")
    p.add_argument("--move-share", type=int, default=10, help="every n-th action gets a newer click (moves)")
    p.add_argument("--rounds", type=int, default=1, help="rounds (each on freshly generated data)")
    args = p.parse_args()
    started = datetime.now(UTC)
    load = os.getloadavg()
    now = started.replace(microsecond=0)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results = [bench_backend(b, args, now) for b in backends]
    load_after = os.getloadavg()
    print(table(results))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"attribution-{started:%Y%m%dT%H%M%SZ}-{args.conversions}-{args.clicks}.json"
    path.write_text(json.dumps({"started": started.isoformat(), "load_before": load, "load_after": load_after,
                                "sizes": {"conversions": args.conversions, "clicks": args.clicks,
                                          "chunk": args.chunk, "reprocess_chunk": reprocess.JOB_CHUNK,
                                          "move_share": args.move_share},
                                "results": results}, indent=1, default=str))
    print(f"written {path.relative_to(ROOT)}; load average {load[0]:.2f} before, {load_after[0]:.2f} after")


if __name__ == "__main__":
    main()

