"""R13 re-processing: attribution again over chosen unlocked PENDING actions (ledger/reprocess.py,
POST /api/v1/reprocess, the worker's R jobs)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, update

from payoutdesk.catalog import service as catalog
from payoutdesk.kit import db
from payoutdesk.ledger import reprocess
from payoutdesk.ledger import service as ledger
from payoutdesk.ledger import workflow as wf
from payoutdesk.models import actions
from payoutdesk.submissions import service as submissions
from tests.helpers import World, bulk_actions, client_for, conversion, drain

EVENT = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def click(w: World, partner: int, customer: str, at: datetime) -> int:
    with db.write(w.engine) as conn:
        return int(catalog.record_click(conn, w.actor, {"campaign_id": w.campaign_id, "partner_id": partner,
                                                        "customer_id": customer, "clicked_at": at.isoformat()})["id"])


def contract(w: World, partner: int, starts_on: date, percent: str) -> int:
    with db.write(w.engine) as conn:
        return catalog.create_contract(conn, w.actor, {
            "campaign_id": w.campaign_id, "partner_id": partner, "starts_on": starts_on,
            "payout": [{"event_type_id": w.sale, "percent": percent}, {"event_type_id": w.lead, "fixed": "1.00"}],
            "lock_after": {"months": 0, "days": 27}, "referral_window_days": 30})


def run(w: World, **criteria: Any) -> dict[str, int]:
    with db.write(w.engine) as conn:
        return reprocess.run(conn, w.account_id, reprocess.criteria(**criteria)).as_dict()


def action(w: World, action_id: int) -> dict[str, Any]:
    with db.read(w.engine) as conn:
        return ledger.get_action(conn, w.account_id, action_id)


def test_moves_an_action_to_the_partner_the_click_credits(world: World) -> None:
    a, b = world.partners[0], world.partners[1]
    with db.write(world.engine) as conn:
        old = ledger.record_conversion(conn, world.actor, {
            "event_type_id": world.sale, "order_id": "MOVE-1", "event_date": EVENT.isoformat(), "partner_id": a,
            "customer_id": "cust-move", "items": [{"sku": "S1", "quantity": 2, "amount": "60.00"},
                                                  {"sku": "S2", "quantity": 1, "amount": "40.00"}]})
        # the order as it stands now: S2 returned
        ledger.apply(conn, world.actor, old, wf.Modify(None, (wf.ItemChange("S2", 0),), "ITEM_RETURNED"))
    b_click = click(world, b, "cust-move", EVENT - timedelta(days=1))

    counts = run(world, order_ids=["MOVE-1"])
    assert counts == {"reattributed": 1, "recalculated": 0, "unchanged": 0, "skipped_locked": 0,
                      "skipped_reversed": 0, "not_attributable": 0}

    before = action(world, old)
    assert (before["state"], before["status_detail"], before["payout"]) == ("REVERSED", "SYSTEM_REATTRIBUTED", "0.00")
    last = before["updates"][-1]
    assert (last["kind"], last["reason"], last["channel"], last["actor"]) == (
        "REVERSED", "SYSTEM_REATTRIBUTED", "system", "system")
    new_id = int(last["note"].split("action ")[1].split(" ")[0])
    assert last["note"] == f"re-attributed to action {new_id} (partner {b})"
    new = action(world, new_id)
    assert (new["state"], new["partner_id"], new["order_id"], new["event_type_id"]) == ("PENDING", b, "MOVE-1",
                                                                                         world.sale)
    assert new["event_date"] == before["event_date"]
    assert [(i["sku"], i["quantity"], i["amount"]) for i in new["items"]] == [("S1", 2, "60.00")]
    assert (new["amount"], new["payout"]) == ("60.00", "6.00")  # B's 10 % on the order as it stands
    created = new["updates"][0]
    assert created["kind"] == "CREATED"
    assert created["note"].startswith(f"re-attributed from action {old} (partner {a}); attributed to click {b_click}")

    # idempotent: the old action is reversed now, the new one is credited right already
    again = run(world, order_ids=["MOVE-1"])
    assert again == {"reattributed": 0, "recalculated": 0, "unchanged": 1, "skipped_locked": 0,
                     "skipped_reversed": 1, "not_attributable": 0}
    assert len(action(world, new_id)["updates"]) == 1


def test_same_partner_only_recalculates_under_the_terms_in_force_now(world: World) -> None:
    a = world.partners[0]
    kept = conversion(world, "RECALC-1", "100.00")  # no customer id: keeps its partner
    assert action(world, kept)["payout"] == "10.00"
    contract(world, a, date(2026, 11, 25), "20")  # in force now (2026-11-26), not on the event date
    counts = run(world, campaign_id=world.campaign_id)
    assert counts == {"reattributed": 0, "recalculated": 1, "unchanged": 0, "skipped_locked": 0,
                      "skipped_reversed": 0, "not_attributable": 1}
    after = action(world, kept)
    assert (after["state"], after["partner_id"], after["amount"], after["payout"]) == ("PENDING", a, "100.00", "20.00")
    assert (after["updates"][-1]["kind"], after["updates"][-1]["channel"]) == ("MODIFIED", "system")
    assert run(world, campaign_id=world.campaign_id)["unchanged"] == 1  # twice: nothing more
    assert len(action(world, kept)["updates"]) == 2


def test_skips_locked_and_reversed_and_refuses_no_criterion(world: World) -> None:
    locked = conversion(world, "OLD-1", "100.00", event_date="2026-09-01T10:00:00Z")  # locks 2026-10-27
    assert ledger.lock_run(world.engine, account_id=world.account_id) == 1
    reversed_ = conversion(world, "REV-1", "100.00")
    with db.write(world.engine) as conn:
        ledger.apply(conn, world.actor, reversed_, wf.Reverse("CONS_FRAUD"))
    counts = run(world, campaign_id=world.campaign_id)
    assert (counts["skipped_locked"], counts["skipped_reversed"], counts["recalculated"] + counts["unchanged"]) == (
        1, 1, 0)
    assert action(world, locked)["state"] == "APPROVED"
    assert action(world, reversed_)["status_detail"] == "CONS_FRAUD"
    # by event date: only the September one
    assert run(world, event_date_from=date(2026, 9, 1), event_date_to=date(2026, 9, 1))["skipped_locked"] == 1
    assert sum(run(world, event_date_from=date(2026, 9, 2), event_date_to=date(2026, 10, 31)).values()) == 0


def test_api_answers_counts_or_a_job_that_the_worker_completes(world: World, tmp_path: Path) -> None:
    a, b = world.partners[0], world.partners[1]
    client = client_for(world.engine, tmp_path)
    auth = world.auth
    # refused: no criterion, an unknown field, another account's campaign, a range the wrong way round
    assert client.post("/api/v1/reprocess", json={}, headers=auth).status_code == 422
    assert client.post("/api/v1/reprocess", json={"campaign_id": world.campaign_id, "partner_id": 1},
                       headers=auth).status_code == 422
    assert client.post("/api/v1/reprocess", json={"campaign_id": 999_999}, headers=auth).status_code == 404
    assert client.post("/api/v1/reprocess", json={"campaign_id": None}, headers=auth).status_code == 422
    r = client.post("/api/v1/reprocess", json={"event_date_from": "2026-11-02", "event_date_to": "2026-11-01"},
                    headers=auth)
    assert (r.status_code, r.json()["chosen"]) == (200, 0)  # a range the wrong way round chooses nothing

    one = conversion(world, "API-1", "100.00")
    r = client.post("/api/v1/reprocess", json={"order_ids": ["API-1"], "event_date_to": "2026-11-20T10:00:01Z"},
                    headers=auth)
    assert r.status_code == 200, r.text
    assert r.json() == {"reattributed": 0, "recalculated": 0, "unchanged": 1, "skipped_locked": 0,
                        "skipped_reversed": 0, "not_attributable": 1, "chosen": 1}
    assert action(world, one)["payout"] == "10.00"

    ids = bulk_actions(world, 1500)
    with db.write(world.engine) as conn:  # ten of them have a customer whose click credits B
        conn.execute(update(actions).where(actions.c.id.in_(ids[:10])).values(customer_id="cust-bulk"))
    click(world, b, "cust-bulk", EVENT - timedelta(hours=1))
    contract(world, a, date(2026, 11, 25), "20")  # A's payout changes for the other 1,490 (and API-1)
    r = client.post("/api/v1/reprocess", json={"campaign_id": world.campaign_id}, headers=auth)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["id"].startswith("R-") and job["channel"] == "system" and job["status"] == "QUEUED"
    drain(world.engine)
    done = client.get(f"/api/v1/submissions/{job['id']}", headers=auth).json()
    assert (done["status"], done["total_records"], done["processed_records"]) == ("COMPLETE", 1501, 1501)
    assert (done["applied"], done["unchanged"]) == (1501, 0)
    assert done["reprocess"] == {"reattributed": 10, "recalculated": 1491, "unchanged": 0, "skipped_locked": 0,
                                 "skipped_reversed": 0, "not_attributable": 1491}
    moved = action(world, ids[0])
    assert (moved["state"], moved["status_detail"]) == ("REVERSED", "SYSTEM_REATTRIBUTED")
    assert moved["updates"][-1]["submission_id"] == job["id"]  # the history names the job
    # ... and who asked for it, as the job does
    assert moved["updates"][-1]["actor"] == done["actor"] == f"system for api:{world.sid}"
    assert client.post(f"/api/v1/submissions/{job['id']}/undo", headers=auth).status_code == 409
    assert action(world, ids[10])["payout"] == "20.00"

    # run twice: the job chooses the ten new actions too, and changes nothing more
    r = client.post("/api/v1/reprocess", json={"campaign_id": world.campaign_id}, headers=auth)
    assert r.status_code == 202
    drain(world.engine)
    with db.read(world.engine) as conn:
        assert reprocess.job_counts(conn, submissions.parse_id(r.json()["id"])) == {
            "reattributed": 0, "recalculated": 0, "unchanged": 1501, "skipped_locked": 0, "skipped_reversed": 10,
            "not_attributable": 1491}


def test_recalculate_rule_is_pure_and_keeps_amounts() -> None:
    from payoutdesk.contracts.terms import Period, Terms

    def terms(percent: int) -> Terms:
        return Terms(1, Period(0, 27), Period(0, 20), 30, rate_ppm=percent * 10_000)

    ten = wf.new_action((("A", None, None, 1, 10_000), ("B", None, None, 2, 5_000)), terms(10))
    outcome = wf.decide(ten, wf.Recalculate(), terms(20), EVENT)
    assert isinstance(outcome, wf.Change) and outcome.kind is wf.Kind.MODIFIED and outcome.reason is None
    assert [(i.quantity, i.amount, i.payout) for i in outcome.after.items] == [(1, 10_000, 2_000), (2, 5_000, 1_000)]
    assert outcome.after.intended_payout == ten.intended_payout  # what was recorded stays as recorded
    assert isinstance(wf.decide(ten, wf.Recalculate(), terms(10), EVENT), wf.Unchanged)
    reversed_ = wf.decide(ten, wf.Reverse("OTHER"), terms(10), EVENT)
    assert isinstance(reversed_, wf.Change)
    assert isinstance(wf.decide(reversed_.after, wf.Recalculate(), terms(20), EVENT), wf.Unchanged)


def test_cli_reprocesses_in_chunks_and_prints_the_counts(world: World, db_url: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from payoutdesk import cli

    bulk_actions(world, 30, order_prefix="CLI")
    contract(world, world.partners[0], date(2026, 11, 25), "20")
    monkeypatch.setenv("PAYOUTDESK_DATABASE_URL", db_url)
    monkeypatch.setenv("PAYOUTDESK_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PAYOUTDESK_SECRET_KEY", "test-secret")
    monkeypatch.setattr(reprocess, "JOB_CHUNK", 7)  # several transactions
    transactions: list[int] = []
    real = db.transaction

    def counted(engine: Any, fn: Any, *a: Any, **kw: Any) -> Any:
        transactions.append(1)
        return real(engine, fn, *a, **kw)

    monkeypatch.setattr(db, "transaction", counted)
    args = ["reprocess", "--account", world.sid, "--campaign", str(world.campaign_id), "--from", "2026-11-20",
            "--to", "2026-11-20"]
    assert cli.main(args) == 0
    lines = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert (lines["recalculated"], lines["unchanged"], lines["not_attributable"]) == ("30", "0", "30")
    assert len(transactions) == 5  # 30 actions, 7 a transaction
    assert cli.main(args) == 0
    lines = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert (lines["recalculated"], lines["unchanged"]) == ("0", "30")
    assert cli.main(["reprocess", "--account", world.sid]) == 2  # no criterion
    assert "at least one" in capsys.readouterr().err


def test_a_job_killed_with_sigkill_resumes_without_doubling(fresh_engine: Engine, fresh_url: str,
                                                            tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from sqlalchemy import func, select

    from payoutdesk.models import action_updates
    from payoutdesk.models import submissions as submissions_table
    from tests.helpers import make_world

    w = make_world(fresh_engine)
    ids = bulk_actions(w, 4000)
    contract(w, w.partners[0], date(2026, 11, 25), "20")
    with db.write(fresh_engine) as conn:
        sid = submissions.parse_id(reprocess.queue(conn, w.account_id, reprocess.criteria(w.campaign_id))["id"])

    def sub() -> Any:
        with fresh_engine.connect() as conn:
            return conn.execute(select(submissions_table).where(submissions_table.c.id == sid)).one()

    env = {**os.environ, "PAYOUTDESK_DATABASE_URL": fresh_url, "PAYOUTDESK_DATA_DIR": str(tmp_path),
           "PAYOUTDESK_WORKER_LEASE_SECONDS": "1"}

    def worker(*args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "payoutdesk.cli", "worker", *args], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    first = worker()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and int(sub().processed_records or 0) < len(ids) // 4:
        assert first.poll() is None, first.stderr.read().decode() if first.stderr else ""
        time.sleep(0.01)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    at_kill = sub()
    assert at_kill.status == "IN_PROGRESS" and 0 < at_kill.processed_records < len(ids), "kill it in the middle"
    time.sleep(1.2)  # its lease runs out
    second = worker("--once")
    _, err = second.communicate(timeout=300)
    assert second.returncode == 0, err.decode()
    final = sub()
    assert (final.status, final.processed_records, final.applied, final.unchanged) == (
        "COMPLETE", len(ids), len(ids), 0)
    with db.read(fresh_engine) as conn:
        assert reprocess.job_counts(conn, sid)["recalculated"] == len(ids)
        per_action = conn.execute(
            select(actions.c.payout, actions.c.update_count, func.count())
            .select_from(actions.join(action_updates, action_updates.c.action_id == actions.c.id))
            .where(actions.c.account_id == w.account_id)
            .group_by(actions.c.id, actions.c.payout, actions.c.update_count)).all()
    assert {tuple(r) for r in per_action} == {(2000, 2, 2)}  # one MODIFIED entry each, never two


def test_a_job_without_its_stored_criteria_fails_and_changes_nothing(world: World) -> None:
    from payoutdesk.models import submissions as submissions_table

    kept = conversion(world, "LOST-1", "100.00")
    contract(world, world.partners[0], date(2026, 11, 25), "20")
    with db.write(world.engine) as conn:
        sid = submissions.parse_id(reprocess.queue(conn, world.account_id, reprocess.criteria(world.campaign_id))["id"])
        conn.execute(update(submissions_table).where(submissions_table.c.id == sid).values(file_id=None))
    drain(world.engine)
    with db.read(world.engine) as conn:
        job = submissions.get(conn, world.account_id, f"R-{sid}")
    assert (job["status"], job["total_records"]) == ("FAILED", 0) and "criteria" in job["failure"]
    assert action(world, kept)["payout"] == "10.00"
