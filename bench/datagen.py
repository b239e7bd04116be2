"""Bulk generation of the benchmark data with the pure rules (fixed seed).

One account holds every action (the worst case for the per-account indexes). Setup (account,
campaigns, partners, event types, contracts) goes through the catalog service; the actions,
their single item and their history are built with ``workflow.new_action`` / ``decide`` (cached
per contract and basket, so the rules run once per distinct case) and loaded in chunks: Core
``executemany`` on SQLite, ``COPY`` on PostgreSQL. The secondary indexes are built after the load.

Actions get ids in event-date order with a little jitter (conversions are recorded as they
happen, some a day or two late). A share is reversed or approved by hand; older due actions were
locked by earlier lock runs, leaving exactly ``lock_due`` actions for the benchmarked lock run.
"""

from __future__ import annotations

import json
import random
import time
from bisect import bisect
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from typing import Any

from sqlalchemy import Connection, Date, Index, bindparam, text

from payoutdesk.accounts.service import create_account
from payoutdesk.catalog import service as catalog
from payoutdesk.context import Actor
from payoutdesk.contracts.terms import OPEN_ENDED_LOCK_DAYS, Terms, locking_date
from payoutdesk.kit import db
from payoutdesk.kit.crypto import SecretBox
from payoutdesk.ledger import repository as ledger_repo
from payoutdesk.ledger import workflow as wf
from payoutdesk.models import action_items, action_updates, actions
from payoutdesk.models.types import UTCDateTime

from .backends import Backend

GENERATOR_VERSION = 3
NOW = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)  # the benchmark's "today"; the lock run runs as of this day
SPAN_DAYS = 420
N_PARTNERS = 50
CAMPAIGNS = (("Northwind US", "USD", 50), ("Northwind EU", "EUR", 25), ("Northwind UK", "GBP", 15),
             ("Northwind CA", "CAD", 10))
CATALOG = (
    ("SKU-RUN-42", "Trail runner 42", "shoes", 8900), ("SKU-RUN-40", "Trail runner 40", "shoes", 8900),
    ("SKU-JKT-M", "Rain jacket M", "apparel", 12900), ("SKU-HAT", "Sun hat", "accessories", 1900),
    ("SKU-SOCK-3", "Socks 3-pack", "accessories", 1299), ("SKU-TENT-2", "Tent for two", "gear", 24900),
    ("SKU-BOTTLE", "Steel bottle", "gear", 2450), ("SKU-TEE-L", "Merino tee L", "apparel", 5900),
)
PROMOS = (None,) * 12 + ("SPRING10", "WELCOME", "BF2026")
ACTION_COLS = [c.name for c in actions.columns]
ITEM_COLS = [c.name for c in action_items.columns]
UPDATE_COLS = [c.name for c in action_updates.columns]
OPEN_ENDED = timedelta(days=OPEN_ENDED_LOCK_DAYS)
TWO_DAYS, THREE_DAYS = timedelta(days=2), timedelta(days=3)


@dataclass
class Meta:
    actions: int
    seed: int
    account_id: int
    sid: str
    token: str
    campaigns: list[int]
    partners: list[int]
    event_types: list[int]  # every event type (sale and lead of each campaign)
    lock_as_of: str
    lock_due: int  # unlocked due actions left for the lock run
    generator: int = GENERATOR_VERSION

    def to_json(self) -> str:
        return json.dumps(self.__dict__)


def read_meta(conn: Connection) -> Meta | None:
    try:
        row = conn.execute(text("SELECT value FROM bench_meta WHERE key = 'meta'")).first()
    except Exception:
        return None
    if row is None:
        return None
    data = json.loads(row[0])
    if data.get("generator") != GENERATOR_VERSION:
        return None
    return Meta(**data)


