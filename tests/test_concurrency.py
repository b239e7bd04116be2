"""Concurrent writers lose no update (R14); concurrent lock runs lock each action once (R3).

Threads share one engine, as the web server's threads do: on SQLite every write transaction
is BEGIN IMMEDIATE, on PostgreSQL the action row is locked FOR UPDATE and the version is
checked on write; either way each change is applied once and written to the history once.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, select

from payoutdesk import errors
from payoutdesk.kit import db
from payoutdesk.ledger import service as ledger
from payoutdesk.ledger import workflow as wf
from payoutdesk.models import action_items, action_updates, actions
from tests.helpers import World, client_for, conversion, make_world

THREADS, CHANGES = 8, 25


def run_threads(n: int, work: Callable[[int], None]) -> None:
    """Start ``n`` threads together on ``work(i)``; re-raise the first error any of them met."""
    barrier = threading.Barrier(n)
    failures: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            work(i)
        except BaseException as exc:  # handed to the main thread
            failures.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if failures:
        raise failures[0]


def check_invariants(conn: Connection, action_id: int) -> list[Any]:
    """R10 on the stored action; returns its history."""
    a = conn.execute(select(actions).where(actions.c.id == action_id)).one()
    items = conn.execute(select(action_items).where(action_items.c.action_id == action_id)).all()
    updates = conn.execute(
        select(action_updates).where(action_updates.c.action_id == action_id).order_by(action_updates.c.id)
    ).all()
    assert updates[0].kind == "CREATED" and updates[0].delta_amount == a.intended_amount
    assert a.amount == a.intended_amount + sum(u.delta_amount for u in updates[1:])
    assert a.payout == a.intended_payout + sum(u.delta_payout for u in updates[1:])
    assert a.amount == sum(i.amount for i in items) and a.payout == sum(i.payout for i in items)
    assert a.version == a.update_count == len(updates), (a.version, a.update_count, len(updates))
    assert sum(1 for u in updates if u.kind == "LOCKED") <= 1
    return list(updates)


# --- one action, many writers -----------------------------------------------------------------


def test_parallel_item_changes_on_one_action_lose_nothing(world: World, engine: Engine) -> None:
    """8 threads x 25 changes, each thread owning one item of the same action."""
    skus = [f"SKU-{i}" for i in range(THREADS)]
    aid = conversion(world, "PAR-1", items=[{"sku": s, "quantity": 1, "amount": "10.00"} for s in skus])

    def work(i: int) -> None:
        for q in range(2, CHANGES + 2):
            command = wf.Modify(None, (wf.ItemChange(skus[i], q),), "ORDER_UPDATE")
            applied = db.transaction(engine, lambda conn, c=command: ledger.apply(conn, world.actor, aid, c))
            assert not applied.unchanged

    run_threads(THREADS, work)
    with db.read(engine) as conn:
        updates = check_invariants(conn, aid)
        items = conn.execute(select(action_items).where(action_items.c.action_id == aid)
                             .order_by(action_items.c.position)).all()
    assert len(updates) == 1 + THREADS * CHANGES
    assert Counter(u.kind for u in updates) == {"CREATED": 1, "MODIFIED": THREADS * CHANGES}
    assert [(i.sku, i.quantity, i.amount) for i in items] == [(s, CHANGES + 1, 1000 * (CHANGES + 1)) for s in skus]
    assert sum(i.payout for i in items) == sum(i.amount for i in items) // 10  # 10 %, exact here


def test_parallel_reverse_and_reset_toggles_are_all_in_the_history(world: World, engine: Engine) -> None:
    """Half the threads reverse, half reset (R9); every applied change is exactly one history row."""
    aid = conversion(world, "TOGGLE-1", amount="123.45")
    applied_kinds: Counter[str] = Counter()
    lock = threading.Lock()

    def work(i: int) -> None:
        command: wf.Command = wf.Reverse("CONS_ERROR") if i % 2 else wf.Reset()
        for _ in range(CHANGES):
            applied = db.transaction(engine, lambda conn: ledger.apply(conn, world.actor, aid, command))
            if not applied.unchanged:
                assert isinstance(applied.outcome, wf.Change)
                with lock:
                    applied_kinds[applied.outcome.kind.value] += 1

    run_threads(THREADS, work)
    with db.read(engine) as conn:
        updates = check_invariants(conn, aid)
        final = conn.execute(select(actions).where(actions.c.id == aid)).one()
    history = Counter(u.kind for u in updates[1:])
    assert history == applied_kinds and sum(history.values()) >= 1
    assert set(history) <= {"REVERSED", "RESET"}
    assert abs(history["REVERSED"] - history["RESET"]) <= 1  # they alternate
    assert final.state == ("REVERSED" if updates[-1].kind == "REVERSED" else "PENDING")
    assert final.amount == (0 if final.state == "REVERSED" else 12345) and final.locked_at is None


def test_parallel_http_changes_on_one_action(world: World, engine: Engine, tmp_path: Path) -> None:
    """The same through the API: concurrent requests on the server's thread pool."""
    n, per = 4, 10
    skus = [f"H-{i}" for i in range(n)]
    aid = conversion(world, "HTTP-PAR", items=[{"sku": s, "quantity": 1, "amount": "5.00"} for s in skus])
    statuses: list[int] = []
    with client_for(engine, tmp_path) as api:

        def work(i: int) -> None:
            for q in range(2, per + 2):
                r = api.post(f"/api/v1/actions/{aid}/modify", headers=world.auth,
                             json={"items": [{"sku": skus[i], "quantity": q}], "reason": "ITEM_RETURNED"})
                statuses.append(r.status_code)
                assert r.status_code == 200 and r.json()["outcome"] == "applied", r.text

        run_threads(n, work)
        detail = api.get(f"/api/v1/actions/{aid}", headers=world.auth).json()
    assert statuses == [200] * (n * per)
    assert len(detail["updates"]) == 1 + n * per and detail["version"] == 1 + n * per
    assert [i["quantity"] for i in detail["items"]] == [per + 1] * n
    assert detail["amount"] == f"{5 * (per + 1) * n}.00"
    with db.read(engine) as conn:
        check_invariants(conn, aid)


