"""PostgreSQL: a single-action change (``ledger.service.change``) in two round trips.

The action, its items and the terms come from one statement sent with BEGIN
(``repository.load_for_change_pg``); the writes and the history from another, sent with COMMIT when
the change is all its transaction writes (``commit=True``). These tests hold that path to the
reference one (``ledger.apply``, which loads, reads the items and terms and writes statement by
statement, then ``get_action``): same answers, same errors, same history; and to R14 when the
version check fails in the middle of a pipelined change, or when the action changed while the
change waited for its lock.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, exc, select

from payoutdesk import errors
from payoutdesk.kit import db
from payoutdesk.ledger import repository as repo
from payoutdesk.ledger import service as ledger
from payoutdesk.ledger import workflow as wf
from payoutdesk.models import action_items, action_updates, actions
from tests.conftest import only_on
from tests.helpers import World, client_for, conversion, make_world

pytestmark = only_on("postgresql")  # the pipelined change path is PostgreSQL's (SQLite keeps its own)


@pytest.fixture
def pg(engine: Engine) -> Engine:
    return engine


def _command(rnd: random.Random, skus: list[str]) -> tuple[wf.Command, str | None]:
    note = rnd.choice([None, None, "näte", "n" * 50])
    kind = "approve" if rnd.random() < 0.005 else rnd.choice(["modify"] * 4 + ["items"] * 3 + ["reverse", "reset"])
    if kind == "modify":
        reason = rnd.choice([None, "ORDER_UPDATE", "ITEM_RETURNED", "Wrong_Size"])
        return wf.Modify(rnd.choice([0, 1234, 8000, 10000, 25010]), (), reason), note
    if kind == "items":
        change = wf.ItemChange(rnd.choice(skus), rnd.choice([0, 1, 2, 3]), rnd.choice([None, 500, 1750]))
        return wf.Modify(None, (change,), None), note
    if kind == "reverse":
        return wf.Reverse(rnd.choice([None, "CONS_FRAUD", "Wrong_Size"])), note
    return (wf.Approve() if kind == "approve" else wf.Reset()), note


def _normal(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer without what differs between two actions given the same changes (ids, order, times)."""
    out = {k: v for k, v in answer.items() if k not in ("id", "order_id")}
    out["updates"] = [{k: v for k, v in u.items() if k != "at"} for u in answer["updates"]]
    return out


def _outcome(fn: Any, action_id: int) -> Any:
    try:
        return fn()
    except errors.PayoutdeskError as e:  # the refusal, as the API would answer it (the id aside)
        return type(e).__name__, str(e).replace(f"Action {action_id} ", "Action <id> ")


def test_pipelined_change_answers_and_history_equal_the_reference(pg: Engine, tmp_path: Path) -> None:
    w: World = make_world(pg, tmp_path, category_percent={"shoes": "20"})
    items = [{"sku": "RED", "quantity": 2, "amount": "60.00", "category": "shoes"},
             {"sku": "BLUE", "quantity": 1, "amount": "40.00", "name": "Blue"}]
    shapes: list[dict[str, Any]] = [{}, {"items": items}, {"amount": "0.99"}, {"event_type": w.lead},
                                    {"partner": w.partners[2]}]
    skus = [["ORDER"], ["RED", "BLUE"], ["ORDER"], ["ORDER"], ["ORDER"]]
    new = [conversion(w, f"NEW-{n}", **s) for n, s in enumerate(shapes)]
    ref = [conversion(w, f"REF-{n}", **s) for n, s in enumerate(shapes)]
    rnd = random.Random(11)
    outcomes: dict[str, int] = {}
    for step in range(160):
        k = rnd.randrange(len(shapes))
        command, note = _command(rnd, skus[k])
        wait = step % 3 != 0  # the event loop's way (wait=False) too; nothing here waits for a lock

        def pipelined(k: int = k, command: wf.Command = command, note: str | None = note,
                      wait: bool = wait) -> Any:
            return db.transaction(pg, lambda conn: ledger.change(conn, w.actor, new[k], command, note=note,
                                                                  commit=True), wait=wait)

        def reference(k: int = k, command: wf.Command = command, note: str | None = note) -> Any:
            def unit(conn: Any) -> Any:
                applied = ledger.apply(conn, w.actor, ref[k], command, note=note)
                out = ledger.get_action(conn, w.account_id, ref[k])
                out["outcome"] = "unchanged" if applied.unchanged else "applied"
                return out
            return db.transaction(pg, unit)

        got, want = _outcome(pipelined, new[k]), _outcome(reference, ref[k])
        if isinstance(want, dict):
            assert isinstance(got, dict), (command, got)
            assert _normal(got) == _normal(want), command
            outcomes[want["outcome"]] = outcomes.get(want["outcome"], 0) + 1
        else:
            assert got == want, command
            outcomes["refused"] = outcomes.get("refused", 0) + 1
    assert outcomes.get("applied", 0) > 40 and outcomes.get("unchanged", 0) > 3 and outcomes.get("refused", 0) > 3
    with db.read(pg) as conn:
        for a, b in zip(new, ref, strict=True):
            got, want = ledger.get_action(conn, w.account_id, a), ledger.get_action(conn, w.account_id, b)
            assert _normal(got) == _normal(want)


