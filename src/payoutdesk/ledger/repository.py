"""SQL for actions, items and their history."""

from __future__ import annotations

import functools
import json
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Connection,
    Date,
    Integer,
    Row,
    Select,
    String,
    and_,
    bindparam,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.dialects.sqlite.base import SQLiteDialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler

from payoutdesk.errors import StaleVersion
from payoutdesk.kit.db import is_sqlite
from payoutdesk.kit.time import as_utc
from payoutdesk.ledger import workflow as wf
from payoutdesk.models import action_items, action_updates, actions, submissions
from payoutdesk.models.tables import EVENT_DAY_POSTGRESQL, EVENT_DAY_SQLITE
from payoutdesk.models.types import UTCDateTime


@dataclass(frozen=True)
class Filters:
    state: str | None = None
    campaign_id: int | None = None
    partner_id: int | None = None
    event_type_id: int | None = None
    order_id: str | None = None
    action_id: int | None = None
    promo_code: str | None = None
    reason: str | None = None  # the reversal reason
    event_date_from: datetime | None = None
    event_date_to: datetime | None = None  # exclusive
    locking_date_from: date | None = None
    locking_date_to: date | None = None  # inclusive


def filtered(stmt: Select[Any], account_id: int, f: Filters) -> Select[Any]:
    a = actions.c
    conds = [a.account_id == account_id]
    if f.state is not None:
        conds.append(a.state == f.state)
    if f.campaign_id is not None:
        conds.append(a.campaign_id == f.campaign_id)
    if f.partner_id is not None:
        conds.append(a.partner_id == f.partner_id)
    if f.event_type_id is not None:
        conds.append(a.event_type_id == f.event_type_id)
    if f.order_id is not None:
        conds.append(a.order_id == f.order_id)
    if f.action_id is not None:
        conds.append(a.id == f.action_id)
    if f.promo_code is not None:
        conds.append(a.promo_code == f.promo_code)
    if f.reason is not None:
        conds.append(a.reason == f.reason)
    if f.event_date_from is not None:
        conds.append(a.event_date >= f.event_date_from)
    if f.event_date_to is not None:
        conds.append(a.event_date < f.event_date_to)
    if f.locking_date_from is not None:
        conds.append(a.locking_date >= f.locking_date_from)
    if f.locking_date_to is not None:
        conds.append(a.locking_date <= f.locking_date_to)
    return stmt.where(and_(*conds))


DAY_PLAN_MAX_DAYS = 93  # the longest bounded date range found day by day
WINDOW_MAX_DAYS = 1500  # the most days whose first and last ids are looked up for an id window
LIST_PROBE = 4000  # index entries a walk in an id window (or on a rare value) may take before handing over

# Statements of the list are SQL text built per shape of the filters and cached, compiled, by that
# text: building and compiling the per-day statement with SQLAlchemy cost more than running it.
_LIST_COLUMNS = ", ".join(f"actions.{c.name}" for c in actions.c)
_EQ_FIELDS = (  # Filters field, column, the index on (account, column, id) if there is one
    ("state", "state", "ix_actions_state"),
    ("campaign_id", "campaign_id", "ix_actions_campaign"),
    ("partner_id", "partner_id", "ix_actions_partner"),
    ("event_type_id", "event_type_id", None),
    ("order_id", "order_id", None),
    ("action_id", "id", None),
    # partial indexes (migration 0013): most actions have neither a promo code nor a reversal reason
    ("promo_code", "promo_code", "ix_actions_promo"),
    ("reason", "reason", "ix_actions_reason"),
)
# the UTC day of the event exactly as its indexes are written (models.tables)
_EVENT_DAY_SQL = {
    "sqlite": str(EVENT_DAY_SQLITE.compile(dialect=SQLiteDialect())),
    "postgresql": str(EVENT_DAY_POSTGRESQL.compile(dialect=PGDialect())),  # type: ignore[no-untyped-call]
}


@functools.lru_cache(maxsize=512)
def _list_stmt(sql: str, names: tuple[str, ...], full_rows: bool) -> Any:
    """The text statement (typed where the driver needs it), cached: SQLAlchemy then reuses its compiled form."""
    typed = [bindparam(n, type_=UTCDateTime()) for n in names if n.startswith("ev_")]
    typed += [bindparam(n, type_=Date()) for n in names if n.startswith(("lk_", "day"))]  # type: ignore[arg-type]
    stmt = text(sql).bindparams(*typed)
    return stmt.columns(*actions.c) if full_rows else stmt


def _run(conn: Connection, sql: str, params: dict[str, Any], full_rows: bool = False) -> Any:
    return conn.execute(_list_stmt(sql, tuple(sorted(params)), full_rows), params)


def _where(f: Filters, params: dict[str, Any], *, dates: bool = True, locking: bool = True,
           driver: str | None = None, skip: frozenset[str] = frozenset()) -> str:
    """The conditions of ``f`` as SQL text (parameters into ``params``). With a ``driver`` (SQLite
    only), ``+column`` on the other indexed equality columns keeps SQLite from walking their
    indexes instead: it knows only their average counts, not how rare the values at hand are."""
    out = ["actions.account_id = :acc"]
    for field, col, index in _EQ_FIELDS:
        value = getattr(f, field)
        if value is not None and field not in skip:
            plus = "+" if index is not None and driver not in (None, field) else ""
            out.append(f"{plus}actions.{col} = :{field}")
            params[field] = value
    if dates and f.event_date_from is not None:
        out.append("actions.event_date >= :ev_from")
        params["ev_from"] = f.event_date_from
    if dates and f.event_date_to is not None:
        out.append("actions.event_date < :ev_to")
        params["ev_to"] = f.event_date_to
    if locking and f.locking_date_from is not None:
        out.append("actions.locking_date >= :lk_from")
        params["lk_from"] = f.locking_date_from
    if locking and f.locking_date_to is not None:
        out.append("actions.locking_date <= :lk_to")
        params["lk_to"] = f.locking_date_to
    return " AND ".join(out)


def _sqlite_indexes(conn: Connection) -> frozenset[str]:
    """The indexes of the actions table (SQLite), looked up once per engine: the walks name them."""
    engine = conn.engine
    found = _SQLITE_INDEXES.get(engine)
    if found is None:
        found = _SQLITE_INDEXES[engine] = frozenset(
            r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index'"
                                               " AND tbl_name = 'actions'"))
    return found


_SQLITE_INDEXES: weakref.WeakKeyDictionary[Any, frozenset[str]] = weakref.WeakKeyDictionary()


def _walk_page(conn: Connection, account_id: int, f: Filters, limit: int, lo: int | None, hi: int | None,
               driver: str | None = None, checks: frozenset[str] = frozenset()) -> list[Row[Any]]:
    """The newest matches with ``lo <= id <= hi`` (``None``: open): without ``checks``, the plain
    query (the reference every other plan must match), on SQLite walking ``driver``'s index.

    With ``checks`` (SQLite), the walk on ``driver``'s index looks each candidate up in the indexes
    of the ``checks`` filters, and reads the table row only for the candidates they keep: for
    values rare together, those index entries (small, and near one another in id order) cost far
    less than a table row each. On PostgreSQL, ``_merge_page``.
    """
    params: dict[str, Any] = {"acc": account_id, "lim": limit}
    sqlite = is_sqlite(conn)
    alias = "p" if sqlite and checks and driver else "actions"
    bounds = ""
    if lo is not None:
        bounds += f" AND {alias}.id >= :w_lo"
        params["w_lo"] = lo
    if hi is not None:
        bounds += f" AND {alias}.id <= :w_hi"
        params["w_hi"] = hi
    index = {fld: ix for fld, _, ix in _EQ_FIELDS}
    col = {fld: c for fld, c, _ in _EQ_FIELDS}
    if not sqlite and driver and checks:
        return _merge_page(conn, f, params, lo, hi, driver, checks)
    if not (sqlite and driver and checks):
        where = _where(f, params, driver=driver if sqlite else None) + bounds
        sql = f"SELECT {_LIST_COLUMNS} FROM actions WHERE {where} ORDER BY actions.id DESC LIMIT :lim"
        return list(_run(conn, sql, params, full_rows=True))
    on_index = [f"p.account_id = :acc AND p.{col[driver]} = :{driver}"]
    for fld in sorted(checks):
        on_index.append(f"EXISTS (SELECT 1 FROM actions AS x_{fld} INDEXED BY {index[fld]} WHERE x_{fld}.account_id"
                        f" = :acc AND x_{fld}.{col[fld]} = :{fld} AND x_{fld}.id = p.id)")
    for fld in (driver, *checks):
        params[fld] = getattr(f, fld)
    rest = _where(f, params, driver=driver, skip=checks | {driver})
    sql = (f"SELECT {_LIST_COLUMNS} FROM actions AS p INDEXED BY {index[driver]} CROSS JOIN actions"
           f" ON actions.id = p.id WHERE {' AND '.join(on_index)}{bounds} AND {rest} ORDER BY p.id DESC LIMIT :lim")
    return list(_run(conn, sql, params, full_rows=True))


