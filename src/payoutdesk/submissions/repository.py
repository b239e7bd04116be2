"""SQL of submissions: the queue, stored files, results, and the set-based writes of a chunk."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, func, insert, or_, select, tuple_, update

from payoutdesk.errors import StaleVersion
from payoutdesk.kit.db import is_sqlite
from payoutdesk.ledger import workflow as wf
from payoutdesk.ledger.repository import items_json
from payoutdesk.models import (
    action_items,
    action_updates,
    actions,
    submission_files,
    submission_results,
    submissions,
)

ACTIVE = ("QUEUED", "IN_PROGRESS")


def insert_submission(conn: Connection, values: dict[str, Any], data: bytes) -> int:
    pk = conn.execute(insert(submissions).values(**values)).inserted_primary_key
    assert pk is not None
    sid = int(pk[0])
    conn.execute(insert(submission_files).values(submission_id=sid, data=data))
    return sid


def get(conn: Connection, submission_id: int, account_id: int | None = None) -> Row[Any] | None:
    stmt = select(submissions).where(submissions.c.id == submission_id)
    if account_id is not None:
        stmt = stmt.where(submissions.c.account_id == account_id)
    return conn.execute(stmt).first()


def by_dedupe_key(conn: Connection, key: str) -> Row[Any] | None:
    return conn.execute(select(submissions).where(submissions.c.dedupe_key == key)).first()


def file_of(conn: Connection, submission_id: int) -> bytes:
    return bytes(
        conn.execute(
            select(submission_files.c.data).where(submission_files.c.submission_id == submission_id)
        ).scalar_one()
    )


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


def insert_results(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(submission_results), rows)


# --- the queue -------------------------------------------------------------------------------


def claim_next(conn: Connection, worker: str, now: datetime, lease_until: datetime) -> int | None:
    """Atomically take the oldest queued submission, or one whose worker's lease ran out."""
    cond = or_(
        submissions.c.status == "QUEUED",
        and_(submissions.c.status == "IN_PROGRESS", submissions.c.lease_until < now),
    )
    pick = select(submissions.c.id).where(cond).order_by(submissions.c.id).limit(1)
    if not is_sqlite(conn):
        pick = pick.with_for_update(skip_locked=True)
    sid = conn.execute(pick).scalar()
    if sid is None:
        return None
    claim(conn, int(sid), worker, now, lease_until)
    return int(sid)


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


def set_status(conn: Connection, submission_id: int, **values: Any) -> None:
    conn.execute(update(submissions).where(submissions.c.id == submission_id).values(**values))


# --- resolving and loading actions -----------------------------------------------------------


def existing_ids(conn: Connection, account_id: int, campaign_id: int, ids: Iterable[int]) -> set[int]:
    ids = list(set(ids))
    out: set[int] = set()
    for part in _chunks(ids, 5000):
        out.update(
            conn.execute(
                select(actions.c.id).where(
                    actions.c.id.in_(part), actions.c.account_id == account_id, actions.c.campaign_id == campaign_id
                )
            ).scalars()
        )
    return out


def newest_by_orders(conn: Connection, account_id: int, campaign_id: int,
                     pairs: Iterable[tuple[int, str]]) -> dict[tuple[int, str], int]:
    """R12 in bulk: the newest action for each (event type, order id)."""
    pairs = list(set(pairs))
    out: dict[tuple[int, str], int] = {}
    for part in _chunks(pairs, 2000):
        by_type: dict[int, list[str]] = {}
        for et, oid in part:
            by_type.setdefault(et, []).append(oid)
        for et, oids in by_type.items():
            rows = conn.execute(
                select(actions.c.order_id, func.max(actions.c.id))
                .where(
                    actions.c.event_type_id == et,
                    actions.c.order_id.in_(oids),
                    actions.c.account_id == account_id,
                    actions.c.campaign_id == campaign_id,
                )
                .group_by(actions.c.order_id)
            )
            for oid, aid in rows:
                out[(et, oid)] = int(aid)
    return out


def load_actions(conn: Connection, ids: Sequence[int], *, for_update: bool) -> dict[int, Row[Any]]:
    out: dict[int, Row[Any]] = {}
    for part in _chunks(sorted(set(ids)), 5000):
        stmt = select(actions).where(actions.c.id.in_(part)).order_by(actions.c.id)
        if for_update and not is_sqlite(conn):
            stmt = stmt.with_for_update()
        for r in conn.execute(stmt):
            out[r.id] = r
    return out


def load_items(conn: Connection, ids: Sequence[int]) -> dict[int, list[Row[Any]]]:
    out: dict[int, list[Row[Any]]] = {i: [] for i in ids}
    for part in _chunks(sorted(set(ids)), 5000):
        rows = conn.execute(
            select(action_items)
            .where(action_items.c.action_id.in_(part))
            .order_by(action_items.c.action_id, action_items.c.position)
        )
        for r in rows:
            out[r.action_id].append(r)
    return out


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


# --- writing a chunk -------------------------------------------------------------------------

_action_update = (
    update(actions)
    .where(actions.c.id == bindparam("b_id"), actions.c.version == bindparam("b_version"))
    .values(
        state=bindparam("b_state"), reason=bindparam("b_reason"), amount=bindparam("b_amount"),
        payout=bindparam("b_payout"), locked_at=bindparam("b_locked_at"), restore=bindparam("b_restore"),
        update_count=bindparam("b_update_count"), version=bindparam("b_new_version"),
    )
)
_item_update = (
    update(action_items)
    .where(action_items.c.action_id == bindparam("b_id"), action_items.c.position == bindparam("b_pos"))
    .values(quantity=bindparam("b_q"), amount=bindparam("b_amt"), payout=bindparam("b_pay"))
)


def write_actions(conn: Connection, finals: dict[int, tuple[int, int, wf.Action, wf.Action]]) -> None:
    """Write the final state of each changed action: {id: (version, n_changes, first_before, after)}.

    Version-checked in bulk (R14): if any row's version moved, the whole chunk rolls back.
    """
    if not finals:
        return
    rows = []
    item_rows = []
    for aid, (version, n, before, after) in finals.items():
        rows.append({
            "b_id": aid, "b_version": version, "b_state": after.state.value, "b_reason": after.reason,
            "b_amount": after.amount, "b_payout": after.payout, "b_locked_at": after.locked_at,
            "b_restore": json.dumps(after.restore) if after.restore is not None else None,
            "b_update_count": after.update_count, "b_new_version": version + n,
        })
        for pos, (b, a) in enumerate(zip(before.items, after.items, strict=True)):
            if a != b:
                item_rows.append({"b_id": aid, "b_pos": pos, "b_q": a.quantity, "b_amt": a.amount, "b_pay": a.payout})
    result = conn.execute(_action_update, rows)
    if result.rowcount is not None and result.rowcount >= 0 and result.rowcount != len(rows):
        raise StaleVersion("an action of this chunk changed meanwhile; the chunk is retried")
    if item_rows:
        conn.execute(_item_update, item_rows)


def insert_updates(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(action_updates), rows)


def update_row(change: wf.Change, values: dict[str, Any]) -> dict[str, Any]:
    changed = change.changed_items()
    return {
        "action_id": change.after.id, "kind": change.kind.value, "state": change.after.state.value,
        "reason": change.reason, "delta_amount": change.delta_amount, "delta_payout": change.delta_payout,
        "items": items_json(changed) if changed else None, **values,
    }


def _chunks(seq: Sequence[Any], n: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


__all__ = ["tuple_"]
