"""Settings → Technical → File Submissions in a real browser (both databases), and fast checks of the
upload's refusals through TestClient: a returns file uploaded with a dry run, its preview, applied, its
progress watched to the end, its errors and original file downloaded, undone; a viewer changes nothing."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from playwright.sync_api import expect
from sqlalchemy import Engine

from payoutdesk.kit import db
from payoutdesk.kit.time import utcnow
from payoutdesk.submissions import repository as repo
from payoutdesk.submissions import service as submissions
from tests.browser import assert_accessible, page_client, screenshot, sign_in, wait_until
from tests.helpers import World, conversion, drain, make_world

BASE = "/settings/file-submissions"


def _action(url: str, world: World, action_id: int) -> dict[str, Any]:
    answer = httpx.get(f"{url}/api/v1/actions/{action_id}", headers=world.auth, timeout=10)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _held_elsewhere(w: World) -> str:
    """A submission that another worker holds (its lease runs for years): in progress, 2 of 10 rows done."""
    now = utcnow()
    with db.write(w.engine) as conn:
        sid = repo.insert_submission(conn, {
            "account_id": w.account_id, "campaign_id": w.campaign_id, "kind": "F", "channel": "ftp",
            "actor": "ftp:brand", "file_name": "slow.csv", "content_type": "text/csv", "size": 1, "sha256": "0" * 64,
            "dry_run": False, "force": False, "status": "IN_PROGRESS", "total_records": 10, "processed_records": 2,
            "applied": 2, "unchanged": 0, "errors": 0, "amount_delta": 0, "payout_delta": 0, "created_at": now,
            "started_at": now, "claimed_by": "elsewhere", "lease_until": now + timedelta(days=3650)})
    return f"F-{sid}"


def _set(w: World, label: str, **values: Any) -> None:
    with db.write(w.engine) as conn:
        repo.set_status(conn, int(label[2:]), **values)


def _wait_complete(page: Any) -> None:
    """The submission's page reloads itself when its submission ends."""
    page.locator("#sub-status", has_text=re.compile("^(Complete|Failed)$")).wait_for(timeout=20_000)
    assert page.locator("#sub-status").inner_text() == "Complete"


