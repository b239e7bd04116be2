"""The sorts of GET /api/v1/actions against a model: Python's sort of the same actions (DESIGN §4).

A few hundred actions with many ties (amounts, payouts and locking dates drawn from a handful of
values, some locking dates missing), paged with small pages through every sort, with and without
filters, on SQLite and PostgreSQL: the pages joined are exactly the model's order, each action once.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, insert

from payoutdesk.kit import db
from payoutdesk.ledger.repository import reserve_action_ids
from payoutdesk.models import actions
from tests.helpers import World, client_for, make_world

N = 300
SORTS = ["-event_date", "event_date", "locking_date", "-locking_date", "amount", "-amount", "payout", "-payout"]
NEVER = date.max  # the model's stand-in for a missing locking date: after every date


@dataclass
class Scene:
    api: TestClient
    world: World
    rows: list[dict[str, Any]]


@pytest.fixture(scope="module")
def scene(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    w = make_world(engine)
    rnd = random.Random(10)
    start = datetime(2026, 10, 1, tzinfo=UTC)
    with db.write(engine) as conn:
        ids = reserve_action_ids(conn, N)
        rows = []
        for n, i in enumerate(ids):
            amount = rnd.choice([0, 500, 1000, 1000, 2500, 99_999])
            lead = rnd.random() < 0.2  # open-ended: no locking date
            rows.append({
                "id": i, "account_id": w.account_id, "campaign_id": w.campaign_id,
                "event_type_id": w.lead if lead else w.sale, "partner_id": w.partners[n % 3],
                "contract_id": w.contract_id, "order_id": f"S-{n}", "customer_id": None,
                "promo_code": rnd.choice([None, "WINTER", "SUMMER"]),
                # event dates out of id order here and there (a conversion recorded late)
                "event_date": start + timedelta(hours=n + rnd.choice([0, 0, 0, -50])),
                "state": rnd.choice(["PENDING", "PENDING", "APPROVED", "REVERSED"]), "reason": None,
                "currency": "USD", "amount": amount, "payout": rnd.choice([0, amount // 10, 250]),
                "intended_amount": amount, "intended_payout": 0,
                "locking_date": None if lead else date(2026, 12, 1) + timedelta(days=rnd.choice([0, 0, 3, 10])),
                "lock_due": date(2026, 12, 1), "locked_at": None, "version": 1, "update_count": 1,
                "restore": None, "created_at": start,
            })
        for r in rows:
            if r["state"] == "REVERSED":
                r["reason"] = rnd.choice(["CONS_FRAUD", "ITEM_RETURNED"])
        conn.execute(insert(actions), rows)
    with client_for(engine, tmp_path_factory.mktemp("sorts")) as api:
        yield Scene(api, w, rows)


def model_key(sort: str) -> Callable[[dict[str, Any]], Any]:
    """The order each sort promises (docs/API.md): the key, then the id, in the sort's direction."""
    name = sort.lstrip("-")
    if name == "event_date":  # the order of recording, which the event dates follow
        return lambda r: r["id"]
    if name == "locking_date":
        return lambda r: (r["locking_date"] or NEVER, r["id"])
    return lambda r: (r[name], r["id"])


def model(scene: Scene, sort: str, keep: Callable[[dict[str, Any]], bool] = lambda r: True) -> list[int]:
    rows = sorted((r for r in scene.rows if keep(r)), key=model_key(sort), reverse=sort.startswith("-"))
    return [r["id"] for r in rows]


def walk(scene: Scene, sort: str, limit: int, **filters: Any) -> list[int]:
    got: list[int] = []
    cursor = None
    for _ in range(N + 2):
        params = {"sort": sort, "limit": limit, **filters}
        if cursor is not None:
            params["cursor"] = cursor
        r = scene.api.get("/api/v1/actions", params=params, headers=scene.world.auth)
        assert r.status_code == 200, r.text
        page = r.json()
        got += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return got
    raise AssertionError("the cursor never ended")


@pytest.mark.parametrize("sort", SORTS)
def test_every_sort_pages_through_every_action_once_in_the_model_order(scene: Scene, sort: str) -> None:
    assert walk(scene, sort, 17) == model(scene, sort)


@pytest.mark.parametrize("sort", SORTS)
def test_the_sorts_with_filters(scene: Scene, sort: str) -> None:
    w = scene.world
    assert walk(scene, sort, 9, state="PENDING") == model(scene, sort, lambda r: r["state"] == "PENDING")
    assert walk(scene, sort, 5, partner_id=w.partners[1], promo_code="WINTER") == model(
        scene, sort, lambda r: r["partner_id"] == w.partners[1] and r["promo_code"] == "WINTER")
    assert walk(scene, sort, 4, reason="CONS_FRAUD") == model(scene, sort, lambda r: r["reason"] == "CONS_FRAUD")
    assert walk(scene, sort, 11, locking_date_from="2026-12-02") == model(
        scene, sort, lambda r: r["locking_date"] is not None and r["locking_date"] >= date(2026, 12, 2))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sort=st.sampled_from(SORTS), limit=st.integers(1, 60), state=st.sampled_from([None, "PENDING", "REVERSED"]),
       promo=st.sampled_from([None, "WINTER", "SUMMER"]))
def test_sorts_and_cursors_match_the_model(scene: Scene, sort: str, limit: int, state: str | None,
                                           promo: str | None) -> None:
    filters = {k: v for k, v in (("state", state), ("promo_code", promo)) if v is not None}

    def keep(r: dict[str, Any]) -> bool:
        return (state is None or r["state"] == state) and (promo is None or r["promo_code"] == promo)

    assert walk(scene, sort, limit, **filters) == model(scene, sort, keep)
