"""How a single-action change is served cheaply, and that the shortcuts change nothing visible:
a recent sign-in is remembered (the token is still checked on every request), and a change runs on
the event loop only when the database takes it at once, else in a worker thread."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, select, text

from payoutdesk.kit import db
from payoutdesk.ledger import service as ledger
from payoutdesk.ledger import workflow as wf
from payoutdesk.models import actions
from tests.conftest import only_on
from tests.helpers import World, client_for, conversion, make_world
from tests.test_errors_and_limits import basic


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


@only_on("postgresql")  # a pooled connection whose server process ended
def test_a_change_after_the_database_connection_was_lost(world: World, engine: Engine, tmp_path: Path) -> None:
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


# --- the change routes served without FastAPI's dispatch (api.native.ChangeFastPath) -------------

_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def _setup(engine: Engine, tmp_path: Path, fast: bool, **env: str) -> tuple[World, dict[str, int], TestClient]:
    """A world with the same actions (by name) and an API client with the fast path on or off."""
    w = make_world(engine, tmp_path)
    items = [{"sku": "RED", "quantity": 2, "amount": "60.00", "category": "shoes"},
             {"sku": "BLUE", "quantity": 1, "amount": "40.00", "name": "Blue"}]
    ids = {"a": conversion(w, "FP-A"), "b": conversion(w, "FP-B", items=items), "c": conversion(w, "FP-C"),
           "lead": conversion(w, "FP-L", event_type=w.lead), "locked": conversion(w, "FP-X")}
    with db.write(engine) as conn:
        ledger.apply(conn, w.actor, ids["locked"], wf.Approve())
    api = client_for(engine, tmp_path, **env)
    api.app.state.fast_changes = fast  # type: ignore[attr-defined]
    return w, ids, api


def _seen(r: Any, w: World, ids: dict[str, int]) -> tuple[int, dict[str, str], Any]:
    """An answer with what differs between two worlds (ids, times, the SID) masked."""
    names = {aid: name for name, aid in ids.items()}

    def mask(v: Any, key: str = "") -> Any:
        if isinstance(v, dict):
            return {k: mask(x, k) for k, x in v.items() if k not in ("campaign_id", "event_type_id", "partner_id",
                                                                     "contract_id")}
        if isinstance(v, list):
            return [mask(x) for x in v]
        if isinstance(v, int) and not isinstance(v, bool) and key in ("id", "action_id"):
            return f"<{names.get(v, v)}>"
        if isinstance(v, str):
            v = _TIME.sub("<time>", v.replace(w.sid, "<sid>"))
            v = re.sub(r"(?<=event type )\d+", lambda m: {w.sale: "<sale>", w.lead: "<lead>"}.get(int(m[0]), m[0]), v)
            return re.sub(r"(?<=ction )\d+|(?<=id )\d+", lambda m: f"<{names.get(int(m[0]), m[0])}>", v)
        return v

    body = mask(json.loads(r.text)) if r.text else None
    headers = {k: v for k, v in r.headers.items() if k not in ("date", "content-length")}
    return r.status_code, headers, body


def _requests(w: World, ids: dict[str, int]) -> list[tuple[str, str, Any, dict[str, str]]]:
    """(method path, name of the action or a raw id, body: JSON value, bytes or absent, extra headers)."""
    json_ = {"Content-Type": "application/json"}
    absent = ...
    return [
        ("modify", "a", {"amount": "80.00"}, {}),
        ("modify", "a", {"amount": "80.00"}, {}),  # unchanged
        ("modify", "a", {"amount": "70.00", "reason": "ORDER_UPDATE", "note": "näte"}, {}),
        ("modify", "b", {"items": [{"sku": "RED", "quantity": 1}]}, {}),
        ("modify", "b", {"items": [{"sku": "BLUE", "quantity": 1, "amount": "17.50"}], "reason": "Wrong_Size"}, {}),
        ("modify", "a", {}, {}),  # neither amount nor items: the route's own check
        ("modify", "a", {"amount": "abc"}, {}),
        ("modify", "a", {"amount": "1.234"}, {}),
        ("modify", "a", {"amount": "-5.00"}, {}),
        ("modify", "a", {"amount": "10.00", "reason": "NOPE"}, {}),
        ("modify", "a", {"amount": "10.00", "reason": "RESET"}, {}),
        ("modify", "a", {"amount": "10.00", "reason": "LOCKED"}, {}),
        ("modify", "a", {"amount": "10.00", "note": "x" * 2001}, {}),
        ("modify", "a", {"amount": "10.00", "extra": 1}, {}),  # not a field: FastAPI answers
        ("modify", "a", {"amount": 10}, {}),
        ("modify", "a", {"amount": True}, {}),
        ("modify", "b", {"items": [{"sku": "RED", "quantity": True}]}, {}),
        ("modify", "b", {"items": [{"sku": "RED", "quantity": "1"}]}, {}),
        ("modify", "b", {"items": [{"sku": "RED", "quantity": 1.0}]}, {}),
        ("modify", "b", {"items": [{"sku": "NONE", "quantity": 1}]}, {}),
        ("modify", "a", {"amount": "10.00", "note": "a\x00b"}, {}),
        ("modify", "a", [1, 2], {}),
        ("modify", "a", None, {}),  # JSON null
        ("modify", "a", b'{"amount": "10.00"', json_),  # not valid JSON
        ("modify", "a", b'{"amount": "10.00"}', {"Content-Type": "text/plain"}),
        ("modify", "a", b'{"amount": "10.00"}', {"Content-Type": "application/vnd.x+json"}),
        ("modify", "a", b"\xff\xfe", json_),
        ("modify", "a", absent, {}),  # no body at all
        ("modify", "a", b"", json_),
        ("modify", "424242424", {"amount": "10.00"}, {}),
        ("modify", "0", {"amount": "10.00"}, {}),
        ("modify", "00{a}", {"amount": "10.00"}, {}),  # the id with leading zeros: FastAPI answers
        ("modify", "-1", {"amount": "10.00"}, {}),
        ("modify", str(2**63), {"amount": "10.00"}, {}),
        ("modify", "locked", {"amount": "10.00"}, {}),
        ("modify", "lead", {"amount": "50.00"}, {}),
        ("reverse", "c", absent, {}),
        ("reverse", "c", {"reason": "CONS_FRAUD"}, {}),  # unchanged, although another reason
        ("approve", "c", absent, {}),  # restores
        ("reverse", "a", {"reason": "Wrong_Size", "note": "n"}, {}),
        ("reset", "a", absent, {}),
        ("reset", "a", {"note": "again"}, {}),
        ("approve", "a", {"note": "ok"}, {}),
        ("approve", "a", {}, {}),
        ("approve", "a", None, {}),
        ("approve", "locked", absent, {}),
        ("reverse", "locked", {"reason": "CONS_FRAUD"}, {}),
        ("reset", "b", b"", {"Content-Type": "text/plain"}),
        ("reverse", "b", {"reason": ""}, {}),
        ("reverse", "b", {"reason": 5}, {}),
        ("modify", "c", {"amount": "20.00"}, {"Idempotency-Key": "k-1"}),
        ("modify", "c", {"amount": "20.00"}, {"Idempotency-Key": "k-1"}),  # replayed
        ("modify", "c", {"amount": "30.00"}, {"Idempotency-Key": "k-1"}),  # reused for another request
        ("modify", "c", {"amount": "20.00"}, {"Idempotency-Key": " "}),
        ("reset", "c", absent, {"Idempotency-Key": "k-2"}),
        ("reset", "c", absent, {"Idempotency-Key": "k-2"}),
        ("modify", "c", {"amount": "40.00"}, {"Authorization": "Basic " + base64.b64encode(b"nobody:x").decode()}),
        ("modify", "c", {"amount": "40.00"}, {"Authorization": ""}),
        ("modify", "c", {"amount": "40.00"}, {"Authorization": "Basic !!"}),
    ]


def _send(api: TestClient, w: World, ids: dict[str, int], op: str, who: str, body: Any,
          headers: dict[str, str]) -> Any:
    aid = ids.get(who, who.format(**ids))
    headers = {**w.auth, **headers}
    if headers.get("Authorization") == "":
        del headers["Authorization"]
    path = f"/api/v1/actions/{aid}/{op}"
    if body is ...:
        return api.post(path, headers=headers)
    if isinstance(body, bytes):
        return api.post(path, content=body, headers=headers)
    return api.post(path, content=json.dumps(body).encode(), headers={"Content-Type": "application/json", **headers})


def test_the_fast_path_answers_exactly_as_fastapi_does(engine: Engine, tmp_path: Path) -> None:
    w_fast, ids_fast, fast = _setup(engine, tmp_path, True)
    w_slow, ids_slow, slow = _setup(engine, tmp_path, False)
    with fast, slow:
        for op, who, body, headers in _requests(w_fast, ids_fast):
            served = fast.app.state.fast_changes_served  # type: ignore[attr-defined]
            got = _seen(_send(fast, w_fast, ids_fast, op, who, body, headers), w_fast, ids_fast)
            want = _seen(_send(slow, w_slow, ids_slow, op, who, body, headers), w_slow, ids_slow)
            assert got == want, (op, who, body, headers)
            taken = fast.app.state.fast_changes_served > served  # type: ignore[attr-defined]
            if op == "modify" and who in ("a", "b") and isinstance(body, dict) and body.get("amount") == "80.00":
                assert taken  # the plain case does take the fast path
        # both worlds are the same afterwards, history included
        for name in ids_fast:
            a = _seen(fast.get(f"/api/v1/actions/{ids_fast[name]}", headers=w_fast.auth), w_fast, ids_fast)
            b = _seen(slow.get(f"/api/v1/actions/{ids_slow[name]}", headers=w_slow.auth), w_slow, ids_slow)
            assert a == b
        assert slow.app.state.fast_changes_served == 0  # type: ignore[attr-defined]
        assert fast.app.state.fast_changes_served >= 40  # type: ignore[attr-defined]


def test_the_fast_path_answers_rate_limits_as_fastapi_does(engine: Engine, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from payoutdesk.api import ratelimit

    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(monotonic=lambda: 1000.0))  # no refill
    answers = []
    for fast in (True, False):
        w, ids, api = _setup(engine, tmp_path, fast, PAYOUTDESK_API_RATE_LIMIT="3", PAYOUTDESK_LOGIN_RATE_LIMIT="2")
        with api:
            seq = [_send(api, w, ids, "modify", "a", {"amount": f"{n}0.00"}, {}) for n in (5, 6, 7, 8)]
            seq.append(_send(api, w, ids, "modify", "a", {"amount": "10.00", "x": 1}, {}))  # invalid and limited
            bad = {"Authorization": "Basic " + base64.b64encode(f"{w.sid}:wrong".encode()).decode()}
            seq += [_send(api, w, ids, "approve", "a", ..., bad) for _ in range(3)]
            answers.append([_seen(r, w, ids) for r in seq])
            assert [r.status_code for r in seq] == [200, 200, 200, 429, 429, 401, 401, 429]
            assert (api.app.state.fast_changes_served > 0) == fast  # type: ignore[attr-defined]
    assert answers[0] == answers[1]
    assert answers[0][2][1]["x-ratelimit-remaining"] == "0" and answers[0][3][1]["retry-after"] == "1"