def _setup(conn: Connection, rnd: random.Random) -> tuple[Meta, dict[str, Any]]:
    new = create_account(conn, "Bench Outdoor")
    actor = Actor(new.account.id, "bench", wf.Channel.SYSTEM)
    box = SecretBox("bench-secret-key-bench-secret-key")
    camps, ets, parts = [], [], []
    for name, cur, _w in CAMPAIGNS:
        c = catalog.create_campaign(conn, actor, name, cur, "bench-ftp-password", "bench.local")
        sale = catalog.create_event_type(conn, actor, {"campaign_id": c["id"], "name": "Online Sale"}, box)
        lead = catalog.create_event_type(conn, actor, {"campaign_id": c["id"], "name": "Lead",
                                                       "locking": "open_ended"}, box)
        camps.append((c["id"], cur, sale, lead))
        ets += [sale, lead]
    for k in range(N_PARTNERS):
        parts.append(catalog.create_partner(conn, actor, f"Partner {k + 1:02d}")["id"])
    starts = date(2024, 1, 1)
    terms: dict[tuple[int, int, int], Terms] = {}
    for cid, _cur, sale, lead in camps:
        for k, pid in enumerate(parts):
            lock_after = ({"months": 0, "days": 27}, {"months": 0, "days": 45}, {"months": 1, "days": 10})[k % 3]
            sale_pay = {"event_type_id": sale, "fixed": "7.50"} if k % 7 == 0 else \
                {"event_type_id": sale, "percent": str(4 + k % 6)}
            catalog.create_contract(conn, actor, {
                "campaign_id": cid, "partner_id": pid, "starts_on": starts,
                "payout": [sale_pay, {"event_type_id": lead, "fixed": "2.50"}],
                "category_percent": {"gear": "3"} if k % 4 == 0 else {},
                "lock_after": lock_after, "pay_after": {"months": 0, "days": 20}, "referral_window_days": 30})
            for et in (sale, lead):
                terms[(cid, pid, et)] = catalog.terms_in_force(conn, cid, pid, et, NOW.date())
    meta = Meta(actions=0, seed=0, account_id=new.account.id, sid=new.account.sid, token=new.auth_token,
                campaigns=[c[0] for c in camps], partners=parts, event_types=ets, lock_as_of=NOW.date().isoformat(),
                lock_due=0)
    return meta, {"camps": camps, "terms": terms}


