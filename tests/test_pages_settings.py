"""Settings → Tracking → Event Types with Returns Processing, Contracts and Users: in a real browser (both
databases) an admin switches the returns processing option and sees the FTP login and the e-mail address
appear, configures a pull whose password is never shown back and runs it against a closed port; managers
and viewers see no edit control and a forged post is refused. Fast checks through TestClient: refusals keep
the posted values, every option saves, escaping, roles, the contracts' terms, the users page."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from payoutdesk.accounts.service import add_user, verify_password
from payoutdesk.catalog import service as catalog
from payoutdesk.intake import remote
from payoutdesk.kit import db
from payoutdesk.kit.crypto import SecretBox
from payoutdesk.models import campaigns, event_types, users
from tests.browser import PASSWORD, Site, assert_accessible, page_client, screenshot, sign_in
from tests.helpers import free_port, make_world

CSRF = re.compile(r'name="csrf-token" content="([^"]+)"')


def _event_type(engine: Engine, event_type_id: int) -> Any:
    with db.read(engine) as conn:
        return conn.execute(select(event_types).where(event_types.c.id == event_type_id)).one()


def _campaign(engine: Engine, campaign_id: int) -> Any:
    with db.read(engine) as conn:
        return conn.execute(select(campaigns).where(campaigns.c.id == campaign_id)).one()


# --- in the browser ---------------------------------------------------------------------------------


def _forged_post(page: Any, site: Site, path: str, form: dict[str, str]) -> int:
    """A post with the page's own form token, as a script of a signed-in user could send it."""
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    answer = page.request.post(site.at(path), form={"csrf_token": token, **form}, max_redirects=0)
    return int(answer.status)


