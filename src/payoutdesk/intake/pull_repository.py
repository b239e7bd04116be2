"""SQL of the pull from the brand's server (``intake.pull``): the remote files already taken, a run by id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from payoutdesk.models import event_types, intake_runs, remote_files


def event_type(conn: Connection, event_type_id: int) -> Row[Any] | None:
    return conn.execute(select(event_types).where(event_types.c.id == event_type_id)).first()


def seen(conn: Connection, event_type_id: int, name: str, size: int, mtime: str) -> Row[Any] | None:
    """The row of a remote file already taken (same name, size and modification time), or None."""
    return conn.execute(select(remote_files).where(
        remote_files.c.event_type_id == event_type_id, remote_files.c.name == name,
        remote_files.c.size == size, remote_files.c.mtime == mtime)).first()


def record(conn: Connection, *, event_type_id: int, name: str, size: int, mtime: str, sha256: str | None,
           submission_id: int | None, outcome: str, taken_at: datetime, run_id: int,
           after_done: str | None = None) -> int:
    """Note a remote file as taken; raises IntegrityError when another run noted it first
    (``uq_remote_files_seen``)."""
    return int(conn.execute(insert(remote_files).values(
        event_type_id=event_type_id, name=name, size=size, mtime=mtime, sha256=sha256,
        submission_id=submission_id, outcome=outcome, taken_at=taken_at, after_done=after_done, run_id=run_id,
    ).returning(remote_files.c.id)).scalar_one())


def set_after_done(conn: Connection, remote_file_id: int, after_done: str) -> None:
    conn.execute(update(remote_files).where(remote_files.c.id == remote_file_id).values(after_done=after_done))


def run(conn: Connection, run_id: int) -> Row[Any] | None:
    return conn.execute(select(intake_runs).where(intake_runs.c.id == run_id)).first()