class _Rows:
    """Builds the three row sets of one chunk as tuples in table column order."""

    def __init__(self, rnd: random.Random, meta: Meta, ctx: dict[str, Any], n_total: int) -> None:
        self.rnd = rnd
        self.meta = meta
        self.camps = ctx["camps"]
        self.terms = ctx["terms"]
        self.n_total = n_total
        self.cache: dict[Any, dict[str, Any]] = {}
        self.camp_cum = list(accumulate(w for _n, _c, w in CAMPAIGNS))
        self.part_cum = list(accumulate(1.0 / (k + 1) ** 0.8 for k in range(N_PARTNERS)))
        self.lock_dates: dict[tuple[date, Any], date] = {}
        self.start = NOW - timedelta(days=SPAN_DAYS)
        self.update_id = 0
        self.created = NOW  # a fixed "created" time for the whole load

    def _case(self, terms: Terms, lines: tuple[Any, ...]) -> dict[str, Any]:
        """The rules' answer for one contract and basket: created, reversed and approved (cached)."""
        key = (terms.contract_id, terms.rate_ppm, terms.fixed_minor, lines)
        hit = self.cache.get(key)
        if hit is None:
            act = wf.new_action(lines, terms)
            rev = wf.decide(act, wf.Reverse("ITEM_RETURNED"), terms, NOW)
            app = wf.decide(act, wf.Approve(), terms, NOW)
            assert isinstance(rev, wf.Change)
            assert isinstance(app, wf.Change)
            hit = {
                "act": act, "amount": act.amount, "payout": act.payout, "items_json": ledger_repo.items_json(act.items),
                "rev": rev.after, "rev_delta": (rev.delta_amount, rev.delta_payout),
                "rev_items_json": ledger_repo.items_json(rev.changed_items()),
                "rev_restore": json.dumps(rev.after.restore),
                "sums": {s: (a.amount, a.payout, a.intended_amount, a.intended_payout)
                         for s, a in (("PENDING", act), ("REVERSED", rev.after), ("APPROVED", app.after))},
                "item": {s: a.items[0]
                         for s, a in (("PENDING", act), ("REVERSED", rev.after), ("APPROVED", app.after))},
            }
            self.cache[key] = hit
        return hit

    def _lock_date(self, day: date, t: Terms) -> date:
        key = (day, t.lock_after)
        got = self.lock_dates.get(key)
        if got is None:
            got = self.lock_dates[key] = locking_date(day, t.lock_after)
        return got

    def chunk(self, first: int, count: int) -> tuple[list[Any], list[Any], list[Any]]:
        rnd = self.rnd
        random_ = rnd.random
        randrange = rnd.randrange
        a_rows: list[tuple[Any, ...]] = []
        i_rows: list[tuple[Any, ...]] = []
        u_rows: list[tuple[Any, ...]] = []
        span = SPAN_DAYS * 86400
        account_id = self.meta.account_id
        camp_cum, part_cum = self.camp_cum, self.part_cum
        partners = self.meta.partners
        start = self.start
        n_total = self.n_total
        for aid in range(first, first + count):
            cid, cur, sale, lead = self.camps[bisect(camp_cum, random_() * camp_cum[-1])]
            pid = partners[bisect(part_cum, random_() * part_cum[-1])]
            is_lead = random_() < 0.12
            et = lead if is_lead else sale
            secs = int(span * (aid - 1) / n_total - random_() * 172800)
            event_at = start + timedelta(seconds=max(secs, 0))
            t = self.terms[(cid, pid, et)]
            if is_lead:
                lines: tuple[Any, ...] = (("LEAD", "Newsletter sign-up", None, 1, 0),)
            else:
                sku, name, cat, price = CATALOG[randrange(len(CATALOG))]
                q = 2 if random_() < 0.25 else 1
                lines = ((sku, name, cat, q, price * q),)
            case = self._case(t, lines)
            r = random_()
            day = event_at.date()
            if is_lead:
                lock_date, due = None, day + OPEN_ENDED
            else:
                lock_date = self._lock_date(day, t)
                due = lock_date
            promo = PROMOS[randrange(len(PROMOS))]
            if r < 0.002:
                promo = "=HYPERLINK(\"x\")"  # exported neutralised
            customer = f"c-{randrange(1, 2_000_000)}" if r > 0.001 else f"-{randrange(1000)}"
            state, reason, locked_at, restore, version = "PENDING", None, None, None, 1
            self.update_id += 1
            u_rows.append((self.update_id, aid, event_at, "CREATED", "PENDING", None, None, case["amount"],
                           case["payout"], case["items_json"], "api", None, "tracking"))
            if r < 0.04 and not is_lead:
                state, reason, restore, version = "REVERSED", "ITEM_RETURNED", case["rev_restore"], 2
                self.update_id += 1
                da, dp = case["rev_delta"]
                u_rows.append((self.update_id, aid, event_at + TWO_DAYS, "REVERSED", "REVERSED", "ITEM_RETURNED",
                               None, da, dp, case["rev_items_json"], "web", None, "manager@bench.example"))
            elif r < 0.07:
                locked_at = event_at + THREE_DAYS
                state, version = "APPROVED", 2
                self.update_id += 1
                u_rows.append((self.update_id, aid, locked_at, "APPROVED", "APPROVED", None, None, 0, 0, None,
                               "web", None, "manager@bench.example"))
            amount, payout, i_amount, i_payout = case["sums"][state]
            a_rows.append((
                aid, account_id, cid, et, pid, t.contract_id, f"NW-{aid:09d}", customer, promo, event_at, state,
                reason, cur, amount, payout, i_amount, i_payout, lock_date, due, locked_at, version, version,
                restore, event_at,
            ))
            it = case["item"][state]
            i_rows.append((aid, aid, 0, it.sku, it.name, it.category, it.quantity, it.amount, it.payout,
                           it.intended_quantity, it.intended_amount, it.intended_payout))
        return a_rows, i_rows, u_rows


def _expected_indexes(dialect: str) -> dict[str, Index]:
    """The secondary indexes of actions and action_updates that the models define for a backend."""
    out = {}
    for table in (actions, action_updates):
        for ix in table.indexes:
            cond = getattr(ix, "_ddl_if", None)
            if cond is not None and cond.dialect is not None and cond.dialect != dialect:
                continue
            out[str(ix.name)] = ix
    return out


