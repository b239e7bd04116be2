"""SQL of the Salesforce channel: notifications already taken, the poll's cursor, a run by id."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select, update

from payoutdesk.models import intake_cursors, intake_runs, salesforce_notifications

n = salesforce_notifications


def seen_notifications(conn: Connection, event_type_id: int, ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` the event type has already taken."""
    if not ids:
        return set()
    rows = conn.execute(select(n.c.notification_id).where(n.c.event_type_id == event_type_id,
                                                          n.c.notification_id.in_(list(ids))))
    return {str(r[0]) for r in rows}


def insert_notifications(conn: Connection, event_type_id: int, ids: Sequence[str], submission_id: int | None,
                         now: datetime) -> None:
    if ids:
        conn.execute(insert(n), [{"event_type_id": event_type_id, "notification_id": i,
                                  "submission_id": submission_id, "received_at": now} for i in ids])


def forget_notifications(conn: Connection, event_type_id: int, before: datetime) -> int:
    """Drop the notifications taken before ``before`` (Salesforce re-sends for 24 hours at most)."""
    done = conn.execute(delete(n).where(n.c.event_type_id == event_type_id, n.c.received_at < before))
    return int(done.rowcount or 0)


def cursor(conn: Connection, event_type_id: int) -> str | None:
    value = conn.execute(select(intake_cursors.c.cursor).where(
        intake_cursors.c.event_type_id == event_type_id)).scalar()
    return None if value is None else str(value)


def move_cursor(conn: Connection, event_type_id: int, old: str | None, new: str, now: datetime) -> bool:
    """Set the cursor to ``new`` if it still is ``old`` (None: no cursor yet): whether this caller moved it.
    A concurrent poll that moved it first makes this one lose (an insert then fails on the primary key:
    the caller's transaction is rolled back)."""
    if old is None:
        conn.execute(insert(intake_cursors).values(event_type_id=event_type_id, cursor=new, updated_at=now))
        return True
    done = conn.execute(update(intake_cursors).where(intake_cursors.c.event_type_id == event_type_id,
                                                     intake_cursors.c.cursor == old)
                        .values(cursor=new, updated_at=now))
    return bool(done.rowcount)


def run(conn: Connection, run_id: int) -> Row[Any] | None:
    return conn.execute(select(intake_runs).where(intake_runs.c.id == run_id)).first()
