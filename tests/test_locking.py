"""The lock run (R3, ledger.locking) against the rule, row by row: exactly the due actions locked,
each with one LOCKED history row, everything else untouched, whichever path a chunk takes."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, select

from payoutdesk.kit import db
from payoutdesk.ledger import locking
from payoutdesk.ledger import service as ledger
from payoutdesk.ledger import workflow as wf
from payoutdesk.models import action_updates, actions
from tests.helpers import World, make_world

AS_OF = date(2026, 12, 1)
NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def _scenario(engine: Engine) -> tuple[World, World]:
    """Two accounts whose due and not yet due actions are interleaved by id, a third reversed."""
    a, b = make_world(engine), make_world(engine)
    with db.write(engine) as conn:
        for n in range(60):
            w = b if n % 3 == 0 else a
            event = "2026-11-10T10:00:00Z" if n % 5 in (1, 2) else "2026-10-10T10:00:00Z"  # locks 12-28 / 11-28
            aid = ledger.record_conversion(conn, w.actor, {
                "event_type_id": w.sale, "order_id": f"L-{n}", "event_date": event,
                "partner_id": w.partners[n % 3], "amount": "100.00"})
            if n % 4 == 0:
                ledger.apply(conn, w.actor, aid, wf.Reverse("CONS_FRAUD"))
    return a, b


def _snapshot(engine: Engine) -> tuple[dict[int, Any], dict[int, list[Any]]]:
    with db.read(engine) as conn:
        rows = {r.id: r for r in conn.execute(select(actions))}
        history: dict[int, list[Any]] = {}
        for u in conn.execute(select(action_updates).order_by(action_updates.c.id)):
            history.setdefault(u.action_id, []).append(u)
    return rows, history


def _check(before: tuple[dict[int, Any], dict[int, list[Any]]], after: tuple[dict[int, Any], dict[int, list[Any]]],
           account_id: int | None, locked: int) -> None:
    (rows0, hist0), (rows1, hist1) = before, after
    expected = {i for i, r in rows0.items() if r.locked_at is None and r.lock_due <= AS_OF
                and account_id in (None, r.account_id)}
    assert expected and locked == len(expected)
    for i, r0 in rows0.items():
        r1 = rows1[i]
        if i not in expected:
            assert r1 == r0 and hist1.get(i, []) == hist0.get(i, [])
            continue
        state = "APPROVED" if r0.state == "PENDING" else r0.state
        changed = {"state", "locked_at", "version", "update_count"}
        assert {k: v for k, v in r1._mapping.items() if k not in changed} == {
            k: v for k, v in r0._mapping.items() if k not in changed}
        assert (r1.state, r1.locked_at, r1.version, r1.update_count) == (state, NOW, r0.version + 1,
                                                                           r0.update_count + 1)
        new = hist1[i][len(hist0[i]):]
        assert hist1[i][:len(hist0[i])] == hist0[i] and len(new) == 1
        u = new[0]
        assert (u.kind, u.state, u.at, u.delta_amount, u.delta_payout, u.channel, u.actor) == (
            "LOCKED", state, NOW, 0, 0, "system", "lock run")
        assert (u.reason, u.note, u.items, u.submission_id) == (None, None, None, None)


@pytest.mark.parametrize("dense", [0, 10**9], ids=["ids-as-list", "ids-as-range"])
@pytest.mark.parametrize("chunk", [1, 4, 1000])
def test_lock_run_locks_exactly_the_due_actions(fresh_engine: Engine, monkeypatch: pytest.MonkeyPatch,
                                                dense: int, chunk: int) -> None:
    monkeypatch.setattr(locking, "DENSE", dense)
    a, _b = _scenario(fresh_engine)
    before = _snapshot(fresh_engine)
    locked = ledger.lock_run(fresh_engine, as_of=AS_OF, account_id=a.account_id, now=NOW, chunk=chunk)
    _check(before, _snapshot(fresh_engine), a.account_id, locked)
    before = _snapshot(fresh_engine)
    locked = ledger.lock_run(fresh_engine, as_of=AS_OF, now=NOW, chunk=chunk)  # the other account's
    _check(before, _snapshot(fresh_engine), None, locked)
    assert ledger.lock_run(fresh_engine, as_of=AS_OF, now=NOW, chunk=chunk) == 0  # idempotent


def test_lock_run_rechecks_the_ids_it_read(fresh_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ids read before the chunks may be out of date by then (SQLite's id order): ids of actions
    locked or not due meanwhile are passed over, and actions due but not in the list are still locked
    by the last pass."""
    _scenario(fresh_engine)
    before = _snapshot(fresh_engine)
    rows = before[0]
    due = sorted(i for i, r in rows.items() if r.locked_at is None and r.lock_due <= AS_OF)
    not_due = sorted(i for i, r in rows.items() if r.lock_due > AS_OF)
    stale = [sorted(due[::2] + not_due[:5])]

    def read_ids(*_args: Any) -> list[list[int]]:
        return stale

    monkeypatch.setattr(locking, "_due_ids_in_chunks", read_ids)
    with db.write(fresh_engine) as conn:  # three locked by another run in between
        if db.is_sqlite(conn):
            assert locking.lock_ids_sqlite(conn, due[:3], AS_OF, NOW, None) == 3
        else:
            assert locking.lock_chunk(conn, AS_OF, NOW, None, 3) == 3
    first = _snapshot(fresh_engine)
    locked = ledger.lock_run(fresh_engine, as_of=AS_OF, now=NOW, chunk=4)
    assert locked == len(due) - 3
    _check(before, _snapshot(fresh_engine), None, locked + 3)
    assert first != before