def _existing_indexes(conn: Connection) -> set[str]:
    if conn.dialect.name == "sqlite":
        sql = ("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name IN ('actions', 'action_updates') "
               "AND name LIKE 'ix_%'")
    else:
        sql = ("SELECT indexname FROM pg_indexes WHERE tablename IN ('actions', 'action_updates') "
               "AND indexname LIKE 'ix_%'")
    return {r[0] for r in conn.execute(text(sql))}


def _drop_indexes(conn: Connection) -> None:
    for name in _existing_indexes(conn):
        conn.execute(text(f"DROP INDEX {name}"))


def _create_indexes(conn: Connection, log: Any) -> None:
    have = _existing_indexes(conn)
    for name, ix in sorted(_expected_indexes(conn.dialect.name).items()):
        if name in have:
            continue
        t0 = time.perf_counter()
        ix.create(conn)
        log(f"    index {name}: {time.perf_counter() - t0:.1f} s")


def sync_indexes(backend: Backend, log: Any) -> bool:
    """Bring reused data to the indexes the models define now (they change while tuning)."""
    with db.write(backend.engine) as conn:
        have = _existing_indexes(conn)
        want = _expected_indexes(conn.dialect.name)
        for name in have - set(want):
            conn.execute(text(f"DROP INDEX {name}"))
            log(f"    dropped index {name}")
        _create_indexes(conn, log)
    changed = have != set(want)
    if changed:
        analyze(backend)
    return changed


def _load_sqlite(conn: Connection, rows: _Rows, n: int, chunk: int, log: Any) -> None:
    """``executemany`` on the driver with tuples; times and dates go through the columns' own bind
    processors first, so they are stored exactly as SQLAlchemy stores them."""
    dialect = conn.dialect
    raw: Any = conn.connection.driver_connection
    plans = []
    for table in (actions, action_items, action_updates):
        cols = list(table.columns)
        procs = [(k, c.type._cached_bind_processor(dialect)) for k, c in enumerate(cols)]
        procs = [(k, p) for k, p in procs if p is not None]
        sql = f"INSERT INTO {table.name} ({', '.join(c.name for c in cols)}) VALUES ({', '.join('?' * len(cols))})"
        plans.append((sql, procs))
    done = 0
    t0 = time.perf_counter()
    for first in range(1, n + 1, chunk):
        data = rows.chunk(first, min(chunk, n + 1 - first))
        for (sql, procs), batch in zip(plans, data, strict=True):
            if procs:
                out = []
                for r in batch:
                    v = list(r)
                    for k, p in procs:
                        if v[k] is not None:
                            v[k] = p(v[k])
                    out.append(v)
                raw.executemany(sql, out)
            else:
                raw.executemany(sql, batch)
        done += len(data[0])
        if done % (chunk * 25) == 0:
            log(f"    {done:,} actions ({done / (time.perf_counter() - t0):,.0f}/s)")


def _load_pg(conn: Connection, rows: _Rows, n: int, chunk: int, log: Any) -> None:
    raw = conn.connection.driver_connection
    assert raw is not None
    done = 0
    t0 = time.perf_counter()
    with raw.cursor() as cur:
        cur.execute("SET session_replication_role = replica")  # no FK triggers during the bulk load
        for first in range(1, n + 1, chunk):
            a, i, u = rows.chunk(first, min(chunk, n + 1 - first))
            for table, cols, data in (("actions", ACTION_COLS, a), ("action_items", ITEM_COLS, i),
                                      ("action_updates", UPDATE_COLS, u)):
                with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as cp:
                    for r in data:
                        cp.write_row(r)
            done += len(a)
            if done % (chunk * 25) == 0:
                log(f"    {done:,} actions ({done / (time.perf_counter() - t0):,.0f}/s)")
        cur.execute("SET session_replication_role = origin")


def _typed(sql: str) -> Any:
    stmt = text(sql)
    for name, type_ in (("now", UTCDateTime()), ("as_of", Date())):
        if f":{name}" in sql:
            stmt = stmt.bindparams(bindparam(name, type_=type_))
    return stmt


