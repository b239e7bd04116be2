"""The scheduler runs each occurrence of a periodic job in exactly one process."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from sqlalchemy import Engine, select

from payoutdesk.models import actions, job_runs
from payoutdesk.worker import scheduler
from tests.helpers import conversion, make_world


def test_slots() -> None:
    assert scheduler.slot_of(datetime(2026, 11, 26, 10, 44, tzinfo=UTC), 15) == "2026-11-26T10:30"
    assert scheduler.slot_of(datetime(2026, 11, 26, 23, 59, tzinfo=UTC), 60) == "2026-11-26T23:00"


def test_one_process_per_slot(fresh_engine: Engine) -> None:
    ran: list[str] = []
    barrier = threading.Barrier(4)

    def contender(name: str) -> None:
        barrier.wait()
        scheduler.run_if_due(fresh_engine, "job", "2026-11-26T10:30", name, lambda: ran.append(name) or "ok")

    threads = [threading.Thread(target=contender, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ran) == 1
    with fresh_engine.connect() as conn:
        row = conn.execute(select(job_runs)).one()
    assert row.worker == ran[0] and row.result == "ok" and row.finished_at is not None


def test_tick_runs_the_lock(fresh_engine: Engine) -> None:
    w = make_world(fresh_engine)
    aid = conversion(w, "O-1", "10.00", event_date="2026-01-10T00:00:00Z")  # locks 2026-02-28
    scheduler.tick(fresh_engine, "w1", now=datetime.now(UTC))
    scheduler.tick(fresh_engine, "w2", now=datetime.now(UTC))  # same slot: not again
    with fresh_engine.connect() as conn:
        assert conn.execute(select(actions.c.state).where(actions.c.id == aid)).scalar_one() == "APPROVED"
        runs = conn.execute(select(job_runs.c.worker, job_runs.c.result).where(job_runs.c.job == "lock")).all()
    assert runs == [("w1", "locked 1")]
