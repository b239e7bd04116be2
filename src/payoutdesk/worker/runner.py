"""A worker: claims queued submissions one at a time (any number of workers may run).

A claim is a lease of ``PAYOUTDESK_WORKER_LEASE_SECONDS`` (default 30) that the working process renews
(``engine.process``'s heartbeat): a worker killed outright leaves its submission to be taken over once
the lease runs out. A worker asked to stop (``stop`` set: SIGTERM, SIGINT) ends the chunk in hand,
gives the submission back to the queue and returns, so the next start resumes it at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from sqlalchemy import Engine

from payoutdesk.kit import db, logs
from payoutdesk.kit.time import utcnow
from payoutdesk.submissions import engine as sub_engine
from payoutdesk.submissions import repository as repo
from payoutdesk.submissions.service import label as submission_label

log = logging.getLogger("payoutdesk.worker")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def lease_seconds() -> float:
    return sub_engine.default_lease().total_seconds()


def claim_next(engine: Engine, worker: str) -> int | None:
    now = utcnow()
    lease = sub_engine.default_lease()
    with db.write(engine) as conn:
        before = repo.claim_next_row(conn, worker, now, now + lease)
    if before is None:
        return None
    label = submission_label(before)
    done = int(before.processed_records or 0)
    if before.status == "IN_PROGRESS":
        logs.event(log, f"submission {label} taken over by {worker} from {before.claimed_by} (its lease ran out) "
                   f"at row {done}", event="submission_taken_over", submission=label, worker=worker,
                   previous_worker=before.claimed_by, processed=done)
    else:
        logs.event(log, f"submission {label} claimed by {worker}" + (f", resuming at row {done}" if done else ""),
                   event="submission_claimed", submission=label, worker=worker, processed=done)
    return int(before.id)


def claim(engine: Engine, submission_id: int, worker: str) -> bool:
    now = utcnow()
    with db.write(engine) as conn:
        return repo.claim(conn, submission_id, worker, now, now + sub_engine.default_lease())


def run_once(engine: Engine, worker: str, stop: threading.Event | None = None) -> int | None:
    """Claim and work on one submission (to its end, or until ``stop``); returns its id, or None when
    the queue is empty or ``stop`` is set."""
    if stop is not None and stop.is_set():
        return None
    sid = claim_next(engine, worker)
    if sid is None:
        return None
    try:
        sub_engine.process(engine, sid, worker, lease=sub_engine.default_lease(), stop=stop)
    except Exception:
        log.exception("submission %s failed in worker %s; it will be retried after its lease", sid, worker)
        raise
    return sid


def run_forever(engine: Engine, stop: threading.Event, idle_seconds: float = 0.5) -> None:
    worker = worker_name()
    logs.event(log, f"worker {worker} started", event="worker_started", worker=worker)
    while not stop.is_set():
        try:
            if run_once(engine, worker, stop) is None:
                stop.wait(idle_seconds)
        except Exception:  # noqa: BLE001 - a worker keeps going; the submission is retried
            stop.wait(idle_seconds)
    logs.event(log, f"worker {worker} stopped", event="worker_stopped", worker=worker)
