"""The four measured pieces of work, each beside its bare-SQL floor measured in the same run."""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Date, Engine, bindparam, event, func, select, text

from payoutdesk.kit import db
from payoutdesk.kit.money import format_amount
from payoutdesk.ledger import repository as repo
from payoutdesk.ledger import service as ledger
from payoutdesk.models import actions
from payoutdesk.models.types import UTCDateTime

from .backends import Backend, free_port
from .datagen import NOW, SPAN_DAYS, Meta, analyze
from .stats import cpu_seconds, median, pct

Log = Callable[[str], None]


# --- 1. the actions list ---------------------------------------------------------------------


class Capture:
    """Records the SQL statements (as sent to the DBAPI) of one service call, to replay them bare."""

    def __init__(self, engine: Engine) -> None:
        self.on = False
        self.statements: list[tuple[str, Any]] = []
        event.listen(engine, "before_cursor_execute", self._hook)
        self.engine = engine

    def _hook(self, _conn: Any, _cur: Any, statement: str, parameters: Any, _ctx: Any, _many: bool) -> None:
        if self.on and statement.lstrip().upper().startswith(("SELECT", "WITH")):
            self.statements.append((statement, parameters))

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._hook)


def _day(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def list_filters(meta: Meta) -> dict[str, Callable[[random.Random], repo.Filters]]:
    start = (NOW - timedelta(days=SPAN_DAYS)).date()
    states = ("PENDING", "APPROVED", "REVERSED")
    sales = meta.event_types[0::2]

    def ev_range(rnd: random.Random, days: int) -> tuple[datetime, datetime]:
        d = start + timedelta(days=rnd.randrange(SPAN_DAYS - days))
        return _day(d), _day(d + timedelta(days=days))

    def lock_range(rnd: random.Random, days: int) -> tuple[date, date]:
        d = start + timedelta(days=rnd.randrange(SPAN_DAYS + 60 - days))
        return d, d + timedelta(days=days - 1)

    def f_event(rnd: random.Random, **kw: Any) -> repo.Filters:
        a, b = ev_range(rnd, 7)
        return repo.Filters(event_date_from=a, event_date_to=b, **kw)

    def f_lock(rnd: random.Random, **kw: Any) -> repo.Filters:
        a, b = lock_range(rnd, 31)
        return repo.Filters(locking_date_from=a, locking_date_to=b, **kw)

    return {
        "none": lambda r: repo.Filters(),
        "state": lambda r: repo.Filters(state=r.choice(states)),
        "campaign_id": lambda r: repo.Filters(campaign_id=r.choice(meta.campaigns)),
        "partner_id": lambda r: repo.Filters(partner_id=r.choice(meta.partners)),
        "event_type_id": lambda r: repo.Filters(event_type_id=r.choice(meta.event_types)),
        "order_id": lambda r: repo.Filters(order_id=f"NW-{r.randrange(1, meta.actions + 1):09d}"),
        "action_id": lambda r: repo.Filters(action_id=r.randrange(1, meta.actions + 1)),
        "event_date(7d)": f_event,
        "locking_date(31d)": f_lock,
        "state+campaign_id": lambda r: repo.Filters(state=r.choice(states), campaign_id=r.choice(meta.campaigns)),
        "state=REVERSED+partner_id": lambda r: repo.Filters(state="REVERSED", partner_id=r.choice(meta.partners)),
        "partner_id+event_date(7d)": lambda r: f_event(r, partner_id=r.choice(meta.partners)),
        "campaign+partner+state": lambda r: repo.Filters(
            campaign_id=r.choice(meta.campaigns), partner_id=r.choice(meta.partners), state=r.choice(states)),
        "event_type_id+locking_date(31d)": lambda r: f_lock(r, event_type_id=r.choice(sales)),
        "partner_id+locking_date(31d)": lambda r: f_lock(r, partner_id=r.choice(meta.partners)),
        "state+locking_date(31d)": lambda r: f_lock(r, state=r.choice(states)),
        "state+event_date(7d)": lambda r: f_event(r, state=r.choice(states)),
        "order_id+event_type_id": lambda r: repo.Filters(
            order_id=f"NW-{r.randrange(1, meta.actions + 1):09d}", event_type_id=r.choice(meta.event_types)),
        # ranges open at one end, or longer than the per-day plan takes (93 days)
        "event_date(from)": lambda r: repo.Filters(event_date_from=ev_range(r, 1)[0]),
        "event_date(to)": lambda r: repo.Filters(event_date_to=ev_range(r, 1)[0]),
        "event_date(120d)": lambda r: repo.Filters(event_date_from=(x := ev_range(r, 120))[0], event_date_to=x[1]),
        "partner_id+event_date(to)": lambda r: repo.Filters(partner_id=r.choice(meta.partners),
                                                            event_date_to=ev_range(r, 1)[0]),
        "state+event_date(120d)": lambda r: repo.Filters(
            state=r.choice(states), event_date_from=(x := ev_range(r, 120))[0], event_date_to=x[1]),
        "locking_date(to)": lambda r: repo.Filters(locking_date_to=lock_range(r, 1)[0]),
        "campaign_id+locking_date(from)": lambda r: repo.Filters(
            campaign_id=r.choice(meta.campaigns), locking_date_from=lock_range(r, 1)[0]),
        "event_type_id+locking_date(120d)": lambda r: repo.Filters(
            event_type_id=r.choice(sales), locking_date_from=(y := lock_range(r, 120))[0], locking_date_to=y[1]),
    }


def _raw(engine: Engine) -> Any:
    raw = engine.raw_connection()
    if engine.dialect.name != "sqlite":
        raw.driver_connection.autocommit = True  # type: ignore[union-attr]
        # as list_page does for its per-day statement: plans for the values at hand
        raw.driver_connection.execute("SET plan_cache_mode = force_custom_plan")  # type: ignore[union-attr]
    return raw


def bench_list(backend: Backend, meta: Meta, rounds: int, samples: int, log: Log) -> dict[str, Any]:
    """Service: db.read + ledger.list_actions (limit 50), as GET /api/v1/actions runs it.

    Floor: the very SELECT statements the service sent (the page and its items), replayed on an
    open DBAPI connection with nothing else (no connection setup, no rows to dicts).
    """
    engine = backend.engine
    cap = Capture(engine)
    raw = _raw(engine)
    dbapi = raw.driver_connection
    specs = list_filters(meta)
    out: dict[str, Any] = {}

    def service(f: repo.Filters, cursor: str | None) -> tuple[float, dict[str, Any], list[tuple[str, Any]]]:
        cap.statements = []
        cap.on = True
        t0 = time.perf_counter()
        with db.read(engine) as conn:
            page = ledger.list_actions(conn, meta.account_id, f, 50, cursor)
        dt = time.perf_counter() - t0
        cap.on = False
        return dt, page, cap.statements

    def floor(stmts: list[tuple[str, Any]]) -> float:
        cur = dbapi.cursor()
        t0 = time.perf_counter()
        for sql, params in stmts:
            cur.execute(sql, params)
            cur.fetchall()
        dt = time.perf_counter() - t0
        cur.close()
        return dt

    def deep_cursor(f: repo.Filters, rnd: random.Random, top: int) -> str | None:
        """A cursor somewhere down the list: the id of a random matching action (found with bare SQL)."""
        for _ in range(3):
            c = rnd.randrange(1, max(top, 2))
            with db.read(engine) as conn:
                got = repo.list_page(conn, meta.account_id, f, 1, c + 1)
            if got:
                return str(got[0].id + 1)
        return None

    try:
        for name, make in specs.items():
            rnd = random.Random(hash(name) & 0xFFFF)
            # warm up: plans, caches, prepared statements
            for _ in range(3):
                f = make(rnd)
                _, page, _ = service(f, None)
                if page["next_cursor"]:
                    service(f, page["next_cursor"])
            per_round = []
            for _r in range(rounds):
                first, later, ffirst, flater, rows = [], [], [], [], []
                for _s in range(samples):
                    f = make(rnd)
                    dt, page, stmts = service(f, None)
                    first.append(dt)
                    ffirst.append(floor(stmts))
                    rows.append(len(page["items"]))
                    top = page["items"][0]["id"] if page["items"] else meta.actions
                    cursors = [page["next_cursor"], deep_cursor(f, rnd, top) if page["next_cursor"] else None]
                    for c in cursors:
                        if c is None:
                            continue
                        dt, _p, stmts = service(f, c)
                        later.append(dt)
                        flater.append(floor(stmts))
                per_round.append({
                    "first_p50": median(first), "first_p95": pct(first, 95), "first_max": max(first),
                    "later_p50": median(later), "later_p95": pct(later, 95),
                    "floor_first_p50": median(ffirst), "floor_first_p95": pct(ffirst, 95),
                    "floor_later_p50": median(flater), "floor_later_p95": pct(flater, 95),
                    "n_first": len(first), "n_later": len(later), "avg_rows": sum(rows) / len(rows),
                })
            res = {k: median([r[k] for r in per_round]) for k in per_round[0] if k not in ("n_first", "n_later")}
            res["samples_first"] = sum(r["n_first"] for r in per_round)
            res["samples_later"] = sum(r["n_later"] for r in per_round)
            res["rounds"] = per_round
            out[name] = res
            log(f"    {name:34s} first p50 {res['first_p50'] * 1e3:6.1f} p95 {res['first_p95'] * 1e3:6.1f} ms | "
                f"later p50 {res['later_p50'] * 1e3:6.1f} p95 {res['later_p95'] * 1e3:6.1f} ms | floor p95 "
                f"{res['floor_first_p95'] * 1e3:5.1f}/{res['floor_later_p95'] * 1e3:5.1f} ms | "
                f"rows {res['avg_rows']:.0f}")
    finally:
        cap.close()
        raw.close()
    worst_first = max(out.values(), key=lambda r: r["first_p95"])
    worst_later = max(out.values(), key=lambda r: r["later_p95"])
    return {"filters": out, "worst_first_p95": worst_first["first_p95"], "worst_later_p95": worst_later["later_p95"]}


# --- 2. the CSV export -----------------------------------------------------------------------


def export_since(engine: Engine, meta: Meta, rows: int) -> tuple[datetime, int]:
    """The event date from which the newest ``rows`` actions are exported, and the exact count."""
    with db.read(engine) as conn:
        since = conn.execute(
            select(actions.c.event_date).where(actions.c.account_id == meta.account_id)
            .order_by(actions.c.event_date.desc()).limit(1).offset(rows - 1)
        ).scalar_one()
        n = conn.execute(repo.filtered(select(func.count()).select_from(actions), meta.account_id,
                                       repo.Filters(event_date_from=since))).scalar_one()
    return since, int(n)


def _export_child(url: str, account_id: int, since: datetime, mode: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.export_child", url, str(account_id), since.isoformat(), mode],
                         check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def bench_export(backend: Backend, meta: Meta, rounds: int, log: Log) -> dict[str, Any]:
    """Service: ledger.export_rows over the newest 1/5 of the actions (event_date_from), every chunk
    consumed in a fresh process; floor: the same rows by one bare SELECT. Memory: peak RSS over the
    process's RSS before the export, at 1/25 and 1/5 of the actions."""
    big, small = max(meta.actions // 5, 1), max(meta.actions // 25, 1)
    since_big, n_big = export_since(backend.engine, meta, big)
    since_small, n_small = export_since(backend.engine, meta, small)
    runs, floors = [], []
    for _ in range(rounds):
        r = _export_child(backend.url, meta.account_id, since_big, "service")
        runs.append(r)
        log(f"    export {r['rows']:,} rows in {r['seconds']:.2f} s = {r['rows'] / r['seconds']:,.0f} rows/s, "
            f"RSS {r['rss_base_kb'] / 1024:.0f} MB -> peak {r['rss_peak_kb'] / 1024:.0f} MB")
        f = _export_child(backend.url, meta.account_id, since_big, "floor")
        floors.append(f)
        log(f"    floor  {f['rows']:,} rows in {f['seconds']:.2f} s = {f['rows'] / f['seconds']:,.0f} rows/s")
    small_run = _export_child(backend.url, meta.account_id, since_small, "service")
    log(f"    export {small_run['rows']:,} rows: RSS {small_run['rss_base_kb'] / 1024:.0f} MB -> peak "
        f"{small_run['rss_peak_kb'] / 1024:.0f} MB")
    rate = median([r["rows"] / r["seconds"] for r in runs])
    floor_rate = median([r["rows"] / r["seconds"] for r in floors])
    return {
        "rows": n_big, "rows_small": n_small, "since": since_big.isoformat(),
        "rows_per_s": rate, "floor_rows_per_s": floor_rate,
        "mb_per_s": median([r["bytes"] / r["seconds"] / 1e6 for r in runs]),
        "peak_growth_mb": median([(r["rss_peak_kb"] - r["rss_base_kb"]) / 1024 for r in runs]),
        "peak_growth_mb_small": (small_run["rss_peak_kb"] - small_run["rss_base_kb"]) / 1024,
        "peak_rss_mb": median([r["rss_peak_kb"] / 1024 for r in runs]),
        "peak_rss_mb_small": small_run["rss_peak_kb"] / 1024,
        "runs": runs, "floor_runs": floors, "small_run": small_run,
    }


# --- 3. the lock run -------------------------------------------------------------------------


def _typed(sql: str) -> Any:
    stmt = text(sql)
    for name, type_ in (("now", UTCDateTime()), ("as_of", Date())):
        if f":{name}" in sql:
            stmt = stmt.bindparams(bindparam(name, type_=type_))
    return stmt


DUE = "locked_at IS NULL AND lock_due <= :as_of"


def lock_restore(backend: Backend) -> bool:
    """Undo a lock run (or its floor) from the saved copy; True when there was one to undo."""
    engine = backend.engine
    with db.write(engine) as conn:
        try:
            saved = conn.execute(text("SELECT value FROM bench_meta WHERE key = 'lock_saved'")).first()
        except Exception:
            saved = None
        if saved is None:
            return False
        max_update = int(saved[0])
        conn.execute(text(
            "UPDATE actions SET state = s.state, locked_at = NULL, version = s.version, update_count = s.update_count "
            "FROM bench_lock_saved s WHERE actions.id = s.id"))
        conn.execute(text("DELETE FROM action_updates WHERE id > :m"), {"m": max_update})
        conn.execute(text("DROP TABLE bench_lock_saved"))
        conn.execute(text("DELETE FROM bench_meta WHERE key = 'lock_saved'"))
    return True


def _lock_save(backend: Backend, as_of: date) -> int:
    with db.write(backend.engine) as conn:
        conn.execute(_typed(f"CREATE TABLE bench_lock_saved AS SELECT id, state, version, update_count FROM actions "
                            f"WHERE {DUE}"), {"as_of": as_of})
        max_update = conn.execute(text("SELECT max(id) FROM action_updates")).scalar_one()
        conn.execute(text("INSERT INTO bench_meta (key, value) VALUES ('lock_saved', :v)"), {"v": str(max_update)})
        n = conn.execute(text("SELECT count(*) FROM bench_lock_saved")).scalar_one()
    return int(n)


def _lock_floor(backend: Backend, as_of: date, now: datetime) -> tuple[float, int]:
    sql = ("UPDATE actions SET state = CASE state WHEN 'PENDING' THEN 'APPROVED' ELSE state END, locked_at = {p}, "
           "version = version + 1, update_count = update_count + 1 WHERE locked_at IS NULL AND lock_due <= {p}")
    sqlite = backend.name == "sqlite"
    now_p = UTCDateTime().bind_processor(backend.engine.dialect)
    as_of_p = Date().bind_processor(backend.engine.dialect)
    params = (now_p(now) if now_p else now, as_of_p(as_of) if as_of_p else as_of)
    raw = backend.engine.raw_connection()
    try:
        dbapi: Any = raw.driver_connection
        cur = dbapi.cursor()
        t0 = time.perf_counter()
        if sqlite:
            cur.execute("BEGIN IMMEDIATE")
        cur.execute(sql.format(p="?" if sqlite else "%s"), params)
        n = cur.rowcount
        if sqlite:
            cur.execute("COMMIT")
        else:
            dbapi.commit()
        dt = time.perf_counter() - t0
        cur.close()
    finally:
        raw.close()
    return dt, n


def bench_lock(backend: Backend, meta: Meta, rounds: int, log: Log) -> dict[str, Any]:
    """Service: ledger.lock_run (chunks, LOCKED history rows); floor: one bare UPDATE of the same rows.
    Between runs the locked rows are put back from a saved copy (not measured)."""
    as_of = date.fromisoformat(meta.lock_as_of)
    if lock_restore(backend):
        log("    restored the rows of an interrupted lock run")
    runs, floors = [], []
    for r in range(rounds):
        now = NOW + timedelta(minutes=r)
        n_due = _lock_save(backend, as_of)
        t0 = time.perf_counter()
        locked = ledger.lock_run(backend.engine, as_of=as_of, now=now)
        dt = time.perf_counter() - t0
        with db.read(backend.engine) as conn:
            max_update = int(conn.execute(text("SELECT value FROM bench_meta WHERE key = 'lock_saved'")).scalar_one())
            history = conn.execute(text("SELECT count(*) FROM action_updates WHERE id > :m AND kind = 'LOCKED'"),
                                   {"m": max_update}).scalar_one()
            left = conn.execute(_typed(f"SELECT count(*) FROM actions WHERE {DUE}"), {"as_of": as_of}).scalar_one()
        assert locked == n_due == history, (locked, n_due, history)
        assert left == 0, left
        runs.append({"locked": locked, "seconds": dt, "per_s": locked / dt})
        log(f"    lock run: {locked:,} actions in {dt:.2f} s = {locked / dt:,.0f}/s (history rows {history:,})")
        t0 = time.perf_counter()
        lock_restore(backend)
        analyze_lock(backend)
        log(f"      (restored in {time.perf_counter() - t0:.1f} s)")
        _lock_save(backend, as_of)
        fdt, fn = _lock_floor(backend, as_of, now)
        floors.append({"locked": fn, "seconds": fdt, "per_s": fn / fdt})
        log(f"    floor:    {fn:,} actions in {fdt:.2f} s = {fn / fdt:,.0f}/s")
        lock_restore(backend)
        analyze_lock(backend)
    return {
        "due": runs[0]["locked"], "per_s": median([r["per_s"] for r in runs]),
        "seconds": median([r["seconds"] for r in runs]),
        "floor_per_s": median([r["per_s"] for r in floors]), "runs": runs, "floor_runs": floors,
        "chunk": ledger.LOCK_CHUNK,
    }


def analyze_lock(backend: Backend) -> None:
    if backend.name == "postgresql":
        with backend.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE actions")
            conn.exec_driver_sql("VACUUM ANALYZE action_updates")
    else:
        raw = backend.engine.raw_connection()
        try:
            raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
        finally:
            raw.close()


# --- 4. single-action changes over the API ---------------------------------------------------


@dataclass
class Target:
    id: int
    amounts: tuple[str, str]
    minor: tuple[int, int]


def _targets(engine: Engine, meta: Meta, count: int, seed: int) -> list[Target]:
    """Unlocked PENDING sale actions that the lock run does not touch, with room to lower the amount.

    Their locking date must also be after today (the data's "today" is a fixed day, ``meta.lock_as_of``):
    an action whose locking date has come is refused like a locked one."""
    as_of = max(date.fromisoformat(meta.lock_as_of), datetime.now(UTC).date())
    with db.read(engine) as conn:
        rows = conn.execute(
            select(actions.c.id, actions.c.amount, actions.c.currency)
            .where(actions.c.account_id == meta.account_id, actions.c.locked_at.is_(None),
                   actions.c.state == "PENDING", actions.c.lock_due > as_of, actions.c.amount > 1000,
                   actions.c.update_count < 500, actions.c.locking_date.is_not(None))
            .order_by(actions.c.id.desc()).limit(count * 20)
        ).all()
    picked = random.Random(seed).sample(rows, min(count, len(rows)))
    return [Target(r.id, (format_amount(r.amount - 100, r.currency), format_amount(r.amount, r.currency)),
                   (r.amount - 100, r.amount)) for r in picked]


def _serve(backend: Backend, tmp: Path, log: Log) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = dict(os.environ)
    env.update({
        "PAYOUTDESK_DATABASE_URL": backend.url, "PAYOUTDESK_HTTP_PORT": str(port), "PAYOUTDESK_BIND": "127.0.0.1",
        "PAYOUTDESK_API_RATE_LIMIT": "0", "PAYOUTDESK_LOGIN_RATE_LIMIT": "0", "PAYOUTDESK_DATA_DIR": str(tmp),
        "PAYOUTDESK_SECRET_KEY": "bench-secret-key-bench-secret-key",
    })
    proc = subprocess.Popen([sys.executable, "-m", "bench.serve_child"], env=env, stdout=subprocess.DEVNULL,
                            stderr=(tmp / "serve.log").open("wb"), cwd=Path(__file__).resolve().parent.parent)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"payoutdesk serve exited: {(tmp / 'serve.log').read_text()[-2000:]}")
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("payoutdesk serve did not come up")


def _pg_backends(engine: Engine) -> Callable[[], list[int]]:
    """The server processes of the PostgreSQL cluster behind ``engine`` (children of its postmaster),
    found again on each call (a connection opened during a run gets a new process)."""
    with db.read(engine) as conn:
        data_dir = conn.exec_driver_sql("SHOW data_directory").scalar_one()
    try:
        postmaster = int((Path(data_dir) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return list

    def children() -> list[int]:
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                        out.append(int(d.name))
                except (OSError, ValueError, IndexError):
                    continue
        return out

    return children


def _drive(clients: int, seconds: float, targets: list[Target], do: Callable[[Any, Target, int], bool],
           make_client: Callable[[], Any], close_client: Callable[[Any], None],
           cpu_of: dict[str, Callable[[], list[int]]] | None = None) -> dict[str, Any]:
    """``clients`` threads, each on its own share of the targets, alternating the amounts.

    CPU time per change is counted for this process (``client_cpu_ms``: the clients) and for each
    group of processes ``cpu_of`` names (``<name>_cpu_ms``: the API server, PostgreSQL's backends)."""
    stop = threading.Event()
    counts = [0] * clients
    errors = [0] * clients
    lat: list[list[float]] = [[] for _ in range(clients)]
    start_barrier = threading.Barrier(clients + 1)

    def worker(k: int) -> None:
        client = make_client()
        mine = targets[k::clients]
        step = 0
        start_barrier.wait()
        try:
            while not stop.is_set():
                t = mine[step % len(mine)]
                t0 = time.perf_counter()
                ok = do(client, t, (step // len(mine)) % 2)
                lat[k].append(time.perf_counter() - t0)
                if ok:
                    counts[k] += 1
                else:
                    errors[k] += 1
                step += 1
        finally:
            close_client(client)

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    for th in threads:
        th.start()
    start_barrier.wait()
    groups = {name: pids() for name, pids in (cpu_of or {}).items()}
    cpu0, own0 = {name: cpu_seconds(p) for name, p in groups.items()}, time.process_time()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for th in threads:
        th.join()
    dt = time.perf_counter() - t0
    cpu = {name: cpu_seconds(p) - cpu0[name] for name, p in groups.items()}
    own = time.process_time() - own0
    all_lat = [x for xs in lat for x in xs]
    n = max(1, sum(counts))
    return {"changes": sum(counts), "errors": sum(errors), "seconds": dt, "per_s": sum(counts) / dt,
            "lat_p50_ms": median(all_lat) * 1e3, "lat_p95_ms": pct(all_lat, 95) * 1e3,
            "client_cpu_ms": own * 1e3 / n, **{f"{name}_cpu_ms": c * 1e3 / n for name, c in cpu.items()},
            "load_average": os.getloadavg()}


def _api_client(base: str, auth: str) -> tuple[Callable[[], Any], Callable[[Any, Target, int], bool]]:
    """A keep-alive client per thread and one modify request with it.

    By default ``http.client`` of the standard library: the clients share the 2 CPUs with the server
    under test, and httpx spends several times its CPU per request (about 1.4 ms against 0.3 ms
    here). ``PAYOUTDESK_BENCH_API_CLIENT=httpx`` measures with httpx, as the runs before 2026-11-26
    13:40 UTC did."""
    if os.environ.get("PAYOUTDESK_BENCH_API_CLIENT", "stdlib") == "httpx":
        def make_httpx() -> httpx.Client:
            return httpx.Client(base_url=base, headers={"Authorization": auth}, timeout=60)

        def do_httpx(client: httpx.Client, t: Target, phase: int) -> bool:
            r = client.post(f"/api/v1/actions/{t.id}/modify",
                            json={"amount": t.amounts[phase], "reason": "ORDER_UPDATE"})
            return r.status_code == 200 and r.json()["outcome"] == "applied"

        return make_httpx, do_httpx
    host, _, port = base.removeprefix("http://").partition(":")
    headers = {"Authorization": auth, "Content-Type": "application/json"}

    def make() -> http.client.HTTPConnection:
        return http.client.HTTPConnection(host, int(port), timeout=60)

    def do(conn: http.client.HTTPConnection, t: Target, phase: int) -> bool:
        body = json.dumps({"amount": t.amounts[phase], "reason": "ORDER_UPDATE"})
        try:
            conn.request("POST", f"/api/v1/actions/{t.id}/modify", body, headers)
            r = conn.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException):
            conn.close()  # the server closed it (after an error answer): the next request reconnects
            return False
        return r.status == 200 and json.loads(data)["outcome"] == "applied"

    return make, do


def bench_api(backend: Backend, meta: Meta, rounds: int, seconds: float, clients: int, log: Log) -> dict[str, Any]:
    """Service: POST /api/v1/actions/{id}/modify on one API process (uvicorn on create_app, as
    `payoutdesk serve` runs it but without its worker and scheduler threads; rate limit off) from
    ``clients`` threads with keep-alive HTTP clients in this process (``_api_client``). Floor: per change the same
    writes (UPDATE actions, UPDATE action_items, INSERT action_updates) in one transaction, issued bare
    on DBAPI connections from as many threads."""
    auth = "Basic " + base64.b64encode(f"{meta.sid}:{meta.token}".encode()).decode()
    runs, floors = [], []
    sqlite = backend.name == "sqlite"
    db_pids = list if sqlite else _pg_backends(backend.engine)
    with tempfile.TemporaryDirectory(prefix="pd-bench-serve-") as tmpd:
        proc, base = _serve(backend, Path(tmpd), log)
        try:
            make, do = _api_client(base, auth)

            cpu_of = {"server": lambda: [proc.pid], **({} if sqlite else {"db": db_pids})}
            warm = _targets(backend.engine, meta, 200, 1)
            _drive(clients, min(2.0, seconds), warm, do, make, lambda c: c.close())
            for r in range(rounds):
                res = _drive(clients, seconds, _targets(backend.engine, meta, 2000, 100 + r), do, make,
                             lambda c: c.close(), cpu_of)
                runs.append(res)
                log(f"    API: {res['changes']:,} changes in {res['seconds']:.1f} s = {res['per_s']:,.0f}/s "
                    f"(p50 {res['lat_p50_ms']:.1f} ms, p95 {res['lat_p95_ms']:.1f} ms, errors {res['errors']}; "
                    f"CPU per change: server {res['server_cpu_ms']:.2f} ms"
                    + ("" if sqlite else f", PostgreSQL {res['db_cpu_ms']:.2f} ms")
                    + f", clients {res['client_cpu_ms']:.2f} ms; load {res['load_average'][0]:.1f})")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()

    p = "?" if sqlite else "%s"
    upd_action = (f"UPDATE actions SET state = {p}, reason = {p}, amount = {p}, payout = {p}, locked_at = {p}, "
                  f"restore = {p}, update_count = update_count + 1, version = version + 1 WHERE id = {p}")
    upd_item = (f"UPDATE action_items SET quantity = {p}, amount = {p}, payout = {p} "
                f"WHERE action_id = {p} AND position = {p}")
    ins_update = ("INSERT INTO action_updates (action_id, at, kind, state, reason, note, delta_amount, delta_payout, "
                  f"items, channel, submission_id, actor) VALUES ({', '.join([p] * 12)})")
    at_p = UTCDateTime().bind_processor(backend.engine.dialect)

    def fmake() -> Any:
        return backend.engine.raw_connection()

    def fdo(raw: Any, t: Target, phase: int) -> bool:
        dbapi = raw.driver_connection
        cur = dbapi.cursor()
        amount = t.minor[phase]
        payout = amount // 10
        now = datetime.now(UTC)
        at = at_p(now) if at_p else now
        if sqlite:
            cur.execute("BEGIN IMMEDIATE")
        cur.execute(upd_action, ("PENDING", None, amount, payout, None, None, t.id))
        cur.execute(upd_item, (1, amount, payout, t.id, 0))
        cur.execute(ins_update, (t.id, at, "MODIFIED", "PENDING", "ORDER_UPDATE", None, 100, 10,
                                 json.dumps([{"sku": "X", "quantity": 1, "amount": amount, "payout": payout}]),
                                 "api", None, "bench"))
        if sqlite:
            cur.execute("COMMIT")
        else:
            dbapi.commit()
        cur.close()
        return True

    for r in range(rounds):
        res = _drive(clients, seconds, _targets(backend.engine, meta, 2000, 200 + r), fdo, fmake, lambda c: c.close(),
                     {} if sqlite else {"db": db_pids})
        floors.append(res)
        log(f"    floor: {res['changes']:,} changes in {res['seconds']:.1f} s = {res['per_s']:,.0f}/s "
            f"(CPU per change: clients {res['client_cpu_ms']:.2f} ms"
            + ("" if sqlite else f", PostgreSQL {res['db_cpu_ms']:.2f} ms") + ")")
    return {"clients": clients, "seconds_per_run": seconds, "per_s": median([r["per_s"] for r in runs]),
            "lat_p50_ms": median([r["lat_p50_ms"] for r in runs]),
            "lat_p95_ms": median([r["lat_p95_ms"] for r in runs]),
            "server_cpu_ms": median([r["server_cpu_ms"] for r in runs]),
            "floor_per_s": median([r["per_s"] for r in floors]), "runs": runs, "floor_runs": floors}


def count_actions(engine: Engine) -> int:
    with db.read(engine) as conn:
        return int(conn.execute(select(func.count()).select_from(actions)).scalar_one())


__all__ = ["analyze", "bench_api", "bench_export", "bench_list", "bench_lock", "count_actions"]
