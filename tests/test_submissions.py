"""Submissions through the native API: JSON batches, dry runs, undo, row errors, isolation."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from payoutdesk.models import action_updates
from tests.helpers import World, conversion, drain, make_world


def submit_rows(api: TestClient, w: World, rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    r = api.post("/api/v1/submissions", headers=w.auth, json={"campaign_id": w.campaign_id, "rows": rows, **extra})
    assert r.status_code == 202, r.text
    body = dict(r.json())
    assert body["id"].startswith("A-") and body["status"] == "QUEUED"
    return body


def sub(api: TestClient, w: World, sid: str, part: str = "") -> Any:
    r = api.get(f"/api/v1/submissions/{sid}{part}", headers=w.auth)
    assert r.status_code == 200, r.text
    return r.json()


def action(api: TestClient, w: World, aid: int) -> dict[str, Any]:
    return dict(api.get(f"/api/v1/actions/{aid}", headers=w.auth).json())


def test_json_batch_applies_rows_in_order(api: TestClient, world: World, engine: Engine) -> None:
    a = conversion(world, "O-1", "100.00")
    b = conversion(world, "O-2", "50.00")
    s = submit_rows(api, world, [
        {"ActionId": a, "Amount": "80.00", "Reason": "ORDER_UPDATE", "Note": "partial refund"},
        {"ActionId": a, "Amount": "60.00", "Reason": "ITEM_RETURNED"},  # same action: applies after row 1
        {"actiontrackerid": world.sale, "oid": "O-2", "amount": 0, "reason": "CONS_FRAUD"},
        {"ActionId": a, "Amount": "60.00", "Reason": "ITEM_RETURNED"},  # now unchanged
    ])
    drain(engine)
    done = sub(api, world, s["id"])
    assert done["status"] == "COMPLETE" and done["total_records"] == 4 and done["processed_records"] == 4
    assert (done["applied"], done["unchanged"], done["errors"]) == (3, 1, 0)
    assert done["payout_delta"] == "-9.00" and done["amount_delta"] == "-90.00"
    got = action(api, world, a)
    assert got["amount"] == "60.00" and got["payout"] == "6.00"
    ups = got["updates"]
    assert [u["kind"] for u in ups] == ["CREATED", "MODIFIED", "MODIFIED"]
    assert ups[1]["note"] == "partial refund" and ups[1]["channel"] == "api"
    assert ups[1]["submission_id"] == s["id"] and ups[2]["reason"] == "ITEM_RETURNED"  # "A-…", as the API names it
    rev = action(api, world, b)
    assert rev["state"] == "REVERSED" and rev["status_detail"] == "CONS_FRAUD"
    results = sub(api, world, s["id"], "/results")["items"]
    assert [r["outcome"] for r in results] == ["applied", "applied", "applied", "unchanged"]
    assert results[0]["amount_before"] == "100.00" and results[0]["amount_after"] == "80.00"


def test_row_errors(api: TestClient, world: World, engine: Engine) -> None:
    a = conversion(world, "O-1", "100.00")
    locked = conversion(world, "O-L", "10.00")
    api.post(f"/api/v1/actions/{locked}/approve", headers=world.auth)
    s = submit_rows(api, world, [
        {"ActionId": a, "Amount": "abc", "Reason": "ORDER_UPDATE"},
        {"ActionId": a, "Amount": "-5.00", "Reason": "ORDER_UPDATE"},
        {"ActionId": a, "Amount": "10.00"},
        {"ActionId": 999999999, "Amount": "0", "Reason": "ITEM_RETURNED"},
        {"ActionId": a, "Amount": "10.00", "Reason": "NOT_A_REASON"},
        {"ActionId": locked, "Amount": "5.00", "Reason": "ORDER_UPDATE"},
        {"ActionId": a, "Amount": "1.234", "Reason": "ORDER_UPDATE"},
        {"ActionId": a, "Sku1": "NOPE", "Quantity1": "0", "Reason": "ITEM_RETURNED"},
        {"ActionId": a, "Amount": "10", "Reason": "ORDER_UPDATE", "CurrencyCode": "EUR"},
        {"Oid": "O-1", "Amount": "10", "Reason": "ORDER_UPDATE"},
    ])
    drain(engine)
    done = sub(api, world, s["id"])
    assert done["status"] == "COMPLETE" and done["errors"] == 10 and done["applied"] == 0
    errs = sub(api, world, s["id"], "/errors")["items"]
    got = [(e["row"], e["column"], e["type"], e["code"]) for e in errs]
    assert got == [
        (1, "Amount", "VALIDATION", "invalid_amount"),
        (2, "Amount", "VALIDATION", "invalid_amount"),
        (3, "Reason", "VALIDATION", "missing_reason"),
        (4, "ActionId", "VALIDATION", "unknown_action"),
        (5, "Reason", "VALIDATION", "unknown_reason"),
        (6, None, "CONTRACT", "action_locked"),
        (7, "Amount", "VALIDATION", "invalid_amount"),
        (8, "Sku1", "VALIDATION", "unknown_sku"),
        (9, "CurrencyCode", "VALIDATION", "wrong_currency"),
        (10, "ActionTrackerId", "VALIDATION", "missing_id"),
    ]
    assert all(e["message"] for e in errs)
    assert action(api, world, a)["amount"] == "100.00"


def test_rows_on_actions_past_their_locking_date(api: TestClient, world: World, engine: Engine) -> None:
    """R1 in files: an action whose locking date has come is final before the lock run marks it; every
    lane of the engine refuses it (the order-level change of a one-item action, item changes, the rest)."""
    due = conversion(world, "DUE-1", "100.00", event_date="2026-01-10T00:00:00Z")  # locking date 2026-02-28
    multi = conversion(world, "DUE-2", items=[{"sku": "RED", "quantity": 2, "amount": "80.00"},
                                             {"sku": "BLUE", "quantity": 1, "amount": "20.00"}],
                       amount=None, event_date="2026-01-10T00:00:00Z")
    fresh = conversion(world, "FRESH-1", "100.00")
    s = submit_rows(api, world, [
        {"ActionId": due, "Amount": "80.00", "Reason": "ORDER_UPDATE"},
        {"ActionId": multi, "Amount": "50.00", "Reason": "ORDER_UPDATE"},
        {"ActionId": multi, "Sku1": "RED", "Quantity1": "1", "Reason": "ITEM_RETURNED"},
        {"ActionId": due, "Amount": "0", "Reason": "ITEM_RETURNED"},
        {"ActionId": due, "Reason": "APPROVED"},
        {"ActionId": due, "Amount": "100.00", "Reason": "ORDER_UPDATE"},  # what it is already: unchanged
        {"ActionId": fresh, "Amount": "80.00", "Reason": "ORDER_UPDATE"},
    ])
    drain(engine)
    done = sub(api, world, s["id"])
    assert (done["applied"], done["unchanged"], done["errors"]) == (1, 1, 5), done
    errs = sub(api, world, s["id"], "/errors")["items"]
    assert [(e["row"], e["type"], e["code"]) for e in errs] == [(n, "CONTRACT", "action_locked") for n in range(1, 6)]
    assert "reached its locking date on 2026-02-28" in errs[0]["message"]
    assert action(api, world, due)["amount"] == "100.00" and action(api, world, multi)["amount"] == "100.00"
    assert action(api, world, fresh)["amount"] == "80.00"


def test_approved_reset_and_custom_codes(api: TestClient, world: World, engine: Engine) -> None:
    a = conversion(world, "O-1", "100.00")
    b = conversion(world, "O-2", "100.00")
    c = conversion(world, "O-3", items=[{"sku": "RED", "quantity": 2, "amount": "80.00"},
                                        {"sku": "BLUE", "quantity": 1, "amount": "39.99"}], amount=None)
    api.post(f"/api/v1/actions/{b}/modify", headers=world.auth, json={"amount": "10.00"})
    submit_rows(api, world, [
        {"ActionId": a, "Reason": "APPROVED"},
        {"ActionId": b, "Reason": "RESET"},
        {"ActionId": c, "Sku1": "RED", "Quantity1": "0", "Sku2": "BLUE", "Quantity2": "1", "Amount2": "30.00",
         "Reason": "Wrong_Size"},
    ])
    drain(engine)
    assert action(api, world, a)["state"] == "APPROVED"
    assert action(api, world, b)["amount"] == "100.00"
    got = action(api, world, c)
    assert got["amount"] == "30.00" and got["updates"][-1]["reason"] == "Wrong_Size"


def test_dry_run_changes_nothing_and_reports(api: TestClient, world: World, engine: Engine) -> None:
    a = conversion(world, "O-1", "100.00")
    with engine.connect() as conn:
        before = conn.execute(select(action_updates).where(action_updates.c.action_id == a)).all()
    s = submit_rows(api, world, [{"ActionId": a, "Amount": "80.00", "Reason": "ORDER_UPDATE"},
                                 {"ActionId": a, "Amount": "0", "Reason": "ITEM_RETURNED"}], dry_run=True)
    drain(engine)
    done = sub(api, world, s["id"])
    assert done["dry_run"] is True and done["applied"] == 2 and done["payout_delta"] == "-10.00"
    rows = sub(api, world, s["id"], "/results")["items"]
    assert [(r["amount_before"], r["amount_after"], r["state_after"]) for r in rows] == [
        ("100.00", "80.00", "PENDING"), ("80.00", "0.00", "REVERSED")]
    assert action(api, world, a)["amount"] == "100.00"
    with engine.connect() as conn:
        after = conn.execute(select(action_updates).where(action_updates.c.action_id == a)).all()
    assert after == before


def test_undo_puts_actions_back(api: TestClient, world: World, engine: Engine) -> None:
    a = conversion(world, "O-1", "100.00")
    b = conversion(world, "O-2", "50.00")
    api.post(f"/api/v1/actions/{b}/reverse", headers=world.auth, json={"reason": "OTHER"})
    s = submit_rows(api, world, [
        {"ActionId": a, "Amount": "80.00", "Reason": "ORDER_UPDATE"},
        {"ActionId": a, "Amount": "0", "Reason": "ITEM_RETURNED"},
        {"ActionId": b, "Reason": "APPROVED"},  # restores the reversal
    ])
    drain(engine)
    assert action(api, world, b)["state"] == "PENDING"
    u = api.post(f"/api/v1/submissions/{s['id']}/undo", headers=world.auth)
    assert u.status_code == 202, u.text
    assert u.json()["undo_of"] == s["id"]
    drain(engine)
    undone = sub(api, world, u.json()["id"])
    assert undone["status"] == "COMPLETE" and undone["applied"] == 2 and undone["payout_delta"] == "5.00"
    got_a = action(api, world, a)
    assert got_a["state"] == "PENDING" and got_a["amount"] == "100.00" and got_a["payout"] == "10.00"
    assert got_a["updates"][-1]["kind"] == "RESTORED" and got_a["updates"][-1]["note"] == f"undo of {s['id']}"
    got_b = action(api, world, b)
    assert got_b["state"] == "REVERSED" and got_b["status_detail"] == "OTHER" and got_b["amount"] == "0.00"
    # the reversal restored by approve after the undo brings back the original amounts again
    assert api.post(f"/api/v1/actions/{b}/approve", headers=world.auth).json()["amount"] == "50.00"
    assert sub(api, world, s["id"])["undone_by"] == u.json()["id"]
    again = api.post(f"/api/v1/submissions/{s['id']}/undo", headers=world.auth)
    assert again.status_code == 409


def test_undo_skips_actions_changed_since(api: TestClient, world: World, engine: Engine) -> None:
    a = conversion(world, "O-1", "100.00")
    s = submit_rows(api, world, [{"ActionId": a, "Amount": "80.00", "Reason": "ORDER_UPDATE"}])
    drain(engine)
    api.post(f"/api/v1/actions/{a}/modify", headers=world.auth, json={"amount": "70.00"})
    u = api.post(f"/api/v1/submissions/{s['id']}/undo", headers=world.auth).json()
    drain(engine)
    assert sub(api, world, u["id"])["errors"] == 1
    err = sub(api, world, u["id"], "/errors")["items"][0]
    assert err["code"] == "changed_since" and str(a) in err["message"]
    assert action(api, world, a)["amount"] == "70.00"


def test_submission_isolation_and_listing(api: TestClient, world: World, engine: Engine) -> None:
    other = make_world(engine)
    a = conversion(world, "O-1", "100.00")
    s = submit_rows(api, world, [{"ActionId": a, "Amount": "80.00", "Reason": "ORDER_UPDATE"}])
    assert api.get(f"/api/v1/submissions/{s['id']}", headers=other.auth).status_code == 404
    assert api.post(f"/api/v1/submissions/{s['id']}/undo", headers=other.auth).status_code == 404
    r = api.post("/api/v1/submissions", headers=other.auth, json={"campaign_id": world.campaign_id, "rows": [{}]})
    assert r.status_code == 404
    # rows naming another account's action are unknown actions
    drain(engine)
    assert action(api, world, a)["amount"] == "80.00"
    s2 = submit_rows(api, other, [{"ActionId": a, "Amount": "1.00", "Reason": "ORDER_UPDATE"}])
    drain(engine)
    assert sub(api, other, s2["id"])["errors"] == 1
    assert action(api, world, a)["amount"] == "80.00"
    listed = api.get("/api/v1/submissions", headers=world.auth).json()["items"]
    assert [x["id"] for x in listed] == [s["id"]]
    bad = api.post("/api/v1/submissions", headers=world.auth, json={"campaign_id": world.campaign_id, "rows": []})
    assert bad.status_code == 422
