"""Every error code of DESIGN's list that exists, reached through the API; rate limits; 404/405/500."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, select, update

from payoutdesk import errors
from payoutdesk.kit import db
from payoutdesk.ledger import repository as ledger_repo
from payoutdesk.ledger import service as ledger
from payoutdesk.ledger import workflow as wf
from payoutdesk.models import action_updates, actions
from tests.helpers import World, client_for, conversion, make_world
from tests.test_bad_input import assert_problem, db_snapshot


@pytest.fixture
def api(engine: Engine, tmp_path: Path) -> Iterator[TestClient]:
    with client_for(engine, tmp_path) as client:
        yield client


def post(api: TestClient, w: World, path: str, body: Any = None, **headers: str) -> Any:
    return api.post(f"/api/v1{path}", json=body, headers={**w.auth, **headers})


def basic(sid: str, token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{sid}:{token}".encode()).decode()}


# --- the codes of the list --------------------------------------------------------------------


def test_not_found_and_validation_error(api: TestClient, world: World) -> None:
    assert_problem(api.get("/api/v1/actions/424242424", headers=world.auth), 404, "not_found", "424242424")
    assert_problem(api.get("/api/v1/campaigns/424242", headers=world.auth), 404, "not_found", "campaign")
    assert_problem(post(api, world, "/partners", {}), 422, "validation_error", "name: is required")


def test_action_locked_names_the_action_and_its_lock_time(api: TestClient, world: World, engine: Engine) -> None:
    approved = conversion(world, "LOCK-1")
    assert post(api, world, f"/actions/{approved}/approve").json()["state"] == "APPROVED"
    locked_at = api.get(f"/api/v1/actions/{approved}", headers=world.auth).json()["locked_at"]
    before = db_snapshot(engine)
    for path, body in [("modify", {"amount": "1.00"}), ("reverse", {"reason": "CONS_FRAUD"}), ("reset", None),
                       ("modify", {"items": [{"sku": "ORDER", "quantity": 0}]})]:
        body_ = assert_problem(post(api, world, f"/actions/{approved}/{path}", body), 409, "action_locked", "locked")
        assert str(approved) in body_["detail"] and locked_at in body_["detail"], body_["detail"]
        assert body_["action_id"] == approved and body_["locked_at"] == locked_at
    # a reversal that has locked by the lock run is final too
    reversed_ = conversion(world, "LOCK-2", event_date="2026-10-10T00:00:00Z")  # locks 2026-11-28
    post(api, world, f"/actions/{reversed_}/reverse")
    assert post(api, world, "/locking/run", {"as_of": "2026-12-01"}).json() == {"locked": 1}
    before = db_snapshot(engine)
    assert_problem(post(api, world, f"/actions/{reversed_}/approve"), 409, "action_locked", str(reversed_))
    assert db_snapshot(engine) == before


def test_action_final_from_its_locking_date_before_the_lock_run(api: TestClient, world: World, engine: Engine) -> None:
    """R1: an action whose locking date has come is final even before a lock run marks it."""
    pending = conversion(world, "DUE-1", event_date="2026-01-10T00:00:00Z")  # locking date 2026-02-28
    reversed_ = conversion(world, "DUE-2", event_date="2026-01-11T00:00:00Z")
    with db.write(engine) as conn:  # reversed while it could still change
        ledger.apply(conn, world.actor, reversed_, wf.Reverse("CONS_FRAUD"), now=datetime(2026, 2, 1, tzinfo=UTC))
    shown = api.get(f"/api/v1/actions/{pending}", headers=world.auth).json()
    assert shown["locking_date"] == "2026-02-28" and shown["locked_at"] is None and shown["state"] == "PENDING"
    before = db_snapshot(engine)
    for aid, path, body in [(pending, "modify", {"amount": "1.00"}), (pending, "reverse", {"reason": "CONS_FRAUD"}),
                            (pending, "approve", None), (reversed_, "approve", None), (reversed_, "reset", None)]:
        body_ = assert_problem(post(api, world, f"/actions/{aid}/{path}", body), 409, "action_locked",
                               "reached its locking date on 2026-02-2")
        assert body_["action_id"] == aid and body_["locked_at"] is None
    # replaying what it already is changes nothing and is not an error (R11)
    assert post(api, world, f"/actions/{reversed_}/reverse", {"reason": "CONS_FRAUD"}).json()["outcome"] == "unchanged"
    assert db_snapshot(engine) == before
    assert post(api, world, "/locking/run").json() == {"locked": 2}
    assert api.get(f"/api/v1/actions/{pending}", headers=world.auth).json()["state"] == "APPROVED"


def test_invalid_state(api: TestClient, world: World) -> None:
    aid = conversion(world, "STATE-1")
    post(api, world, f"/actions/{aid}/reverse")
    r = post(api, world, f"/actions/{aid}/modify", {"amount": "5.00"})
    assert_problem(r, 409, "invalid_state", "PENDING")


def test_invalid_amount_unknown_reason_unknown_sku(api: TestClient, world: World) -> None:
    aid = conversion(world, "CODES-1", items=[{"sku": "RED", "quantity": 1, "amount": "10.00"}])
    assert_problem(post(api, world, f"/actions/{aid}/modify", {"amount": "-1"}), 422, "invalid_amount", "negative")
    assert_problem(post(api, world, f"/actions/{aid}/reverse", {"reason": "BECAUSE"}), 422, "unknown_reason",
                   "BECAUSE")
    assert_problem(post(api, world, f"/actions/{aid}/modify", {"items": [{"sku": "BLUE", "quantity": 0}]}), 422,
                   "unknown_sku", "BLUE")
    # a custom disposition code of the event type is a known reason (case-sensitive)
    assert post(api, world, f"/actions/{aid}/modify", {"amount": "9.00", "reason": "Wrong_Size"}).status_code == 200
    assert_problem(post(api, world, f"/actions/{aid}/modify", {"amount": "8.00", "reason": "wrong_size"}), 422,
                   "unknown_reason", "wrong_size")


def test_too_many_updates(api: TestClient, world: World, engine: Engine) -> None:
    aid = conversion(world, "MANY-1")
    with db.write(engine) as conn:
        conn.execute(update(actions).where(actions.c.id == aid).values(update_count=wf.MAX_UPDATES - 1))
    assert post(api, world, f"/actions/{aid}/modify", {"amount": "90.00"}).status_code == 200  # the 1,000th
    before = db_snapshot(engine)
    for path, body in [("modify", {"amount": "80.00"}), ("reverse", None), ("approve", None), ("reset", None)]:
        r = post(api, world, f"/actions/{aid}/{path}", body)
        assert_problem(r, 409, "too_many_updates", "1000")
    assert db_snapshot(engine) == before
    # a change that would change nothing is still "unchanged", not an error (R11)
    same = post(api, world, f"/actions/{aid}/modify", {"amount": "90.00"})
    assert same.status_code == 200 and same.json()["outcome"] == "unchanged"


def test_not_attributable_and_no_contract(api: TestClient, world: World, engine: Engine) -> None:
    before = db_snapshot(engine)
    r = post(api, world, "/conversions", {"event_type_id": world.sale, "order_id": "NA-1", "customer_id": "nobody",
                                          "event_date": "2026-11-10T00:00:00Z", "amount": "5.00"})
    assert_problem(r, 422, "not_attributable", "nobody")
    # the contracts of make_world start on 2020-01-01: a conversion before it is not covered
    r = post(api, world, "/conversions", {"event_type_id": world.sale, "order_id": "NC-1",
                                          "partner_id": world.partners[0], "event_date": "2019-12-31T23:00:00Z",
                                          "amount": "5.00"})
    body = assert_problem(r, 422, "no_contract", "2019-12-31")
    assert str(world.partners[0]) in body["detail"]
    # a contract that pays only for sales covers no lead
    r = post(api, world, "/contracts", {"campaign_id": world.campaign_id, "partner_id": world.partners[1],
                                        "starts_on": "2026-06-01",
                                        "payout": [{"event_type_id": world.sale, "percent": "3"}]})
    assert r.status_code == 201
    before = db_snapshot(engine)
    r = post(api, world, "/conversions", {"event_type_id": world.lead, "order_id": "NC-2",
                                          "partner_id": world.partners[1], "event_date": "2026-07-01T00:00:00Z",
                                          "amount": "0"})
    assert_problem(r, 422, "no_contract", "event type")
    assert db_snapshot(engine) == before


def test_idempotency_key_reused(api: TestClient, world: World) -> None:
    body = {"name": "Idem"}
    assert post(api, world, "/partners", body, **{"Idempotency-Key": "idem-err"}).status_code == 201
    r = post(api, world, "/partners", {"name": "Other"}, **{"Idempotency-Key": "idem-err"})
    assert_problem(r, 422, "idempotency_key_reused", "idem-err")


def test_unauthorized(api: TestClient, world: World, engine: Engine) -> None:
    other = make_world(engine)
    for headers, word in [
        ({}, "HTTP Basic"),
        ({"Authorization": "Bearer abc"}, "HTTP Basic"),
        ({"Authorization": "Basic !!!notbase64"}, "not valid HTTP Basic"),
        (basic(world.sid, "wrong-token"), "wrong"),
        (basic("IRUNKNOWN", world.token), "wrong"),
        (basic(world.sid, other.token), "wrong"),  # another account's token
        (basic(world.sid, ""), "wrong"),
        (basic(world.sid + "\x00", world.token), "not valid HTTP Basic"),
    ]:
        r = api.get("/api/v1/actions", headers=headers)
        assert_problem(r, 401, "unauthorized", word)
        assert r.headers["www-authenticate"].startswith("Basic")
    assert_problem(api.post("/api/v1/partners", json={"name": "x"}), 401, "unauthorized")


# --- stale versions (R14) ---------------------------------------------------------------------


def test_write_change_refuses_a_stale_version(world: World, engine: Engine) -> None:
    aid = conversion(world, "STALE-1")
    with db.write(engine) as conn:
        row = ledger_repo.load(conn, world.account_id, aid, for_update=True)
        assert row is not None
        action = ledger_repo.to_domain(row, ledger_repo.items_of(conn, aid))
        terms = ledger.current_terms(conn, row, row.event_date.date())
        change = wf.decide(action, wf.Reverse("CONS_FRAUD"), terms, row.event_date)
        assert isinstance(change, wf.Change)
        meta = {"at": row.event_date, "note": None, "channel": "api", "submission_id": None, "actor": "test"}
        ledger_repo.write_change(conn, row.version, change, meta)  # the first writer wins
    before = db_snapshot(engine)
    with pytest.raises(errors.StaleVersion, match=f"Action {aid} was changed"), db.write(engine) as conn:
        ledger_repo.write_change(conn, row.version, change, meta)  # the second still holds version 1
    assert db_snapshot(engine) == before
    with db.read(engine) as conn:
        assert conn.execute(select(actions.c.version).where(actions.c.id == aid)).scalar_one() == 2
        n = conn.execute(select(action_updates.c.id).where(action_updates.c.action_id == aid)).all()
    assert len(n) == 2  # CREATED and one REVERSED


def test_transaction_retries_a_stale_version_and_then_surfaces_it(world: World, engine: Engine) -> None:
    aid = conversion(world, "STALE-2")
    calls: list[int] = []

    def flaky(conn: Connection) -> str:
        calls.append(1)
        conn.execute(update(actions).where(actions.c.id == aid).values(promo_code=f"try-{len(calls)}"))
        if len(calls) < 3:
            raise errors.StaleVersion("lost the race")
        return "done"

    assert db.transaction(engine, flaky) == "done" and len(calls) == 3
    calls.clear()

    def always_stale(conn: Connection) -> None:
        calls.append(1)
        conn.execute(update(actions).where(actions.c.id == aid).values(promo_code="never"))
        raise errors.StaleVersion(f"Action {aid} was changed by someone else meanwhile.")

    with pytest.raises(errors.StaleVersion):
        db.transaction(engine, always_stale, attempts=4)
    assert len(calls) == 4
    with db.read(engine) as conn:  # every failed attempt was rolled back; the third of the first call stayed
        assert conn.execute(select(actions.c.promo_code).where(actions.c.id == aid)).scalar_one() == "try-3"


def test_stale_version_through_the_api(api: TestClient, world: World, engine: Engine,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that slips in between load and write: retried, and reported when it never stops."""
    aid = conversion(world, "STALE-3")
    real_load = ledger_repo.load
    races = {"left": 2}

    def racing_load(conn: Connection, account_id: int, action_id: int, *, for_update: bool) -> Any:
        row = real_load(conn, account_id, action_id, for_update=for_update)
        if for_update and races["left"] != 0:
            races["left"] -= 1
            conn.execute(update(actions).where(actions.c.id == action_id).values(version=actions.c.version + 1))
        return row

    real_load_pg = ledger_repo.load_for_change_pg

    def racing_load_pg(conn: Connection, account_id: int, action_id: int, on: Any) -> Any:
        """The same race on PostgreSQL's change path (the action, items and terms in one statement)."""
        loaded = real_load_pg(conn, account_id, action_id, on)
        if races["left"] != 0:
            races["left"] -= 1
            conn.execute(update(actions).where(actions.c.id == action_id).values(version=actions.c.version + 1))
        return loaded

    monkeypatch.setattr(ledger_repo, "load", racing_load)
    monkeypatch.setattr(ledger_repo, "load_for_change_pg", racing_load_pg)
    r = post(api, world, f"/actions/{aid}/modify", {"amount": "70.00"})
    assert r.status_code == 200 and r.json()["amount"] == "70.00", r.text
    assert [u["kind"] for u in r.json()["updates"]] == ["CREATED", "MODIFIED"]  # applied once, not lost
    races["left"] = -1  # from now on, always
    before = db_snapshot(engine)
    body = assert_problem(post(api, world, f"/actions/{aid}/modify", {"amount": "60.00"}), 409, "stale_version",
                          "changed")
    assert str(aid) in body["detail"]
    assert db_snapshot(engine) == before