def test_returns_processing_in_the_browser(browser: Any, site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote, "CONNECT_DELAYS", (0.0, 0.0))  # a closed port is refused at once: no waiting
    w = site.world
    engine = w.engine
    login = _campaign(engine, w.campaign_id).ftp_username
    page = sign_in(browser, site, "admin")

    # the list: each event type with its returns processing, and View / Edit
    page.goto(site.at("/settings/event-types"))
    table = page.locator("table.data")
    assert "Online Sale" in table.inner_text() and "Lead" in table.inner_text()
    page.get_by_role("link", name="View / Edit Online Sale").click()
    page.wait_for_url(f"**/settings/event-types/{w.sale}")
    assert "Wrong_Size" in page.content() and "Manual" in page.locator("table.settings-table").inner_text()

    # our FTP server: the login appears; the password is set and never shown back
    page.get_by_role("link", name="Edit Returns Processing").click()
    page.wait_for_url("**/returns-processing")
    assert not page.locator("#fields-ftp_pull").is_visible()  # only the chosen option's settings are shown
    page.get_by_label("Upload to our FTP server").check()
    assert page.locator("#fields-ftp_upload").is_visible() and not page.locator("#fields-email").is_visible()
    page.get_by_label("New FTP password").fill("ftp-secret-123")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(f"**/settings/event-types/{w.sale}")
    assert page.get_by_test_id("ftp-login").inner_text() == login
    assert "The FTP password was changed." in page.locator(".flash").inner_text()
    assert "ftp-secret-123" not in page.content()
    assert verify_password(_campaign(engine, w.campaign_id).ftp_password_hash, "ftp-secret-123")

    # e-mail: the campaign's address appears, with the allowed senders
    page.get_by_role("link", name="Edit Returns Processing").click()
    page.get_by_label("E-mail to our SMTP server").check()
    page.get_by_label("Allowed senders").fill("returns@brand.example")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(f"**/settings/event-types/{w.sale}")
    address = page.get_by_test_id("returns-email").inner_text()
    assert re.fullmatch(r"returns-[0-9a-f]{24}@\S+", address), address
    assert "returns@brand.example" in page.content()

    # a pull from the brand's SFTP server, with a password: "set", never shown; "Run now" fails clearly
    closed = free_port()
    page.get_by_role("link", name="Edit Returns Processing").click()
    page.get_by_label("Pull from your FTP server").check()
    page.get_by_label("Protocol").select_option("sftp")
    page.get_by_label("Host").fill("127.0.0.1")
    page.get_by_label("Port").fill(str(closed))
    page.get_by_label("User", exact=True).fill("payoutdesk")
    page.locator("#pull_password").fill("pull-secret-987")
    page.get_by_label("Folder", exact=True).fill("/outgoing")
    page.get_by_label("File pattern").fill("returns_*.csv")
    page.get_by_label("Every few hours").check()
    page.get_by_label("Every … hours").fill("4")
    page.get_by_label("The file on your server").select_option("move")
    page.get_by_label("Move to folder").fill("done")
    page.get_by_label("Write a receipt").check()
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(f"**/settings/event-types/{w.sale}")
    assert "pull-secret-987" not in page.content()
    settings = json.loads(_event_type(engine, w.sale).returns_settings)
    assert settings["host"] == "127.0.0.1" and settings["port"] == closed and settings["schedule"] == {"every_hours": 4}
    assert settings["after"] == "move" and settings["move_to"] == "done" and settings["write_receipts"] is True
    assert "pull-secret-987" not in settings["password"]  # sealed at rest
    assert_accessible(page)
    screenshot(page, "event-type")

    page.get_by_role("link", name="Edit Returns Processing").click()
    page.wait_for_url("**/returns-processing")
    assert page.locator("#pull_password").input_value() == "" and "pull-secret-987" not in page.content()
    assert page.locator("#pull_password-hint").inner_text().startswith("Set")
    assert page.get_by_label("Host").input_value() == "127.0.0.1"
    page.get_by_role("button", name="Run now").click()
    page.wait_for_url("**/returns-processing?run=*")
    result = page.locator(".run-result").inner_text()
    assert result.startswith("The run failed") and f"127.0.0.1 on port {closed}" in result, result
    first_run = page.locator("table.runs tbody tr").first
    assert "Failed" in first_run.inner_text() and "Could not connect" in first_run.inner_text()
    assert_accessible(page)
    screenshot(page, "returns-processing")

    # the list shows the last run of each event type's channel
    page.goto(site.at("/settings/event-types"))
    row = page.locator("tr", has_text="Online Sale")
    assert "Pull from your FTP server" in row.inner_text() and "Failed" in row.inner_text()
    assert_accessible(page)
    screenshot(page, "event-types")

    # contracts: the world's terms, read-only
    page.goto(site.at("/contracts"))
    text = page.locator("table.data").inner_text()
    for term in ("Online Sale: 10 %", "Lead: 2.50 USD fixed", "Lock after 27 days", "Pay after 20 days", "30 days"):
        assert term in text, term
    page.get_by_label("Partner").select_option(label="Beta")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/contracts?partner=*")
    rows = page.locator("table.data tbody tr")
    assert rows.count() == 1 and "Beta" in rows.first.inner_text()
    assert_accessible(page)
    screenshot(page, "contracts")
    page.goto(site.at("/settings/users"))
    assert site.users["viewer"] in page.locator("table.data").inner_text()
    assert_accessible(page)
    screenshot(page, "users")
    page.context.close()

    # a manager and a viewer: the settings without any edit control; a forged post is refused, nothing changes
    for role in ("manager", "viewer"):
        other = sign_in(browser, site, role)
        other.goto(site.at(f"/settings/event-types/{w.sale}"))
        assert "Pull from your FTP server" in other.locator("table.settings-table").inner_text()
        assert other.get_by_role("link", name="Edit Returns Processing").count() == 0
        assert other.get_by_role("button", name="Run now").count() == 0
        assert other.locator("form[action*='returns-processing']").count() == 0
        path = f"/settings/event-types/{w.sale}/returns-processing"
        assert _forged_post(other, site, path, {"mode": "manual"}) == 403
        assert _forged_post(other, site, path + "/run", {}) == 403
        assert _event_type(engine, w.sale).returns_mode == "ftp_pull"
        assert other.goto(site.at(path)).status == 403
        other.context.close()


# --- fast checks ------------------------------------------------------------------------------------


def _post(client: TestClient, path: str, data: dict[str, str]) -> Any:
    return client.post(path, data=data, follow_redirects=False)