# PostgreSQL: only merge joins for the statement of ``_merge_page`` (set, then reset, in its transaction;
# ``list_page`` turns JIT off, which the cost given to the plans left out would set off)
_MERGE_ONLY = ("enable_hashjoin", "enable_nestloop", "enable_bitmapscan", "max_parallel_workers_per_gather")
_MERGE_SET = "; ".join(f"SET LOCAL {s} = {'0' if s.startswith('max') else 'off'}" for s in _MERGE_ONLY)
_MERGE_RESET = "; ".join(f"RESET {s}" for s in _MERGE_ONLY)
_MERGE_COLUMNS = ", ".join(f"a.{c.name}" for c in actions.c)


def _merge_page(conn: Connection, f: Filters, params: dict[str, Any], lo: int | None, hi: int | None,
                driver: str, checks: frozenset[str]) -> list[Row[Any]]:
    """PostgreSQL: the newest matches with ``lo <= id <= hi``, the ids taken from ``driver``'s index
    merged (in id order, newest first) with the index of each of ``checks``, index entries only; the
    table row is read for those ids alone, in that order, until the page is full.

    PostgreSQL's own plan walks one index and checks the other values on the table rows: for values
    rare together (a small partner's reversed actions) that is thousands of random reads of a
    table far larger than its buffers, where the merge reads a few hundred pages of two indexes.
    The planner is kept to that plan (merge joins, no hash, nested-loop or parallel plans) for this
    statement only; the recheck of every condition on the row keeps the rows exactly the plain query's.
    """
    col = {fld: c for fld, c, _ in _EQ_FIELDS}

    def bounds(alias: str) -> str:
        return (f" AND {alias}.id >= :w_lo" if lo is not None else "") + (f" AND {alias}.id <= :w_hi"
                                                                          if hi is not None else "")
    walk = f"p.account_id = :acc AND p.{col[driver]} = :{driver}{bounds('p')}"
    params[driver] = getattr(f, driver)
    for fld in sorted(checks):
        walk += (f" AND p.id IN (SELECT x_{fld}.id FROM actions AS x_{fld} WHERE x_{fld}.account_id = :acc"
                 f" AND x_{fld}.{col[fld]} = :{fld}{bounds(f'x_{fld}')})")
        params[fld] = getattr(f, fld)
    where = _where(f, params)
    sql = (f"SELECT {_MERGE_COLUMNS} FROM (SELECT p.id AS id FROM actions AS p WHERE {walk} ORDER BY p.id DESC) AS c"
           f" CROSS JOIN LATERAL (SELECT {_LIST_COLUMNS} FROM actions WHERE actions.id = c.id AND {where} LIMIT 1)"
           " AS a ORDER BY c.id DESC LIMIT :lim")
    conn.exec_driver_sql(_MERGE_SET)
    rows = list(_run(conn, sql, params, full_rows=True))
    conn.exec_driver_sql(_MERGE_RESET)  # (an error rolls the transaction back, and its SET LOCAL with it)
    return rows


def _plain_page(conn: Connection, account_id: int, f: Filters, limit: int, after_id: int | None,
                driver: str | None = None, checks: frozenset[str] = frozenset()) -> list[Row[Any]]:
    """The plain query below the cursor (see ``_walk_page``)."""
    return _walk_page(conn, account_id, f, limit, None, None if after_id is None else after_id - 1, driver, checks)


def _day_plan(conn: Connection, f: Filters, *, locking: bool = True) -> tuple[str, list[date], str] | None:
    """The day column (SQL), the days of a bounded date range, and which range they replace.

    An index on (account, day, id) holds each day's actions in id order, so the newest matches of
    every day of the range are found without sorting the range, and the page is the newest of
    those. The plain query would either sort every action of the range or walk back through all
    newer actions (ids follow the event dates), which at millions of actions takes seconds.
    ``locking=False`` leaves a locking-date range to the id window (``list_page``).
    """
    plans: list[tuple[str, list[date], str]] = []
    if locking and f.locking_date_from is not None and f.locking_date_to is not None:
        n = max((f.locking_date_to - f.locking_date_from).days + 1, 0)
        if n <= DAY_PLAN_MAX_DAYS:
            plans.append(("actions.locking_date", [f.locking_date_from + timedelta(days=k) for k in range(n)], "lk"))
    if f.event_date_from is not None and f.event_date_to is not None:
        lo = as_utc(f.event_date_from).date()
        hi = (as_utc(f.event_date_to) - timedelta(microseconds=1)).date()  # the bound is exclusive
        n = (hi - lo).days + 1 if f.event_date_to > f.event_date_from else 0
        if n <= DAY_PLAN_MAX_DAYS:
            day_sql = _EVENT_DAY_SQL["sqlite" if is_sqlite(conn) else "postgresql"]
            plans.append((day_sql, [lo + timedelta(days=k) for k in range(n)], "ev"))
    return min(plans, key=lambda p: len(p[1])) if plans else None


def _per_day_page(conn: Connection, account_id: int, f: Filters, plan: tuple[str, list[date], str], limit: int,
                  after_id: int | None) -> list[Row[Any]]:
    day_sql, days, which = plan
    if not days:
        return []
    params: dict[str, Any] = {"acc": account_id, "lim": limit}
    # a locking day implies its range; an event day inside the range implies it, the first and last
    # days of the range keep the exact times
    whole = _where(f, params, locking=which != "lk", dates=which != "ev")
    edge = _where(f, params, locking=which != "lk")
    if after_id is not None:
        whole += " AND actions.id < :after"
        edge += " AND actions.id < :after"
        params["after"] = after_id
    parts = []
    for k, day in enumerate(days):
        params[f"day{k}"] = day
        cond = edge if which == "ev" and k in (0, len(days) - 1) else whole
        parts.append(f"SELECT d{k}.id FROM (SELECT actions.id AS id FROM actions WHERE {cond} AND {day_sql} = :day{k}"
                     f" ORDER BY actions.id DESC LIMIT :lim) AS d{k}")
    ids = " UNION ALL ".join(parts)
    if not is_sqlite(conn):  # PostgreSQL read the table rows of every day's ids, then kept the newest
        ids = f"SELECT u.id FROM ({ids}) AS u ORDER BY u.id DESC LIMIT :lim"
    sql = f"SELECT {_LIST_COLUMNS} FROM actions WHERE actions.id IN ({ids}) ORDER BY actions.id DESC LIMIT :lim"
    return list(_run(conn, sql, params, full_rows=True))


def _id_window(conn: Connection, account_id: int, f: Filters, which: str) -> tuple[int | None, int | None] | None:
    """Ids that bound every action of the date range (``which``: "ev" or "lk"), exactly.

    Two index seeks a day on (account, day, id) give each day's first and last id; the range's
    actions lie between the smallest first id and the largest last id (of the bounded ends).
    ``(None, None)`` for an open end; ``None`` if the range has too many days to look up, ``(0, -1)``
    if no action has a day in the range.
    """
    sqlite = is_sqlite(conn)
    if which == "ev":
        day_sql = _EVENT_DAY_SQL["sqlite" if sqlite else "postgresql"]
        lo = as_utc(f.event_date_from).date() if f.event_date_from is not None else None
        hi = (as_utc(f.event_date_to) - timedelta(microseconds=1)).date() if f.event_date_to is not None else None
    else:
        day_sql = "actions.locking_date"
        lo, hi = f.locking_date_from, f.locking_date_to
    params: dict[str, Any] = {"acc": account_id}
    if lo is None or hi is None:  # the open end: the account's first or last day
        seek = (f"(SELECT {day_sql} FROM actions WHERE actions.account_id = :acc AND {day_sql} IS NOT NULL"
                f" ORDER BY {day_sql} {{}} LIMIT 1)")
        first, last = _run(conn, f"SELECT {seek.format('ASC')}, {seek.format('DESC')}", params).one()
        if first is None:
            return 0, -1
        first, last = (d if isinstance(d, date) else date.fromisoformat(d) for d in (first, last))
        lo = max(lo, first) if lo is not None else first
        hi = min(hi, last) if hi is not None else last
    if hi < lo:
        return 0, -1
    if (hi - lo).days + 1 > WINDOW_MAX_DAYS:
        return None
    params.update(day_lo=lo, day_hi=hi)
    want_lo, want_hi = (f.event_date_from, f.event_date_to) if which == "ev" else (f.locking_date_from,
                                                                                  f.locking_date_to)
    day = "days.d" if sqlite else "CAST(g.d AS DATE)"
    seek = f"SELECT actions.id FROM actions WHERE actions.account_id = :acc AND {day_sql} = {day} ORDER BY actions.id"
    first_id, last_id = f"{seek} LIMIT 1", f"{seek} DESC LIMIT 1"
    if sqlite:
        aggs = [f"min(({first_id}))" if want_lo is not None else "NULL",
                f"max(({last_id}))" if want_hi is not None else "NULL"]
        sql = ("WITH RECURSIVE days(d) AS (SELECT :day_lo UNION ALL SELECT date(d, '+1 day') FROM days"
               f" WHERE d < :day_hi) SELECT {aggs[0]}, {aggs[1]} FROM days")
    else:
        joins, aggs = [], ["NULL", "NULL"]
        if want_lo is not None:
            joins.append(f"LEFT JOIN LATERAL ({first_id}) AS lo ON true")
            aggs[0] = "min(lo.id)"
        if want_hi is not None:
            joins.append(f"LEFT JOIN LATERAL ({last_id}) AS hi ON true")
            aggs[1] = "max(hi.id)"
        sql = (f"SELECT {aggs[0]}, {aggs[1]} FROM generate_series(CAST(:day_lo AS DATE), CAST(:day_hi AS DATE),"
               f" interval '1 day') AS g(d) {' '.join(joins)}")
    lo_id, hi_id = _run(conn, sql, params).one()
    if (want_lo is not None and lo_id is None) or (want_hi is not None and hi_id is None):
        return 0, -1  # no action on any day of the range
    return lo_id, hi_id


