"""SQL of submissions: the queue, stored files, results, and the set-based writes of a chunk."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Row, Select, and_, func, insert, or_, select, update
from sqlalchemy.exc import DBAPIError

from payoutdesk.errors import StaleVersion
from payoutdesk.kit.db import is_sqlite
from payoutdesk.models import (
    action_updates,
    stored_file_chunks,
    stored_files,
    submission_results,
    submissions,
)
from payoutdesk.models.types import UTCDateTime

ACTIVE = ("QUEUED", "IN_PROGRESS")


def insert_submission(conn: Connection, values: dict[str, Any]) -> int:
    pk = conn.execute(insert(submissions).values(**values)).inserted_primary_key
    assert pk is not None
    return int(pk[0])


def get(conn: Connection, submission_id: int, account_id: int | None = None) -> Row[Any] | None:
    stmt = select(submissions).where(submissions.c.id == submission_id)
    if account_id is not None:
        stmt = stmt.where(submissions.c.account_id == account_id)
    return conn.execute(stmt).first()


def by_dedupe_key(conn: Connection, key: str) -> Row[Any] | None:
    return conn.execute(select(submissions).where(submissions.c.dedupe_key == key)).first()


# --- stored files: chunks of at most 1 MiB (submissions/files.py streams them in and out) ----------


LEAN_CACHE_KIB = 2048


@contextmanager
def lean_cache(conn: Connection) -> Iterator[None]:
    """On SQLite, a page cache of 2 MiB for the statements inside (the file store's chunks), then back to the
    connection's own size. Each pooled connection keeps a large cache (kit/db.py) that megabytes of chunks
    would otherwise fill with pages of file bytes, in every connection that touched them: lowering the size
    frees the pages above it, so the chunks leave the process's memory as they are written or read."""
    if not is_sqlite(conn):
        yield
        return
    before = conn.exec_driver_sql("PRAGMA cache_size").scalar()
    conn.exec_driver_sql(f"PRAGMA cache_size=-{LEAN_CACHE_KIB}")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size={int(before or -LEAN_CACHE_KIB)}")


def new_stored_file(conn: Connection, now: datetime) -> int:
    pk = conn.execute(insert(stored_files).values(size=0, chunks=0, sha256=None, created_at=now)).inserted_primary_key
    assert pk is not None
    return int(pk[0])


def insert_chunk(conn: Connection, file_id: int, seq: int, data: bytes) -> None:
    conn.execute(insert(stored_file_chunks).values(file_id=file_id, seq=seq, data=data))


def finish_stored_file(conn: Connection, file_id: int, size: int, chunks: int, sha256: str) -> None:
    conn.execute(update(stored_files).where(stored_files.c.id == file_id)
                 .values(size=size, chunks=chunks, sha256=sha256))


def stored_file(conn: Connection, file_id: int) -> Row[Any] | None:
    return conn.execute(select(stored_files).where(stored_files.c.id == file_id)).first()


def chunk_of(conn: Connection, file_id: int, seq: int) -> bytes | None:
    data = conn.execute(select(stored_file_chunks.c.data).where(
        stored_file_chunks.c.file_id == file_id, stored_file_chunks.c.seq == seq)).scalar()
    return None if data is None else bytes(data)


def file_of(conn: Connection, submission_id: int, max_bytes: int = 64 * 1024) -> bytes:
    """The original file of a small submission (an API batch of a few rows), whole. ``ValueError`` when it
    is larger than ``max_bytes`` (read those chunk by chunk: submissions/files.py) or has no file."""
    row = conn.execute(select(stored_files.c.id, stored_files.c.size).join(
        submissions, submissions.c.file_id == stored_files.c.id).where(submissions.c.id == submission_id)).first()
    if row is None:
        raise ValueError(f"submission {submission_id} has no stored file")
    if row.size > max_bytes:
        raise ValueError(f"the file of submission {submission_id} has {row.size} bytes, more than {max_bytes}")
    parts = conn.execute(select(stored_file_chunks.c.data).where(stored_file_chunks.c.file_id == row.id)
                         .order_by(stored_file_chunks.c.seq))
    return b"".join(bytes(p[0]) for p in parts)


def file_is_used(conn: Connection, file_id: int) -> bool:
    return conn.execute(select(submissions.c.id).where(submissions.c.file_id == file_id).limit(1)).first() is not None


def delete_chunks(conn: Connection, file_id: int, below: int) -> int:
    """Delete the chunks of a file numbered below ``below``; how many there were."""
    return int(conn.execute(stored_file_chunks.delete().where(
        stored_file_chunks.c.file_id == file_id, stored_file_chunks.c.seq < below)).rowcount)


def last_chunk(conn: Connection, file_id: int) -> int | None:
    value = conn.execute(select(func.max(stored_file_chunks.c.seq))
                         .where(stored_file_chunks.c.file_id == file_id)).scalar()
    return None if value is None else int(value)


def delete_stored_file(conn: Connection, file_id: int) -> bool:
    """Delete a file's row once its chunks are gone and no submission uses it; whether it was deleted."""
    if file_is_used(conn, file_id) or last_chunk(conn, file_id) is not None:
        return False
    return bool(conn.execute(stored_files.delete().where(stored_files.c.id == file_id)).rowcount)


def unused_files(conn: Connection, created_before: datetime, limit: int) -> list[int]:
    """Stored files that no submission uses, made before ``created_before`` (a crash mid-upload, a refused
    duplicate, a file whose retention ran)."""
    used = select(submissions.c.id).where(submissions.c.file_id == stored_files.c.id).exists()
    rows = conn.execute(select(stored_files.c.id).where(stored_files.c.created_at < created_before, ~used)
                        .order_by(stored_files.c.id).limit(limit))
    return [int(r[0]) for r in rows]


def expired_files(conn: Connection, submitted_before: datetime, limit: int) -> list[Row[Any]]:
    """Submissions made before ``submitted_before`` that still have their original file (and are not queued
    or running: the worker may be reading it)."""
    return list(conn.execute(
        select(submissions.c.id, submissions.c.file_id)
        .where(submissions.c.file_id.is_not(None), submissions.c.created_at < submitted_before,
               submissions.c.status.not_in(ACTIVE))
        .order_by(submissions.c.id).limit(limit)))


def forget_file(conn: Connection, submission_id: int, now: datetime) -> None:
    """The submission no longer has its original file (retention deleted it)."""
    conn.execute(update(submissions).where(submissions.c.id == submission_id)
                 .values(file_id=None, file_deleted_at=now))


def latest(conn: Connection, account_id: int, limit: int, before: int | None, campaign_id: int | None,
           kind: str | None = None, channels: Sequence[str] | None = None) -> list[Row[Any]]:
    stmt = select(submissions).where(submissions.c.account_id == account_id)
    if before is not None:
        stmt = stmt.where(submissions.c.id < before)
    if campaign_id is not None:
        stmt = stmt.where(submissions.c.campaign_id == campaign_id)
    if kind is not None:
        stmt = stmt.where(submissions.c.kind == kind)
    if channels is not None:
        stmt = stmt.where(submissions.c.channel.in_(list(channels)))
    return list(conn.execute(stmt.order_by(submissions.c.id.desc()).limit(limit)))


def results(conn: Connection, submission_id: int, *, errors_only: bool, after_row: int, limit: int) -> list[Row[Any]]:
    stmt = select(submission_results).where(
        submission_results.c.submission_id == submission_id, submission_results.c.row_no > after_row
    )
    if errors_only:
        stmt = stmt.where(submission_results.c.outcome == "error")
    return list(conn.execute(stmt.order_by(submission_results.c.row_no).limit(limit)))


# --- the queue -------------------------------------------------------------------------------


def claim_next_row(conn: Connection, worker: str, now: datetime, lease_until: datetime) -> Row[Any] | None:
    """Atomically take the oldest queued submission, or one whose worker's lease ran out; answer its row as
    it was just before this claim (its status, worker and lease tell a fresh start from a resumption or a
    takeover)."""
    cond = or_(
        submissions.c.status == "QUEUED",
        and_(submissions.c.status == "IN_PROGRESS", submissions.c.lease_until < now),
    )
    pick = select(submissions).where(cond).order_by(submissions.c.id).limit(1)
    if not is_sqlite(conn):
        pick = pick.with_for_update(skip_locked=True)
    row = conn.execute(pick).first()
    if row is None:
        return None
    claim(conn, int(row.id), worker, now, lease_until)
    return row


def claim(conn: Connection, submission_id: int, worker: str, now: datetime, lease_until: datetime) -> bool:
    result = conn.execute(
        update(submissions)
        .where(submissions.c.id == submission_id, submissions.c.status.in_(ACTIVE))
        .values(status="IN_PROGRESS", claimed_by=worker, lease_until=lease_until,
                started_at=func.coalesce(submissions.c.started_at, now))
    )
    return result.rowcount == 1


def advance(conn: Connection, submission_id: int, worker: str, processed_before: int,
            values: dict[str, Any]) -> None:
    """Record a chunk's progress, only if this worker still owns the submission where it left it.

    The check makes a chunk apply exactly once: a worker whose lease was taken over fails here and
    its chunk's transaction rolls back.
    """
    result = conn.execute(
        update(submissions)
        .where(
            submissions.c.id == submission_id,
            submissions.c.claimed_by == worker,
            submissions.c.processed_records == processed_before,
            submissions.c.status == "IN_PROGRESS",
        )
        .values(**values)
    )
    if result.rowcount != 1:
        raise LostClaim(f"submission {submission_id} is no longer this worker's")


class LostClaim(Exception):
    """Another worker took the submission over (this one's lease ran out)."""


def renew(conn: Connection, submission_id: int, worker: str, lease_until: datetime) -> bool:
    """Extend this worker's lease (its heartbeat); False when the submission is no longer its own."""
    result = conn.execute(
        update(submissions)
        .where(submissions.c.id == submission_id, submissions.c.claimed_by == worker,
               submissions.c.status == "IN_PROGRESS")
        .values(lease_until=lease_until)
    )
    return result.rowcount == 1


def release(conn: Connection, submission_id: int, worker: str) -> bool:
    """Give an unfinished submission back to the queue (a worker stopping), to be resumed at once by
    the next worker from its recorded progress. False when it was not this worker's."""
    result = conn.execute(
        update(submissions)
        .where(submissions.c.id == submission_id, submissions.c.claimed_by == worker,
               submissions.c.status == "IN_PROGRESS")
        .values(status="QUEUED", claimed_by=None, lease_until=None)
    )
    return result.rowcount == 1


def set_status(conn: Connection, submission_id: int, **values: Any) -> None:
    conn.execute(update(submissions).where(submissions.c.id == submission_id).values(**values))


# --- the actions of a chunk, through the driver ----------------------------------------------
#
# The engine's hot path: plain tuples through the DBAPI connection of the chunk's transaction, no
# SQLAlchemy per-row work. Times go through the column type's own processors, so they are stored
# exactly as SQLAlchemy stores them (naive UTC text on SQLite, timestamptz on PostgreSQL).

# An action's id, event_type_id, partner_id, contract_id, version, state, reason, locked_at, update_count,
# restore and lock_due;
# an item's sku, name, category, quantity, amount, payout and intended quantity, amount and payout.
ActionTuple = tuple[Any, ...]
ItemTuple = tuple[Any, ...]

_LOAD_SLICE = 10_000  # ids per load statement on PostgreSQL (Bulk._load)
_A_COLS = ("a.id, a.event_type_id, a.partner_id, a.contract_id, a.version, a.state, a.reason, a.locked_at, "
           "a.update_count, a.restore, a.lock_due")
_I_COLS = ("sku, name, category, quantity, amount, payout, intended_quantity, intended_amount, intended_payout")
UPDATE_COLUMNS = ("action_id", "at", "kind", "state", "reason", "note", "delta_amount", "delta_payout", "items",
                  "channel", "submission_id", "actor")
RESULT_COLUMNS = ("submission_id", "row_no", "outcome", "action_id", "amount_before", "amount_after",
                  "payout_before", "payout_after", "state_after", "column_name", "error_type", "code", "message")
# PostgreSQL types of the columns above, for binary COPY (which needs the exact width of every integer)
_UPDATE_TYPES = ("int8", "timestamptz", "text", "text", "text", "text", "int8", "int8", "text", "text", "int8", "text")
_RESULT_TYPES = ("int8", "int4", "text", "int8", "int8", "int8", "int8", "int8", "text", "text", "text", "text", "text")
_STAGE_ACTION_TYPES = ("int8", "int4", "int4", "bool", "text", "text", "int8", "int8", "timestamptz", "text", "int4")
_STAGE_ITEM_TYPES = ("int8", "int4", "int4", "int8", "int8")
_STAGE_ACTIONS = (
    "CREATE TEMP TABLE IF NOT EXISTS pd_stage_actions (id bigint NOT NULL, version integer NOT NULL, "
    "new_version integer NOT NULL, full_row boolean NOT NULL, state varchar(10), reason varchar(64), "
    "amount bigint NOT NULL, payout bigint NOT NULL, locked_at timestamptz, restore text, "
    "update_count integer NOT NULL) ON COMMIT DELETE ROWS"
)
_STAGE_ITEMS = (
    "CREATE TEMP TABLE IF NOT EXISTS pd_stage_items (action_id bigint NOT NULL, position integer NOT NULL, "
    "quantity integer NOT NULL, amount bigint NOT NULL, payout bigint NOT NULL) ON COMMIT DELETE ROWS"
)


# the sequence looked up once, not once per id (which took 5 µs an id, 10 times the nextval itself)
_NEXT_UPDATE_IDS = ("WITH s AS MATERIALIZED (SELECT pg_get_serial_sequence('action_updates', 'id')::regclass AS seq) "
                    "SELECT nextval(s.seq) FROM s, generate_series(1, %s)")


def _same(value: Any) -> Any:
    return value


_second = itemgetter(1)


class Bulk:
    """Bulk reads and writes of one chunk, on the connection (and inside the transaction) of ``conn``."""

    def __init__(self, conn: Connection) -> None:
        self.sqlite = is_sqlite(conn)
        impl = UTCDateTime().dialect_impl(conn.dialect)
        self.bind_time = impl.bind_processor(conn.dialect) or _same
        self._read_time = impl.result_processor(conn.dialect, None) or _same
        self.cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        self._dbapi_error: type[Exception] = conn.dialect.loaded_dbapi.Error

    @contextmanager
    def _driver(self, what: str) -> Iterator[None]:
        """Driver errors as SQLAlchemy's, as if the statement had gone through SQLAlchemy (so that
        db.transaction retries a deadlock, and callers see one kind of error)."""
        try:
            yield
        except self._dbapi_error as exc:
            raise DBAPIError.instance(what, None, exc, self._dbapi_error) from exc

    def _copy(self, table: str, columns: Sequence[str], types: Sequence[str], rows: Iterable[Sequence[Any]]
              ) -> None:
        with self.cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(list(types))
            write = copy.write_row
            for r in rows:
                write(r)

    def _q(self, sql: str) -> str:
        return sql if self.sqlite else sql.replace("?", "%s")

    def load(self, account_id: int, campaign_id: int, ids: Sequence[int], *, for_update: bool
             ) -> dict[int, tuple[ActionTuple, list[ItemTuple]]]:
        with self._driver("SELECT FROM actions"):
            return self._load(account_id, campaign_id, ids, for_update=for_update)

    def _load(self, account_id: int, campaign_id: int, ids: Sequence[int], *, for_update: bool
              ) -> dict[int, tuple[ActionTuple, list[ItemTuple]]]:
        """The actions of the account and campaign among ``ids`` (distinct, ascending), with their items in position
        order; locked for update on PostgreSQL when ``for_update`` (SQLite's write transaction excludes
        other writers already)."""
        out: dict[int, tuple[ActionTuple, list[ItemTuple]]] = {}
        if not ids:
            return out
        read_time = self._read_time
        # one statement for actions and items, the ids as a list joined in (json_each, unnest): on PostgreSQL
        # 50,000 ids took 493 ms against 1,017 ms (medians, alternated) for two ``= ANY(array)`` scans,
        # whose index scan descends the tree again for every array element (docs/PERFORMANCE.md)
        columns = f"{_A_COLS}, i.{_I_COLS.replace(', ', ', i.')}"
        if self.sqlite:
            rows = self.cur.execute(
                f"SELECT {columns} FROM json_each(?) AS j CROSS JOIN actions AS a ON a.id = j.value "
                "LEFT JOIN action_items AS i ON i.action_id = a.id "
                "WHERE a.account_id = ? AND a.campaign_id = ? ORDER BY a.id, i.position",
                (json.dumps(list(ids)), account_id, campaign_id),
            )
        else:
            lock = " FOR UPDATE OF a" if for_update else ""
            sql = (f"SELECT {columns} FROM unnest(%s::bigint[]) AS u(id) JOIN actions AS a ON a.id = u.id "
                   "LEFT JOIN action_items AS i ON i.action_id = a.id "
                   f"WHERE a.account_id = %s AND a.campaign_id = %s ORDER BY a.id, i.position{lock}")
            cur = self.cur

            def parts() -> Iterator[Any]:
                # the driver holds a statement's whole answer (every item row, its action's columns
                # repeated) until it is read: a slice of the ids at a time keeps that bounded
                for part in _chunks(ids, _LOAD_SLICE):
                    # never prepared: after five runs psycopg prepares a statement, and PostgreSQL's generic plan
                    # of it (the array's length unknown) took seconds a batch (a nested loop over unnest)
                    yield from cur.execute(sql, (list(part), account_id, campaign_id), prepare=False)

            rows = parts()
        for r in rows:  # row by row, not fetchall: a chunk's raw rows are never all held at once
            aid = r[0]
            got = out.get(aid)
            if got is None:
                a = r[:11]
                if a[7] is not None:
                    a = (*a[:7], read_time(a[7]), *a[8:])
                got = out[aid] = (a, [])
            if r[11] is not None:
                got[1].append(r[11:])
        return out

    def newest_by_orders(self, account_id: int, campaign_id: int, pairs: Iterable[tuple[int, str]]
                         ) -> dict[tuple[int, str], int]:
        """R12 in bulk: the newest action of the account and campaign for each (event type, order id)."""
        with self._driver("SELECT FROM actions"):
            return self._newest_by_orders(account_id, campaign_id, pairs)

    def _newest_by_orders(self, account_id: int, campaign_id: int, pairs: Iterable[tuple[int, str]]
                          ) -> dict[tuple[int, str], int]:
        by_type: dict[int, list[str]] = {}
        for et, oid in set(pairs):
            by_type.setdefault(et, []).append(oid)
        out: dict[tuple[int, str], int] = {}
        for et, oids in by_type.items():
            if self.sqlite:
                self.cur.execute(
                    "SELECT a.order_id, max(a.id) FROM json_each(?) AS j CROSS JOIN actions AS a "
                    "ON a.event_type_id = ? AND a.order_id = j.value "
                    "WHERE a.account_id = ? AND a.campaign_id = ? GROUP BY a.order_id",
                    (json.dumps(oids), et, account_id, campaign_id),
                )
            else:
                self.cur.execute(
                    "SELECT order_id, max(id) FROM actions WHERE event_type_id = %s AND order_id = ANY(%s::text[]) "
                    "AND account_id = %s AND campaign_id = %s GROUP BY order_id",
                    (et, oids, account_id, campaign_id),
                )
            for oid, aid in self.cur.fetchall():
                out[(et, oid)] = int(aid)
        return out

    def write_actions(self, rows: Sequence[tuple[Any, ...]], items: Sequence[tuple[Any, ...]]) -> None:
        with self._driver("UPDATE actions"):
            self._write_actions(rows, items)

    def _write_actions(self, rows: Sequence[tuple[Any, ...]], items: Sequence[tuple[Any, ...]]) -> None:
        """Write changed actions and items, version-checked in bulk (R14): if any action's version moved,
        ``StaleVersion`` rolls the whole chunk back.

        ``rows``: (id, version as loaded, new version, full, state, reason, amount, payout, locked_at, restore
        json, update_count); when ``full`` is false only amount, payout, update_count and version changed.
        ``items``: (action_id, position, quantity, amount, payout).
        """
        if not rows:
            return
        cur = self.cur
        if self.sqlite:
            bind = self.bind_time
            lean = [(r[6], r[7], r[10], r[2], r[0], r[1]) for r in rows if not r[3]]
            full = [(r[4], r[5], r[6], r[7], None if r[8] is None else bind(r[8]), r[9], r[10], r[2], r[0], r[1])
                    for r in rows if r[3]]
            done = 0
            if lean:
                cur.executemany("UPDATE actions SET amount = ?, payout = ?, update_count = ?, version = ? "
                                "WHERE id = ? AND version = ?", lean)
                done += cur.rowcount
            if full:
                cur.executemany("UPDATE actions SET state = ?, reason = ?, amount = ?, payout = ?, locked_at = ?, "
                                "restore = ?, update_count = ?, version = ? WHERE id = ? AND version = ?", full)
                done += cur.rowcount
            if done != len(rows):
                raise StaleVersion("an action of this chunk changed meanwhile; the chunk is retried")
            if items:
                cur.executemany("UPDATE action_items SET quantity = ?, amount = ?, payout = ? "
                                "WHERE action_id = ? AND position = ?",
                                [(q, a, p, aid, pos) for aid, pos, q, a, p in items])
            return
        # one index probe per staged row, never a hash join over the whole table: a chunk is small beside it
        # the staging tables empty at commit; a transaction of several batches (engine.process) empties them
        # before each batch too, or a batch would write its predecessors' rows again
        cur.execute(f"{_STAGE_ACTIONS}; DELETE FROM pd_stage_actions; SET LOCAL enable_hashjoin = off; "
                    "SET LOCAL enable_mergejoin = off")
        self._copy("pd_stage_actions", ("id", "version", "new_version", "full_row", "state", "reason", "amount",
                                        "payout", "locked_at", "restore", "update_count"), _STAGE_ACTION_TYPES, rows)
        cur.execute(
            "UPDATE actions AS a SET amount = s.amount, payout = s.payout, update_count = s.update_count, "
            "version = s.new_version, "
            "state = CASE WHEN s.full_row THEN s.state ELSE a.state END, "
            "reason = CASE WHEN s.full_row THEN s.reason ELSE a.reason END, "
            "locked_at = CASE WHEN s.full_row THEN s.locked_at ELSE a.locked_at END, "
            "restore = CASE WHEN s.full_row THEN s.restore ELSE a.restore END "
            "FROM pd_stage_actions AS s WHERE a.id = s.id AND a.version = s.version"
        )
        if cur.rowcount != len(rows):
            raise StaleVersion("an action of this chunk changed meanwhile; the chunk is retried")
        if items:
            cur.execute(f"{_STAGE_ITEMS}; DELETE FROM pd_stage_items")
            self._copy("pd_stage_items", ("action_id", "position", "quantity", "amount", "payout"),
                       _STAGE_ITEM_TYPES, items)
            cur.execute(
                "UPDATE action_items AS t SET quantity = s.quantity, amount = s.amount, payout = s.payout "
                "FROM pd_stage_items AS s WHERE t.action_id = s.action_id AND t.position = s.position"
            )
        cur.execute("SET LOCAL enable_hashjoin TO DEFAULT; SET LOCAL enable_mergejoin TO DEFAULT")

    def insert_updates(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """History rows, as tuples in the order of ``UPDATE_COLUMNS`` (``at`` already through ``bind_time``)."""
        with self._driver("INSERT INTO action_updates"):
            if not rows:
                return
            # The ids the rows would get one by one (in the order given, the file's), written in action order:
            # ix_action_updates_action then fills leaf after leaf instead of dirtying one random page per row
            # (at millions of actions, a page read and written back per row). The sort is stable, so within
            # an action the ids keep file order; across actions too, the ids follow the file (undo's order).
            if self.sqlite:
                first = int(self.cur.execute("SELECT coalesce(max(id), 0) + 1 FROM action_updates").fetchone()[0])
                ids: Iterable[int] = range(first, first + len(rows))
            else:
                self.cur.execute(_NEXT_UPDATE_IDS, (len(rows),))
                ids = sorted(int(r[0]) for r in self.cur.fetchall())
            ordered = sorted([(n, *r) for n, r in zip(ids, rows, strict=True)], key=_second)
            columns = ("id", *UPDATE_COLUMNS)
            if self.sqlite:
                marks = ", ".join("?" * len(columns))
                self.cur.executemany(f"INSERT INTO action_updates ({', '.join(columns)}) VALUES ({marks})", ordered)
            else:
                self._copy("action_updates", columns, ("int8", *_UPDATE_TYPES), ordered)

    def insert_results(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Row results, as tuples in the order of ``RESULT_COLUMNS``."""
        with self._driver("INSERT INTO submission_results"):
            self._insert("submission_results", RESULT_COLUMNS, _RESULT_TYPES, rows)

    def _insert(self, table: str, columns: Sequence[str], types: Sequence[str], rows: Sequence[tuple[Any, ...]]
                ) -> None:
        if not rows:
            return
        if self.sqlite:
            marks = ", ".join("?" * len(columns))
            self.cur.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
            return
        self._copy(table, columns, types, rows)


def updates_of_submission(conn: Connection, submission_id: int) -> list[int]:
    """The actions a submission changed, in the order it first changed them."""
    rows = conn.execute(
        select(action_updates.c.action_id, func.min(action_updates.c.id))
        .where(action_updates.c.submission_id == submission_id)
        .group_by(action_updates.c.action_id)
        .order_by(func.min(action_updates.c.id))
    )
    return [int(r[0]) for r in rows]


def history(conn: Connection, ids: Sequence[int]) -> dict[int, list[Row[Any]]]:
    out: dict[int, list[Row[Any]]] = {i: [] for i in ids}
    for part in _chunks(sorted(set(ids)), 2000):
        rows = conn.execute(
            select(action_updates).where(action_updates.c.action_id.in_(part)).order_by(action_updates.c.id)
        )
        for r in rows:
            out[r.action_id].append(r)
    return out


def _chunks(seq: Sequence[Any], n: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]



# --- reads of the impact.com-compatible API (api/compat.py) ------------------------------------


def submissions_page(conn: Connection, account_id: int, kind: str, offset: int, limit: int, *,
                     campaign_id: int | None = None, created_from: datetime | None = None,
                     created_to: datetime | None = None, finished_from: datetime | None = None,
                     finished_to: datetime | None = None) -> tuple[int, list[Row[Any]]]:
    """How many of the account's submissions of ``kind`` (F: files, whatever the channel; A: API batches,
    single changes of the compatible API, undos) match, and one page of them, newest first, from row
    ``offset`` on. The ``_from`` bounds are inclusive, the ``_to`` ones exclusive; ``created`` bounds the
    submission time, ``finished`` the completion time."""
    s = submissions.c
    conds = [s.account_id == account_id, s.kind == kind]
    if campaign_id is not None:
        conds.append(s.campaign_id == campaign_id)
    for col, lo, hi in ((s.created_at, created_from, created_to), (s.finished_at, finished_from, finished_to)):
        if lo is not None:
            conds.append(col >= lo)
        if hi is not None:
            conds.append(col < hi)
    total = int(conn.execute(select(func.count()).select_from(submissions).where(*conds)).scalar_one())
    rows = list(conn.execute(select(submissions).where(*conds).order_by(s.id.desc()).offset(offset).limit(limit)))
    return total, rows


def errors_page(conn: Connection, submission_id: int, offset: int, limit: int) -> tuple[int, list[Row[Any]]]:
    """How many rows of a submission had an error, and one page of those results in row order, from
    the ``offset``-th on (``results`` pages by row number instead)."""
    r = submission_results.c
    conds = [r.submission_id == submission_id, r.outcome == "error"]
    total = int(conn.execute(select(func.count()).select_from(submission_results).where(*conds)).scalar_one())
    rows = list(conn.execute(select(submission_results).where(*conds).order_by(r.row_no).offset(offset).limit(limit)))
    return total, rows


# --- reads of the pages (web/files.py) ----------------------------------------------------------


def errors_with_orders(conn: Connection, submission_id: int, after_row: int, limit: int) -> list[Row[Any]]:
    """A page of a submission's error rows in row order, each with the order id of its action when the row
    named one (``order_id`` None otherwise)."""
    from payoutdesk.models import actions

    r = submission_results.c
    stmt = (select(r.row_no, r.action_id, r.column_name, r.error_type, r.code, r.message, actions.c.order_id)
            .select_from(submission_results.outerjoin(actions, actions.c.id == r.action_id))
            .where(r.submission_id == submission_id, r.outcome == "error", r.row_no > after_row)
            .order_by(r.row_no).limit(limit))
    return list(conn.execute(stmt))


# --- the list of API submissions of the impact.com-compatible API (api/compat_submissions.py) ------


def _among(conn: Connection, column: Any, ids: Sequence[int]) -> Any:
    """``column IN ids`` with the ids as one bound value (a JSON text on SQLite, an array on PostgreSQL):
    a page of 20,000 ids costs neither 20,000 parameters to bind nor a statement of that length."""
    from sqlalchemy import BigInteger, any_, bindparam
    from sqlalchemy.dialects.postgresql import ARRAY

    if is_sqlite(conn):
        each = func.json_each(json.dumps(list(ids))).table_valued("value")
        return column.in_(select(each.c.value))
    return column == any_(bindparam(None, list(ids), type_=ARRAY(BigInteger)))


def small_files_of(conn: Connection, submission_ids: Sequence[int], max_bytes: int) -> dict[int, bytes]:
    """The stored files of these submissions that hold at most ``max_bytes``, whole, by submission id, in
    one query (``file_of`` for a page of submissions; a submission without such a file is missing)."""
    if not submission_ids:
        return {}
    s, f, ch = submissions.c, stored_files.c, stored_file_chunks.c
    stmt = (select(s.id, ch.data)
            .select_from(submissions.join(stored_files, f.id == s.file_id)
                         .join(stored_file_chunks, ch.file_id == f.id))
            .where(_among(conn, s.id, submission_ids), f.size <= max_bytes)
            .order_by(s.id, ch.seq))
    parts: dict[int, list[bytes]] = {}
    for sid, data in conn.execute(stmt):
        parts.setdefault(int(sid), []).append(bytes(data))
    return {k: b"".join(v) for k, v in parts.items()}


def first_results_of(conn: Connection, account_id: int, submission_ids: Sequence[int], *, errors_only: bool,
                     limit: int) -> dict[int, list[Row[Any]]]:
    """The first ``limit`` results (errors only, if asked) of each of these submissions in row order, by
    submission id, in one query (``results`` for a page of submissions); each row has the result's columns
    and ``a_id``, ``a_event_type_id``, ``a_order_id``, ``a_partner_id`` of its action when it names one of
    the account's (None otherwise)."""
    if not submission_ids:
        return {}
    from payoutdesk.models import actions

    r = submission_results.c
    conds = [_among(conn, r.submission_id, submission_ids), r.row_no > 0]
    if errors_only:
        conds.append(r.outcome == "error")
    ranked = select(submission_results, func.row_number().over(partition_by=r.submission_id, order_by=r.row_no)
                    .label("rn")).where(*conds).subquery("ranked")
    k, a = ranked.c, actions.c
    stmt: Select[Any] = (select(k.submission_id, k.row_no, k.outcome, k.action_id, k.column_name, k.error_type, k.code,
                   k.message, a.id.label("a_id"), a.event_type_id.label("a_event_type_id"),
                   a.order_id.label("a_order_id"), a.partner_id.label("a_partner_id"))
            .select_from(ranked.outerjoin(actions, and_(a.id == k.action_id, a.account_id == account_id)))
            .where(k.rn <= limit)
            .order_by(k.submission_id, k.row_no))
    out: dict[int, list[Row[Any]]] = {}
    for row in conn.execute(stmt):
        out.setdefault(int(row.submission_id), []).append(row)
    return out
