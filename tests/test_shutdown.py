"""Restarts (DESIGN §6): SIGTERM stops ``serve`` and ``worker`` within 10 s, the chunk in hand committed and
the submission given back to the queue, so that the next start resumes it at once; after a SIGKILL another
worker takes it over once its short lease runs out; the lease is renewed while a worker works. Exactly once
throughout: as many history rows as rows applied, every action at its file's last amount."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from payoutdesk.kit import db
from payoutdesk.models import action_updates, actions, submissions
from payoutdesk.submissions import engine as sub_engine
from payoutdesk.submissions import service as subs
from payoutdesk.worker import runner
from tests.helpers import World, bulk_actions, make_world

N_ACTIONS = 6000


def _env(url: str, tmp: Path, **extra: str) -> dict[str, str]:
    # small batches, so that the file lasts some seconds and the signal lands in the middle of it
    batch = "40" if url.startswith("sqlite") else "150"  # a PostgreSQL transaction is one batch
    return {**os.environ, "PAYOUTDESK_DATABASE_URL": url, "PAYOUTDESK_DATA_DIR": str(tmp),
            "PAYOUTDESK_SECRET_KEY": "test-secret", "PAYOUTDESK_SUBMISSION_BATCH": batch,
            "PAYOUTDESK_SUBMISSION_CHUNK_SECONDS": "0.2", **extra}  # progress recorded early in the file


def _start(command: str, url: str, tmp: Path, **extra: str) -> subprocess.Popen[bytes]:
    args = [command]
    if command == "serve":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        args += ["--port", str(port)]
    return subprocess.Popen([sys.executable, "-m", "payoutdesk.cli", *args], env=_env(url, tmp, **extra),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _sub(engine: Engine, sid: int) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(select(submissions).where(submissions.c.id == sid)).one()._mapping)


def _submission(engine: Engine) -> tuple[World, list[int], int, int]:
    w = make_world(engine)
    ids = bulk_actions(w, N_ACTIONS)
    rows = []
    for i in ids:  # two rows per action: a row applied twice would show as an extra history row
        rows += [{"ActionId": i, "Amount": "90.00", "Reason": "ORDER_UPDATE"},
                 {"ActionId": i, "Amount": "80.00", "Reason": "ITEM_RETURNED"}]
    with db.write(engine) as conn:
        sid = subs.parse_id(subs.create_from_rows(conn, w.actor, w.campaign_id, rows)["id"])
    return w, ids, sid, len(rows)


def _wait_for_progress(engine: Engine, sid: int, proc: subprocess.Popen[bytes], at_least: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if int(_sub(engine, sid)["processed_records"] or 0) >= at_least:
            return
        if proc.poll() is not None:
            pytest.fail(f"the process exited early: {proc.stderr.read().decode() if proc.stderr else ''}")
        time.sleep(0.02)
    pytest.fail("no progress")


def _exactly_once(engine: Engine, w: World, ids: list[int], sid: int, total: int) -> None:
    final = _sub(engine, sid)
    assert final["status"] == "COMPLETE" and final["processed_records"] == total
    assert (final["applied"], final["unchanged"], final["errors"]) == (total, 0, 0)
    with engine.connect() as conn:
        n_updates = conn.execute(select(func.count()).where(action_updates.c.submission_id == sid)).scalar_one()
        assert n_updates == total
        per_action = conn.execute(
            select(actions.c.amount, actions.c.version, func.count())
            .select_from(actions.join(action_updates, action_updates.c.action_id == actions.c.id))
            .where(actions.c.account_id == w.account_id)
            .group_by(actions.c.id, actions.c.amount, actions.c.version)
        ).all()
    assert len(per_action) == len(ids)
    assert {tuple(r) for r in per_action} == {(8000, 3, 3)}


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_sigterm_releases_the_submission_and_the_next_start_resumes_at_once(
        fresh_engine: Engine, fresh_url: str, tmp_path: Path, command: str) -> None:
    w, ids, sid, total = _submission(fresh_engine)
    # a lease far longer than the test: only a released claim lets the next start take the submission
    proc = _start(command, fresh_url, tmp_path, PAYOUTDESK_WORKER_LEASE_SECONDS="600")
    _wait_for_progress(fresh_engine, sid, proc, 1)
    asked = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    took = time.monotonic() - asked
    log = err.decode()
    assert proc.returncode == 0, log
    assert took <= 10, f"{command} took {took:.1f} s to stop"
    stopped = _sub(fresh_engine, sid)
    assert 0 < stopped["processed_records"] < total, "stop it in the middle (make the file longer)"
    assert (stopped["status"], stopped["claimed_by"], stopped["lease_until"]) == ("QUEUED", None, None), log
    assert f"submission A-{sid} released at row {stopped['processed_records']}" in log, log

    again = subprocess.run([sys.executable, "-m", "payoutdesk.cli", "worker", "--once"], check=False, timeout=300,
                           env=_env(fresh_url, tmp_path, PAYOUTDESK_WORKER_LEASE_SECONDS="600"), capture_output=True)
    assert again.returncode == 0, again.stderr.decode()
    assert f"submission A-{sid} claimed by" in again.stderr.decode()
    assert f"resuming at row {stopped['processed_records']}" in again.stderr.decode()
    _exactly_once(fresh_engine, w, ids, sid, total)


def test_sigkill_the_submission_is_taken_over_once_the_short_lease_runs_out(
        fresh_engine: Engine, fresh_url: str, tmp_path: Path) -> None:
    w, ids, sid, total = _submission(fresh_engine)
    lease = 3
    first = _start("worker", fresh_url, tmp_path, PAYOUTDESK_WORKER_LEASE_SECONDS=str(lease))
    _wait_for_progress(fresh_engine, sid, first, 1)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    killed = time.monotonic()
    assert _sub(fresh_engine, sid)["status"] == "IN_PROGRESS"
    second = _start("worker", fresh_url, tmp_path, PAYOUTDESK_WORKER_LEASE_SECONDS=str(lease))
    try:
        deadline = killed + 120
        taken_at = None
        while time.monotonic() < deadline:
            s = _sub(fresh_engine, sid)
            if taken_at is None and s["claimed_by"] and str(s["claimed_by"]).split(":")[1] == str(second.pid):
                taken_at = time.monotonic()
            if s["status"] == "COMPLETE":
                break
            time.sleep(0.05)
        assert taken_at is not None and taken_at - killed <= lease + 5, "taken over within the lease (and a poll)"
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=30)
    assert f"submission A-{sid} taken over by" in err.decode(), err.decode()
    _exactly_once(fresh_engine, w, ids, sid, total)


def test_the_default_lease_is_short(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAYOUTDESK_WORKER_LEASE_SECONDS", raising=False)
    assert timedelta(0) < sub_engine.default_lease() <= timedelta(seconds=60)
    assert 0 < runner.lease_seconds() <= 60


def test_the_heartbeat_keeps_a_long_working_workers_claim(fresh_engine: Engine, monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """A lease of 0.6 s, a worker that reads its file for 1.5 s and then works 2 s more: the heartbeat keeps
    the claim all along, so another worker never takes the submission over, and it ends COMPLETE."""
    engine = fresh_engine
    world = make_world(engine)
    ids = bulk_actions(world, 40)
    rows = [{"ActionId": i, "Amount": "70.00", "Reason": "ORDER_UPDATE"} for i in ids]
    with db.write(engine) as conn:
        sid = subs.parse_id(subs.create_from_rows(conn, world.actor, world.campaign_id, rows)["id"])
    monkeypatch.setenv("PAYOUTDESK_WORKER_LEASE_SECONDS", "0.6")
    assert runner.claim(engine, sid, "slow-worker")
    real_source, real_apply = sub_engine.source_of, sub_engine.apply_chunk

    def slow_source(*args: Any, **kwargs: Any) -> Any:
        time.sleep(1.5)  # a big file being read before the first chunk
        return real_source(*args, **kwargs)

    def slow_apply(*args: Any, **kwargs: Any) -> None:
        time.sleep(0.2)
        real_apply(*args, **kwargs)

    monkeypatch.setattr(sub_engine, "source_of", slow_source)
    monkeypatch.setattr(sub_engine, "apply_chunk", slow_apply)
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(sub_engine.process(engine, sid, "slow-worker", batch=4)))
    t.start()
    stolen = []
    while t.is_alive():
        with db.write(engine) as conn:
            s = conn.execute(select(submissions.c.lease_until, submissions.c.claimed_by)
                             .where(submissions.c.id == sid)).one()
        if runner.claim_next(engine, "thief") == sid:
            stolen.append(s)
        time.sleep(0.1)
    t.join()
    assert not stolen
    assert result and result[0].status == "COMPLETE" and result[0].applied == len(ids)
