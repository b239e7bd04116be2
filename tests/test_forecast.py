"""The lock forecast: GET /api/v1/locking/forecast, ledger/forecast.py and ``payoutdesk forecast``."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from payoutdesk import cli
from payoutdesk.errors import ActionLocked
from payoutdesk.kit import db
from payoutdesk.kit.money import format_amount
from payoutdesk.ledger import forecast as lf
from payoutdesk.ledger import service as ledger
from payoutdesk.ledger import workflow as wf
from tests.helpers import World, conversion, make_world

URL = "/api/v1/locking/forecast"

# (partner index, event day in November 2026 or earlier month, amount in cents, lead?, what happens to it)
action_specs = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from(["2026-09-15", "2026-10-01", "2026-10-31", "2026-11-02",
                                                  "2026-11-20"]),
              st.integers(0, 10**7), st.booleans(), st.sampled_from(["keep", "keep", "reverse", "approve"])),
    max_size=7)


def make_actions(w: World, specs: list[tuple[int, str, int, bool, str]]) -> list[dict[str, Any]]:
    shown = []
    for n, (p, day, cents, lead, fate) in enumerate(specs):
        aid = conversion(w, f"F-{n}", amount=format_amount(cents, "USD"), event_date=f"{day}T10:00:00Z",
                         partner=w.partners[p], event_type=w.lead if lead else w.sale)
        with contextlib.suppress(ActionLocked), db.write(w.engine) as conn:  # a September action is final
            if fate == "reverse":
                ledger.change(conn, w.actor, aid, wf.Reverse("CONS_FRAUD"))
            elif fate == "approve":
                ledger.change(conn, w.actor, aid, wf.Approve())
        with db.read(w.engine) as conn:
            shown.append(ledger.get_action(conn, w.account_id, aid, with_updates=False))
    return shown


def expected(shown: list[dict[str, Any]], f: lf.ForecastFilters) -> dict[str, Any]:
    """The model: sums of the covered actions, straight from the actions as the API shows them."""
    covered = [a for a in shown if a["state"] != "REVERSED" and a["locked_at"] is None
               and (f.partner_id is None or a["partner_id"] == f.partner_id)]
    dates: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    partners: dict[tuple[str | None, int], list[int]] = defaultdict(lambda: [0, 0])
    for a in covered:
        day = a["locking_date"]
        if day is not None and ((f.locking_date_from and date.fromisoformat(day) < f.locking_date_from)
                                or (f.locking_date_to and date.fromisoformat(day) > f.locking_date_to)):
            continue
        cents = int(a["payout"].replace(".", ""))
        for bucket in (dates[day], partners[(day, a["partner_id"])]):
            bucket[0] += 1
            bucket[1] += cents
    return {"dates": dict(dates), "partners": dict(partners)}


def observed(out: dict[str, Any]) -> dict[str, Any]:
    dates: dict[str | None, list[int]] = {}
    partners: dict[tuple[str | None, int], list[int]] = {}
    groups = [(d["locking_date"], d) for d in out["dates"]]
    if out["open_ended"]["count"]:
        groups.append((None, out["open_ended"]))
    for day, g in groups:
        dates[day] = [g["count"], int(g["payout"]["USD"].replace(".", ""))]
        assert g["count"] == sum(p["count"] for p in g["partners"])
        for p in g["partners"]:
            partners[(day, p["partner_id"])] = [p["count"], int(p["payout"]["USD"].replace(".", ""))]
    total = out["total"]
    assert total["count"] == sum(v[0] for v in dates.values())
    assert int(total["payout"].get("USD", "0").replace(".", "")) == sum(v[1] for v in dates.values())
    return {"dates": dates, "partners": partners}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(action_specs, st.sampled_from([None, 0, 1]), st.sampled_from([None, date(2026, 11, 28)]),
       st.sampled_from([None, date(2026, 11, 28), date(2026, 12, 28)]))
def test_forecast_sums_equal_the_actions_it_covers(engine: Engine, specs: list[tuple[int, str, int, bool, str]],
                                                   partner: int | None, low: date | None,
                                                   high: date | None) -> None:
    w = make_world(engine)
    shown = make_actions(w, specs)
    f = lf.ForecastFilters(campaign_id=w.campaign_id, partner_id=None if partner is None else w.partners[partner],
                           locking_date_from=low, locking_date_to=high)
    with db.read(engine) as conn:
        out = lf.forecast(conn, w.account_id, f)
    assert observed(out) == expected(shown, f)
    assert [d["locking_date"] for d in out["dates"]] == sorted(d["locking_date"] for d in out["dates"])


def test_the_route(api: TestClient, world: World) -> None:
    other = make_world(world.engine)
    conversion(other, "X-1")  # another account's action is not counted
    conversion(world, "A-1", amount="100.00", event_date="2026-11-10T10:00:00Z")  # locks 2026-12-28
    conversion(world, "A-2", amount="50.00", event_date="2026-11-11T10:00:00Z", partner=world.partners[1])
    conversion(world, "A-3", amount="1.00", event_type=world.lead)  # open-ended: fixed 2.50
    r = api.get(URL, headers=world.auth)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["dates"] == [{"locking_date": "2026-12-28", "count": 2, "payout": {"USD": "15.00"}, "partners": [
        {"partner_id": world.partners[0], "partner_name": "Alpha", "count": 1, "payout": {"USD": "10.00"}},
        {"partner_id": world.partners[1], "partner_name": "Beta", "count": 1, "payout": {"USD": "5.00"}}]}]
    assert (out["open_ended"]["count"], out["open_ended"]["payout"]) == (1, {"USD": "2.50"})
    assert out["total"] == {"count": 3, "payout": {"USD": "17.50"}}
    only_beta = api.get(URL, params={"partner_id": world.partners[1], "locking_date_to": "2026-12-28"},
                        headers=world.auth).json()
    assert only_beta["total"] == {"count": 1, "payout": {"USD": "5.00"}}
    assert api.get(URL, params={"locking_date_from": "2027-01-01"}, headers=world.auth).json()["dates"] == []
    inverted = api.get(URL, params={"locking_date_from": "2027-01-02", "locking_date_to": "2027-01-01"},
                       headers=world.auth).json()
    assert inverted["dates"] == [] and inverted["total"]["count"] == 1  # the open-ended action
    for bad in ({"partner": "1"}, {"locking_date_from": "tomorrow"}, {"campaign_id": "0"}):
        refused = api.get(URL, params=bad, headers=world.auth)
        assert refused.status_code == 422 and refused.json()["code"] == "validation_error", bad
    assert api.get(URL).status_code == 401


def test_cli_prints_the_table(world: World, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    conversion(world, "C-1", amount="100.00", event_date="2026-11-10T10:00:00Z")
    monkeypatch.setenv("PAYOUTDESK_DATABASE_URL", db_url)
    monkeypatch.setenv("PAYOUTDESK_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PAYOUTDESK_SECRET_KEY", "test-secret")
    assert cli.main(["forecast", "--account", world.sid, "--from", "2026-12-01"]) == 0
    text = capsys.readouterr().out
    assert "2026-12-28" in text and "Alpha" in text and "10.00 USD" in text and "total" in text
    assert cli.main(["forecast", "--account", "nobody"]) == 2
