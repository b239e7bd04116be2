"""Issue 13's pages: Lock Forecast (a server-rendered SVG chart and the per-date, per-partner table), Payments
(owed, paid, difference; CSV; Record a payment) and Re-process on Pending Payouts. In a real browser (both
databases): the forecast page's numbers are the forecast service's, one bar per locking date with an
accessible name; a payment recorded through the form shows with its difference; Re-process on a list filtered
by an order id recalculates under a new contract. Fast checks through TestClient: roles and forged posts,
refusals with the rule's message, the CSV, a re-processing that becomes a job, filters that do not parse."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, update

from payoutdesk.catalog import service as catalog
from payoutdesk.kit import db
from payoutdesk.ledger import forecast as lf
from payoutdesk.ledger import service as ledger
from payoutdesk.models import actions
from payoutdesk.payments import service as payments
from tests.browser import Site, assert_accessible, page_client, screenshot, sign_in
from tests.helpers import World, bulk_actions, conversion, make_world


def lock(w: World, aid: int, at: datetime) -> None:
    with db.write(w.engine) as conn:
        conn.execute(update(actions).where(actions.c.id == aid).values(state="APPROVED", locked_at=at))


def new_contract(w: World, partner: int, starts_on: date, percent: str, lock_months: int = 0) -> None:
    with db.write(w.engine) as conn:
        catalog.create_contract(conn, w.actor, {
            "campaign_id": w.campaign_id, "partner_id": partner, "starts_on": starts_on,
            "payout": [{"event_type_id": w.sale, "percent": percent}, {"event_type_id": w.lead, "fixed": "1.00"}],
            "lock_after": {"months": lock_months, "days": 27}, "referral_window_days": 30})


def finance_world(w: World) -> dict[str, int]:
    """Pending actions locking on three dates for two partners, one open-ended lead, and two locked approved
    actions owed to Alpha (clearing 2026-11-20, due) and Beta (clearing 2026-12-20)."""
    a, b = w.partners[0], w.partners[1]
    conversion(w, "F-1", "100.00", event_date="2026-11-20T10:00:00Z", partner=a)  # locks 2026-12-28
    conversion(w, "F-2", "40.00", event_date="2026-10-20T11:00:00Z", partner=b)  # 2026-11-28
    conversion(w, "F-3", "55.50", event_date="2026-10-22T10:00:00Z", partner=a)  # 2026-11-28
    new_contract(w, b, date(2026, 11, 23), "12", lock_months=1)
    conversion(w, "F-4", "210.00", event_date="2026-11-24T10:00:00Z", partner=b)  # 2027-01-28
    conversion(w, "F-5", "1.00", event_date="2026-11-24T10:00:00Z", partner=a, event_type=w.lead)  # open-ended
    owed_a = conversion(w, "P-1", "300.00", event_date="2026-09-01T10:00:00Z", partner=a)
    lock(w, owed_a, datetime(2026, 10, 3, 9, 0, tzinfo=UTC))
    owed_b = conversion(w, "P-2", "80.00", event_date="2026-10-01T10:00:00Z", partner=b)
    lock(w, owed_b, datetime(2026, 11, 2, 9, 0, tzinfo=UTC))
    return {"owed_a": owed_a, "owed_b": owed_b}


def money(payout: dict[str, str]) -> str:
    return "; ".join(f"{v} {cur}" for cur, v in payout.items())


# --- in the browser ---------------------------------------------------------------------------------


def test_finance_pages_in_the_browser(browser: Any, site: Site) -> None:
    w = site.world
    a = w.partners[0]
    finance_world(w)
    page = sign_in(browser, site, "manager")

    # Lock Forecast: reached from the navigation; the numbers are the service's
    page.get_by_role("link", name="Lock Forecast").click()
    page.wait_for_url("**/pending-payouts/forecast")
    with db.read(w.engine) as conn:
        want = lf.forecast(conn, w.account_id, lf.ForecastFilters())
    assert len(want["dates"]) == 3 and want["open_ended"]["count"] == 1
    chart = page.get_by_role("img", name=re.compile(r"^Payout in USD locking per date"))
    assert chart.count() == 1
    assert page.locator("svg.forecast-chart rect.bar").count() == 3
    assert [page.locator("svg.forecast-chart rect.bar").nth(i).get_attribute("data-date") for i in range(3)] == [
        d["locking_date"] for d in want["dates"]]
    chart_rows = page.locator("table.chart-table tbody tr").all_inner_texts()
    assert [re.split(r"\s+", r.strip()) for r in chart_rows] == [
        [d["locking_date"], str(d["count"]), d["payout"]["USD"], "USD"] for d in want["dates"]]
    for d in want["dates"]:
        row = page.locator(f'table.forecast-table tr[data-date="{d["locking_date"]}"]')
        assert row.locator("td.total-cell").inner_text() == f"{money(d['payout'])} ({d['count']})"
        for p in d["partners"]:
            cell = row.locator(f'td[data-partner="{p["partner_id"]}"]').inner_text()
            assert cell == f"{money(p['payout'])} ({p['count']})"
    assert f"{want['open_ended']['count']} action, payout {money(want['open_ended']['payout'])}" in (
        page.get_by_test_id("open-ended").inner_text())
    assert page.get_by_test_id("total").inner_text() == f"{want['total']['count']} actions, payout " \
                                                        f"{money(want['total']['payout'])}"
    assert_accessible(page)
    screenshot(page, "lock-forecast")
    # filtered by a partner: only that partner's dates
    page.get_by_label("Partner", exact=True).select_option(str(a))
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(f"**partner_id={a}**")
    with db.read(w.engine) as conn:
        only_a = lf.forecast(conn, w.account_id, lf.ForecastFilters(partner_id=a))
    assert page.locator("svg.forecast-chart rect.bar").count() == len(only_a["dates"]) == 2

    # Payments: what is owed for the locked approved actions; a payment recorded through the form
    page.get_by_role("link", name="Payments").click()
    page.wait_for_url("**/payments")
    row = page.locator(f'table.payments-table tr[data-partner="{a}"][data-clearing="2026-11-20"]')
    assert row.locator("td.owed").inner_text() == "30.00 USD"
    assert row.locator("td.difference").inner_text() == "30.00 USD" and "Due" in row.inner_text()
    form = page.get_by_role("region", name="Record a payment")
    form.get_by_label("Partner").select_option(str(a))
    form.get_by_label("Clearing date").fill("2026-11-20")
    form.get_by_label("Amount").fill("25.00")
    form.get_by_label("Reference").fill("WIRE-<b>7</b>")
    page.get_by_role("button", name="Record payment").click()
    page.wait_for_load_state()
    assert page.locator(".flash").inner_text() == (
        "Payment of 25.00 USD to Alpha for 2026-11-20 recorded (reference WIRE-<b>7</b>).")
    row = page.locator(f'table.payments-table tr[data-partner="{a}"][data-clearing="2026-11-20"]')
    assert (row.locator("td.paid").inner_text(), row.locator("td.difference").inner_text()) == (
        "25.00 USD", "5.00 USD")
    assert_accessible(page)
    screenshot(page, "payments")

    # Re-process on Pending Payouts, for the list filtered by an order id: the contract changed -> recalculated
    rp = conversion(w, "RP-1", "100.00", event_date="2026-11-25T10:00:00Z", partner=w.partners[2])
    new_contract(w, w.partners[2], date(2026, 11, 26), "20")
    page.goto(site.at("/pending-payouts/actions?order_id=RP-1"))
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Re-process").click()
    page.wait_for_selector(".flash")
    assert page.locator(".flash").inner_text() == (
        "Re-processed 1 action: 0 moved to another partner, 1 recalculated, 0 unchanged, 0 skipped (locked or "
        "approved), 0 skipped (reversed); no click qualified for 1.")
    assert "order_id=RP-1" in page.url
    with db.read(w.engine) as conn:
        after = ledger.get_action(conn, w.account_id, rp)
    assert (after["payout"], after["updates"][-1]["kind"]) == ("20.00", "MODIFIED")
    assert after["updates"][-1]["actor"] == f"system for user:{site.users['manager']}"  # who asked
    page.context.close()


# --- fast checks ------------------------------------------------------------------------------------


def test_viewers_see_no_change_control_and_forged_posts_are_refused(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    finance_world(w)
    viewer, token = page_client(w, tmp_path, "viewer")
    for path in ("/payments", "/pending-payouts/forecast"):
        answer = viewer.get(path)
        assert answer.status_code == 200 and "no-store" in answer.headers["cache-control"]
        assert 'method="post" action="/payments"' not in answer.text and "Record a payment" not in answer.text
        assert "style=" not in answer.text
    assert "Re-process" not in viewer.get("/pending-payouts/actions?order_id=F-1").text
    forged = viewer.post("/payments", data={"csrf_token": token, "partner_id": str(w.partners[0]),
                                            "clearing_date": "2026-11-20", "amount": "1.00"})
    assert forged.status_code == 403
    assert viewer.post("/pending-payouts/reprocess", data={"csrf_token": token, "order_id": "F-1"}).status_code == 403
    with db.read(engine) as conn:
        assert payments.report(conn, w.account_id, payments.PaymentFilters())["items"][0]["paid"] == "0.00"

    manager, token = page_client(w, tmp_path, "manager")
    page = manager.get("/pending-payouts/actions?order_id=F-1").text
    assert 'action="/pending-payouts/reprocess"' in page and 'data-confirm="' in page
    assert 'action="/payments"' in manager.get("/payments").text
    # without the form token: refused
    assert manager.post("/payments", data={"partner_id": str(w.partners[0]), "clearing_date": "2026-11-20",
                                           "amount": "1.00"}).status_code == 403


def test_refusals_csv_and_filters(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    finance_world(w)
    client, token = page_client(w, tmp_path, "manager")
    a = str(w.partners[0])

    # refusals keep the form and say the rule's message
    bad = client.post("/payments", data={"csrf_token": token, "partner_id": a, "clearing_date": "2026-11-20",
                                         "amount": "abc", "reference": "R<i>1</i>"})
    assert bad.status_code == 422 and 'role="alert"' in bad.text
    assert 'value="R&lt;i&gt;1&lt;/i&gt;"' in bad.text and "R<i>1</i>" not in bad.text
    nothing_owed = client.post("/payments", data={"csrf_token": token, "partner_id": a,
                                                  "clearing_date": "2027-01-31", "amount": "1.00"})
    assert nothing_owed.status_code == 422 and "Give the currency" in nothing_owed.text
    assert 'value="2027-01-31"' in nothing_owed.text
    no_partner = client.post("/payments", data={"csrf_token": token, "partner_id": "", "clearing_date": "2026-11-20",
                                                "amount": "1.00"})
    assert no_partner.status_code == 422 and "partner" in no_partner.text
    # with the currency given, a payment for a date nothing is owed on is recorded (an advance)
    ok = client.post("/payments", data={"csrf_token": token, "partner_id": a, "clearing_date": "2027-01-31",
                                        "amount": "3.00", "currency": "usd"}, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/payments"

    # the CSV is the report's rows, filtered as the page
    csv = client.get(f"/payments/export.csv?partner_id={a}")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    with db.read(engine) as conn:
        want = "".join(payments.report_csv(conn, w.account_id, payments.PaymentFilters(partner_id=w.partners[0])))
    assert csv.text == want and want.count("\r\n") == 3  # header, 2026-11-20 owed, 2027-01-31 paid
    listed = client.get(f"/payments?partner_id={a}&clearing_date_from=2026-12-01")
    assert "2027-01-31" in listed.text and "2026-11-20" not in listed.text
    assert 'role="alert"' in client.get("/payments?clearing_date_to=31.12.2026").text
    assert 'role="alert"' in client.get("/pending-payouts/forecast?locking_date_from=soon").text
    assert 'role="alert"' in client.get("/pending-payouts/forecast?partner_id=x").text
    empty = client.get(f"/pending-payouts/forecast?locking_date_from=2030-01-01&partner_id={w.partners[1]}").text
    assert "Nothing locks on a date" in empty and "rect" not in empty

    # Re-process: no order id and no date range is refused with a sentence; a range over 1,000 is a job
    refused = client.post("/pending-payouts/reprocess", data={"csrf_token": token, "order_id": " "})
    assert refused.status_code == 422 and "needs an Order ID or an event date range" in refused.text
    bulk_actions(w, 1001, order_prefix="BIG")
    job = client.post("/pending-payouts/reprocess", data={
        "csrf_token": token, "event_date_from": "2026-11-20", "event_date_to": "2026-11-20",
        "back": "/pending-payouts/actions?event_date_from=2026-11-20"}, follow_redirects=False)
    assert job.status_code == 303
    target = job.headers["location"]
    assert re.fullmatch(r"/settings/file-submissions/R-\d+", target)  # a re-processing job (kind R)
    shown = client.get(target)
    assert shown.status_code == 200 and "runs as a job" in shown.text