# --- rate limits ------------------------------------------------------------------------------


def test_api_rate_limit(engine: Engine, world: World, tmp_path: Path) -> None:
    other = make_world(engine)
    with client_for(engine, tmp_path, PAYOUTDESK_API_RATE_LIMIT="3") as api:
        ok = [api.get("/api/v1/reasons", headers=world.auth),
              post(api, world, "/partners", {"name": "Limited"}),
              api.get("/api/v1/actions/export", headers=world.auth)]
        refused = api.get("/api/v1/reasons", headers=world.auth)
        fine_for_other = api.get("/api/v1/reasons", headers=other.auth)
    for n, r in enumerate(ok):
        assert r.status_code in (200, 201), r.text
        assert r.headers["x-ratelimit-limit"] == "3"
        assert int(r.headers["x-ratelimit-remaining"]) == 2 - n
        assert int(r.headers["x-ratelimit-reset"]) >= 1
    body = assert_problem(refused, 429, "rate_limited", "requests per second")
    assert "3" in body["detail"]
    assert refused.headers["x-ratelimit-limit"] == "3" and refused.headers["x-ratelimit-remaining"] == "0"
    assert int(refused.headers["x-ratelimit-reset"]) >= 1 and int(refused.headers["retry-after"]) >= 1
    assert fine_for_other.status_code == 200  # the limit is per account


