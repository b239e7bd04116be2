"""R3, the lock run: every due action locked in bounded chunks, each chunk its own transaction,
every newly locked action with exactly one ``LOCKED`` history row written in that transaction.

A lock sets ``locked_at``, turns PENDING into APPROVED (REVERSED stays REVERSED) and adds one to
``version`` and ``update_count``; the ``LOCKED`` row carries the state after the lock.

SQLite (one writer at a time): the due actions' ids are read once (one walk of the partial index
``ix_actions_lock_due_open``) and locked in id order, ``chunk`` ids per transaction. In id order each
page of ``actions`` is written by one chunk only, where chunks in the partial index's order
(``lock_due``) wrote most pages several times (each due day mixes actions of several lock periods):
at 5,000,000 actions that was a third of the run. Every statement checks again that the action is
still due, so what other writers did between the read and a chunk is respected.

PostgreSQL: each chunk takes the first due actions in the partial index's order with ``FOR UPDATE
SKIP LOCKED`` (concurrent runs share the work; a change in flight is passed over), locks them by
primary key and writes their history from ``RETURNING``, in one statement.

On both, a last pass takes chunks in the partial index's order, first skipping and then waiting for
rows other transactions hold, until none is due: every action due when the run started is locked
when it returns, including those a change in flight held.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Date, Engine, TextClause, bindparam, text

from payoutdesk.kit import db
from payoutdesk.models.types import UTCDateTime

_NEW_STATE = "CASE state WHEN 'PENDING' THEN 'APPROVED' ELSE state END"
_DUE = "locked_at IS NULL AND lock_due <= :as_of"
_INSERT_HISTORY = (
    "INSERT INTO action_updates (action_id, at, kind, state, delta_amount, delta_payout, channel, actor) "
)
_SET_LOCKED = (
    f"SET state = {_NEW_STATE}, locked_at = :now, version = version + 1, update_count = update_count + 1"
)
# A chunk's ids are a range of ids when at least half the actions in that range are in it: the
# statements then read the range in rowid order (one pass, no list of ids to build); otherwise the
# ids are passed as a JSON array.
DENSE = 2


def _typed(sql: str) -> TextClause:
    stmt = text(sql)
    for name, type_ in (("now", UTCDateTime()), ("as_of", Date())):
        if f":{name}" in sql:
            stmt = stmt.bindparams(bindparam(name, type_=type_))
    return stmt


def run(engine: Engine, as_of: date, now: datetime, account_id: int | None, chunk: int) -> int:
    """Lock every action due on ``as_of`` (of one account, or all); returns how many were locked."""
    total = 0
    if db.is_sqlite(engine):
        for part in _due_ids_in_chunks(engine, as_of, account_id, chunk):
            with db.write(engine) as conn:
                total += lock_ids_sqlite(conn, part, as_of, now, account_id)
    for skip_locked in (True, False):
        while True:
            with db.write(engine) as conn:
                n = lock_chunk(conn, as_of, now, account_id, chunk, skip_locked=skip_locked)
            total += n
            if n == 0:
                break
    return total


def _due_ids_in_chunks(engine: Engine, as_of: date, account_id: int | None, chunk: int) -> list[list[int]]:
    """The ids of the due actions, sorted, in slices of ``chunk`` (read as one JSON array: a row per
    id through the driver costs twice as much)."""
    account_sql = " AND account_id = :account_id" if account_id is not None else ""
    with db.read(engine) as conn:
        found = conn.execute(
            _typed(f"SELECT json_group_array(id) FROM actions WHERE {_DUE}{account_sql}"),
            {"as_of": as_of, "account_id": account_id},
        ).scalar_one()
    ids = sorted(json.loads(found)) if found else []
    return [ids[k:k + chunk] for k in range(0, len(ids), max(chunk, 1))]


def lock_ids_sqlite(conn: Connection, ids: list[int], as_of: date, now: datetime, account_id: int | None) -> int:
    """Lock those of these actions (ids sorted) that are still due; returns how many. SQLite, in a
    write transaction (which excludes other writers: both statements see the same rows)."""
    if not ids:
        return 0
    params: dict[str, Any] = {"as_of": as_of, "now": now, "account_id": account_id}
    if ids[-1] - ids[0] + 1 <= DENSE * len(ids):
        which = "id BETWEEN :lo AND :hi"
        params.update(lo=ids[0], hi=ids[-1])
    else:
        which = "id IN (SELECT value FROM json_each(:ids))"
        params["ids"] = json.dumps(ids)
    # NOT INDEXED: by rowid only (never by the partial index, which the update empties as it goes)
    where = f"{which} AND {_DUE}" + (" AND account_id = :account_id" if account_id is not None else "")
    conn.execute(
        _typed(
            f"{_INSERT_HISTORY}SELECT id, :now, 'LOCKED', {_NEW_STATE}, 0, 0, 'system', 'lock run' "
            f"FROM actions NOT INDEXED WHERE {where} ORDER BY id"
        ),
        params,
    )
    return int(conn.execute(_typed(f"UPDATE actions NOT INDEXED {_SET_LOCKED} WHERE {where}"), params).rowcount)


def lock_chunk(conn: Connection, as_of: date, now: datetime, account_id: int | None, chunk: int,
               *, skip_locked: bool = True) -> int:
    """One bounded chunk in the order of the partial index: lock the first due actions and write
    their LOCKED entries. Returns how many.

    On PostgreSQL, ``skip_locked`` passes over rows another transaction holds (a concurrent lock
    run shares the work that way); without it the chunk waits for them and re-checks them.
    """
    account_sql = "AND account_id = :account_id" if account_id is not None else ""
    params: dict[str, Any] = {"as_of": as_of, "now": now, "chunk": chunk, "account_id": account_id}
    if db.is_sqlite(conn):
        # The write transaction is BEGIN IMMEDIATE: nobody else writes until it commits, so the chunk
        # (the first due actions in the order of the partial index, a walk without sorting) is the
        # same set in both statements; the INSERT reads the states before the UPDATE changes them.
        chunk_ids = f"SELECT id FROM actions WHERE {_DUE} {account_sql} ORDER BY lock_due, id LIMIT :chunk"
        conn.execute(
            _typed(
                f"{_INSERT_HISTORY}SELECT id, :now, 'LOCKED', {_NEW_STATE}, 0, 0, 'system', 'lock run' "
                f"FROM actions WHERE id IN ({chunk_ids}) ORDER BY id"
            ),
            params,
        )
        return int(conn.execute(_typed(f"UPDATE actions {_SET_LOCKED} WHERE id IN ({chunk_ids})"), params).rowcount)
    result = conn.execute(
        _typed(
            # the ids as an array: the update then fetches each row by its primary key, where a join
            # with the CTE would be planned as a hash join over a sequential scan of all actions
            f"WITH due AS (SELECT id FROM actions WHERE {_DUE} {account_sql} ORDER BY lock_due, id "
            f"LIMIT :chunk FOR UPDATE{' SKIP LOCKED' if skip_locked else ''}), "
            "locked AS (UPDATE actions a SET state = CASE a.state WHEN 'PENDING' THEN 'APPROVED' ELSE a.state END, "
            "locked_at = :now, version = a.version + 1, update_count = a.update_count + 1 "
            "WHERE a.id = ANY(ARRAY(SELECT id FROM due)) RETURNING a.id, a.state) "
            f"{_INSERT_HISTORY}SELECT id, :now, 'LOCKED', state, 0, 0, 'system', 'lock run' FROM locked"
        ),
        params,
    )
    return int(result.rowcount)