def _history(engine: Engine, action_id: int) -> list[Any]:
    with db.read(engine) as conn:
        return list(conn.execute(select(action_updates).where(action_updates.c.action_id == action_id)
                                 .order_by(action_updates.c.id)))


def _stored(engine: Engine, action_id: int) -> tuple[Any, list[Any]]:
    with db.read(engine) as conn:
        row = conn.execute(select(actions).where(actions.c.id == action_id)).one()
        items = list(conn.execute(select(action_items).where(action_items.c.action_id == action_id)
                                  .order_by(action_items.c.position)))
    return row, items


def _stale_once(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The next loads answer the action one version behind the first time, as if someone changed it
    between the read and the write: the version-checked write then matches nothing."""
    calls: list[int] = []
    real = repo.load_for_change_pg

    def load(conn: Any, account_id: int, action_id: int, on: Any) -> Any:
        row, items, terms = real(conn, account_id, action_id, on)
        calls.append(action_id)
        if len(calls) == 1 and row is not None:
            row = repo.PgRecord({**row._mapping, "version": row.version - 1})
        return row, items, terms

    monkeypatch.setattr(repo, "load_for_change_pg", load)
    return calls


def test_a_stale_version_in_a_pipelined_change_commits_nothing_and_is_retried(
        pg: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = make_world(pg, tmp_path)
    items = [{"sku": "RED", "quantity": 2, "amount": "60.00"}, {"sku": "BLUE", "quantity": 1, "amount": "40.00"}]
    aid = conversion(w, "STALE-1", items=items)
    command = wf.Modify(None, (wf.ItemChange("RED", 1, None),), None)
    before_row, before_items = _stored(pg, aid)

    # not waiting (the event loop): the race is handed on as WouldWait, and nothing was written
    calls = _stale_once(monkeypatch)
    with pytest.raises(db.WouldWait):
        db.transaction(pg, lambda conn: ledger.change(conn, w.actor, aid, command, commit=True), wait=False)
    assert calls == [aid]
    assert _stored(pg, aid) == (before_row, before_items)
    assert len(_history(pg, aid)) == 1

    # waiting: retried from the start, applied once
    calls = _stale_once(monkeypatch)
    answer = db.transaction(pg, lambda conn: ledger.change(conn, w.actor, aid, command, commit=True))
    assert calls == [aid, aid]
    history = _history(pg, aid)
    assert [u.kind for u in history] == ["CREATED", "MODIFIED"]
    with db.read(pg) as conn:
        shown = ledger.get_action(conn, w.account_id, aid)
    assert answer.pop("outcome") == "applied" and answer == shown
    row, stored_items = _stored(pg, aid)
    assert row.version == before_row.version + 1 and [i.quantity for i in stored_items] == [1, 1]


def test_a_stale_version_over_http_is_retried_in_a_thread(pg: Engine, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    w = make_world(pg, tmp_path)
    aid = conversion(w, "STALE-HTTP")
    calls = _stale_once(monkeypatch)
    with client_for(pg, tmp_path) as api:
        r = api.post(f"/api/v1/actions/{aid}/modify", json={"amount": "80.00"}, headers=w.auth)
        assert r.status_code == 200, r.text
        shown = api.get(f"/api/v1/actions/{aid}", headers=w.auth).json()
    assert calls == [aid, aid]
    answer = r.json()
    assert answer.pop("outcome") == "applied" and answer == shown
    assert [u["kind"] for u in shown["updates"]] == ["CREATED", "MODIFIED"]


def test_items_changed_while_the_change_waited_for_its_lock_are_read_again(
        pg: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The load reads the items in its snapshot, taken before the lock was granted: when another
    transaction changed the action meanwhile, the items and terms are read again (else the change
    would be decided on items that are no longer there)."""
    w = make_world(pg, tmp_path)
    items = [{"sku": "RED", "quantity": 2, "amount": "60.00"}, {"sku": "BLUE", "quantity": 1, "amount": "40.00"}]
    aid = conversion(w, "WAIT-1", items=items)
    reread: list[int] = []
    real = repo.items_and_terms

    def items_and_terms(conn: Any, action_id: int, *args: Any) -> Any:
        reread.append(action_id)
        return real(conn, action_id, *args)

    monkeypatch.setattr(repo, "items_and_terms", items_and_terms)
    holding = threading.Event()
    failures: list[BaseException] = []

    def other() -> None:
        try:
            with db.write(pg) as conn:
                ledger.change(conn, w.actor, aid, wf.Modify(None, (wf.ItemChange("RED", 0, None),), None))
                holding.set()
                time.sleep(0.5)  # the change below starts meanwhile and waits for the action's lock
        except BaseException as e:  # handed to the main thread
            failures.append(e)
            holding.set()

    t = threading.Thread(target=other)
    t.start()
    assert holding.wait(10)
    answer = db.transaction(pg, lambda conn: ledger.change(
        conn, w.actor, aid, wf.Modify(None, (wf.ItemChange("BLUE", 3, None),), None), commit=True))
    t.join(10)
    assert not failures
    assert reread == [aid]
    with db.read(pg) as conn:
        shown = ledger.get_action(conn, w.account_id, aid)
    assert answer.pop("outcome") == "applied" and answer == shown
    assert [(i["sku"], i["quantity"]) for i in shown["items"]] == [("RED", 0), ("BLUE", 3)]
    assert [u["kind"] for u in shown["updates"]] == ["CREATED", "MODIFIED", "MODIFIED"]
    assert shown["version"] == 3


def test_a_failing_pipelined_write_commits_nothing(pg: Engine, tmp_path: Path) -> None:
    w = make_world(pg, tmp_path)
    aid = conversion(w, "FAIL-1")
    before = _stored(pg, aid)
    too_long = w.actor.__class__(w.account_id, "x" * 400, wf.Channel.API)  # actor is at most 320 characters
    with pytest.raises(exc.DataError):
        db.transaction(pg, lambda conn: ledger.change(conn, too_long, aid, wf.Modify(5000, (), None), commit=True))
    assert _stored(pg, aid) == before and len(_history(pg, aid)) == 1
    # the connections are fine afterwards, and so are psycopg's prepared statements (a rollback drops them)
    for amount in (6000, 7000, 6000, 7000, 6000, 7000, 6000):
        db.transaction(pg, lambda conn, amount=amount: ledger.change(conn, w.actor, aid, wf.Modify(amount, (), None),
                                                                     commit=True), wait=False)
    assert len(_history(pg, aid)) == 8


def test_unknown_and_foreign_actions_are_not_found(pg: Engine, tmp_path: Path) -> None:
    w = make_world(pg, tmp_path)
    other = make_world(pg, tmp_path)
    aid = conversion(other, "FOREIGN-1")
    before = _stored(pg, aid)
    for target in (aid, 2**62):
        with pytest.raises(errors.NotFound):
            db.transaction(pg, lambda conn, t=target: ledger.change(conn, w.actor, t, wf.Approve(), commit=True),
                           wait=False)
    assert _stored(pg, aid) == before