def _prior_locks(conn: Connection, as_of: date, keep_due: int, log: Any) -> int:
    """Lock the older due actions as earlier lock runs would have, leaving ``keep_due`` due ones."""
    where = "locked_at IS NULL AND lock_due <= :as_of"
    due = conn.execute(_typed(f"SELECT count(*) FROM actions WHERE {where}"), {"as_of": as_of}).scalar_one()
    if due <= keep_due:
        log(f"    only {due:,} due actions; none locked before")
        return int(due)
    cutoff = conn.execute(
        _typed(f"SELECT id FROM actions WHERE {where} ORDER BY id DESC LIMIT 1 OFFSET :k"),
        {"as_of": as_of, "k": keep_due - 1},
    ).scalar_one()
    then = datetime.combine(as_of - timedelta(days=1), datetime.min.time(), tzinfo=UTC).replace(hour=3)
    params = {"as_of": as_of, "now": then, "cutoff": cutoff}
    conn.execute(_typed(
        "INSERT INTO action_updates (action_id, at, kind, state, delta_amount, delta_payout, channel, actor) "
        "SELECT id, :now, 'LOCKED', CASE state WHEN 'PENDING' THEN 'APPROVED' ELSE state END, 0, 0, 'system', "
        f"'lock run' FROM actions WHERE {where} AND id < :cutoff ORDER BY id"), params)
    conn.execute(_typed(
        "UPDATE actions SET state = CASE state WHEN 'PENDING' THEN 'APPROVED' ELSE state END, locked_at = :now, "
        f"version = version + 1, update_count = update_count + 1 WHERE {where} AND id < :cutoff"), params)
    left = conn.execute(_typed(f"SELECT count(*) FROM actions WHERE {where}"), {"as_of": as_of}).scalar_one()
    log(f"    {due - left:,} older due actions locked by 'earlier runs'; {left:,} left due")
    return int(left)


def generate(backend: Backend, n: int, seed: int, log: Any) -> Meta:
    """Create the schema and load ``n`` actions; returns what the benchmarks need to know."""
    rnd = random.Random(seed)
    engine = backend.engine
    db.migrate(backend.url)
    t_all = time.perf_counter()
    with db.write(engine) as conn:
        meta, ctx = _setup(conn, rnd)
        meta.actions, meta.seed = n, seed
        _drop_indexes(conn)
    rows = _Rows(rnd, meta, ctx, n)
    t0 = time.perf_counter()
    chunk = 20_000
    if backend.name == "sqlite":
        with engine.connect() as c0:
            c0.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # like COPY without FK triggers
            conn = c0.execution_options(payoutdesk_write=True)
            with conn.begin():
                _load_sqlite(conn, rows, n, chunk, log)
    else:
        with db.write(engine) as conn:
            _load_pg(conn, rows, n, chunk, log)
            for t in ("actions", "action_items", "action_updates"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), (SELECT max(id) FROM {t}))"))
    log(f"  loaded {n:,} actions, {n:,} items, {rows.update_id:,} updates in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    with db.write(engine) as conn:
        meta.lock_due = _prior_locks(conn, NOW.date(), max(n // 5, 1), log)
    log(f"  earlier lock runs in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    with db.write(engine) as conn:
        _create_indexes(conn, log)
        conn.execute(text("CREATE TABLE bench_meta (key VARCHAR(40) PRIMARY KEY, value TEXT NOT NULL)"))
        conn.execute(text("INSERT INTO bench_meta (key, value) VALUES ('meta', :v)"), {"v": meta.to_json()})
    log(f"  indexes in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    analyze(backend)
    log(f"  analyze in {time.perf_counter() - t0:.1f} s")
    log(f"  generation total {time.perf_counter() - t_all:.1f} s")
    return meta


def analyze(backend: Backend) -> None:
    if backend.name == "sqlite":
        raw = backend.engine.raw_connection()
        try:
            raw.driver_connection.execute("ANALYZE")  # type: ignore[union-attr]
            raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
        finally:
            raw.close()
        return
    with backend.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for t in ("actions", "action_items", "action_updates"):
            conn.exec_driver_sql(f"VACUUM ANALYZE {t}")