def test_upload_dry_run_apply_undo_in_the_browser(browser: Any, site: Any, tmp_path: Path) -> None:
    w = site.world
    a = conversion(w, "R-1", "100.00")
    b = conversion(w, "R-2", "50.00")
    c = conversion(w, "R-3", "80.00")
    # a submission from another channel: JSON rows through the API
    api = httpx.post(site.at("/api/v1/submissions"), headers=w.auth, timeout=10,
                     json={"campaign_id": w.campaign_id, "rows": [{"ActionId": c, "Amount": "80.00",
                                                                   "Reason": "ORDER_UPDATE"}]})
    assert api.status_code == 202, api.text
    api_id = api.json()["id"]
    body = (f"ActionId,Amount,Reason\r\n{a},60.00,ORDER_UPDATE\r\n{b},0,ITEM_RETURNED\r\n"
            "987654321,10.00,ORDER_UPDATE\r\n")
    upload = tmp_path / "returns-november.csv"
    upload.write_bytes(body.encode())

    page = sign_in(browser, site, "manager")
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(site.at(BASE))
    assert page.locator(f'a[href="{BASE}/{api_id}"]').count() == 1  # every channel is listed
    assert page.locator(f'tr[data-id="{api_id}"]').inner_text().count("API rows") == 1
    page.get_by_label("Campaign").select_option(str(w.campaign_id))
    page.get_by_label("File", exact=True).set_input_files(str(upload))
    assert page.get_by_label("Dry run first").is_checked()
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url(re.compile(r"/settings/file-submissions/F-\d+$"))
    dry_id = page.url.rsplit("/", 1)[1]
    _wait_complete(page)
    preview = page.locator(".note-box").inner_text()
    assert "dry run" in preview and "would apply: 2" in preview and "with errors: 1" in preview
    assert "-9.00 USD" in page.locator(".payout-change").inner_text()
    assert "unknown_action" in page.locator(".errors-table").inner_text()
    assert page.get_by_role("heading", name="What each row would do").is_visible()
    assert "Reversed" in page.locator(".results-table").inner_text()
    assert _action(site.url, w, a)["amount"] == "100.00" and _action(site.url, w, b)["state"] == "PENDING"
    assert_accessible(page)
    screenshot(page, "file-submission-dry-run")

    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"/settings/file-submissions/F-\d+$"))
    real_id = page.url.rsplit("/", 1)[1]
    assert real_id != dry_id
    _wait_complete(page)
    assert page.get_by_role("heading", name="What each row did").is_visible()
    got_a, got_b = _action(site.url, w, a), _action(site.url, w, b)
    assert got_a["amount"] == "60.00" and got_a["payout"] == "6.00"
    assert got_b["state"] == "REVERSED" and got_b["payout"] == "0.00"

    with page.expect_download() as errors_download:
        page.get_by_role("link", name="Download errors as CSV").click()
    text = Path(errors_download.value.path()).read_text(encoding="utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["Row", "ActionId", "OrderId", "Column", "Type", "Code", "Message"]
    assert len(rows) == 2 and rows[1][0] == "3" and rows[1][5] == "unknown_action" and "987654321" in rows[1][6]
    with page.expect_download() as original:
        page.get_by_role("link", name="Download original file").click()
    assert Path(original.value.path()).read_bytes() == body.encode()
    assert original.value.suggested_filename == "returns-november.csv"

    page.get_by_role("button", name="Undo").click()
    page.wait_for_url(re.compile(r"/settings/file-submissions/A-\d+$"))
    undo_id = page.url.rsplit("/", 1)[1]
    _wait_complete(page)
    got_a, got_b = _action(site.url, w, a), _action(site.url, w, b)
    assert got_a["amount"] == "100.00" and got_a["payout"] == "10.00"
    assert got_b["state"] == "PENDING" and got_b["amount"] == "50.00"
    assert_accessible(page)

    page.goto(site.at(BASE))
    listed = [page.locator("tbody tr").nth(i).get_attribute("data-id") for i in range(4)]
    assert listed == [undo_id, real_id, dry_id, api_id]  # newest first
    assert page.locator(f'tr[data-id="{undo_id}"]').inner_text().count("Undo") == 1
    assert "Dry run" in page.locator(f'tr[data-id="{dry_id}"]').inner_text()
    assert_accessible(page)
    screenshot(page, "file-submissions")

    # live progress: a submission another worker holds moves, the list's bar follows it; its own page
    # reloads when it ends
    running = _held_elsewhere(w)
    page.goto(site.at(BASE))
    row = page.locator(f'tr[data-id="{running}"]')
    assert row.locator("progress").get_attribute("value") == "2" and "In progress" in row.inner_text()
    _set(w, running, processed_records=7, applied=6, errors=1)
    expect(row.locator('[data-field="processed_records"]')).to_have_text("7")
    assert row.locator("progress").evaluate("bar => bar.value") == 7
    assert row.locator('[data-field="applied"]').inner_text() == "6"
    page.goto(site.at(f"{BASE}/{running}"))
    assert page.locator("progress").get_attribute("max") == "10"
    _set(w, running, status="COMPLETE", processed_records=10, applied=9, finished_at=utcnow(), claimed_by=None)
    _wait_complete(page)
    assert page.locator("progress").count() == 0
    page.goto(site.at(BASE))
    assert page.locator(f'tr[data-id="{running}"] progress').count() == 0
    page.context.close()

    viewer = sign_in(browser, site, "viewer")
    viewer.goto(site.at(BASE))
    assert viewer.get_by_role("link", name=dry_id).is_visible()
    assert viewer.locator("input[type=file]").count() == 0 and viewer.get_by_role("button", name="Upload").count() == 0
    viewer.goto(site.at(f"{BASE}/{dry_id}"))
    assert viewer.get_by_role("button", name="Apply").count() == 0
    viewer.goto(site.at(f"{BASE}/{real_id}"))
    assert viewer.get_by_role("button", name="Undo").count() == 0
    assert viewer.get_by_role("link", name="Download original file").count() == 1
    token = viewer.locator('meta[name="csrf-token"]').get_attribute("content")
    forged = viewer.request.post(site.at(f"{BASE}/{real_id}/undo"), form={"csrf_token": token})
    assert forged.status == 403
    forged = viewer.request.post(site.at(BASE), multipart={
        "csrf_token": token, "campaign_id": str(w.campaign_id),
        "file": {"name": "x.csv", "mimeType": "text/csv", "buffer": body.encode()}})
    assert forged.status == 403
    viewer.context.close()
    wait_until(lambda: _action(site.url, w, a)["amount"] == "100.00")  # nothing the viewer did changed it


# --- fast checks (TestClient) ---------------------------------------------------------------------


def _signed_in(engine: Engine, tmp_path: Path, role: str = "manager", **env: str) -> tuple[TestClient, World, str]:
    """A client signed in to the pages as ``role`` of a new tenant; the form token."""
    w = make_world(engine)
    client, token = page_client(w, tmp_path, role, **env)
    return client, w, token


def _upload(client: TestClient, token: str, campaign_id: int, data: bytes, *, name: str = "r.csv",
            dry_run: bool = True) -> httpx.Response:
    fields = {"csrf_token": token, "campaign_id": str(campaign_id)}
    if dry_run:
        fields["dry_run"] = "true"
    answer: httpx.Response = client.post(BASE, data=fields, files={"file": (name, data, "text/csv")},
                                         follow_redirects=False)
    return answer


def _queued(engine: Engine, w: World) -> list[dict[str, Any]]:
    with db.read(engine) as conn:
        return list(submissions.list_latest(conn, w.account_id)["items"])


def test_upload_refusals_are_pages_and_queue_nothing(engine: Engine, tmp_path: Path) -> None:
    client, w, token = _signed_in(engine, tmp_path, PAYOUTDESK_MAX_FILE_MB="1")
    other = make_world(engine)
    good = b"ActionId,Amount,Reason\n1,10.00,ORDER_UPDATE\n"
    cases = [
        (_upload(client, token, w.campaign_id, b""), 422, "The file is empty."),
        (_upload(client, token, w.campaign_id, b"\x00\x01\x02binary\xff"), 422, ""),
        (_upload(client, token, w.campaign_id, b"Amount,Note\n1,x\n"), 422, "Reason"),
        (_upload(client, token, other.campaign_id, good), 404, "campaign"),
        (_upload(client, token, w.campaign_id, b"x" * (1024 * 1024 + 10)), 413, "1 MB"),
        (_upload(client, token, w.campaign_id, b"x" * (3 * 1024 * 1024)), 413, "1 MB"),  # refused by the body limit
        (_upload(client, "forged", w.campaign_id, good), 403, "expired"),
    ]
    for answer, status, words in cases:
        assert answer.status_code == status, (status, answer.text[:500])
        assert answer.headers["content-type"].startswith("text/html")
        assert words in answer.text
    assert _queued(engine, w) == []
    # the page escapes what the file's name says
    sent = _upload(client, token, w.campaign_id, good, name="<script>x</script>.csv")
    assert sent.status_code == 303
    shown = client.get(sent.headers["location"])
    assert "<script>x</script>" not in shown.text and "&lt;script&gt;x&lt;/script&gt;.csv" in shown.text


def test_apply_twice_is_a_duplicate(engine: Engine, tmp_path: Path) -> None:
    client, w, token = _signed_in(engine, tmp_path)
    a = conversion(w, "D-1", "100.00")
    sent = _upload(client, token, w.campaign_id, f"ActionId,Amount,Reason\n{a},70.00,ORDER_UPDATE\n".encode())
    assert sent.status_code == 303, sent.text
    dry = sent.headers["location"].rsplit("/", 1)[1]
    early = client.post(f"{BASE}/{dry}/apply", data={"csrf_token": token}, follow_redirects=False)
    assert early.status_code == 409 and "COMPLETE" in early.text  # not yet run
    drain(engine)
    progress = client.get(f"{BASE}/{dry}/progress").json()
    assert progress["status"] == "COMPLETE" and progress["applied"] == 1 and progress["payout_delta"] == "-3.00"
    assert client.get(f"{BASE}/live?ids={dry},F-999999").json()["items"][0]["id"] == dry
    first = client.post(f"{BASE}/{dry}/apply", data={"csrf_token": token}, follow_redirects=False)
    assert first.status_code == 303, first.text
    real = first.headers["location"].rsplit("/", 1)[1]
    again = client.post(f"{BASE}/{dry}/apply", data={"csrf_token": token}, follow_redirects=False)
    assert again.status_code == 409 and "already submitted" in again.text and real in again.text
    assert "submitted for real as" in client.get(f"{BASE}/{dry}").text  # no Apply button any more
    direct = _upload(client, token, w.campaign_id, f"ActionId,Amount,Reason\n{a},70.00,ORDER_UPDATE\n".encode(),
                     dry_run=False)
    assert direct.status_code == 409 and real in direct.text and "Submit even if" in direct.text
    assert len(_queued(engine, w)) == 2
    drain(engine)
    assert client.get(f"{BASE}/{real}/progress").json()["status"] == "COMPLETE"
    # the dry run and the real submission share one stored file: both download it
    assert client.get(f"{BASE}/{dry}/file").content == client.get(f"{BASE}/{real}/file").content
    assert client.post(f"{BASE}/{real}/undo", data={}, follow_redirects=False).status_code == 403  # no token
    other_client, _, other_token = _signed_in(engine, tmp_path)
    assert other_client.get(f"{BASE}/{real}").status_code == 404  # another account's submission
    assert other_client.post(f"{BASE}/{real}/undo", data={"csrf_token": other_token},
                             follow_redirects=False).status_code == 404
