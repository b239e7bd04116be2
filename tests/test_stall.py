"""No stalls (DESIGN §6): while a big file runs, single-action changes still answer promptly and the
submission's counts keep moving.

The worker runs in a thread of the test's process, as in ``payoutdesk serve``, and changes come through the
API every 0.2 s. The margins are wide (the issue measured changes stalled for 4.5 s at the median and 10 s at
p95, and counts stuck for 11 s, with chunks of 250,000 rows holding SQLite's write lock up to 20 s): here a
change must answer within 2.5 s at p95 and the stored counts must change at least every 4 s. With the old
chunk settings (CHUNK_SECONDS 20, a non-fair write lock, no yielding to waiters) the whole file below is one
transaction on SQLite, so the changes wait for all of it and the counts jump from 0 to the end at once.
"""

from __future__ import annotations

import statistics
import threading
import time
from itertools import pairwise
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from payoutdesk.kit import db
from payoutdesk.models import submissions
from payoutdesk.submissions import engine as sub_engine
from payoutdesk.submissions import service as subs
from payoutdesk.worker.runner import claim
from tests.helpers import bulk_actions, client_for, make_world

ACTIONS = 40_000
ROWS = {"sqlite": 160_000, "postgresql": 80_000}  # four (two) rows per action; PostgreSQL is slower here


def _counts(engine: Engine, sid: int) -> tuple[Any, ...]:
    with db.read(engine) as conn:
        row = conn.execute(select(submissions.c.status, submissions.c.processed_records, submissions.c.applied)
                           .where(submissions.c.id == sid)).one()
    return tuple(row)


def test_changes_answer_and_counts_move_while_a_big_file_runs(fresh_engine: Engine, tmp_path: Any) -> None:
    engine = fresh_engine
    rows = ROWS[engine.dialect.name]
    w = make_world(engine)
    ids = bulk_actions(w, ACTIONS)
    others = bulk_actions(w, 20, order_prefix="S")  # changed through the API meanwhile
    lines = ["ActionId,Amount,Reason"]
    for k in range(rows):
        lines.append(f"{ids[k % ACTIONS]},{90 - k // ACTIONS}.00,ORDER_UPDATE")
    with db.write(engine) as conn:
        created = subs.create(conn, w.actor, w.campaign_id, ("\r\n".join(lines) + "\r\n").encode(),
                              file_name="big.csv", content_type=None, dry_run=False, force=False)
    sid = subs.parse_id(created["id"])
    assert claim(engine, sid, "stall-worker")
    api: TestClient = client_for(engine, tmp_path)
    failed: list[BaseException] = []

    def work() -> None:
        try:
            sub_engine.process(engine, sid, "stall-worker")
        except BaseException as exc:  # reported by the test
            failed.append(exc)

    worker = threading.Thread(target=work, daemon=True)
    began = time.monotonic()
    worker.start()
    latencies: list[float] = []
    changes_at: list[float] = [began]
    last = _counts(engine, sid)
    n = 0
    next_change = time.monotonic() + 0.2
    while worker.is_alive() and time.monotonic() - began < 180:
        now = time.monotonic()
        if now >= next_change:
            aid = others[n % len(others)]
            t0 = time.monotonic()
            r = api.post(f"/api/v1/actions/{aid}/modify", headers=w.auth,
                         json={"amount": f"{50 + n % 40}.00", "reason": "ORDER_UPDATE"})
            latencies.append(time.monotonic() - t0)
            assert r.status_code == 200, r.text
            n += 1
            next_change = max(next_change + 0.2, time.monotonic())
        counts = _counts(engine, sid)
        if counts[1:] != last[1:]:
            changes_at.append(time.monotonic())
            last = counts
        time.sleep(0.02)
    worker.join(timeout=5)
    ended = time.monotonic()
    assert not failed, failed
    status, processed, applied = _counts(engine, sid)
    assert (status, processed, applied) == ("COMPLETE", rows, rows)
    gaps = [b - a for a, b in pairwise([*changes_at, ended])]
    p95 = statistics.quantiles(latencies, n=20, method="inclusive")[-1] if len(latencies) > 1 else latencies[0]
    summary = (f"{len(latencies)} changes in {ended - began:.1f} s: p50 {statistics.median(latencies):.3f} s, "
               f"p95 {p95:.3f} s, max {max(latencies):.3f} s; {len(changes_at) - 1} count changes, longest gap "
               f"{max(gaps):.2f} s")
    assert p95 <= 2.5, summary
    assert max(gaps) <= 4.0, summary
    assert len(latencies) >= 5, f"the file ran too briefly to measure: {summary}"


def test_the_write_lock_is_handed_over_in_the_order_of_asking() -> None:
    """kit.db.FairLock: a holder that releases and asks again at once (a worker between two chunks) goes
    behind the threads that were waiting; reentrant; a timed-out wait leaves the queue."""
    lock = db.FairLock()
    order: list[str] = []
    assert lock.acquire()
    assert lock.acquire()  # reentrant
    lock.release()

    def waiter(name: str) -> None:
        assert lock.acquire()
        order.append(name)
        lock.release()

    threads = [threading.Thread(target=waiter, args=(n,)) for n in ("first", "second")]
    for t in threads:
        t.start()
        while lock.waiting() < len(order) + threads.index(t) + 1:
            time.sleep(0.001)
    assert lock.waiting() == 2
    lock.release()
    assert lock.acquire()  # asks again at once: behind both waiters
    order.append("holder again")
    for t in threads:
        t.join()
    assert order == ["first", "second", "holder again"]
    late = threading.Thread(target=lambda: order.append(str(lock.acquire(timeout=0.05))))
    late.start()
    late.join()
    assert order[-1] == "False" and lock.waiting() == 0
    lock.release()
    assert lock.acquire(blocking=False)
    lock.release()