def _window_page(conn: Connection, account_id: int, f: Filters, limit: int, after_id: int | None,
                 window: tuple[int | None, int | None], driver: str | None,
                 checks: frozenset[str] = frozenset()) -> tuple[list[Row[Any]], int | None]:
    """The newest matches in the id window, walking ``driver``'s index (or the account's) newest first,
    at most LIST_PROBE entries of it: the rows, and the id below which the walk stopped short
    (``None`` if the window was walked to its end)."""
    lo, hi = window
    if after_id is not None:
        hi = after_id - 1 if hi is None else min(hi, after_id - 1)
    params: dict[str, Any] = {"acc": account_id, "probe": LIST_PROBE}
    walk = ["actions.account_id = :acc"]
    if driver is not None:
        col = next(c for fld, c, _ in _EQ_FIELDS if fld == driver)
        walk.append(f"actions.{col} = :{driver}")
        params[driver] = getattr(f, driver)
    if lo is not None:
        walk.append("actions.id >= :w_lo")
        params["w_lo"] = lo
    if hi is not None:
        walk.append("actions.id <= :w_hi")
        params["w_hi"] = hi
    probe = (f"SELECT min(p.id), count(*) FROM (SELECT actions.id AS id FROM actions WHERE {' AND '.join(walk)}"
             " ORDER BY actions.id DESC LIMIT :probe) AS p")
    low, n = _run(conn, probe, params).one()
    if not n:
        return [], None
    rows = _walk_page(conn, account_id, f, limit, low, hi, driver, checks)
    return rows, (low if n >= LIST_PROBE else None)


LIST_SPAN = 4000  # ids below the cursor in which the equality filters' values are counted
DENSE = 0.5  # a value held by at least this share of the account's actions is checked on the table row
MERGE_GAIN = 25  # PostgreSQL: index entries merged (``_merge_page``) that cost about one table row read
MERGE_MAX_SHARE = 0.25  # PostgreSQL: a more common value is checked on the table rows (few are read in vain)


def _choose_walk(conn: Connection, account_id: int, f: Filters, fields: list[str],
                 after_id: int | None) -> tuple[str, frozenset[str]]:
    """For two or more indexed equality filters: the index to walk (the rarest value's) and the
    other filters to check on their indexes: on SQLite the values that are not common, on
    PostgreSQL the rarest other value, when merging its index with the walked one is worth it
    (``_merge_page``).

    The values are counted among the LIST_SPAN ids below the cursor (index entries only): SQLite
    knows only average counts per column, not how rare the values at hand are, and PostgreSQL
    assumes the values of different columns independent of one another.
    """
    params: dict[str, Any] = {"acc": account_id, "span": LIST_SPAN}
    if after_id is not None:
        top = ":after"
        params["after"] = after_id
    else:
        top = "(SELECT max(actions.id) + 1 FROM actions WHERE actions.account_id = :acc)"
    near = f"actions.account_id = :acc AND actions.id < {top} AND actions.id >= {top} - :span"
    counts = [f"(SELECT count(*) FROM actions WHERE {near})"]
    col = {fld: c for fld, c, _ in _EQ_FIELDS}
    for fld in fields:
        params[fld] = getattr(f, fld)
        counts.append(f"(SELECT count(*) FROM actions WHERE {near} AND actions.{col[fld]} = :{fld})")
    total, *got = _run(conn, "SELECT " + ", ".join(counts), params).one()
    driver = min(zip(got, fields, strict=True))[1]
    if not is_sqlite(conn):
        # the rarest other value's index is merged with the driver's when reading both indexes'
        # entries in the ids walked costs less than reading the driver's table rows (MERGE_GAIN:
        # a table row costs about that many index entries); the other values are checked on the rows
        n_d = got[fields.index(driver)] + 1
        n_c, check = min((n + 1, fld) for n, fld in zip(got, fields, strict=True) if fld != driver)
        if n_c < MERGE_MAX_SHARE * total and n_d + n_c < MERGE_GAIN * n_d * (1 - n_c / (total + 1)):
            return driver, frozenset((check,))
        return driver, frozenset()
    have = _sqlite_indexes(conn)
    index = {fld: ix for fld, _, ix in _EQ_FIELDS}
    if index[driver] not in have:
        return driver, frozenset()
    return driver, frozenset(fld for fld, n in zip(fields, got, strict=True)
                             if fld != driver and n < DENSE * total and index[fld] in have)


def list_page(conn: Connection, account_id: int, f: Filters, limit: int, after_id: int | None) -> list[Row[Any]]:
    """One page, newest first, keyset-paged on the id: the plain query's rows, found by the cheapest plan.

    - an event-date range (any, open or not): the id window of its days, walked on the rarest
      indexed equality filter's index (or the account's), for a bounded number of entries; where
      that does not fill the page (ids far from the event dates), the plans below go on from there;
    - a bounded range of at most DAY_PLAN_MAX_DAYS days: day by day (``_day_plan``);
    - a locking-date range open at one end or longer: its id window, as for event dates;
    - two or more indexed equality filters: the rarest one's index (counted near the cursor), the
      others checked on their indexes before the table (``_choose_walk``, ``_walk_page``; on
      PostgreSQL the rarest other value's index merged with it, ``_merge_page``);
    - else the plain query.
    """
    if f.action_id is not None or f.order_id is not None:  # one action, or a few: their own indexes
        return _plain_page(conn, account_id, f, limit, after_id)
    if not is_sqlite(conn):
        # planned with the values at hand: a generic plan of these statements (psycopg prepares
        # them once they repeat) may walk another filter's index back through all newer actions;
        # and never compiled (JIT): the estimates of some plans set it off, for 10-100 ms of compiling
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL jit = off")
    drivers = [fld for fld, _, index in _EQ_FIELDS if index is not None and getattr(f, fld) is not None]
    driver = drivers[0] if len(drivers) == 1 else None
    # With an indexed equality filter (state, campaign, partner) a locking-date range goes by its id
    # window, walked on that filter's index, as an event-date range always does: day by day, each
    # day's actions were checked against the value on their table rows (PostgreSQL: all of a day's
    # actions for a rare value; SQLite: all of the value's actions for each day). 5,000,000 actions,
    # a partner and a 31-day range: 84-433 ms on PostgreSQL and 2.3-19 s on SQLite day by day, 0.3-21
    # ms by the window (docs/PERFORMANCE.md).
    day_plan = _day_plan(conn, f, locking=not drivers)
    windows = []
    if f.event_date_from is not None or f.event_date_to is not None:
        windows.append("ev")
    if (f.locking_date_from is not None or f.locking_date_to is not None) and day_plan is None:
        windows.append("lk")
    checks: frozenset[str] = frozenset()
    if len(drivers) > 1:
        driver, checks = _choose_walk(conn, account_id, f, drivers, after_id)
    rows: list[Row[Any]] = []
    for which in windows[:1]:
        if (f.event_date_to if which == "ev" else f.locking_date_to) is None:
            # open at the top: the newest actions below the cursor usually fill the page at once
            rows, stopped = _window_page(conn, account_id, f, limit, after_id, (None, None), driver, checks)
            if stopped is None or len(rows) == limit:
                return rows
            after_id, limit = stopped, limit - len(rows)  # go on below where the walk stopped
        window = _id_window(conn, account_id, f, which)
        if window is None:
            break
        if window[0] is not None and window[1] is not None and window[1] < window[0]:
            return rows
        more, stopped = _window_page(conn, account_id, f, limit, after_id, window, driver, checks)
        rows += more
        if stopped is None or len(more) == limit:
            return rows
        after_id, limit = stopped, limit - len(more)  # go on below where the walk stopped
    if day_plan is not None:
        return rows + _per_day_page(conn, account_id, f, day_plan, limit, after_id)
    return rows + _plain_page(conn, account_id, f, limit, after_id, driver, checks)


# --- the other sorts of the list --------------------------------------------------------------

# sort -> (column, descending); the default "-event_date" is ``list_page`` (newest first by id), and
# "event_date" is its exact reverse (oldest first by id). None: the id is the only key.
SORTS: dict[str, tuple[str | None, bool]] = {
    "-event_date": (None, True), "event_date": (None, False),
    "locking_date": ("locking_date", False), "-locking_date": ("locking_date", True),
    "amount": ("amount", False), "-amount": ("amount", True),
    "payout": ("payout", False), "-payout": ("payout", True),
}
DEFAULT_SORT = "-event_date"