def test_every_option_saves_and_refusals_keep_the_form(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    client, csrf = page_client(w, tmp_path, "admin")
    path = f"/settings/event-types/{w.sale}/returns-processing"
    base = {"csrf_token": csrf}

    # a refusal: the rule's message beside the form, the posted values kept, never the secret
    r = _post(client, path, {**base, "mode": "ftp_pull", "pull_username": "brand-user",
                             "pull_password": "hidden-pw-1", "pull_folder": '/x"><script>alert(1)</script>'})
    assert r.status_code == 422 and "Host is required for this mode." in r.text
    assert 'value="brand-user"' in r.text and "hidden-pw-1" not in r.text
    assert 'value="/x&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in r.text and "<script>alert" not in r.text
    assert _event_type(engine, w.sale).returns_mode == "manual"
    r = _post(client, path, {**base, "mode": "ftp_pull", "pull_host": "h.example", "pull_username": "u",
                             "pull_port": "port 22"})
    assert r.status_code == 422 and "The port must be a whole number." in r.text
    r = _post(client, path, {**base, "mode": "ftp"})
    assert r.status_code == 422 and "Choose a Returns Processing option." in r.text
    r = _post(client, path, {**base, "mode": "ftp_upload", "ftp_password": "short"})
    assert r.status_code == 422 and "at least 8 characters" in r.text
    assert _event_type(engine, w.sale).returns_mode == "manual"  # the transaction did both or neither

    # a pull with a password: stored sealed, shown as "Set"; saved again without it, it is kept
    r = _post(client, path, {**base, "mode": "ftp_pull", "pull_protocol": "ftps", "pull_host": "files.brand.example",
                             "pull_username": "u", "pull_password": "hidden-pw-2", "pull_schedule": "daily_at",
                             "pull_daily_at": "03:30", "pull_after": "delete", "pull_write_results": "on"})
    assert r.status_code == 303 and r.headers["location"] == f"/settings/event-types/{w.sale}"
    page = client.get(f"/settings/event-types/{w.sale}").text
    assert "hidden-pw-2" not in page and "Daily at 03:30 UTC" in page and "Delete it" in page
    assert "FTPS (explicit TLS)" in page and "files.brand.example:21" in page
    sealed = json.loads(_event_type(engine, w.sale).returns_settings)["password"]
    r = _post(client, path, {**base, "mode": "ftp_pull", "pull_protocol": "ftps", "pull_host": "files.brand.example",
                             "pull_username": "u2", "pull_schedule": "daily_at", "pull_daily_at": "04:00"})
    assert r.status_code == 303
    assert json.loads(_event_type(engine, w.sale).returns_settings)["password"] == sealed
    edit = client.get(path).text
    assert "hidden-pw-2" not in edit and 'value="u2"' in edit and "Set</span>" in edit

    # e-mail with allowed senders; salesforce with its mapping and the outbound message address
    r = _post(client, path, {**base, "mode": "email", "email_allowed_senders": "a@brand.example, B@brand.example"})
    assert r.status_code == 303
    stored = json.loads(_event_type(engine, w.sale).returns_settings)
    assert stored == {"allowed_senders": ["a@brand.example", "b@brand.example"]}
    token = _campaign(engine, w.campaign_id).returns_token
    assert f"returns-{token}@" in client.get(f"/settings/event-types/{w.sale}").text
    sf = {**base, "mode": "salesforce", "sf_object": "Opportunity", "sf_order_id_field": "Order_Id__c",
          "sf_status_field": "StageName", "sf_amount_field": "Amount",
          "sf_status_0": "Closed Lost", "sf_operation_0": "reverse", "sf_reason_0": "CONS_FRAUD",
          "sf_status_1": "Closed Won", "sf_operation_1": "approve", "sf_reason_1": "",
          "sf_status_2": "", "sf_operation_2": "approve", "sf_reason_2": "",
          "sf_username": "sf@brand.example", "sf_password": "sf-pw-3", "sf_security_token": "tok-4",
          "sf_poll_every_minutes": "15", "sf_organization_id": "00D5g000000AbCd"}
    r = _post(client, path, {**sf, "sf_operation_1": "modify", "sf_amount_field": ""})
    assert r.status_code == 422 and 'value="Closed Lost"' in r.text
    assert "Status &#39;Closed Won&#39; modifies the amount: an Amount field is required." in r.text
    assert "sf-pw-3" not in r.text and "tok-4" not in r.text
    assert _post(client, path, sf).status_code == 303
    row = _event_type(engine, w.sale)
    page = client.get(f"/settings/event-types/{w.sale}").text
    assert f"/salesforce/outbound/{row.outbound_token}" in page and "Closed Lost → Reverse (CONS_FRAUD)" in page
    assert "sf-pw-3" not in page and "tok-4" not in page and "Every 15 minutes" in page
    assert "sf-pw-3" not in client.get(path).text

    # "Run now" of a mode without a run of its own: a message, nothing else
    assert _post(client, path, {**base, "mode": "manual"}).status_code == 303
    r = _post(client, path + "/run", {**base, "back": "edit"})
    assert r.status_code == 303 and r.headers["location"] == path
    assert "Not run" in client.get(path).text
    r = _post(client, path + "/run", base)  # from the event type's page: back there
    assert r.status_code == 303 and r.headers["location"] == f"/settings/event-types/{w.sale}"
    assert "The run" not in client.get(path + "?run=1").text  # not a run of this event type: nothing shown

    # what a brand typed is shown as text
    with db.write(engine) as conn:
        catalog.patch_event_type(conn, w.actor, w.lead, {"name": "<script>alert(1)</script>"}, SecretBox("test-secret"))
    listing = client.get("/settings/event-types").text
    assert "<script>alert(1)" not in listing and "&lt;script&gt;alert(1)&lt;/script&gt;" in listing
    # another account's event type, and ids that name nothing
    other = make_world(engine)
    for bad in (str(other.sale), "99999999999", "abc"):
        assert client.get(f"/settings/event-types/{bad}").status_code == 404
        r = _post(client, f"/settings/event-types/{bad}/returns-processing", {**base, "mode": "manual"})
        assert r.status_code == 404
    assert _event_type(engine, other.sale).returns_mode == "manual"


def test_only_admins_change_settings(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    path = f"/settings/event-types/{w.sale}/returns-processing"
    admin, _ = page_client(w, tmp_path, "admin")
    assert _post(admin, path, {"mode": "manual"}).status_code == 403  # without the form token
    assert _post(admin, path, {"csrf_token": "forged", "mode": "email"}).status_code == 403
    for role in ("manager", "viewer"):
        client, csrf = page_client(w, tmp_path, role)
        page = client.get(f"/settings/event-types/{w.sale}")
        assert page.status_code == 200 and "Returns Processing" in page.text
        assert "/returns-processing" not in page.text and "Run now" not in page.text
        assert client.get(path).status_code == 403
        assert _post(client, path, {"csrf_token": csrf, "mode": "email"}).status_code == 403
        assert _post(client, path + "/run", {"csrf_token": csrf}).status_code == 403
        assert client.get("/settings/users").status_code == 403
        assert _post(client, "/settings/users", {"csrf_token": csrf, "email": "x@brand.example", "role": "admin",
                                                 "password": "long enough"}).status_code == 403
        assert "Online Sale" in client.get("/settings/event-types").text
        assert "Lock after 27 days" in client.get("/contracts").text
    assert _event_type(engine, w.sale).returns_mode == "manual"


def test_contracts_and_users(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    later = None
    with db.write(engine) as conn:  # Alpha's second contract ends the first
        later = catalog.create_contract(conn, w.actor, {
            "campaign_id": w.campaign_id, "partner_id": w.partners[0], "starts_on": "2026-06-01",
            "payout": [{"event_type_id": w.sale, "percent": "12.5"}], "category_percent": {"shoes": "5"},
            "lock_after": {"months": 1, "days": 0}, "pay_after": {"months": 0, "days": 1},
            "referral_window_days": 7})
    assert later
    client, csrf = page_client(w, tmp_path, "admin")
    page = client.get(f"/contracts?partner={w.partners[0]}").text
    assert page.count("<tr>") == 3  # the head and Alpha's two contracts
    assert "2026-05-31" in page and "12.5 %" in page and "Category shoes: <strong>5 %" in page
    assert "Lock after 1 month" in page and "Pay after 1 day" in page and "7 days" in page
    assert "No contract for this partner." in client.get("/contracts?partner=99999").text
    assert "No contract for this partner." in client.get("/contracts?partner=x").text

    r = _post(client, "/settings/users", {"csrf_token": csrf, "email": "new@brand.example", "role": "manager",
                                          "password": "long enough"})
    assert r.status_code == 303
    r = _post(client, "/settings/users", {"csrf_token": csrf, "email": "new@brand.example", "role": "viewer",
                                          "password": "long enough"})
    assert r.status_code == 409 and "exists already" in r.text and 'value="new@brand.example"' in r.text
    with db.read(engine) as conn:
        new = conn.execute(select(users).where(users.c.email == "new@brand.example")).one()
        me = conn.execute(select(users).where(users.c.account_id == w.account_id, users.c.role == "admin")).one()
    assert new.role == "manager"
    assert _post(client, f"/settings/users/{new.id}/role", {"csrf_token": csrf, "role": "viewer"}).status_code == 303
    assert _post(client, f"/settings/users/{me.id}/role", {"csrf_token": csrf, "role": "viewer"}).status_code == 409
    other = make_world(engine)
    with db.write(engine) as conn:
        add_user(conn, other.sid, "stranger@other.example", "viewer", PASSWORD)
        stranger = conn.execute(select(users).where(users.c.email == "stranger@other.example")).one()
    r = _post(client, f"/settings/users/{stranger.id}/role", {"csrf_token": csrf, "role": "admin"})
    assert r.status_code == 404
    with db.read(engine) as conn:
        roles = {r.email: r.role for r in conn.execute(select(users.c.email, users.c.role))}
    assert roles["new@brand.example"] == "viewer" and roles["stranger@other.example"] == "viewer"
    assert roles[me.email] == "admin"
    assert "stranger@other.example" not in client.get("/settings/users").text
