"""Exactly-once under failure: a worker killed with SIGKILL resumes without applying a row twice;
two workers racing for one queue never process a submission twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from payoutdesk.kit import db
from payoutdesk.models import action_updates, actions, submissions
from payoutdesk.submissions import service as subs
from tests.conftest import only_on
from tests.helpers import bulk_actions, make_world


def _worker(url: str, tmp: Path, *args: str, lease: int = 1, chunk: int = 300, batch: int = 100
            ) -> subprocess.Popen[bytes]:
    # a chunk (one transaction) of several batches, so that the kill can land between two batches of one
    # transaction: the batches already applied in it must be rolled back with it
    env = {**os.environ, "PAYOUTDESK_DATABASE_URL": url, "PAYOUTDESK_DATA_DIR": str(tmp),
           "PAYOUTDESK_SUBMISSION_CHUNK": str(chunk), "PAYOUTDESK_SUBMISSION_BATCH": str(batch),
           "PAYOUTDESK_WORKER_LEASE_SECONDS": str(lease)}
    return subprocess.Popen([sys.executable, "-m", "payoutdesk.cli", "worker", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _sub(engine: Engine, sid: int) -> dict[str, int | str | None]:
    with engine.connect() as conn:
        row = conn.execute(select(submissions).where(submissions.c.id == sid)).one()
    return dict(row._mapping)


@pytest.mark.parametrize(("chunk", "batch"), [(300, 100), (100, 100)])
def test_sigkill_mid_submission_resumes_exactly_once(fresh_engine: Engine, fresh_url: str, tmp_path: Path,
                                                     chunk: int, batch: int) -> None:
    """Chunks of several batches (a kill can land between two batches of one transaction), and chunks of
    one batch each (PostgreSQL's default shape)."""
    w = make_world(fresh_engine)
    ids = bulk_actions(w, 4000)
    rows = []
    for i in ids:  # two rows per action: a replayed chunk would show as extra history rows
        rows += [{"ActionId": i, "Amount": "90.00", "Reason": "ORDER_UPDATE"},
                 {"ActionId": i, "Amount": "80.00", "Reason": "ITEM_RETURNED"}]
    with db.write(fresh_engine) as conn:
        sid = subs.parse_id(subs.create_from_rows(conn, w.actor, w.campaign_id, rows)["id"])
    total = len(rows)

    first = _worker(fresh_url, tmp_path, chunk=chunk, batch=batch)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = int(_sub(fresh_engine, sid)["processed_records"] or 0)
        if done >= total // 4:
            break
        if first.poll() is not None:
            pytest.fail(f"worker exited early: {first.stderr.read().decode() if first.stderr else ''}")
        time.sleep(0.01)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    at_kill = _sub(fresh_engine, sid)
    assert at_kill["status"] == "IN_PROGRESS"
    assert 0 < int(at_kill["processed_records"] or 0) < total, "kill the worker in the middle"
    time.sleep(1.2)  # its lease runs out

    second = _worker(fresh_url, tmp_path, "--once", chunk=chunk, batch=batch)
    _, err = second.communicate(timeout=300)
    assert second.returncode == 0, err.decode()
    final = _sub(fresh_engine, sid)
    assert final["status"] == "COMPLETE" and final["processed_records"] == total
    assert (final["applied"], final["unchanged"], final["errors"]) == (total, 0, 0)
    assert final["amount_delta"] == -2000 * len(ids)
    with fresh_engine.connect() as conn:
        n_updates, sum_delta = conn.execute(
            select(func.count(), func.sum(action_updates.c.delta_amount)).where(action_updates.c.submission_id == sid)
        ).one()
        assert n_updates == total and sum_delta == -2000 * len(ids)
        per_action = conn.execute(
            select(actions.c.amount, actions.c.version, actions.c.update_count, func.count())
            .select_from(actions.join(action_updates, action_updates.c.action_id == actions.c.id))
            .where(actions.c.account_id == w.account_id)
            .group_by(actions.c.id, actions.c.amount, actions.c.version, actions.c.update_count)
        ).all()
    assert len(per_action) == len(ids)
    assert {tuple(r) for r in per_action} == {(8000, 3, 3, 3)}


@only_on("postgresql")  # the race for the queue is a PostgreSQL matter (SKIP LOCKED); SQLite serializes writers
def test_two_workers_never_process_a_submission_twice(fresh_engine: Engine, fresh_url: str, tmp_path: Path) -> None:
    w = make_world(fresh_engine)
    ids = bulk_actions(w, 1200)
    sids = []
    with db.write(fresh_engine) as conn:
        for k in range(0, len(ids), 40):
            part = ids[k : k + 40]
            rows = [{"ActionId": i, "Amount": "70.00", "Reason": "ORDER_UPDATE"} for i in part]
            sids.append(subs.parse_id(subs.create_from_rows(conn, w.actor, w.campaign_id, rows)["id"]))
    workers = [_worker(fresh_url, tmp_path, "--once", lease=120, chunk=10) for _ in range(2)]
    for p in workers:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    with fresh_engine.connect() as conn:
        for sid in sids:
            s = _sub(fresh_engine, sid)
            assert s["status"] == "COMPLETE" and s["applied"] == 40 and s["errors"] == 0 and s["unchanged"] == 0
        counts = conn.execute(
            select(action_updates.c.submission_id, func.count())
            .where(action_updates.c.submission_id.in_(sids))
            .group_by(action_updates.c.submission_id)
        ).all()
        assert sorted(c for _, c in counts) == [40] * len(sids)
        versions = conn.execute(select(func.min(actions.c.version), func.max(actions.c.version))
                                .where(actions.c.account_id == w.account_id)).one()
        assert tuple(versions) == (2, 2)
        claimers = conn.execute(select(func.count(func.distinct(submissions.c.claimed_by)))
                                .where(submissions.c.id.in_(sids))).scalar_one()
    assert claimers >= 1