def _sort_conditions(column: str | None, desc: bool, after: tuple[Any, int] | None) -> list[Any]:
    """The keyset condition of ``sorted_page``: the rows after ``after`` = (key, id) in the sort's order."""
    a = actions.c
    ident = a.id
    if after is None:
        return []
    if column is None:
        return [ident < after[1] if desc else ident > after[1]]
    col = a[column]
    key, last = after
    if column == "locking_date" and key is None:
        # among the rows without a date (last in ascending order, first in descending)
        return [and_(col.is_(None), ident > last) if not desc else or_(and_(col.is_(None), ident < last),
                                                                      col.is_not(None))]
    if desc:
        return [or_(col < key, and_(col == key, ident < last))]
    cond = or_(col > key, and_(col == key, ident > last))
    if column == "locking_date":
        cond = or_(cond, col.is_(None))
    return [cond]


def sort_order(column: str | None, desc: bool) -> list[Any]:
    """The ORDER BY of ``sorted_page`` for a sort's column and direction."""
    a = actions.c
    ident = a.id.desc() if desc else a.id.asc()
    if column is None:
        return [ident]
    first = a[column].desc() if desc else a[column].asc()
    if column == "locking_date":  # as the index reads on PostgreSQL: no date after every date
        first = first.nulls_first() if desc else first.nulls_last()
    return [first, ident]


def _window_bounds(lo: int | None, hi: int | None) -> list[Any]:
    a = actions.c
    return ([a.id >= lo] if lo is not None else []) + ([a.id <= hi] if hi is not None else [])


# a locking-date sort with an event-date range: days of the range's window fetched at a time, at
# least this many times the rows still wanted (the other filters may drop some of them)
LOCKING_DAYS_BATCH = 4
# the locking-date indexes led by an equality filter (migration 0012), the rarest kind first
_LOCKING_DRIVERS = (("partner_id", "partner_id"), ("event_type_id", "event_type_id"), ("state", "state"))


def _locking_days(conn: Connection, account_id: int, f: Filters, desc: bool, start: date | None,
                  window: tuple[int | None, int | None], cap: int) -> list[tuple[date | None, int]]:
    """The locking days from ``start`` on (inclusive, in the sort's direction; None: from the first),
    each with the number of ids of the id ``window`` it holds (index entries only: two seeks a day
    on (account, [partner | event type | state,] locking date, id)), the days without any left
    out; the rows without a locking date as the day None (last in ascending order, first in
    descending). A day's count stops at ``cap``: enough to know how many days a page needs."""
    params: dict[str, Any] = {"acc": account_id, "cap": cap}
    eq = ""
    for fld, col in _LOCKING_DRIVERS:
        if getattr(f, fld) is not None:
            eq = f" AND actions.{col} = :{fld}"
            params[fld] = getattr(f, fld)
            break
    lo, hi = window
    ids = ""
    if lo is not None:
        ids += " AND actions.id >= :w_lo"
        params["w_lo"] = lo
    if hi is not None:
        ids += " AND actions.id <= :w_hi"
        params["w_hi"] = hi
    agg, step = ("max", "<") if desc else ("min", ">")
    first = f"{agg}(actions.locking_date) FROM actions WHERE actions.account_id = :acc{eq}"
    if start is not None:
        first += f" AND actions.locking_date {step}= :lk_start"
        params["lk_start"] = start
    sql = (f"WITH RECURSIVE days(d) AS (SELECT (SELECT {first}) UNION ALL SELECT (SELECT {agg}(actions.locking_date)"
           f" FROM actions WHERE actions.account_id = :acc{eq} AND actions.locking_date {step} days.d) FROM days"
           " WHERE days.d IS NOT NULL) SELECT days.d, (SELECT count(*) FROM (SELECT 1 FROM actions WHERE"
           f" actions.account_id = :acc{eq} AND actions.locking_date = days.d{ids} LIMIT :cap) AS n) FROM days"
           " WHERE days.d IS NOT NULL")
    got = [(d if isinstance(d, date) else date.fromisoformat(d), int(n)) for d, n in _run(conn, sql, params)]
    days: list[tuple[date | None, int]] = [(d, n) for d, n in got if n]
    nulls = int(_run(conn, f"SELECT count(*) FROM (SELECT 1 FROM actions WHERE actions.account_id = :acc{eq}"
                           f" AND actions.locking_date IS NULL{ids} LIMIT :cap) AS n",
                     {k: v for k, v in params.items() if k != "lk_start"}).scalar_one())
    if nulls:
        days = [(None, nulls), *days] if desc else [*days, (None, nulls)]
    return days


def _locking_days_page(conn: Connection, account_id: int, f: Filters, desc: bool, limit: int,
                       after: tuple[Any, int] | None, window: tuple[int | None, int | None]) -> list[Row[Any]]:
    """A locking-date page of an event-date range: the locking days that hold ids of the range's
    window (``_locking_days``), read a few days at a time (each batch one statement that walks the
    locking-date index over those days only, its id window and every filter rechecked), until the
    page is full. The plain statement walks the index from the first locking date and reads a
    table row for every entry until it has found the page: seconds, for a short range."""
    start: date | None = None
    if after is not None:
        start = after[0]
        if start is None and not desc:  # past every date: only the rows without one are left
            return _plain_sorted(conn, account_id, f, "locking_date", desc, limit, after, window)
    days = _locking_days(conn, account_id, f, desc, start, window, max(LOCKING_DAYS_BATCH * limit, 1))
    if after is not None and after[0] is None and desc:  # among the rows without a date, then every date
        days = [d for d in days if d[0] is not None]
        rows = _plain_sorted(conn, account_id, f, "locking_date", desc, limit, after, window, nulls_only=True)
        after = None
        limit -= len(rows)
        if limit <= 0:
            return rows
    else:
        rows = []
    sqlite = is_sqlite(conn)
    if not sqlite:
        # PostgreSQL misjudges how many rows the day, id window and event-date range leave together (it
        # multiplies their shares) and took a bitmap of every window id of the days and a sort, for
        # tens of thousands of rows, where the index gives them in order: 13 ms against 0.3 ms
        conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
    k = 0
    while k < len(days) and limit > 0:
        batch: list[date | None] = []
        n = 0
        while k < len(days) and (n < LOCKING_DAYS_BATCH * limit or not batch):
            batch.append(days[k][0])
            n += days[k][1]
            k += 1
        more = _plain_sorted(conn, account_id, f, "locking_date", desc, limit, after, window, days=batch)
        rows += more
        limit -= len(more)
    if not sqlite:
        conn.exec_driver_sql("RESET enable_bitmapscan")
    return rows


def _plain_sorted(conn: Connection, account_id: int, f: Filters, column: str | None, desc: bool, limit: int,
                  after: tuple[Any, int] | None, window: tuple[int | None, int | None] = (None, None),
                  days: list[date | None] | None = None, nulls_only: bool = False) -> list[Row[Any]]:
    """The plain keyset statement of ``sorted_page`` (the reference the plans must match), within the id
    ``window`` and, for the locking-date sort, only on the locking ``days`` (None: without a date)."""
    a = actions.c
    conds = _sort_conditions(column, desc, after) + _window_bounds(*window)
    if nulls_only:
        conds.append(a.locking_date.is_(None))
    if days is not None:
        dated = [d for d in days if d is not None]
        # each day a seek of its window's ids on the index, not a walk of the days' every entry
        on_days = [a.locking_date.in_(dated)] if dated else []
        if None in days:
            on_days.append(a.locking_date.is_(None))
        conds.append(or_(*on_days))
    if column == "locking_date" and is_sqlite(conn) and (f.promo_code is not None or f.reason is not None):
        # the locking-date indexes give the order; SQLite, knowing no better, took an index of the promo
        # code or the reason and sorted all its actions (a reason held by 176,107 actions: 0.5-0.7 s), so
        # those two are checked on the rows, as on the locking-date index before they had indexes
        for name, value in (("promo_code", f.promo_code), ("reason", f.reason)):
            if value is not None:
                conds.append(literal_column(f"+actions.{name}", String) == value)
        f = replace(f, promo_code=None, reason=None)
    stmt = filtered(select(actions), account_id, f)
    if conds:
        stmt = stmt.where(*conds)
    return list(conn.execute(stmt.order_by(*sort_order(column, desc)).limit(limit)))


def sorted_page(conn: Connection, account_id: int, f: Filters, sort: str, limit: int,
                after: tuple[Any, int] | None) -> list[Row[Any]]:
    """One page in ``sort`` order (any sort but the default, which is ``list_page``), keyset-paged
    after ``after`` = (the sort key, the id) of the previous page's last row.

    Ties of the key are in id order, in the sort's direction, so that (key, id) orders every row once.
    A missing locking date (open-ended locking: never locks by date) sorts after every date in
    ``locking_date`` and before every date in ``-locking_date``, on both databases.

    The rows are always the plain keyset statement's (``_plain_sorted``); how they are found:

    - an event-date range (open or not) first becomes its exact id window (``_id_window``, as in
      ``list_page``), added to the statement: the event-date sorts start at its end, the amount and
      payout sorts read only its rows;
    - the locking-date sorts walk (account, locking date, id), or the same led by a partner, event type
      or state filter (migration 0012; the planner picks it); with an event-date range the locking
      days that hold ids of its window are found first, and only those days are walked
      (``_locking_days_page``);
    - ``amount`` and ``payout`` have no index (an index on a column the engine changes would end the
      HOT updates of migration 0004): each page sorts every action the filters keep
      (docs/API.md, docs/PERFORMANCE.md).
    """
    column, desc = SORTS[sort]
    if not is_sqlite(conn):  # as in ``list_page``: planned for the values at hand, never compiled (JIT)
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL jit = off")
    window: tuple[int | None, int | None] = (None, None)
    if (f.event_date_from is not None or f.event_date_to is not None) and f.action_id is None and f.order_id is None:
        found = _id_window(conn, account_id, f, "ev")
        if found is not None:
            if found[0] is not None and found[1] is not None and found[1] < found[0]:
                return []  # no action on any day of the range
            window = found
            if column == "locking_date":
                return _locking_days_page(conn, account_id, f, desc, limit, after, window)
    return _plain_sorted(conn, account_id, f, column, desc, limit, after, window)


