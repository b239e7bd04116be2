"""Periodic jobs: the lock run, the daily file retention, and with an intake context the pulls from
brands' servers, the Salesforce polls and the results to send back (intake/schedule.py).

Each occurrence of a job has a slot (its scheduled time); a process runs it only after it
inserted the (job, slot) row, whose primary key lets exactly one process win. The jobs are
idempotent anyway (the lock run is safe to run concurrently), so a crash mid-job at worst
leaves the work for the next slot.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine, insert, update
from sqlalchemy.exc import IntegrityError

from payoutdesk.config import Settings
from payoutdesk.intake.common import IntakeContext
from payoutdesk.kit import db
from payoutdesk.kit.time import utcnow
from payoutdesk.ledger.service import lock_run
from payoutdesk.models import job_runs
from payoutdesk.submissions import files

log = logging.getLogger("payoutdesk.scheduler")


def slot_of(now: datetime, every_minutes: int) -> str:
    minutes = (now.hour * 60 + now.minute) // every_minutes * every_minutes
    return f"{now:%Y-%m-%d}T{minutes // 60:02d}:{minutes % 60:02d}"


def run_if_due(engine: Engine, job: str, slot: str, worker: str, fn: Callable[[], str]) -> bool:
    """Run ``fn`` for this slot unless another process already took it. Returns whether it ran."""
    try:
        with db.write(engine) as conn:
            conn.execute(insert(job_runs).values(job=job, slot=slot, worker=worker, started_at=utcnow()))
    except IntegrityError:
        return False
    result = fn()
    with db.write(engine) as conn:
        conn.execute(
            update(job_runs)
            .where(job_runs.c.job == job, job_runs.c.slot == slot)
            .values(finished_at=utcnow(), result=result)
        )
    return True


def lock_every_minutes() -> int:
    return max(1, int(os.environ.get("PAYOUTDESK_LOCK_EVERY_MINUTES", "15")))


def retention_days() -> int:
    return Settings.from_env().file_retention_days


def _file_retention(engine: Engine, now: datetime) -> str:
    done = files.purge(engine, retention_days(), now)
    return f"deleted the files of {done.expired} submissions, {done.unused} unused files"


def tick(engine: Engine, worker: str, now: datetime | None = None, ctx: IntakeContext | None = None) -> None:
    now = now or utcnow()
    run_if_due(engine, "lock", slot_of(now, lock_every_minutes()), worker,
               lambda: f"locked {lock_run(engine)}")
    # once a day: original files older than PAYOUTDESK_FILE_RETENTION_DAYS (DESIGN §6, "Files")
    run_if_due(engine, "file_retention", f"{now:%Y-%m-%d}", worker, lambda: _file_retention(engine, now))
    if ctx is not None:
        intake_tick(ctx, worker, now)


def intake_tick(ctx: IntakeContext, worker: str, now: datetime) -> None:
    """The pulls and polls due now, each in its own guard (one failing does not stop the others), then the
    results waiting to be sent back."""
    from payoutdesk.intake import schedule

    for job, slot, fn in schedule.due_jobs(ctx, now):
        try:
            run_if_due(ctx.engine, job, slot, worker, fn)
        except Exception:
            log.exception("scheduled job %s failed; it runs again at its next slot", job)
    schedule.deliver(ctx, now)


def run_forever(engine: Engine, stop: threading.Event, worker: str, poll_seconds: float = 30.0,
                ctx: IntakeContext | None = None) -> None:
    while not stop.is_set():
        try:
            tick(engine, worker, ctx=ctx)
        except Exception:
            log.exception("scheduled job failed; it runs again at its next slot")
        stop.wait(poll_seconds)
