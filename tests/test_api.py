"""The native API end to end on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.helpers import World, make_world


def post(api: TestClient, w: World, path: str, body: Any = None, **kw: Any) -> Any:
    return api.post(f"/api/v1{path}", json=body, headers={**w.auth, **kw.pop("headers", {})}, **kw)


def get(api: TestClient, w: World, path: str, **kw: Any) -> Any:
    return api.get(f"/api/v1{path}", headers=w.auth, **kw)


def convert(api: TestClient, w: World, **body: Any) -> dict[str, Any]:
    data = {"event_type_id": w.sale, "order_id": "O-1001", "event_date": "2026-11-15T10:00:00Z",
            "partner_id": w.partners[0], "amount": "100.00", **body}
    r = post(api, w, "/conversions", data)
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_setup_endpoints(api: TestClient, world: World) -> None:
    w = world
    c = post(api, w, "/campaigns", {"name": "EU", "currency": "eur"})
    assert c.status_code == 201, c.text
    camp = c.json()
    assert camp["currency"] == "EUR" and camp["ftp_username"].startswith("ftp-") and len(camp["ftp_password"]) >= 12
    assert camp["returns_email"].startswith("returns-") and camp["returns_email"].endswith("@returns.payoutdesk.local")
    assert "ftp_password" not in get(api, w, f"/campaigns/{camp['id']}").json()
    p = post(api, w, "/partners", {"name": "Delta"}).json()
    et = post(api, w, "/event-types", {"campaign_id": camp["id"], "name": "Sale", "locking": "contract"})
    assert et.status_code == 201, et.text
    et_id = et.json()["id"]
    assert et.json()["returns_processing"] == {"mode": "manual"}
    patched = api.patch(f"/api/v1/event-types/{et_id}", headers=w.auth, json={"returns_processing": {
        "mode": "ftp_pull", "protocol": "sftp", "host": "files.brand.example", "username": "u", "password": "s3cret",
        "folder": "/out", "pattern": "*.csv", "schedule": {"every_hours": 4}, "after": "keep"}})
    assert patched.status_code == 200, patched.text
    rp = patched.json()["returns_processing"]
    assert rp["mode"] == "ftp_pull" and "password" not in rp and rp["password_set"] is True
    assert "s3cret" not in patched.text
    email = api.patch(f"/api/v1/event-types/{et_id}", headers=w.auth, json={"returns_processing": {"mode": "email"}})
    assert email.json()["returns_processing"]["address"] == camp["returns_email"]
    k = post(api, w, "/contracts", {"campaign_id": camp["id"], "partner_id": p["id"], "starts_on": "2026-01-01",
                                    "payout": [{"event_type_id": et_id, "percent": "7.5"}],
                                    "category_percent": {"Shoes": "10"}, "lock_after": {"months": 0, "days": 27},
                                    "pay_after": {"months": 1, "days": 0}, "referral_window_days": 14})
    assert k.status_code == 201, k.text
    assert k.json()["payout"] == [{"event_type_id": et_id, "percent": "7.5"}]
    assert k.json()["category_percent"] == {"shoes": "10"}
    assert [x["id"] for x in get(api, w, "/contracts", params={"campaign_id": camp["id"]}).json()["items"]] == [
        k.json()["id"]]
    assert any(x["id"] == p["id"] for x in get(api, w, "/partners").json()["items"])
    assert any(x["id"] == et_id for x in get(api, w, "/event-types").json()["items"])
    reasons = get(api, w, "/reasons", params={"event_type_id": w.sale}).json()["items"]
    codes = {r["code"] for r in reasons}
    assert {"ORDER_UPDATE", "REJECTED", "RESET", "SYSTEM_REATTRIBUTED", "Wrong_Size"} <= codes


def test_conversion_shapes_and_locking_date(api: TestClient, world: World) -> None:
    a = convert(api, world, order_id="O-1", event_date="2026-01-15T10:00:00Z", items=[
        {"sku": "SKU-1", "name": "Shoe", "category": "shoes", "quantity": 2, "amount": "60.00"},
        {"sku": "SKU-2", "quantity": 1, "amount": "40.00"}], amount=None)
    assert a["state"] == "PENDING" and a["amount"] == "100.00" and a["payout"] == "10.00"
    assert a["intended_amount"] == "100.00" and a["currency"] == "USD"
    assert a["locking_date"] == "2026-02-28" and a["locked_at"] is None and a["version"] == 1
    assert a["event_date"] == "2026-01-15T10:00:00Z"
    assert [i["amount"] for i in a["items"]] == ["60.00", "40.00"]
    assert a["updates"][0]["kind"] == "CREATED" and a["updates"][0]["delta_amount"] == "100.00"
    assert a["updates"][0]["channel"] == "api"
    lead = convert(api, world, event_type_id=world.lead, order_id="L-1", amount="0")
    assert lead["locking_date"] is None and lead["payout"] == "2.50"


def test_change_endpoints(api: TestClient, world: World) -> None:
    w = world
    a = convert(api, w)
    aid = a["id"]
    m = post(api, w, f"/actions/{aid}/modify", {"amount": "80.00", "reason": "ITEM_RETURNED", "note": "RMA-77"})
    assert m.status_code == 200, m.text
    assert m.json()["amount"] == "80.00" and m.json()["payout"] == "8.00" and m.json()["outcome"] == "applied"
    same = post(api, w, f"/actions/{aid}/modify", {"amount": "80.00"})
    assert same.json()["outcome"] == "unchanged" and len(same.json()["updates"]) == 2
    r = post(api, w, f"/actions/{aid}/reverse", {"reason": "CONS_FRAUD"})
    assert r.json()["state"] == "REVERSED" and r.json()["status_detail"] == "CONS_FRAUD"
    assert r.json()["amount"] == "0.00"
    back = post(api, w, f"/actions/{aid}/approve")
    assert back.json()["state"] == "PENDING" and back.json()["amount"] == "80.00"
    assert back.json()["updates"][-1]["kind"] == "RESTORED"
    reset = post(api, w, f"/actions/{aid}/reset")
    assert reset.json()["amount"] == "100.00" and reset.json()["updates"][-1]["kind"] == "RESET"
    ok = post(api, w, f"/actions/{aid}/approve")
    assert ok.json()["state"] == "APPROVED" and ok.json()["locked_at"] is not None
    locked = post(api, w, f"/actions/{aid}/modify", {"amount": "1.00"})
    assert locked.status_code == 409 and locked.json()["code"] == "action_locked"
    assert locked.headers["content-type"].startswith("application/problem+json")
    assert str(aid) in locked.json()["detail"]
    detail = get(api, w, f"/actions/{aid}").json()
    kinds = [u["kind"] for u in detail["updates"]]
    assert kinds == ["CREATED", "MODIFIED", "REVERSED", "RESTORED", "RESET", "APPROVED"]
    assert detail["updates"][1]["note"] == "RMA-77" and detail["updates"][1]["reason"] == "ITEM_RETURNED"
    # R10 on the history: amount = intended + sum of deltas after CREATED
    total = sum(int(u["delta_amount"].replace(".", "")) for u in detail["updates"][1:])
    assert int(detail["amount"].replace(".", "")) == int(detail["intended_amount"].replace(".", "")) + total


def test_items_modify_and_unknown_sku(api: TestClient, world: World) -> None:
    a = convert(api, world, amount=None, items=[{"sku": "RED", "quantity": 2, "amount": "80.00"},
                                                {"sku": "BLUE", "quantity": 1, "amount": "39.99"}])
    r = post(api, world, f"/actions/{a['id']}/modify", {"items": [{"sku": "RED", "quantity": 0}],
                                                        "reason": "ITEM_RETURNED"})
    assert r.status_code == 200 and r.json()["amount"] == "39.99"
    bad = post(api, world, f"/actions/{a['id']}/modify", {"items": [{"sku": "GREEN", "quantity": 0}]})
    assert bad.status_code == 422 and bad.json()["code"] == "unknown_sku"


def test_list_filters_and_cursor(api: TestClient, world: World) -> None:
    ids = [convert(api, world, order_id=f"L-{n}", partner_id=world.partners[n % 2])["id"] for n in range(7)]
    page1 = get(api, world, "/actions", params={"limit": 3}).json()
    assert [x["id"] for x in page1["items"]] == ids[::-1][:3] and page1["next_cursor"]
    page2 = get(api, world, "/actions", params={"limit": 3, "cursor": page1["next_cursor"]}).json()
    page3 = get(api, world, "/actions", params={"limit": 3, "cursor": page2["next_cursor"]}).json()
    assert [x["id"] for x in page2["items"] + page3["items"]] == ids[::-1][3:]
    assert page3["next_cursor"] is None
    by_partner = get(api, world, "/actions", params={"partner_id": world.partners[1]}).json()["items"]
    assert {x["id"] for x in by_partner} == set(ids[1::2])
    assert [x["id"] for x in get(api, world, "/actions", params={"order_id": "L-3"}).json()["items"]] == [ids[3]]
    assert get(api, world, "/actions", params={"action_id": ids[2]}).json()["items"][0]["id"] == ids[2]
    post(api, world, f"/actions/{ids[0]}/reverse")
    assert [x["id"] for x in get(api, world, "/actions", params={"state": "REVERSED"}).json()["items"]] == [ids[0]]
    in_range = get(api, world, "/actions", params={"event_date_from": "2026-11-15", "event_date_to": "2026-11-15",
                                                  "locking_date_from": "2026-12-28",
                                                  "locking_date_to": "2026-12-28"}).json()["items"]
    assert len(in_range) == 7
    assert get(api, world, "/actions", params={"event_date_to": "2026-11-14"}).json()["items"] == []
    assert get(api, world, "/actions", params={"campaign_id": world.campaign_id, "event_type_id": world.lead}
               ).json()["items"] == []
    assert "updates" not in page1["items"][0]


def test_export_neutralises_and_streams(api: TestClient, world: World) -> None:
    convert(api, world, order_id="=HYPERLINK(\"http://x\")", customer_id="@evil")
    convert(api, world, order_id="-5")
    r = get(api, world, "/actions/export")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 2
    assert rows[0]["order_id"] == "'=HYPERLINK(\"http://x\")" and rows[0]["customer_id"] == "'@evil"
    assert rows[1]["order_id"] == "'-5" and rows[0]["amount"] == "100.00"
    only = get(api, world, "/actions/export", params={"state": "REVERSED"})
    assert len(list(csv.DictReader(io.StringIO(only.text)))) == 0


def test_lock_run_endpoint(api: TestClient, world: World) -> None:
    convert(api, world, order_id="A", event_date="2026-01-10T00:00:00Z")  # locks 2026-02-28
    later = convert(api, world, order_id="B", event_date="2026-11-10T00:00:00Z")  # locks 2026-12-28
    r = post(api, world, "/locking/run", {"as_of": "2026-03-01"})
    assert r.status_code == 200 and r.json() == {"locked": 1}
    assert post(api, world, "/locking/run", {"as_of": "2026-03-01"}).json() == {"locked": 0}  # idempotent
    assert get(api, world, f"/actions/{later['id']}").json()["locked_at"] is None


def test_tenant_isolation_and_auth(api: TestClient, world: World, engine: Engine) -> None:
    other = make_world(engine)
    a = convert(api, world)
    for method, path, body in [
        ("get", f"/actions/{a['id']}", None), ("post", f"/actions/{a['id']}/approve", None),
        ("post", f"/actions/{a['id']}/reverse", {}), ("post", f"/actions/{a['id']}/modify", {"amount": "1"}),
        ("post", f"/actions/{a['id']}/reset", None), ("get", f"/campaigns/{world.campaign_id}", None),
        ("get", f"/event-types/{world.sale}", None), ("get", f"/partners/{world.partners[0]}", None),
        ("get", f"/contracts/{world.contract_id}", None),
    ]:
        r = api.request(method.upper(), f"/api/v1{path}", headers=other.auth, json=body)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["code"] == "not_found"
    r = post(api, other, "/conversions", {"event_type_id": world.sale, "order_id": "X", "amount": "1",
                                          "event_date": "2026-11-01", "partner_id": other.partners[0]})
    assert r.status_code == 404
    assert get(api, other, "/actions", params={"action_id": a["id"]}).json()["items"] == []
    bad = api.get("/api/v1/actions", headers={"Authorization": "Basic " + "eDp5"})
    assert bad.status_code == 401 and bad.json()["code"] == "unauthorized"
    assert "Basic" in bad.headers["www-authenticate"]
    assert api.get("/api/v1/actions").status_code == 401
    wrong = {**world.auth}
    wrong["Authorization"] = "Basic " + __import__("base64").b64encode(f"{world.sid}:nope".encode()).decode()
    assert api.get("/api/v1/actions", headers=wrong).status_code == 401


def test_idempotency_replays(api: TestClient, world: World) -> None:
    body = {"event_type_id": world.sale, "order_id": "IDEM-1", "event_date": "2026-11-15T10:00:00Z",
            "partner_id": world.partners[0], "amount": "10.00"}
    first = post(api, world, "/conversions", body, headers={"Idempotency-Key": "k-1"})
    again = post(api, world, "/conversions", body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() and again.headers["idempotent-replayed"] == "true"
    other = post(api, world, "/conversions", body, headers={"Idempotency-Key": "k-2"})
    assert other.json()["id"] != first.json()["id"]  # a new key is a new request (R12)
    reused = post(api, world, "/conversions", {**body, "amount": "11.00"}, headers={"Idempotency-Key": "k-1"})
    assert reused.status_code == 422 and reused.json()["code"] == "idempotency_key_reused"
    aid = first.json()["id"]
    m1 = post(api, world, f"/actions/{aid}/modify", {"amount": "5.00"}, headers={"Idempotency-Key": "m"})
    post(api, world, f"/actions/{aid}/modify", {"amount": "7.00"})
    m2 = post(api, world, f"/actions/{aid}/modify", {"amount": "5.00"}, headers={"Idempotency-Key": "m"})
    assert m2.json() == m1.json()
    assert get(api, world, f"/actions/{aid}").json()["amount"] == "7.00"  # the replay changed nothing


def test_attribution(api: TestClient, world: World) -> None:
    post(api, world, "/clicks", {"campaign_id": world.campaign_id, "partner_id": world.partners[1],
                                 "customer_id": "c-55", "clicked_at": "2026-11-01T09:00:00Z"})
    post(api, world, "/clicks", {"campaign_id": world.campaign_id, "partner_id": world.partners[2],
                                 "customer_id": "c-55", "clicked_at": "2026-11-10T09:00:00Z"})
    a = convert(api, world, partner_id=None, customer_id="c-55", event_date="2026-11-12T00:00:00Z")
    assert a["partner_id"] == world.partners[2]  # the last click
    early = convert(api, world, partner_id=None, customer_id="c-55", event_date="2026-11-05T00:00:00Z")
    assert early["partner_id"] == world.partners[1]  # the last click before the event
    r = post(api, world, "/conversions", {"event_type_id": world.sale, "order_id": "late", "customer_id": "c-55",
                                          "amount": "5", "event_date": "2026-12-25T00:00:00Z"})
    assert r.status_code == 422
    too_old = post(api, world, "/conversions", {"event_type_id": world.sale, "order_id": "old",
                                                "customer_id": "c-55", "amount": "5",
                                                "event_date": "2026-11-20T00:00:00Z"[:0] + "2026-11-10T09:00:00Z"})
    assert too_old.status_code == 201
    nobody = post(api, world, "/conversions", {"event_type_id": world.sale, "order_id": "n", "customer_id": "c-99",
                                               "amount": "5", "event_date": "2026-11-12T00:00:00Z"})
    assert nobody.status_code == 422 and nobody.json()["code"] == "not_attributable"


def test_openapi_and_docs(api: TestClient) -> None:
    spec = api.get("/api/v1/openapi.json")
    assert spec.status_code == 200 and "/api/v1/actions/{action_id}/modify" in spec.json()["paths"]
    assert api.get("/docs").status_code == 200