def submission_labels(conn: Connection, ids: Sequence[int | None]) -> dict[int, str]:
    """The API's label (``F-17``, ``A-18``) of each submission id among ``ids`` (history entries name them)."""
    wanted = sorted({int(i) for i in ids if i is not None})
    if not wanted:
        return {}
    rows = conn.execute(select(submissions.c.id, submissions.c.kind).where(submissions.c.id.in_(wanted)))
    return {int(r.id): f"{r.kind}-{r.id}" for r in rows}


def items_of_many(conn: Connection, action_ids: Sequence[int]) -> dict[int, list[Row[Any]]]:
    out: dict[int, list[Row[Any]]] = {i: [] for i in action_ids}
    if not action_ids:
        return out
    rows = conn.execute(
        select(action_items)
        .where(action_items.c.action_id.in_(list(action_ids)))
        .order_by(action_items.c.action_id, action_items.c.position)
    )
    for r in rows:
        out[r.action_id].append(r)
    return out


def _iso_time(conn: Connection, col: Any) -> Any:
    """A UTC time as ``kit.time.iso`` writes it (2026-01-15T10:00:00Z), rendered by the database."""
    if is_sqlite(conn):
        return func.strftime("%Y-%m-%dT%H:%M:%SZ", col)  # stored as naive UTC text
    return func.to_char(func.timezone("UTC", col), 'YYYY-MM-DD"T"HH24:MI:SS"Z"')


_LOAD = select(actions).where(actions.c.id == bindparam("id"), actions.c.account_id == bindparam("account_id"))
_LOAD_FOR_UPDATE = _LOAD.with_for_update()


def load(conn: Connection, account_id: int, action_id: int, *, for_update: bool) -> Row[Any] | None:
    # built once: building the statement and its cache key cost more than running it
    stmt = _LOAD_FOR_UPDATE if for_update and not is_sqlite(conn) else _LOAD
    return conn.execute(stmt, {"id": action_id, "account_id": account_id}).first()


def items_of(conn: Connection, action_id: int) -> list[Row[Any]]:
    return list(
        conn.execute(
            select(action_items).where(action_items.c.action_id == action_id).order_by(action_items.c.position)
        )
    )


def updates_of(conn: Connection, action_id: int) -> list[Row[Any]]:
    return list(
        conn.execute(
            select(action_updates).where(action_updates.c.action_id == action_id).order_by(action_updates.c.id)
        )
    )


def newest_by_order(conn: Connection, account_id: int, event_type_id: int, order_id: str) -> Row[Any] | None:
    """R12: the newest action of an event type with the order id."""
    return conn.execute(
        select(actions)
        .where(
            actions.c.event_type_id == event_type_id,
            actions.c.order_id == order_id,
            actions.c.account_id == account_id,
        )
        .order_by(actions.c.id.desc())
        .limit(1)
    ).first()


def to_domain(row: Row[Any], items: Sequence[Row[Any]]) -> wf.Action:
    return wf.Action(
        id=row.id,
        state=wf.State(row.state),
        items=tuple(
            wf.Item(
                i.sku, i.name, i.category, i.quantity, i.amount, i.payout,
                i.intended_quantity, i.intended_amount, i.intended_payout,
            )
            for i in items
        ),
        locked_at=row.locked_at,
        reason=row.reason,
        update_count=row.update_count,
        restore=tuple((int(q), int(a)) for q, a in json.loads(row.restore)) if row.restore else None,
        lock_due=row.lock_due,
    )


def items_json(items: Sequence[wf.Item]) -> str:
    return json.dumps(
        [{"sku": i.sku, "quantity": i.quantity, "amount": i.amount, "payout": i.payout} for i in items],
        separators=(",", ":"),
    )


def insert_action(conn: Connection, values: dict[str, Any], action: wf.Action, update: dict[str, Any]) -> int:
    pk = conn.execute(
        insert(actions).values(
            **values,
            state=action.state.value,
            amount=action.amount,
            payout=action.payout,
            intended_amount=action.intended_amount,
            intended_payout=action.intended_payout,
            version=1,
            update_count=1,
        )
    ).inserted_primary_key
    assert pk is not None
    action_id = int(pk[0])
    conn.execute(
        insert(action_items),
        [
            {
                "action_id": action_id, "position": n, "sku": i.sku, "name": i.name, "category": i.category,
                "quantity": i.quantity, "amount": i.amount, "payout": i.payout,
                "intended_quantity": i.intended_quantity, "intended_amount": i.intended_amount,
                "intended_payout": i.intended_payout,
            }
            for n, i in enumerate(action.items)
        ],
    )
    conn.execute(
        insert(action_updates).values(
            action_id=action_id, kind=wf.Kind.CREATED.value, state=action.state.value,
            delta_amount=action.amount, delta_payout=action.payout, items=items_json(action.items), **update,
        )
    )
    return action_id


_item_update = (
    update(action_items)
    .where(action_items.c.action_id == bindparam("a_id"), action_items.c.position == bindparam("pos"))
    .values(quantity=bindparam("q"), amount=bindparam("amt"), payout=bindparam("pay"))
)


def count(conn: Connection, account_id: int, f: Filters) -> int:
    return int(conn.execute(filtered(select(func.count()).select_from(actions), account_id, f)).scalar_one())


def reserve_action_ids(conn: Connection, n: int) -> list[int]:
    """Ids for ``n`` actions inserted in bulk: from the sequence on PostgreSQL (safe beside other
    writers); after the largest id on SQLite, whose write transaction excludes other writers."""
    if n <= 0:
        return []
    if is_sqlite(conn):
        first = int(conn.execute(select(func.coalesce(func.max(actions.c.id), 0))).scalar_one()) + 1
        return list(range(first, first + n))
    return [
        int(i)
        for i in conn.execute(
            text("WITH s AS MATERIALIZED (SELECT pg_get_serial_sequence('actions', 'id')::regclass AS seq) "
                 "SELECT nextval(s.seq) FROM s, generate_series(1, :n)"), {"n": n}
        ).scalars()
    ]


# --- reads of the impact.com-compatible API (api/compat.py) ------------------------------------


def offset_page(conn: Connection, account_id: int, f: Filters, offset: int, limit: int) -> list[Row[Any]]:
    """One page of the account's matching actions, newest first, from row ``offset`` on (impact.com's
    Page/PageSize paging; ``list_page`` is the keyset-paged one)."""
    stmt = filtered(select(actions), account_id, f)
    return list(conn.execute(stmt.order_by(actions.c.id.desc()).offset(offset).limit(limit)))


def newest_changes(conn: Connection, action_ids: Sequence[int]) -> dict[int, Row[Any]]:
    """The newest change of each of these actions, by action id: its ``at``, ``delta_amount``,
    ``delta_payout``, ``note`` and ``reason``. A lock is a state transition, not a change (as in
    impact.com), so LOCKED entries are passed over; an action without a change is missing."""
    if not action_ids:
        return {}
    u = action_updates.c
    newest = (
        select(u.action_id, func.max(u.id).label("uid"))
        .where(u.action_id.in_(list(action_ids)), u.kind != wf.Kind.LOCKED.value)
        .group_by(u.action_id)
        .subquery()
    )
    stmt: Select[Any] = select(u.action_id, u.at, u.delta_amount, u.delta_payout, u.note, u.reason).join(
        newest, u.id == newest.c.uid
    )
    return {int(r.action_id): r for r in conn.execute(stmt)}


def order_keys(conn: Connection, account_id: int, action_ids: Sequence[int]) -> dict[int, Row[Any]]:
    """The ``event_type_id``, ``order_id`` and ``partner_id`` of each of these actions of the account,
    by action id (other accounts' actions are missing)."""
    ids = set(action_ids)
    if not ids:
        return {}
    a = actions.c
    stmt: Select[Any] = select(a.id, a.event_type_id, a.order_id, a.partner_id).where(
        a.id.in_(ids), a.account_id == account_id
    )
    return {int(r.id): r for r in conn.execute(stmt)}


# --- one action's change (ledger.service.apply and change) ------------------------------------
# Statements built once and run with bound values: building a statement (and its cache key) costs
# more than running it on a warm cache.

_WRITE_ACTION = (
    update(actions)
    .where(actions.c.id == bindparam("a_id"), actions.c.version == bindparam("a_version"))
    .values(
        state=bindparam("a_state"),
        reason=bindparam("a_reason"),
        amount=bindparam("a_amount"),
        payout=bindparam("a_payout"),
        locked_at=bindparam("a_locked_at", type_=UTCDateTime()),
        restore=bindparam("a_restore"),
        update_count=bindparam("a_update_count"),
        version=bindparam("a_new_version"),
    )
)
_INSERT_UPDATE = insert(action_updates)
_INSERT_UPDATE_ALL = insert(action_updates).values(
    {c.name: bindparam(c.name, type_=c.type) for c in action_updates.c if c.name != "id"}
)