def test_concurrent_requests_with_the_same_idempotency_key(world: World, engine: Engine, tmp_path: Path) -> None:
    body = {"event_type_id": world.sale, "order_id": "IDEM-RACE", "event_date": "2026-11-15T10:00:00Z",
            "partner_id": world.partners[0], "amount": "42.00"}
    answers: list[Any] = []
    with client_for(engine, tmp_path) as api:

        def work(_i: int) -> None:
            answers.append(api.post("/api/v1/conversions", json=body,
                                    headers={**world.auth, "Idempotency-Key": "same-key"}))

        run_threads(THREADS, work)
    assert [r.status_code for r in answers] == [201] * THREADS, [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in answers) == THREADS - 1
    with db.read(engine) as conn:
        n = conn.execute(select(func.count()).select_from(actions).where(
            actions.c.account_id == world.account_id, actions.c.order_id == "IDEM-RACE")).scalar_one()
    assert n == 1


def test_concurrent_modifications_with_the_same_idempotency_key(world: World, engine: Engine,
                                                                 tmp_path: Path) -> None:
    aid = conversion(world, "IDEM-MOD", amount="100.00")
    with client_for(engine, tmp_path) as api:
        answers: list[Any] = []

        def work(_i: int) -> None:
            answers.append(api.post(f"/api/v1/actions/{aid}/modify", json={"amount": "60.00"},
                                    headers={**world.auth, "Idempotency-Key": "mod-key"}))

        run_threads(THREADS, work)
    assert {r.status_code for r in answers} == {200}
    assert len({r.text for r in answers}) == 1  # every one answers the first answer
    with db.read(engine) as conn:
        updates = check_invariants(conn, aid)
    assert [u.kind for u in updates] == ["CREATED", "MODIFIED"]


# --- lock runs ----------------------------------------------------------------------------------


