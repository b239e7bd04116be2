"""A worker: claims queued submissions one at a time (any number of workers may run)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import timedelta

from sqlalchemy import Engine

from payoutdesk.kit import db
from payoutdesk.kit.time import utcnow
from payoutdesk.submissions import engine as sub_engine
from payoutdesk.submissions import repository as repo

log = logging.getLogger("payoutdesk.worker")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def lease_seconds() -> int:
    return int(os.environ.get("PAYOUTDESK_WORKER_LEASE_SECONDS", "120"))


def claim_next(engine: Engine, worker: str) -> int | None:
    now = utcnow()
    with db.write(engine) as conn:
        return repo.claim_next(conn, worker, now, now + timedelta(seconds=lease_seconds()))


def claim(engine: Engine, submission_id: int, worker: str) -> bool:
    now = utcnow()
    with db.write(engine) as conn:
        return repo.claim(conn, submission_id, worker, now, now + timedelta(seconds=lease_seconds()))


def run_once(engine: Engine, worker: str) -> int | None:
    """Claim and finish one submission; returns its id, or None when the queue is empty."""
    sid = claim_next(engine, worker)
    if sid is None:
        return None
    try:
        sub_engine.process(engine, sid, worker, lease=timedelta(seconds=lease_seconds()))
    except Exception:
        log.exception("submission %s failed in worker %s; it will be retried after its lease", sid, worker)
        raise
    return sid


def run_forever(engine: Engine, stop: threading.Event, idle_seconds: float = 0.5) -> None:
    worker = worker_name()
    log.info("worker %s started", worker)
    while not stop.is_set():
        try:
            if run_once(engine, worker) is None:
                stop.wait(idle_seconds)
        except Exception:  # noqa: BLE001 - a worker keeps going; the submission is retried
            stop.wait(idle_seconds)


def start_thread(engine: Engine) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    t = threading.Thread(target=run_forever, args=(engine, stop), name="payoutdesk-worker", daemon=True)
    t.start()
    return t, stop