class _OnSqlite:
    """A write compiled once for SQLite and run right on the DBAPI connection of ``conn``, inside its
    transaction, its parameters through the same bind processors as SQLAlchemy would: it skips
    SQLAlchemy's work per execution (cache lookup, execution context, result), which on SQLite costs
    several times the statement itself. Errors are SQLAlchemy's exceptions as usual."""

    def __init__(self, stmt: Any) -> None:
        self._stmt = stmt
        self._plan: tuple[str, list[tuple[str, Any]]] | None = None
        self._literals: dict[str, Any] = {}

    def _prepare(self, conn: Connection) -> tuple[str, list[tuple[str, Any]]]:
        compiled = cast(SQLCompiler, self._stmt.compile(dialect=conn.dialect))
        assert compiled.positiontup is not None
        assert not compiled.literal_execute_params
        processors = compiled._bind_processors
        # the values the statement carries itself (a format, say); set before the plan, which other
        # threads take as the sign that all is ready
        self._literals = {name: b.effective_value for b, name in compiled.bind_names.items() if not b.required}
        self._plan = (compiled.string, [(name, processors.get(name)) for name in compiled.positiontup])
        return self._plan

    def _cursor(self, conn: Connection, values: Sequence[dict[str, Any]]) -> Any:
        sql, names = self._plan or self._prepare(conn)
        if self._literals:
            values = [{**self._literals, **v} for v in values]
        rows = [tuple(v[n] if p is None else p(v[n]) for n, p in names) for v in values]
        dbapi = conn.connection.driver_connection
        assert dbapi is not None
        try:
            return dbapi.execute(sql, rows[0]) if len(rows) == 1 else dbapi.executemany(sql, rows)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(sql, rows, exc, conn.dialect.loaded_dbapi.Error) from exc

    def run(self, conn: Connection, values: Sequence[dict[str, Any]]) -> int:
        """Runs the statement once per parameter set; the rows it matched in all."""
        return int(self._cursor(conn, values).rowcount)

    def fetch(self, conn: Connection, values: dict[str, Any]) -> list[tuple[Any, ...]]:
        """The rows of a query as the DBAPI gives them: only for columns that SQLAlchemy's types
        would not convert on SQLite (text, integers)."""
        return list(self._cursor(conn, [values]).fetchall())


_WRITE_ACTION_SQLITE = _OnSqlite(_WRITE_ACTION)
_ITEM_UPDATE_SQLITE = _OnSqlite(_item_update)
_INSERT_UPDATE_SQLITE = _OnSqlite(_INSERT_UPDATE_ALL)


def _action_params(after: wf.Action, version: int) -> dict[str, Any]:
    """The parameters of the version-checked action write (R14)."""
    return {
        "a_id": after.id,
        "a_version": version,
        "a_state": after.state.value,
        "a_reason": after.reason,
        "a_amount": after.amount,
        "a_payout": after.payout,
        "a_locked_at": after.locked_at,
        "a_restore": json.dumps(after.restore) if after.restore is not None else None,
        "a_update_count": after.update_count,
        "a_new_version": version + 1,
    }


def write_change(conn: Connection, version: int, change: wf.Change, update_values: dict[str, Any]) -> None:
    """Write one change: the action (version-checked, R14), its changed items, one history entry."""
    after = change.after
    sqlite = is_sqlite(conn)
    params = _action_params(after, version)
    matched = _WRITE_ACTION_SQLITE.run(conn, [params]) if sqlite else conn.execute(_WRITE_ACTION, params).rowcount
    if matched != 1:
        raise StaleVersion(f"Action {after.id} was changed by someone else meanwhile.")
    changed = [
        {"a_id": after.id, "pos": n, "q": a.quantity, "amt": a.amount, "pay": a.payout}
        for n, (b, a) in enumerate(zip(change.before.items, after.items, strict=True))
        if a != b
    ]
    if changed:
        if sqlite:
            _ITEM_UPDATE_SQLITE.run(conn, changed)
        else:
            conn.execute(_item_update, changed)
    entry = {
        "action_id": after.id,
        "kind": change.kind.value,
        "state": after.state.value,
        "reason": change.reason,
        "delta_amount": change.delta_amount,
        "delta_payout": change.delta_payout,
        "items": items_json(change.changed_items()) if changed else None,
        **update_values,
    }
    if sqlite:
        _INSERT_UPDATE_SQLITE.run(conn, [entry])
    else:
        conn.execute(_INSERT_UPDATE, entry)


_HISTORY: dict[str, Select[Any]] = {}


def _submission_label(submission_id: Any) -> Any:
    """The API's label of a history entry's submission (``F-17``, ``A-18``), read with the entry."""
    s = submissions.c
    found = select(s.kind.concat("-").concat(s.id.cast(String))).where(s.id == submission_id).scalar_subquery()
    return func.coalesce(found, literal("F-").concat(submission_id.cast(String)))


def history_of_action(conn: Connection, action_id: int) -> Sequence[Sequence[Any]]:
    """An action's history as the API shows it, oldest first (one indexed query): per entry (at, kind,
    state, reason, note, delta_amount, delta_payout, items, channel, submission label (``F-17``), actor), with ``at``
    already ISO text as ``kit.time.iso`` writes it (rendered by the database, like the export's times)."""
    stmt = _HISTORY.get(conn.dialect.name)
    if stmt is None:
        u = action_updates.c
        stmt = _HISTORY[conn.dialect.name] = (
            select(_iso_time(conn, u.at).label("at"), u.kind, u.state, u.reason, u.note, u.delta_amount,
                   u.delta_payout, u["items"], u.channel, _submission_label(u.submission_id), u.actor)
            .where(u.action_id == bindparam("action_id"))
            .order_by(u.id)
        )
        if is_sqlite(conn):
            _HISTORY_SQLITE.append(_OnSqlite(stmt))  # text and integers only: nothing for SQLAlchemy to convert
    if _HISTORY_SQLITE and is_sqlite(conn):
        return _HISTORY_SQLITE[0].fetch(conn, {"action_id": action_id})
    return list(conn.execute(stmt, {"action_id": action_id}))


_HISTORY_SQLITE: list[_OnSqlite] = []


# PostgreSQL: the writes of ``write_change`` and the history read after them in one statement (one
# round trip instead of four). Every part depends on the version-checked UPDATE of the action: when it
# matches nothing, nothing is written and no new entry comes back. The history is the entries the
# statement's snapshot sees (all but the new one) followed by the new one, as INSERT ... RETURNING
# answers it.
_STALE_MARK = "payoutdesk: stale version"
_HISTORY_COLUMNS_PG = (
    "to_char(timezone('UTC', {t}.at), 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), {t}.kind, {t}.state, {t}.reason, "
    "{t}.note, {t}.delta_amount, {t}.delta_payout, {t}.items, {t}.channel, "
    "COALESCE((SELECT s.kind || '-' || s.id FROM submissions s WHERE s.id = {t}.submission_id), "
    "'F-' || {t}.submission_id), {t}.actor"
)
_WRITE_AND_HISTORY_PG = text(
    "WITH a AS ("
    " UPDATE actions SET state = :a_state, reason = :a_reason, amount = :a_amount, payout = :a_payout,"
    " locked_at = :a_locked_at, restore = :a_restore, update_count = :a_update_count, version = :a_new_version"
    " WHERE id = :a_id AND version = :a_version RETURNING id"
    "), i AS ("
    " UPDATE action_items SET quantity = v.q, amount = v.amt, payout = v.pay"
    " FROM unnest(CAST(:i_pos AS integer[]), CAST(:i_q AS integer[]), CAST(:i_amt AS bigint[]),"
    " CAST(:i_pay AS bigint[])) AS v(pos, q, amt, pay)"
    " WHERE action_items.action_id = (SELECT id FROM a) AND action_items.position = v.pos"
    "), u AS ("
    " INSERT INTO action_updates (action_id, at, kind, state, reason, note, delta_amount, delta_payout, items,"
    " channel, submission_id, actor)"
    " SELECT id, :at, :kind, :state, :reason, :note, :delta_amount, :delta_payout, :items, :channel,"
    " :submission_id, :actor FROM a"
    " RETURNING id, at, kind, state, reason, note, delta_amount, delta_payout, items, channel, submission_id, actor"
    ") "
    f"SELECT * FROM (SELECT false AS new, h.id, {_HISTORY_COLUMNS_PG.format(t='h')}"
    " FROM action_updates h WHERE h.action_id = :a_id"
    f" UNION ALL SELECT true, u.id, {_HISTORY_COLUMNS_PG.format(t='u')} FROM u) AS all_updates"
    # a stale version fails the statement (text that is no integer), so that a COMMIT sent after it in
    # the same round trip is skipped and nothing the transaction did is committed
    f" WHERE CAST((SELECT CASE WHEN count(*) = 1 THEN '1' ELSE '{_STALE_MARK}' END FROM a) AS integer) = 1"
    " ORDER BY id"
).bindparams(bindparam("a_locked_at", type_=UTCDateTime()), bindparam("at", type_=UTCDateTime()))