def test_no_rate_limit_headers_when_off(api: TestClient, world: World) -> None:
    r = api.get("/api/v1/reasons", headers=world.auth)
    assert r.status_code == 200 and "x-ratelimit-limit" not in r.headers


def test_failed_login_limit(engine: Engine, world: World, tmp_path: Path) -> None:
    with client_for(engine, tmp_path, PAYOUTDESK_LOGIN_RATE_LIMIT="3") as api:
        good = api.get("/api/v1/reasons", headers=world.auth)
        assert good.status_code == 200  # successful sign-ins do not count
        for _ in range(3):
            assert_problem(api.get("/api/v1/reasons", headers=basic(world.sid, "guess")), 401, "unauthorized")
        blocked = api.get("/api/v1/reasons", headers=world.auth)  # even the right token now
        body = assert_problem(blocked, 429, "rate_limited", "sign-ins")
        assert int(blocked.headers["retry-after"]) >= 1
        assert blocked.headers["x-ratelimit-limit"] == "3" and blocked.headers["x-ratelimit-remaining"] == "0"
        assert "x-ratelimit-reset" in blocked.headers and body["status"] == 429
        assert_problem(api.get("/api/v1/reasons", headers=basic(world.sid, "guess")), 429, "rate_limited")


# --- routes and crashes -----------------------------------------------------------------------


