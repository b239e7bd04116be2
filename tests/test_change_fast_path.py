"""How a single-action change is served cheaply, and that the shortcuts change nothing visible:
a recent sign-in is remembered (the token is still checked on every request), and a change runs on
the event loop only when the database takes it at once, else in a worker thread."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, text

from payoutdesk.kit import db
from payoutdesk.models import actions
from tests.helpers import World, client_for, conversion, make_world
from tests.test_errors_and_limits import basic


@pytest.fixture
def world(engine: Engine) -> World:
    return make_world(engine)


def _statements(engine: Engine) -> tuple[list[str], Any]:
    seen: list[str] = []

    def hook(_conn: Any, _cur: Any, statement: str, *_a: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", hook)
    return seen, hook


def test_a_sign_in_is_remembered_and_the_token_checked_every_time(world: World, engine: Engine,
                                                                   tmp_path: Path) -> None:
    seen, hook = _statements(engine)
    try:
        with client_for(engine, tmp_path) as api:
            assert api.get("/api/v1/reasons", headers=world.auth).status_code == 200
            assert any("FROM accounts" in s for s in seen)  # the first sign-in reads the account
            seen.clear()
            assert api.get("/api/v1/reasons", headers=world.auth).status_code == 200
            assert not any("FROM accounts" in s for s in seen)  # the next one does not
            wrong = api.get("/api/v1/reasons", headers=basic(world.sid, world.token + "x"))
            assert wrong.status_code == 401  # another token for a remembered SID is checked again
            assert any("FROM accounts" in s for s in seen)
        with client_for(engine, tmp_path) as api:
            api.app.state.sign_ins.ttl = 0.0  # type: ignore[attr-defined]  # every entry expires at once
            for _ in range(2):
                seen.clear()
                assert api.get("/api/v1/reasons", headers=world.auth).status_code == 200
                assert any("FROM accounts" in s for s in seen)  # an expired entry is not trusted
    finally:
        event.remove(engine, "before_cursor_execute", hook)


def _hold_write_lock(engine: Engine, action_id: int, held: threading.Event, release: threading.Event) -> None:
    """What another writer does: a write transaction that holds the action (and, on SQLite, the database)."""
    with db.write(engine) as conn:
        stmt = select(actions.c.id).where(actions.c.id == action_id)
        conn.execute(stmt if db.is_sqlite(conn) else stmt.with_for_update()).one()
        held.set()
        release.wait(timeout=30)


def test_a_change_that_would_wait_waits_in_a_thread_and_the_server_stays_responsive(
        world: World, engine: Engine, tmp_path: Path) -> None:
    aid = conversion(world, "BUSY-1", amount="100.00")
    held, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(engine, aid, held, release))
    answers: list[Any] = []
    with client_for(engine, tmp_path) as api:
        api.get("/api/v1/reasons", headers=world.auth)  # signed in
        holder.start()
        assert held.wait(timeout=30)
        changer = threading.Thread(target=lambda: answers.append(
            api.post(f"/api/v1/actions/{aid}/modify", json={"amount": "70.00"}, headers=world.auth)))
        changer.start()
        time.sleep(0.3)
        assert changer.is_alive()  # waiting for the other writer ...
        t0 = time.monotonic()
        assert api.get("/healthz").status_code == 200  # ... in a worker thread: the server still answers
        assert api.get(f"/api/v1/actions/{aid}", headers=world.auth).json()["amount"] == "100.00"
        assert time.monotonic() - t0 < 5
        release.set()
        holder.join(timeout=30)
        changer.join(timeout=30)
    assert len(answers) == 1 and answers[0].status_code == 200, answers[0].text
    assert answers[0].json()["amount"] == "70.00" and answers[0].json()["outcome"] == "applied"
    assert [u["kind"] for u in answers[0].json()["updates"]] == ["CREATED", "MODIFIED"]


def test_a_change_after_the_database_connection_was_lost(world: World, engine: Engine, tmp_path: Path) -> None:
    if db.is_sqlite(engine):
        pytest.skip("PostgreSQL: a pooled connection whose server process ended")
    aid = conversion(world, "LOST-1", amount="100.00")
    with client_for(engine, tmp_path) as api:
        first = api.post(f"/api/v1/actions/{aid}/modify", json={"amount": "90.00"}, headers=world.auth)
        assert first.status_code == 200, first.text
        with db._nowait_engine(engine).connect() as conn:  # the connection the next change gets
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        time.sleep(0.2)
        r = api.post(f"/api/v1/actions/{aid}/modify", json={"amount": "80.00"}, headers=world.auth)
    assert r.status_code == 200, r.text
    assert r.json()["amount"] == "80.00" and len(r.json()["updates"]) == 3