def write_change_with_history_pg(
    conn: Connection, version: int, change: wf.Change, update_values: dict[str, Any], *, commit: bool = False
) -> list[tuple[Any, ...]]:
    """PostgreSQL: ``write_change`` then ``history_of_action``, in one statement and round trip
    (``commit``: with COMMIT in the same round trip, see ``_OnPg.rows``)."""
    after = change.after
    changed = [
        (n, a) for n, (b, a) in enumerate(zip(change.before.items, after.items, strict=True)) if a != b
    ]
    try:
        rows = _WRITE_AND_HISTORY_ON_PG.rows(conn, {
            **_action_params(after, version),
            "i_pos": [n for n, _ in changed],
            "i_q": [a.quantity for _, a in changed],
            "i_amt": [a.amount for _, a in changed],
            "i_pay": [a.payout for _, a in changed],
            "kind": change.kind.value,
            "state": after.state.value,
            "reason": change.reason,
            "delta_amount": change.delta_amount,
            "delta_payout": change.delta_payout,
            "items": items_json(change.changed_items()) if changed else None,
            **update_values,
        }, commit=commit)
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == "22P02" and _STALE_MARK in str(exc.orig):
            raise StaleVersion(f"Action {after.id} was changed by someone else meanwhile.") from None
        raise
    if not rows or not rows[-1][0]:
        raise StaleVersion(f"Action {after.id} was changed by someone else meanwhile.")
    return [tuple(r)[2:] for r in rows]


def _items_and_terms_statement() -> Select[Any]:
    from sqlalchemy import true

    from payoutdesk.catalog.service import TERMS_IN_FORCE  # the catalog's statement, as it reads the terms

    terms = TERMS_IN_FORCE.subquery()
    i = action_items.c
    return (
        select(i.sku, i.name, i.category, i.quantity, i.amount, i.payout, i.intended_quantity, i.intended_amount,
               i.intended_payout, *[c.label(f"t_{c.name}") for c in terms.c])
        .select_from(action_items.outerjoin(terms, true()))
        .where(i.action_id == bindparam("action_id"))
        .order_by(i.position)
    )


_ITEMS_AND_TERMS: list[Select[Any]] = []


def items_and_terms(conn: Connection, action_id: int, campaign_id: int, partner_id: int, event_type_id: int,
                    on: date) -> tuple[list[Row[Any]], Row[Any] | None]:
    """``items_of`` and, in the same round trip, the row of ``catalog.service.TERMS_IN_FORCE`` for the
    campaign, partner, event type and day (its columns prefixed ``t_``; None when no contract started).
    The items rows have the item columns ``to_domain`` and the API read."""
    if not _ITEMS_AND_TERMS:
        _ITEMS_AND_TERMS.append(_items_and_terms_statement())
    rows = list(conn.execute(_ITEMS_AND_TERMS[0], {
        "action_id": action_id, "campaign_id": campaign_id, "partner_id": partner_id, "on": on,
        "event_type_id": event_type_id,
    }))
    return rows, (rows[0] if rows and rows[0].t_id is not None else None)


# --- PostgreSQL: a single-action change (``ledger.service.change``) in two round trips ------------
# The statements below run on the psycopg connection under ``conn``, inside its transaction, in
# pipeline mode: BEGIN goes out with the first statement of the transaction instead of in a round
# trip of its own, and with ``commit`` the COMMIT goes out with the last statement. The action, its
# items and the terms in force come back from one statement (``load_for_change_pg``), the writes and
# the history from another (``write_change_with_history_pg``): two round trips per change where
# there were five (BEGIN, the action, its items and the terms, the writes, COMMIT).


class _OnPg:
    """A statement compiled once for PostgreSQL and run on the psycopg connection of ``conn`` (``rows``).
    Its parameters go through the same bind processors as SQLAlchemy would apply; the rows come back as
    psycopg gives them (callers convert what SQLAlchemy's result types would, see ``_PG_UTC_TIMES``).
    Errors are SQLAlchemy's exceptions, handled (a lost connection invalidated) as SQLAlchemy does."""

    def __init__(self, stmt: Any) -> None:
        self._stmt = stmt
        self._plan: tuple[str, dict[str, Any], list[tuple[str, Any]]] | None = None

    def _prepare(self, conn: Connection) -> tuple[str, dict[str, Any], list[tuple[str, Any]]]:
        compiled = cast(SQLCompiler, self._stmt.compile(dialect=conn.dialect))
        assert not compiled.literal_execute_params
        literals = {name: b.effective_value for b, name in compiled.bind_names.items() if not b.required}
        self._plan = (compiled.string, literals, list(compiled._bind_processors.items()))
        return self._plan

    def rows(self, conn: Connection, values: dict[str, Any], *, commit: bool = False) -> list[tuple[Any, ...]]:
        """The statement's rows, in one round trip: BEGIN before it when the transaction has not begun
        yet, and with ``commit`` COMMIT after it. The transaction of ``conn`` then ends here
        (SQLAlchemy's commit later finds nothing to do), so only the last statement of a transaction
        may say so. When the statement fails, nothing is committed (a pipeline skips what follows an
        error) and the transaction is in error, to be rolled back as usual.

        psycopg's own BEGIN in pipeline mode would cost a round trip of its own (it syncs after it),
        and so would its ``commit()``: both are sent here as plain commands of the pipeline, with a
        ``None`` in its result queue (as psycopg queues its own commands), so that leaving the
        pipeline, which sends one Sync and reads every result, is the only round trip. The statement
        itself runs on a psycopg cursor, prepared by psycopg once it repeats, as any other."""
        sql, literals, processors = self._plan or self._prepare(conn)
        params = {**literals, **values}
        for name, process in processors:
            params[name] = process(params[name])
        dbapi = conn.connection.driver_connection
        assert dbapi is not None
        cursor = dbapi.cursor()
        try:
            with dbapi.pipeline() as pipeline:
                if dbapi.pgconn.transaction_status == _PG_IDLE and _plain_begin(dbapi):
                    _pg_command(dbapi, pipeline, b"BEGIN")
                cursor.execute(sql, params)
                if commit and not dbapi.autocommit:
                    _pg_command(dbapi, pipeline, b"COMMIT")
            rows: list[tuple[Any, ...]] = cursor.fetchall()
        except conn.dialect.loaded_dbapi.Error as exc:
            conn._handle_dbapi_exception(exc, sql, params, cursor, None)
        cursor.close()
        return rows


_PG_IDLE = 0  # psycopg.pq.TransactionStatus.IDLE


def _plain_begin(dbapi: Any) -> bool:
    """Whether psycopg would start a transaction with a plain BEGIN (else it is left to psycopg)."""
    return (not dbapi.autocommit and dbapi.isolation_level is None and dbapi.read_only is None
            and dbapi.deferrable is None)


def _pg_command(dbapi: Any, pipeline: Any, command: bytes) -> None:
    """Queue a command without parameters in psycopg's pipeline, as psycopg queues its own (its result
    is checked for an error when the pipeline's results are read)."""
    dbapi.pgconn.send_query_params(command, None)
    pipeline.result_queue.append(None)


_WRITE_AND_HISTORY_ON_PG = _OnPg(_WRITE_AND_HISTORY_PG)
_HISTORY_ON_PG = _OnPg(text(
    f"SELECT {_HISTORY_COLUMNS_PG.format(t='h')} FROM action_updates h WHERE h.action_id = :action_id ORDER BY h.id"
))


def history_of_action_pg(conn: Connection, action_id: int, *, commit: bool = False) -> list[tuple[Any, ...]]:
    """PostgreSQL: ``history_of_action`` (the same rows), with COMMIT in the same round trip if ``commit``."""
    return _HISTORY_ON_PG.rows(conn, {"action_id": action_id}, commit=commit)