@pytest.fixture
def due_world(fresh_engine: Engine) -> tuple[World, list[int], list[int], list[int]]:
    """In an empty database: 90 due actions (a third of them reversed) and 15 not yet due."""
    w = make_world(fresh_engine)

    def record(order_id: str, event_date: str) -> int:
        return ledger.record_conversion(conn, w.actor, {
            "event_type_id": w.sale, "order_id": order_id, "event_date": event_date,
            "partner_id": w.partners[0], "amount": "100.00"})

    with db.write(fresh_engine) as conn:
        # not yet due at the tests' clock (2026-11-26), so they may still change (R1); the runs lock as of 12-01
        due = [record(f"DUE-{n}", "2026-10-10T10:00:00Z") for n in range(90)]  # locks 2026-11-28
        later = [record(f"LATER-{n}", "2026-11-10T10:00:00Z") for n in range(15)]  # locks 2026-12-28
        reversed_ = due[::3]
        for aid in reversed_:
            ledger.apply(conn, w.actor, aid, wf.Reverse("CONS_FRAUD"))
    return w, due, reversed_, later


def _locked_rows(conn: Connection) -> Counter[int]:
    rows = conn.execute(select(action_updates.c.action_id).where(action_updates.c.kind == "LOCKED")).all()
    return Counter(r.action_id for r in rows)


@pytest.mark.parametrize("runners", [2, 4])
def test_concurrent_lock_runs_lock_each_action_once(fresh_engine: Engine, due_world: Any, runners: int) -> None:
    _w, due, reversed_, later = due_world
    totals: list[int] = []

    def work(_i: int) -> None:
        totals.append(ledger.lock_run(fresh_engine, as_of=date(2026, 12, 1), chunk=7))

    run_threads(runners, work)
    assert sum(totals) == len(due), totals
    with db.read(fresh_engine) as conn:
        locked = _locked_rows(conn)
        rows = {r.id: r for r in conn.execute(select(actions))}
        for aid in due + later:
            check_invariants(conn, aid)
    assert locked == Counter(due)  # one LOCKED row per due action, none for the others
    for aid in due:
        assert rows[aid].locked_at is not None
        assert rows[aid].state == ("REVERSED" if aid in reversed_ else "APPROVED")
    assert all(rows[aid].locked_at is None and rows[aid].state == "PENDING" for aid in later)
    assert ledger.lock_run(fresh_engine, as_of=date(2026, 12, 1)) == 0  # idempotent


def test_lock_run_racing_modifications(fresh_engine: Engine, due_world: Any) -> None:
    """A change either lands before the lock (and is then locked with it) or is refused as locked."""
    w, due, reversed_, _later = due_world
    pending = [a for a in due if a not in reversed_]
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def work(i: int) -> None:
        if i == 0:
            ledger.lock_run(fresh_engine, as_of=date(2026, 12, 1), chunk=5)
            return
        for aid in pending[i - 1::3]:
            try:
                db.transaction(fresh_engine, lambda conn, a=aid: ledger.apply(
                    conn, w.actor, a, wf.Modify(5000, (), "ORDER_UPDATE")))
                result = "applied"
            except errors.ActionLocked:
                result = "locked"
            with lock:
                outcomes[result] += 1

    run_threads(4, work)
    assert sum(outcomes.values()) == len(pending)
    # the racing run waited for the changes in flight: it left nothing due behind (R3)
    assert ledger.lock_run(fresh_engine, as_of=date(2026, 12, 1)) == 0
    with db.read(fresh_engine) as conn:
        assert _locked_rows(conn) == Counter(due)
        for aid in pending:
            updates = check_invariants(conn, aid)
            kinds = [u.kind for u in updates]
            assert kinds in (["CREATED", "LOCKED"], ["CREATED", "MODIFIED", "LOCKED"]), kinds
        modified = conn.execute(select(func.count()).select_from(action_updates).where(
            action_updates.c.kind == "MODIFIED")).scalar_one()
    assert modified == outcomes["applied"]
