"""R16 through the native API: clearing_date and status_detail of actions (the pure rule: test_terms.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from payoutdesk.kit import db
from payoutdesk.ledger import schedule
from payoutdesk.ledger import service as ledger
from payoutdesk.ledger import workflow as wf
from payoutdesk.models import actions
from tests.helpers import World, conversion


def shown(api: TestClient, w: World, aid: int) -> dict[str, object]:
    r = api.get(f"/api/v1/actions/{aid}", headers=w.auth)
    assert r.status_code == 200, r.text
    return dict(r.json())


def locked_on(w: World, aid: int, at: datetime) -> None:
    with db.write(w.engine) as conn:
        conn.execute(update(actions).where(actions.c.id == aid).values(state="APPROVED", locked_at=at))


def test_status_details_and_clearing_dates(api: TestClient, world: World) -> None:
    pending = conversion(world, "S-1")
    lead = conversion(world, "S-2", event_type=world.lead, amount="1.00")
    reversed_ = conversion(world, "S-3")
    assert api.post(f"/api/v1/actions/{reversed_}/reverse", json={"reason": "CONS_FRAUD"},
                    headers=world.auth).json()["status_detail"] == "CONS_FRAUD"
    early = conversion(world, "S-4")
    approved = api.post(f"/api/v1/actions/{early}/approve", json={}, headers=world.auth).json()
    # approved early, on 26 November 2026 (the tests' clock): 30 November + 0 months + 20 days
    assert (approved["status_detail"], approved["clearing_date"]) == ("PAYMENT_PENDING", "2026-12-20")
    assert (shown(api, world, pending)["status_detail"], shown(api, world, pending)["clearing_date"]) == (None, None)
    assert shown(api, world, lead)["status_detail"] == "OPEN"  # open-ended locking
    assert (shown(api, world, reversed_)["status_detail"], shown(api, world, reversed_)["clearing_date"]) == (
        "CONS_FRAUD", None)
    assert shown(api, world, early)["clearing_date"] == "2026-12-20"
    # locked 20 October: cleared on 20 November, before today: PAID
    locked_on(world, pending, datetime(2026, 10, 20, 8, 0, tzinfo=UTC))
    assert (shown(api, world, pending)["status_detail"], shown(api, world, pending)["clearing_date"]) == (
        "PAID", "2026-11-20")
    # the list says the same as the action
    page = api.get("/api/v1/actions", params={"campaign_id": world.campaign_id}, headers=world.auth).json()
    by_id = {a["id"]: (a["status_detail"], a["clearing_date"]) for a in page["items"]}
    assert by_id[pending] == ("PAID", "2026-11-20") and by_id[early] == ("PAYMENT_PENDING", "2026-12-20")
    assert by_id[lead] == ("OPEN", None) and by_id[reversed_] == ("CONS_FRAUD", None)
    # the impact.com-compatible API's StateDetail says the same (empty for a blank one)
    for aid in (pending, early, lead, reversed_):
        compat = api.get(f"/Advertisers/{world.sid}/Actions/{aid}", headers=world.auth)
        assert compat.status_code == 200, compat.text
        assert compat.json()["StateDetail"] == (by_id[aid][0] or ""), aid
    assert api.get(f"/Advertisers/{world.sid}/Actions/{early}", headers=world.auth).json()["StateDetail"] == (
        "PAYMENT_PENDING")


@pytest.mark.parametrize(("locked_at", "clearing"), [
    (datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC), "2027-01-20"),  # year end
    (datetime(2027, 1, 1, 0, 0, tzinfo=UTC), "2027-02-20"),  # the UTC day decides
    (datetime(2028, 2, 10, 12, 0, tzinfo=UTC), "2028-03-20"),  # leap February
    (datetime(2026, 11, 26, 9, 0, tzinfo=UTC), "2026-12-20"),
])
def test_clearing_across_month_and_year_ends(api: TestClient, world: World, locked_at: datetime,
                                             clearing: str) -> None:
    aid = conversion(world, f"Y-{locked_at:%Y%m%d%H}")
    locked_on(world, aid, locked_at)
    a = shown(api, world, aid)
    assert (a["clearing_date"], a["status_detail"]) == (clearing, "PAYMENT_PENDING")


def test_paid_from_the_clearing_date_on() -> None:
    clearing = date(2026, 12, 20)
    assert schedule.status_detail("APPROVED", None, None, clearing, date(2026, 12, 19)) == "PAYMENT_PENDING"
    assert schedule.status_detail("APPROVED", None, None, clearing, date(2026, 12, 20)) == "PAID"
    assert schedule.status_detail("PENDING", None, date(2026, 12, 28), None, date(2026, 12, 20)) is None
    assert schedule.status_detail("REVERSED", "ITEM_RETURNED", None, None, date(2026, 12, 20)) == "ITEM_RETURNED"


def test_a_pipelined_approve_with_a_cold_cache(world: World) -> None:
    """ledger.change(commit=True) sends COMMIT with its last write on PostgreSQL; the payment period read
    for the answer when the cache is cold still answers the right clearing date, and the change stays."""
    aid = conversion(world, "P-cold")
    schedule.forget()
    out = db.transaction(world.engine, lambda conn: ledger.change(conn, world.actor, aid, wf.Approve(), commit=True))
    assert (out["state"], out["clearing_date"], out["status_detail"]) == ("APPROVED", "2026-12-20", "PAYMENT_PENDING")
    with db.read(world.engine) as conn:
        again = ledger.get_action(conn, world.account_id, aid)
    assert (again["state"], again["clearing_date"], again["version"]) == ("APPROVED", "2026-12-20", out["version"])


@pytest.mark.parametrize(("months", "days"), [(1, 0), (2, 5), (11, 0)])
def test_the_export_and_the_api_agree_on_clearing_dates_months_on(api: TestClient, world: World, months: int,
                                                                   days: int) -> None:
    """Payment periods with months: the export's SQL (both databases) and the API's Python give the rule's date."""
    import csv
    import io

    from payoutdesk.contracts.terms import Period, payment_date
    from payoutdesk.models import contracts

    with db.write(world.engine) as conn:
        conn.execute(update(contracts).where(contracts.c.campaign_id == world.campaign_id)
                     .values(pay_months=months, pay_days=days))
    schedule.forget()  # the per-process cache of payment periods (contracts never change outside tests)
    locks = [datetime(2026, 1, 31, 23, 0, tzinfo=UTC), datetime(2026, 2, 14, tzinfo=UTC),
             datetime(2027, 4, 2, tzinfo=UTC), datetime(2028, 2, 29, tzinfo=UTC), datetime(2026, 12, 31, tzinfo=UTC)]
    expected = {}
    for n, at in enumerate(locks):
        aid = conversion(world, f"M-{months}-{n}")
        locked_on(world, aid, at)
        expected[aid] = payment_date(at.date(), Period(months, days)).isoformat()
    assert expected[min(expected)] == {1: "2026-02-28", 2: "2026-04-05", 11: "2026-12-31"}[months]
    r = api.get("/api/v1/actions/export", params={"campaign_id": world.campaign_id, "state": "APPROVED"},
                headers=world.auth)
    assert r.status_code == 200, r.text
    exported = {int(row["action_id"]): row["clearing_date"] for row in csv.DictReader(io.StringIO(r.text))}
    for aid, clearing in expected.items():
        assert shown(api, world, aid)["clearing_date"] == clearing == exported[aid], (aid, months, days)
    schedule.forget()
