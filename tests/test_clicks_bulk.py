"""Clicks at volume: POST /api/v1/clicks/bulk (a JSON array, a CSV body, a multipart file)."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from payoutdesk.kit import db
from payoutdesk.models import clicks
from tests.helpers import World, make_world

URL = "/api/v1/clicks/bulk"


def count(w: World) -> int:
    with db.read(w.engine) as conn:
        return int(conn.execute(select(func.count()).select_from(clicks)
                                .where(clicks.c.account_id == w.account_id)).scalar_one())


def rows(w: World, n: int, customer: str = "c") -> list[dict[str, Any]]:
    return [{"campaign_id": w.campaign_id, "partner_id": w.partners[i % 3], "customer_id": f"{customer}-{i}",
             "clicked_at": f"2026-11-{1 + i % 20:02d}T09:00:00Z"} for i in range(n)]


def test_json_array_inserts_and_refuses_rows(api: TestClient, world: World) -> None:
    other = make_world(world.engine)  # another account's partner is no partner of this one
    batch: list[Any] = rows(world, 5)
    batch += [
        {**batch[0], "partner_id": other.partners[0]},  # 6: not this account's
        {**batch[0], "customer_id": " "},  # 7
        {**batch[0], "clicked_at": "yesterday"},  # 8
        {**batch[0], "campaign_id": True},  # 9
        {**batch[0], "color": "red"},  # 10
        "a click",  # 11
    ]
    r = api.post(URL, json=batch, headers=world.auth)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["inserted"], out["refused"], out["errors_truncated"]) == (5, 6, False)
    assert [(e["row"], e["column"]) for e in out["errors"]] == [
        (6, "partner_id"), (7, "customer_id"), (8, "clicked_at"), (9, "campaign_id"), (10, "color"), (11, None)]
    assert count(world) == 5 and count(other) == 0
    # the clicks attribute conversions
    conv = api.post("/api/v1/conversions", headers=world.auth, json={
        "event_type_id": world.sale, "order_id": "bulk-1", "customer_id": "c-4", "amount": "10.00",
        "event_date": "2026-11-06T10:00:00Z"})
    assert conv.status_code == 201 and conv.json()["partner_id"] == world.partners[1]


def test_csv_body_and_multipart_file(api: TestClient, world: World) -> None:
    text = ("Campaign_ID,customer_id,partner_id,clicked_at\r\n"
            f"{world.campaign_id},csv-1,{world.partners[0]},2026-11-01T09:00:00Z\r\n"
            f"{world.campaign_id},csv-2,{world.partners[1]},2026-11-02\r\n"
            "\r\n"
            f"{world.campaign_id},csv-3,x,2026-11-02T09:00:00Z\r\n"
            f"{world.campaign_id},csv-4,{world.partners[1]}\r\n")
    r = api.post(URL, content=text.encode(), headers={**world.auth, "Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    assert (r.json()["inserted"], r.json()["refused"]) == (2, 2)
    assert [(e["row"], e["column"]) for e in r.json()["errors"]] == [(5, "partner_id"), (6, None)]
    r = api.post(URL, files={"file": ("clicks.csv", text.encode(), "text/csv")}, headers=world.auth)
    assert r.status_code == 200 and r.json()["inserted"] == 2
    assert count(world) == 4
    bad = api.post(URL, content=b"campaign_id,customer\r\n1,2\r\n", headers={**world.auth, "Content-Type": "text/csv"})
    assert bad.status_code == 422 and bad.json()["code"] == "validation_error"
    assert count(world) == 4


def test_refusals_change_nothing(api: TestClient, world: World) -> None:
    h = {**world.auth, "Content-Type": "application/json"}
    assert api.post(URL, content=b"[{\"campaign_id\": 1,", headers=h).json()["code"] == "malformed_json"
    assert api.post(URL, content=b"{\"rows\": []}", headers=h).status_code == 422
    assert api.post(URL, content=b"x", headers={**world.auth, "Content-Type": "text/plain"}).status_code == 422
    too_many = json.dumps(rows(world, 100_001)).encode()
    r = api.post(URL, content=too_many, headers=h)
    assert r.status_code == 422 and "100,000" in r.json()["detail"]
    assert count(world) == 0
    # above the body limit: 413 at once
    huge = b"[" + b" " * (33 * 1024 * 1024) + b"]"
    r = api.post(URL, content=huge, headers=h)
    assert r.status_code == 413 and r.json()["code"] == "body_too_large"


def test_hundred_thousand_clicks_and_idempotency(api: TestClient, world: World) -> None:
    body = json.dumps(rows(world, 100_000, "big")).encode()
    h = {**world.auth, "Content-Type": "application/json", "Idempotency-Key": "clicks-1"}
    r = api.post(URL, content=body, headers=h)
    assert r.status_code == 200 and r.json()["inserted"] == 100_000, r.text[:300]
    again = api.post(URL, content=body, headers=h)
    assert again.json()["inserted"] == 100_000 and again.headers.get("Idempotent-Replayed") == "true"
    assert count(world) == 100_000
