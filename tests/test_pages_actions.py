"""Pending Payouts (Actions, Reversed) and Modify Item Details: the pages of the actions.

Fast checks talk HTTP to the application (FastAPI's TestClient) with a signed-in session: the preview's
numbers, the bulk endpoint's counts, the refusals (a viewer, a post without its token), escaping and the
CSV. One browser scenario per backend drives Chromium through what a partnership manager does.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from sqlalchemy import Engine

from payoutdesk.kit import db
from payoutdesk.ledger import service as ledger
from tests.browser import Site, assert_accessible, page_client, screenshot, sign_in
from tests.helpers import World, bulk_actions, conversion

ITEMS = [{"sku": "SHIRT", "name": "Shirt", "category": "apparel", "quantity": 1, "amount": "60.00"},
         {"sku": "SOCKS", "name": "Socks", "category": "apparel", "quantity": 2, "amount": "40.00"}]
XSS_ORDER = "<script>window.pwned=1</script>"
ROW_ID = re.compile(r'<tr id="row-([0-9]+)"')
XSS_NOTE = "<img src=x onerror=\"window.pwned=2\">"


def _action(world: World, action_id: int) -> dict[str, Any]:
    with db.read(world.engine) as conn:
        return ledger.get_action(conn, world.account_id, action_id)


def _flash(response: Any) -> str:
    found = re.search(r"pd_flash=\"?([^;\"]*)", response.headers.get("set-cookie", ""))
    return unquote(found.group(1)) if found else ""


def test_modify_preview_computes_the_payout_under_the_contract(engine: Engine, world: World,
                                                               tmp_path: Path) -> None:
    client, token = page_client(world, tmp_path, "manager")
    action_id = conversion(world, "M-1", items=ITEMS)  # 100.00 at 10 %: payout 10.00
    url = f"/pending-payouts/actions/{action_id}/modify/preview"
    json_headers = {"X-CSRF-Token": token, "Accept": "application/json"}

    r = client.post(url, json={"amount": "50.00"}, headers=json_headers)
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["before"], got["after"]) == ({"amount": "100.00", "payout": "10.00"},
                                             {"amount": "50.00", "payout": "5.00"})
    assert [(i["sku"], i["amount"], i["payout"]) for i in got["items"]] == [("SHIRT", "30.00", "3.00"),
                                                                           ("SOCKS", "20.00", "2.00")]
    r = client.post(url, json={"reject": ["SOCKS"], "reason": "ITEM_RETURNED"}, headers=json_headers)
    assert r.status_code == 200 and r.json()["after"] == {"amount": "60.00", "payout": "6.00"}
    # refused as the change would be, with the rule's message
    r = client.post(url, json={"amount": "50.00", "reason": "NO_SUCH"}, headers=json_headers)
    assert r.status_code == 422 and "Unknown reason 'NO_SUCH'" in r.json()["detail"]
    r = client.post(url, json={"amount": "12.345"}, headers=json_headers)
    assert r.status_code == 422 and "Modify Sales Amount" in r.json()["detail"]
    r = client.post(url, json={"amount": "50.00"}, headers={"Accept": "application/json"})  # no token
    assert r.status_code == 403
    viewer, viewer_token = page_client(world, tmp_path, "viewer")
    r = viewer.post(url, json={"amount": "50.00"}, headers={"X-CSRF-Token": viewer_token,
                                                              "Accept": "application/json"})
    assert r.status_code == 403
    assert _action(world, action_id)["payout"] == "10.00"  # a preview writes nothing
    assert len(_action(world, action_id)["updates"]) == 1

    # the form: the new amount with one item rejected
    r = client.post(f"/pending-payouts/actions/{action_id}/modify", data={
        "csrf_token": token, "amount": "80.00", "reject": "SOCKS", "reason": "ITEM_RETURNED", "note": "returned"},
        follow_redirects=False)
    assert r.status_code == 303 and _flash(r) == f"Action {action_id} modified."
    after = _action(world, action_id)
    assert (after["amount"], after["payout"]) == ("80.00", "8.00")
    assert [(i["sku"], i["quantity"]) for i in after["items"]] == [("SHIRT", 1), ("SOCKS", 0)]
    assert after["updates"][-1]["actor"].startswith("user:") and after["updates"][-1]["channel"] == "web"

    # a locked action: preview and page refuse with the rule's message, not a 500
    with db.write(engine) as conn:
        ledger.change(conn, world.actor, action_id, ledger.wf.Approve())
    r = client.post(url, json={"amount": "50.00"}, headers=json_headers)
    assert r.status_code == 409 and "is locked" in r.json()["detail"]
    r = client.post(f"/pending-payouts/actions/{action_id}/modify", data={"csrf_token": token, "amount": "1.00"})
    assert r.status_code == 409 and "is locked" in r.text and "<!doctype html>" in r.text


def test_bulk_counts_and_refusals(engine: Engine, world: World, tmp_path: Path) -> None:
    client, token = page_client(world, tmp_path, "manager")
    pending = [conversion(world, f"K-{n}") for n in range(3)]
    final = conversion(world, "K-old", event_date="2026-09-15T10:00:00Z")  # its locking date has come
    r = client.post("/pending-payouts/bulk", data={
        "csrf_token": token, "operation": "approve", "ids": [*pending[:2], final, 999_999_999],
        "back": "/pending-payouts/actions?order_id=K"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/pending-payouts/actions?order_id=K"
    message = _flash(r)
    assert message.startswith("2 approved, 2 refused: "), message
    assert f"action {final}: Action {final} reached its locking date" in message
    assert message.endswith("action 999999999: No action with id 999999999.")
    assert [_action(world, i)["state"] for i in pending] == ["APPROVED", "APPROVED", "PENDING"]

    r = client.post("/pending-payouts/bulk", data={"csrf_token": token, "operation": "reverse",
                                                   "ids": [pending[2]], "reason": "CONS_FRAUD", "note": "n"},
                    follow_redirects=False)
    assert _flash(r) == "1 reversed."
    assert _action(world, pending[2])["status_detail"] == "CONS_FRAUD"
    # a reversal needs a reason; more than 500 are refused; without the token nothing happens
    r = client.post("/pending-payouts/bulk", data={"csrf_token": token, "operation": "reverse", "ids": [pending[2]]})
    assert r.status_code == 422 and "Choose a reason" in r.text
    r = client.post("/pending-payouts/bulk", data={"csrf_token": token, "operation": "approve",
                                                   "ids": [str(n) for n in range(1, 502)]})
    assert r.status_code == 422 and "At most 500 actions at once" in r.text
    r = client.post("/pending-payouts/bulk", data={"operation": "approve", "ids": [pending[2]]})
    assert r.status_code == 403 and _action(world, pending[2])["state"] == "REVERSED"


def test_viewer_forged_posts_escaping_and_csv(engine: Engine, world: World, tmp_path: Path) -> None:
    evil = conversion(world, XSS_ORDER, "20.00")
    other = conversion(world, "PLAIN-1", "30.00", partner=world.partners[1])
    viewer, viewer_token = page_client(world, tmp_path, "viewer")
    page = viewer.get("/pending-payouts/actions")
    assert page.status_code == 200
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in page.text and XSS_ORDER not in page.text
    for control in (">Approve<", "Reverse selected", ">Modify<", "bulk-form", "/approve", "/reverse?", "/modify",
                    "details class=\"menu\""):
        assert control not in page.text, control
    # a viewer's forged post, with a valid token: refused, nothing changes
    for path in (f"/pending-payouts/actions/{other}/approve", f"/pending-payouts/actions/{other}/reverse",
                 f"/pending-payouts/actions/{other}/modify", "/pending-payouts/bulk"):
        r = viewer.post(path, data={"csrf_token": viewer_token, "reason": "OTHER", "amount": "1.00",
                                    "operation": "approve", "ids": [other]})
        assert r.status_code == 403, path
    assert viewer.get(f"/pending-payouts/actions/{other}/modify").status_code == 403
    assert _action(world, other)["state"] == "PENDING" and len(_action(world, other)["updates"]) == 1

    manager, token = page_client(world, tmp_path, "manager")
    r = manager.post(f"/pending-payouts/actions/{other}/approve", data={"back": "/pending-payouts/actions"})
    assert r.status_code == 403 and _action(world, other)["state"] == "PENDING"  # no token
    r = manager.post(f"/pending-payouts/actions/{evil}/reverse", data={
        "csrf_token": token, "reason": "OTHER", "note": XSS_NOTE}, follow_redirects=False)
    assert r.status_code == 303 and _flash(r) == f"Action {evil} reversed."
    details = manager.get(f"/pending-payouts/actions/{evil}/details")
    assert "&lt;img src=x onerror=" in details.text and "<img" not in details.text
    full = manager.get(f"/pending-payouts/actions/{evil}")
    assert full.status_code == 200 and "&lt;script&gt;" in full.text and XSS_ORDER not in full.text
    # the Reverse form without the page's script (a page) and for its dialog (a fragment)
    form = manager.get(f"/pending-payouts/actions/{other}/reverse")
    assert form.status_code == 200 and '<h1 id="reverse-title">' in form.text and 'value="Wrong_Size"' in form.text
    part = manager.get(f"/pending-payouts/actions/{other}/reverse", params={"part": "form"})
    assert part.text.lstrip().startswith("<form") and '<h2 id="reverse-title">' in part.text
    # an unknown reason: the rule's message as a page
    r = manager.post(f"/pending-payouts/actions/{other}/reverse", data={"csrf_token": token, "reason": "NOPE"})
    assert r.status_code == 422 and "Unknown reason &#39;NOPE&#39;" in r.text

    # the CSV is exactly the filtered list
    r = manager.get("/pending-payouts/actions/export.csv", params={"state": "ALL", "partner_id": world.partners[1]})
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(int(x["action_id"]), x["order_id"]) for x in rows] == [(other, "PLAIN-1")]
    r = manager.get("/pending-payouts/reversed/export.csv")
    assert [int(x["action_id"]) for x in csv.DictReader(io.StringIO(r.text))] == [evil]
    # a bad filter is said on the page, not a 500
    r = manager.get("/pending-payouts/actions", params={"action_id": "abc", "event_date_from": "nope"})
    assert r.status_code == 200 and "Action ID must be a whole number" in r.text


def test_sorting_and_keyset_pages(engine: Engine, world: World, tmp_path: Path) -> None:
    client, _ = page_client(world, tmp_path, "viewer")
    ids = bulk_actions(world, 55)
    priced = [conversion(world, f"S-{n}", amount, partner=world.partners[1])
              for n, amount in enumerate(("30.00", "10.00", "20.00"))]
    first = client.get("/pending-payouts/actions")
    shown = [int(x) for x in ROW_ID.findall(first.text)]
    assert len(shown) == 50 and 'aria-sort="descending"' in first.text
    assert first.text.count('aria-sort=') == 1
    more = re.search(r'href="([^"]+)" rel="next">Next page', first.text)
    assert more, "no Next page link"
    second = client.get(more.group(1).replace("&amp;", "&"))
    rest = [int(x) for x in ROW_ID.findall(second.text)]
    assert sorted(shown + rest) == sorted(ids + priced) and not set(shown) & set(rest)
    assert "First page" in second.text and "Next page" not in second.text
    # sorted by sale amount, smallest first, under a partner filter; the header says so
    page = client.get("/pending-payouts/actions", params={"partner_id": world.partners[1], "sort": "amount"})
    assert [int(x) for x in ROW_ID.findall(page.text)] == [priced[1], priced[2], priced[0]]
    header = re.search(r'<th scope="col" class="num" aria-sort="ascending"><a href="([^"]+)">Sale amount', page.text)
    assert header and "sort=-amount" in header.group(1) and f"partner_id={world.partners[1]}" in header.group(1)


def test_pending_payouts_in_a_browser(browser: Any, site: Site) -> None:
    w = site.world
    plain = conversion(w, "ORDER-100", "100.00")
    to_reverse = conversion(w, "ORDER-200", "200.00", partner=w.partners[1])
    bulk_ids = [conversion(w, f"BULK-{n}", "10.00", partner=w.partners[2]) for n in range(2)]
    items = conversion(w, "ORDER-ITEMS", items=ITEMS)
    evil = conversion(w, XSS_ORDER, "5.00")
    page = sign_in(browser, site, "manager")
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    table = page.locator("table.actions-table")
    assert page.get_by_role("heading", name="Pending Payouts").is_visible()
    # the order id holding a script is shown as text and never runs
    assert page.get_by_text(XSS_ORDER).is_visible()
    assert page.evaluate("window.pwned") is None
    assert_accessible(page)
    screenshot(page, "pending-payouts")

    # filter by partner, then by order id
    page.get_by_label("Partner").select_option(label="Beta")
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url("**partner_id=**")
    assert table.locator("tbody tr:not(.details-row)").count() == 1
    assert table.get_by_text("ORDER-200").is_visible()
    page.get_by_label("Partner").select_option(label="All partners")
    page.get_by_label("Order ID").fill("ORDER-100")
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url("**order_id=ORDER-100**")
    assert [t.strip() for t in table.locator("td.order-id").all_inner_texts()] == ["ORDER-100"]

    # approve it from its drop-down
    page.get_by_role("group").filter(has_text="Change").first.locator("summary").click()
    page.get_by_role("button", name="Approve", exact=True).click()
    assert page.locator(".flash").inner_text() == f"Action {plain} approved."

    # reverse with a reason, in the dialog
    page.goto(site.at("/pending-payouts/actions?order_id=ORDER-200"))
    page.locator(f"#row-{to_reverse} details.menu summary").click()
    page.get_by_role("link", name="Reverse", exact=True).click()
    dialog = page.locator("#reverse-dialog")
    dialog.get_by_label("Reason").wait_for()
    assert_accessible(page)
    dialog.get_by_label("Reason").select_option("CONS_FRAUD")
    dialog.get_by_label("Note (optional)").fill(XSS_NOTE)
    dialog.get_by_role("button", name="Reverse").click()
    assert page.locator(".flash").inner_text() == f"Action {to_reverse} reversed."

    # the Reversed tab: filter by the reversal reason, expand the row (its history shows the note as text)
    page.get_by_role("link", name="Reversed", exact=True).click()
    page.get_by_label("Reversal Reason").select_option("CONS_FRAUD")
    page.get_by_role("button", name="Apply filters").click()
    row = page.locator(f"#row-{to_reverse}")
    assert row.get_by_text("Consumer fraud").is_visible()
    row.get_by_role("button", name=f"Details of action {to_reverse}").click()
    details = page.locator(f"#details-{to_reverse}")
    details.get_by_text(XSS_NOTE).wait_for()
    assert details.get_by_role("cell", name=f"user:{site.users['manager']}").first.is_visible()
    assert row.get_by_role("button", name=f"Details of action {to_reverse}").get_attribute("aria-expanded") == "true"
    assert page.evaluate("window.pwned") is None
    assert_accessible(page)
    screenshot(page, "reversed")
    # restore: Approve on the reversed action
    row.locator("details.menu summary").click()
    row.get_by_role("button", name="Approve (restore)").click()
    assert page.locator(".flash").inner_text() == f"Action {to_reverse} restored (pending again)."
    assert _action(w, to_reverse)["state"] == "PENDING"
    page.goto(site.at(f"/pending-payouts/actions/{to_reverse}"))  # the action's own page (without script)
    assert page.get_by_role("cell", name="Restored").is_visible()
    assert_accessible(page)

    # the Actions tab, expanded row
    page.goto(site.at("/pending-payouts/actions?order_id=ORDER-ITEMS"))
    page.get_by_role("button", name=f"Details of action {items}").click()
    page.locator(f"#details-{items}").get_by_role("cell", name="SOCKS", exact=True).wait_for()
    assert_accessible(page)
    screenshot(page, "pending-payouts-expanded")

    # Modify Item Details: the preview changes as one types, then Modify; then reject one item
    page.locator(f"#row-{items} details.menu summary").click()
    page.get_by_role("link", name="Modify", exact=True).click()
    page.wait_for_url(f"**/actions/{items}/modify**")
    from playwright.sync_api import expect

    expect(page.locator("#payout-after")).to_have_text("10.00")
    page.get_by_label("Modify Sales Amount (USD)").fill("50.00")
    expect(page.locator("#payout-after")).to_have_text("5.00")
    page.get_by_label("Reason for Modification/Rejection").select_option("Wrong_Size")
    page.get_by_label("Modify Sales Amount (USD)").fill("50.0001")
    page.locator("#preview-error").get_by_text("Modify Sales Amount").wait_for()
    page.get_by_label("Modify Sales Amount (USD)").fill("50.00")
    expect(page.locator("#payout-after")).to_have_text("5.00")
    assert_accessible(page)
    screenshot(page, "modify-item-details")
    page.get_by_role("button", name="Modify", exact=True).click()
    assert page.locator(".flash").inner_text() == f"Action {items} modified."
    assert _action(w, items)["payout"] == "5.00"
    page.goto(site.at(f"/pending-payouts/actions/{items}/modify"))
    page.get_by_label("Reject item SOCKS").check()
    expect(page.locator("#payout-after")).to_have_text("3.00")
    page.get_by_role("button", name="Modify", exact=True).click()
    assert page.locator(".flash").inner_text() == f"Action {items} modified."
    assert [(i["sku"], i["quantity"]) for i in _action(w, items)["items"]] == [("SHIRT", 1), ("SOCKS", 0)]

    # bulk approve two rows
    page.goto(site.at(f"/pending-payouts/actions?partner_id={w.partners[2]}"))
    assert page.locator("input.pick").count() == 2
    page.get_by_label("Select all on this page").check()
    page.get_by_role("button", name="Approve selected").click()
    assert page.locator(".flash").inner_text() == "2 approved."
    assert {_action(w, i)["state"] for i in bulk_ids} == {"APPROVED"}

    # Download as CSV: the rows of the filtered list
    page.goto(site.at(f"/pending-payouts/actions?state=ALL&partner_id={w.partners[2]}"))
    with page.expect_download() as got:
        page.get_by_role("link", name="Download as CSV").click()
    text = Path(got.value.path()).read_text()
    shown = sorted(int(t) for t in page.locator("table.actions-table tbody tr td:nth-child(2) a").all_inner_texts())
    assert sorted(int(r["action_id"]) for r in csv.DictReader(io.StringIO(text))) == shown == sorted(bulk_ids)

    # a viewer sees no change control
    viewer = sign_in(browser, site, "viewer")
    assert viewer.get_by_text(XSS_ORDER).is_visible()
    for name in ("Approve selected", "Reverse selected", "Change"):
        assert viewer.get_by_role("button", name=name).count() == 0
    assert viewer.locator("details.menu").count() == 0
    r = viewer.request.post(site.at(f"/pending-payouts/actions/{evil}/approve"),
                            form={"csrf_token": viewer.locator('meta[name="csrf-token"]').get_attribute("content")})
    assert r.status == 403 and _action(w, evil)["state"] == "PENDING"
    assert not dialogs and viewer.evaluate("window.pwned") is None
    viewer.context.close()
    page.context.close()