def test_unknown_route_and_method(api: TestClient, world: World) -> None:
    for path in ("/api/v1/nothing-here", "/api/v2/actions", "/nope"):
        assert_problem(api.get(path, headers=world.auth), 404, "not_found", "/api/v1")
    r = api.delete("/api/v1/actions", headers=world.auth)
    assert_problem(r, 405, "method_not_allowed", "DELETE")
    assert "GET" in r.headers["allow"]
    assert_problem(api.put("/api/v1/partners", headers=world.auth, json={}), 405, "method_not_allowed", "PUT")


def test_an_unexpected_error_is_problem_json_and_hides_the_cause(api: TestClient, world: World,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("secret internals: password=hunter2")

    monkeypatch.setattr(ledger, "list_reasons", boom)
    monkeypatch.setattr(ledger, "record_conversion", boom)
    r = api.get("/api/v1/reasons", headers=world.auth)
    body = assert_problem(r, 500, "internal_error", "logged")
    assert "hunter2" not in r.text and "RuntimeError" not in r.text
    assert body["title"] == "Internal error"
    r = post(api, world, "/conversions", {"event_type_id": world.sale, "order_id": "BOOM", "amount": "1",
                                          "event_date": "2026-11-01", "partner_id": world.partners[0]})
    assert_problem(r, 500, "internal_error")


def test_reset_is_not_a_reason_for_a_reversal(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    api = client_for(engine, tmp_path)
    aid = conversion(w, "O-R", "10.00")
    for path, body in ((f"/api/v1/actions/{aid}/reverse", {"reason": "RESET"}),
                       (f"/api/v1/actions/{aid}/modify", {"amount": "5.00", "reason": "RESET"})):
        r = api.post(path, headers=w.auth, json=body)
        assert r.status_code == 422 and r.json()["code"] == "unknown_reason"
        assert "/reset" in r.json()["detail"]
    assert api.get(f"/api/v1/actions/{aid}", headers=w.auth).json()["amount"] == "10.00"