class PgRecord:
    """A row read by attribute, and by name through ``_mapping``, as this module's callers read a
    SQLAlchemy ``Row``."""

    __slots__ = ("_mapping",)

    def __init__(self, mapping: dict[str, Any]) -> None:
        self._mapping = mapping

    def __getattr__(self, name: str) -> Any:
        try:
            return self._mapping[name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        return f"PgRecord({self._mapping!r})"


_ACTION_NAMES = tuple(c.name for c in actions.c)
# the columns ``items_of`` rows are read by (``to_domain``, ``schemas.item_dict``)
_ITEM_NAMES = ("sku", "name", "category", "quantity", "amount", "payout", "intended_quantity", "intended_amount",
               "intended_payout")
# the columns of ``catalog.service.TERMS_IN_FORCE``, prefixed as ``items_and_terms`` answers them
_TERMS_NAMES = tuple("t_" + n for n in ("id", "lock_months", "lock_days", "pay_months", "pay_days",
                                        "referral_window_days", "category_rates", "rate_ppm", "fixed_minor",
                                        "payout_event_type_id"))
# the action's times, converted as SQLAlchemy's ``UTCDateTime`` converts them
_PG_UTC_TIMES = tuple(n for n, c in enumerate(actions.c) if isinstance(c.type, UTCDateTime))
_UTC_TIME = UTCDateTime()

# ``load(for_update=True)`` and ``items_and_terms`` in one statement. The action is locked first (the
# CTE); its items and the terms in force (as ``catalog.service.TERMS_IN_FORCE`` reads them, for the
# action's campaign, partner and event type) are joined to it. The items and terms are read in the
# statement's snapshot, taken before the lock was granted: if another transaction changed the action
# meanwhile (its version, bumped by every write of an action or its items, differs from the one in the
# snapshot), they may be older than the locked row, and ``load_for_change_pg`` reads them again.
_LOAD_FOR_CHANGE_PG = _OnPg(text(
    "WITH a AS MATERIALIZED ("
    f" SELECT {', '.join('actions.' + n for n in _ACTION_NAMES)} FROM actions"
    " WHERE actions.id = :id AND actions.account_id = :account_id FOR UPDATE"
    ") "
    f"SELECT {', '.join('a.' + n for n in _ACTION_NAMES)}, (SELECT s.version FROM actions AS s WHERE s.id = a.id),"
    f" {', '.join('i.' + n for n in _ITEM_NAMES)},"
    " t.id, t.lock_months, t.lock_days, t.pay_months, t.pay_days, t.referral_window_days, t.category_rates,"
    " t.rate_ppm, t.fixed_minor, t.payout_event_type_id"
    " FROM a LEFT OUTER JOIN action_items AS i ON i.action_id = a.id"
    " LEFT OUTER JOIN LATERAL ("
    "  SELECT c.id, c.lock_months, c.lock_days, c.pay_months, c.pay_days, c.referral_window_days,"
    "  c.category_rates, contract_payouts.rate_ppm, contract_payouts.fixed_minor,"
    "  contract_payouts.event_type_id AS payout_event_type_id"
    "  FROM (SELECT contracts.id, contracts.lock_months, contracts.lock_days, contracts.pay_months,"
    "   contracts.pay_days, contracts.referral_window_days, contracts.category_rates FROM contracts"
    "   WHERE contracts.campaign_id = a.campaign_id AND contracts.partner_id = a.partner_id"
    "   AND contracts.starts_on <= :on ORDER BY contracts.starts_on DESC, contracts.id DESC LIMIT 1) AS c"
    "  LEFT OUTER JOIN contract_payouts ON contract_payouts.contract_id = c.id"
    "  AND contract_payouts.event_type_id = a.event_type_id"
    " ) AS t ON true"
    " ORDER BY i.position"
).bindparams(bindparam("id", type_=BigInteger()), bindparam("account_id", type_=Integer()),
             bindparam("on", type_=Date())))


def load_for_change_pg(conn: Connection, account_id: int, action_id: int,
                       on: date) -> tuple[PgRecord | None, list[PgRecord], PgRecord | None]:
    """PostgreSQL: ``load(conn, account_id, action_id, for_update=True)`` and then ``items_and_terms``
    for the action's campaign, partner and event type on ``on``, in one statement and round trip (two
    when the action was changed while this waited for its lock). The rows answer the same columns by
    the same names; no action: ``(None, [], None)``."""
    rows = _LOAD_FOR_CHANGE_PG.rows(conn, {"id": action_id, "account_id": account_id, "on": on})
    if not rows:
        return None, [], None
    first = list(rows[0])
    for n in _PG_UTC_TIMES:
        first[n] = _UTC_TIME.process_result_value(first[n], conn.dialect)
    n_action, n_items = len(_ACTION_NAMES), len(_ITEM_NAMES)
    row = PgRecord(dict(zip(_ACTION_NAMES, first[:n_action], strict=True)))
    if first[n_action] != row.version:  # changed since the snapshot: its items and terms again
        again, again_terms = items_and_terms(conn, action_id, row.campaign_id, row.partner_id, row.event_type_id, on)
        return row, cast(list[PgRecord], again), cast(PgRecord | None, again_terms)
    start = n_action + 1
    items = [PgRecord(dict(zip(_ITEM_NAMES, r[start:start + n_items], strict=True)))
             for r in rows if r[start] is not None]
    t = rows[0][start + n_items:]
    terms = PgRecord(dict(zip(_TERMS_NAMES, t, strict=True))) if t[0] is not None else None
    return row, items, terms



# --- the history as impact.com's change log (api/compat_reads.py: GET /ActionUpdates) ----------


@dataclass(frozen=True)
class HistoryFilters:
    campaign_id: int | None = None
    action_id: int | None = None
    update_id: int | None = None
    state: str | None = None
    at_from: datetime | None = None  # inclusive
    at_to: datetime | None = None  # exclusive
    after: tuple[datetime, int] | None = None  # a keyset position: the rows after (at, id), exclusive


def _history_part(account_id: int, f: HistoryFilters, *, locks: bool, by_time: bool = False) -> Select[Any]:
    """The account's history rows (joined to their actions) matching ``f``: the LOCKED ones or the others.
    The two parts are asked apart so that each can use an index on ``at`` whose predicate is its own
    (``ix_action_updates_at`` holds the rows that are not LOCKED, ``ix_action_updates_locked_at`` the
    LOCKED ones; the literal, not a bound value, lets SQLite see that the query implies the index's
    WHERE)."""
    from sqlalchemy import literal_column  # imported here: this block is compat_reads' alone

    u, a = action_updates.c, actions.c
    locked: Any = literal_column("'LOCKED'")
    # ``by_time``: SQLite, which keeps no statistics here, would rather walk the account's (or campaign's)
    # actions than a time window of the index by time; an expression on account_id takes the
    # actions' indexes out of its choice, so that the window drives and each action is read by its id
    account: Any = a.account_id + 0 if by_time else a.account_id
    conds: list[Any] = [account == account_id, u.kind == locked if locks else u.kind != locked]
    if f.campaign_id is not None:
        conds.append(a.campaign_id == f.campaign_id)
    if f.action_id is not None:
        conds.append(u.action_id == f.action_id)
    if f.update_id is not None:
        conds.append(u.id == f.update_id)
    if f.state is not None:
        conds.append(u.state == f.state)
    if f.at_from is not None:
        conds.append(u.at >= f.at_from)
    if f.at_to is not None:
        conds.append(u.at < f.at_to)
    if f.after is not None:
        at, uid = f.after
        conds += [u.at >= at, or_(u.at > at, u.id > uid)]
    return (
        select(u.id, u.action_id, u.at, u.kind, u.state, u.reason, u.note, u.delta_amount, u.delta_payout,
               u.channel, u.submission_id, a.campaign_id, a.event_type_id, a.partner_id, a.order_id,
               a.customer_id, a.promo_code, a.currency, a.event_date, a.locking_date,
               a.reason.label("action_reason"))
        .select_from(action_updates.join(actions, a.id == u.action_id))
        .where(*conds)
    )


def history_page(conn: Connection, account_id: int, f: HistoryFilters, offset: int, limit: int
                 ) -> tuple[int, list[Row[Any]]]:
    """How many history rows of the account's actions match ``f``, and one page of them oldest first (by
    ``at``, then id: a client that bookmarks the newest ``at`` it saw resumes there), from row ``offset``
    on; each row ends with the column ``total_`` (the count). Another account's history never matches: the
    account is the joined action's. With ``f.after`` (a keyset position) the page is the ``limit`` rows
    after it, ``offset`` is not used and the count is not made (-1)."""
    from sqlalchemy import union_all

    # each part has its index by time (``ix_action_updates_at`` without the LOCKED rows,
    # ``ix_action_updates_locked_at`` with them alone, migration 0011): a time window, or the keyset
    # position of a next page, is two index ranges, merged in (at, id) order
    by_time = is_sqlite(conn) and f.action_id is None and (
        f.at_from is not None or f.at_to is not None or f.after is not None)
    both = union_all(_history_part(account_id, f, locks=False, by_time=by_time),
                     _history_part(account_id, f, locks=True, by_time=by_time)).subquery()
    # the count comes with the page (one pass over the matching rows); a page past the end asks it apart
    if f.after is not None:  # a keyset page: its total was counted on the first page
        return -1, list(conn.execute(select(both).order_by(both.c.at, both.c.id).limit(limit)))
    page = list(conn.execute(select(both, func.count().over().label("total_"))
                             .order_by(both.c.at, both.c.id).offset(offset).limit(limit)))
    if page:
        return int(page[0].total_), page
    return int(conn.execute(select(func.count()).select_from(both)).scalar_one()), []


def history_at(conn: Connection, account_id: int, update_id: int) -> datetime | None:
    """The time of one history row of the account's actions (a keyset position of ``history_page``)."""
    u, a = action_updates.c, actions.c
    return conn.execute(select(u.at).select_from(action_updates.join(actions, a.id == u.action_id))
                        .where(u.id == update_id, a.account_id == account_id)).scalar()


def disposition_codes_of_account(conn: Connection, account_id: int) -> list[Row[Any]]:
    """Every custom disposition code of the account's event types (code, name, operation, event_type_id), in
    one query: the reasons a page offers beside the predefined ones."""
    from payoutdesk.models import disposition_codes, event_types

    return list(conn.execute(
        select(disposition_codes.c.code, disposition_codes.c.name, disposition_codes.c.operation,
               disposition_codes.c.event_type_id)
        .join(event_types, event_types.c.id == disposition_codes.c.event_type_id)
        .where(event_types.c.account_id == account_id)
        .order_by(disposition_codes.c.event_type_id, disposition_codes.c.id)
    ))
