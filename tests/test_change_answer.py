"""The answer of a change (approve, reverse, reset, modify) is built from what the change loaded and
wrote, not read again: it must equal the action as GET then shows it, plus ``outcome``."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from tests.helpers import World, client_for, conversion, make_world


def _random_change(rnd: random.Random, skus: list[str]) -> tuple[str, Any]:
    kind = rnd.choice(["modify", "modify", "modify", "items", "reverse", "approve", "reset"])
    if kind == "modify":
        body: dict[str, Any] = {"amount": rnd.choice(["0", "0.00", "12.34", "80.00", "100.00", "250.10"])}
        if rnd.random() < 0.5:
            body["reason"] = rnd.choice(["ORDER_UPDATE", "ITEM_RETURNED", "Wrong_Size"])
        if rnd.random() < 0.3:
            body["note"] = "näte"
        return "modify", body
    if kind == "items":
        sku = rnd.choice(skus)
        change: dict[str, Any] = {"sku": sku, "quantity": rnd.choice([0, 1, 2, 3])}
        if rnd.random() < 0.4:
            change["amount"] = rnd.choice(["5.00", "17.50"])
        return "modify", {"items": [change]}
    if kind == "reverse":
        return "reverse", rnd.choice([None, {}, {"reason": "CONS_FRAUD"}, {"reason": "Wrong_Size", "note": "n"}])
    return kind, rnd.choice([None, {"note": "ok"}])


def test_change_answers_equal_the_action_read_again(engine: Engine, tmp_path: Path) -> None:
    w: World = make_world(engine, tmp_path)
    rnd = random.Random(7)
    items = [{"sku": "RED", "quantity": 2, "amount": "60.00", "category": "shoes"},
             {"sku": "BLUE", "quantity": 1, "amount": "40.00", "name": "Blue"}]
    ids = [conversion(w, "ANS-1"), conversion(w, "ANS-2", items=items), conversion(w, "ANS-3", amount="0.99"),
           conversion(w, "ANS-4", event_type=w.lead)]
    skus = {ids[0]: ["ORDER"], ids[1]: ["RED", "BLUE"], ids[2]: ["ORDER"], ids[3]: ["ORDER"]}
    seen: dict[tuple[str, int], int] = {}
    with client_for(engine, tmp_path) as api:
        for _ in range(120):
            aid = rnd.choice(ids)
            op, body = _random_change(rnd, skus[aid])
            r = api.post(f"/api/v1/actions/{aid}/{op}", json=body, headers=w.auth)
            status = r.status_code
            seen[(op, status)] = seen.get((op, status), 0) + 1
            shown = api.get(f"/api/v1/actions/{aid}", headers=w.auth)
            assert shown.status_code == 200
            if status != 200:
                assert r.headers["content-type"].startswith("application/problem+json"), r.text
                continue
            answer = r.json()
            assert answer.pop("outcome") in ("applied", "unchanged")
            assert answer == shown.json(), (op, body)
    assert seen.get(("modify", 200), 0) > 10 and seen.get(("approve", 200), 0) > 0
    assert seen.get(("reverse", 200), 0) > 0 and seen.get(("reset", 200), 0) > 0
