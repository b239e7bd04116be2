"""Payments owed (R16) and payments recorded: GET/POST /api/v1/payments, /payments.csv, ``payoutdesk payments``."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, update

from payoutdesk import cli
from payoutdesk.contracts.terms import Period, payment_date
from payoutdesk.kit import db
from payoutdesk.kit.money import format_amount
from payoutdesk.ledger import service as ledger
from payoutdesk.models import actions
from payoutdesk.payments import service as payments
from tests.helpers import World, conversion, make_world

URL = "/api/v1/payments"
PAY_AFTER = Period(0, 20)  # tests.helpers.make_world's contracts


def lock(w: World, aid: int, at: datetime) -> None:
    with db.write(w.engine) as conn:
        conn.execute(update(actions).where(actions.c.id == aid).values(state="APPROVED", locked_at=at))


# (partner, amount in cents, locked at: None for pending, or a day of 2026)
specs = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10**6),
                           st.one_of(st.none(), st.dates(date(2026, 1, 1), date(2026, 12, 31)))), max_size=8)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs)
def test_payments_owed_equal_the_sums_of_their_actions(engine: Engine,
                                                        made: list[tuple[int, int, date | None]]) -> None:
    w = make_world(engine)
    model: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])
    for n, (p, cents, locked) in enumerate(made):
        aid = conversion(w, f"P-{n}", amount=format_amount(cents, "USD"), partner=w.partners[p])
        with db.read(engine) as conn:
            payout = int(ledger.get_action(conn, w.account_id, aid, with_updates=False)["payout"].replace(".", ""))
        if locked is not None:
            lock(w, aid, datetime(locked.year, locked.month, locked.day, 23, 0, tzinfo=UTC))
            bucket = model[(w.partners[p], payment_date(locked, PAY_AFTER).isoformat())]
            bucket[0] += 1
            bucket[1] += payout
    with db.read(engine) as conn:
        out = payments.report(conn, w.account_id, payments.PaymentFilters(), today=date(2026, 11, 26))
    got = {(r["partner_id"], r["clearing_date"]): [r["actions"], int(r["owed"].replace(".", ""))]
           for r in out["items"]}
    assert got == dict(model)
    owed = sum(v[1] for v in model.values())
    assert [t["owed"] for t in out["totals"]] == ([format_amount(owed, "USD")] if model else [])


def test_record_and_report(api: TestClient, world: World) -> None:
    a, b = world.partners[0], world.partners[1]
    x1 = conversion(world, "Q-1", amount="100.00", partner=a)  # payout 10.00
    x2 = conversion(world, "Q-2", amount="50.00", partner=a)  # 5.00
    x3 = conversion(world, "Q-3", amount="30.00", partner=b)  # 3.00
    conversion(world, "Q-4", amount="70.00", partner=b)  # pending: not owed
    lock(world, x1, datetime(2026, 10, 3, 9, 0, tzinfo=UTC))  # clears 2026-11-20: due
    lock(world, x2, datetime(2026, 10, 31, 23, 59, tzinfo=UTC))  # the same clearing date
    lock(world, x3, datetime(2026, 11, 26, 9, 0, tzinfo=UTC))  # approved early: clears 2026-12-20
    pay = api.post(URL, json={"partner_id": a, "clearing_date": "2026-11-20", "amount": "12.00",
                              "reference": "WIRE-1"}, headers=world.auth)
    assert pay.status_code == 201, pay.text
    assert (pay.json()["currency"], pay.json()["amount"]) == ("USD", "12.00")
    out = api.get(URL, headers=world.auth).json()
    assert out["items"] == [
        {"partner_id": a, "partner_name": "Alpha", "clearing_date": "2026-11-20", "currency": "USD", "actions": 2,
         "owed": "15.00", "paid": "12.00", "difference": "3.00", "due": True, "cleared": False},
        {"partner_id": b, "partner_name": "Beta", "clearing_date": "2026-12-20", "currency": "USD", "actions": 1,
         "owed": "3.00", "paid": "0.00", "difference": "3.00", "due": False, "cleared": False}]
    assert out["totals"] == [{"currency": "USD", "actions": 3, "owed": "18.00", "due": "15.00", "paid": "12.00",
                              "difference": "6.00"}]
    only_b = api.get(URL, params={"partner_id": b}, headers=world.auth).json()
    assert [r["partner_id"] for r in only_b["items"]] == [b]
    later = api.get(URL, params={"clearing_date_from": "2026-12-01"}, headers=world.auth).json()
    assert [r["clearing_date"] for r in later["items"]] == ["2026-12-20"]
    text = api.get(f"{URL}.csv", headers=world.auth)
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(text.text)))
    assert rows[0] == list(payments.CSV_COLUMNS)
    assert rows[1] == [str(a), "Alpha", "2026-11-20", "USD", "2", "15.00", "12.00", "3.00", "yes"]
    # refusals
    for body in ({"partner_id": a, "clearing_date": "2027-01-20", "amount": "1.00"},  # owed nothing: currency?
                 {"partner_id": a, "clearing_date": "2026-11-20", "amount": "-1"},
                 {"partner_id": a, "clearing_date": "20 November", "amount": "1.00"}):
        r = api.post(URL, json=body, headers=world.auth)
        assert r.status_code == 422, (body, r.text)
    other = make_world(world.engine)
    r = api.post(URL, json={"partner_id": other.partners[0], "clearing_date": "2026-11-20", "amount": "1.00"},
                 headers=world.auth)
    assert r.status_code == 404
    assert api.get(URL, params={"partner": a}, headers=world.auth).status_code == 422
    # a payment with the currency given, on a date nothing is owed: shown with nothing owed
    r = api.post(URL, json={"partner_id": b, "clearing_date": "2027-01-20", "amount": "1.00", "currency": "USD"},
                 headers=world.auth)
    assert r.status_code == 201
    last = api.get(URL, params={"clearing_date_from": "2027-01-01"}, headers=world.auth).json()["items"]
    assert last == [{"partner_id": b, "partner_name": "Beta", "clearing_date": "2027-01-20", "currency": "USD",
                     "actions": 0, "owed": "0.00", "paid": "1.00", "difference": "-1.00", "due": False,
                     "cleared": True}]


def test_cli(world: World, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             capsys: pytest.CaptureFixture[str]) -> None:
    aid = conversion(world, "R-1", amount="100.00")
    lock(world, aid, datetime(2026, 10, 3, 9, 0, tzinfo=UTC))
    monkeypatch.setenv("PAYOUTDESK_DATABASE_URL", db_url)
    monkeypatch.setenv("PAYOUTDESK_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PAYOUTDESK_SECRET_KEY", "test-secret")
    assert cli.main(["payments", "--account", world.sid]) == 0
    text = capsys.readouterr().out
    assert "2026-11-20" in text and "Alpha" in text and "10.00 USD" in text
    assert cli.main(["payments", "--account", world.sid, "--csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith(",2026-11-20,USD,1,10.00,0.00,10.00,yes")
