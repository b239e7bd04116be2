"""The impact.com-compatible API: impact's paths, parameter names and shapes (docs/COMPAT.md)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from payoutdesk.kit import db
from payoutdesk.ledger import service as ledger
from payoutdesk.ledger import workflow as wf
from payoutdesk.models import submissions
from tests.helpers import World, conversion, drain, make_world

D = Decimal  # money read exactly from a JSON answer

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def base(w: World) -> str:
    return f"/Advertisers/{w.sid}"


def put(api: TestClient, w: World, body: str, **kw: Any) -> Any:
    return api.put(f"{base(w)}/Actions", content=body, headers={**w.auth, **FORM, **kw.pop("headers", {})}, **kw)


def delete(api: TestClient, w: World, body: str) -> Any:
    return api.request("DELETE", f"{base(w)}/Actions", content=body, headers={**w.auth, **FORM})


def queued(r: Any, w: World) -> str:
    """Check impact.com's queued answer; returns the QueuedUri."""
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["Status"] == "QUEUED"
    uri = str(body["QueuedUri"])
    assert uri.startswith(f"/Advertisers/{w.sid}/APISubmissions/A-")
    return uri


def get(api: TestClient, w: World, path: str, status: int = 200) -> Any:
    """The JSON answer, its numbers read exactly (money is a JSON number with its decimals: ``D("100.00")``)."""
    r = api.get(path, headers=w.auth)
    assert r.status_code == status, r.text
    return json.loads(r.text, parse_float=D)


def native(api: TestClient, w: World, aid: int) -> dict[str, Any]:
    return dict(get(api, w, f"/api/v1/actions/{aid}"))


def submission_count(engine: Engine, w: World) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(submissions)
                                .where(submissions.c.account_id == w.account_id)).scalar_one())


# --- PUT and DELETE /Actions -------------------------------------------------------------------


def test_put_form_encoded_by_action_id(api: TestClient, world: World, engine: Engine) -> None:
    a = conversion(world, "O-1", "100.00")
    uri = queued(put(api, world, f"Amount=80.00&Reason=ORDER_UPDATE&ActionId={a}&Note=partial+refund"), world)
    before = get(api, world, uri)
    assert before["Status"] == "Queued" and before["StatusCode"] == "QUEUED" and before["Outcome"] == ""
    assert before["ActionId"] == str(a) and before["Type"] == "Modification"
    assert native(api, world, a)["amount"] == "100.00"  # queued, not applied yet

    drain(engine)
    done = get(api, world, uri)
    assert done["Status"] == "Complete" and done["Id"] == done["BatchId"] == uri.rsplit("/", 1)[1]
    assert (done["TotalRecords"], done["ProcessedRecords"], done["Applied"], done["ErrorCount"]) == (1, 1, 1, 0)
    assert done["Outcome"] == "applied" and done["Errors"] == [] and done["ErrorType"] == ""
    assert done["PayoutDelta"] == "-2.00" and done["AmountDelta"] == "-20.00" and done["Currency"] == "USD"
    assert done["MediaPartnerId"] == world.partners[0] and done["ActionTrackerId"] == world.sale
    assert "Amount=80.00" in done["Payload"] and done["CompletionDate"].endswith("Z")
    assert done["Uri"] == uri

    got = native(api, world, a)
    assert got["amount"] == "80.00" and got["payout"] == "8.00"
    last = got["updates"][-1]
    assert last["kind"] == "MODIFIED" and last["channel"] == "api" and last["reason"] == "ORDER_UPDATE"
    assert last["submission_id"] == uri.rsplit("/", 1)[1] and last["note"] == "partial refund"  # "A-1", as the API
    assert last["submission_id"].startswith("A-")


def test_put_by_tracker_and_order_id_with_disposition_code(api: TestClient, world: World, engine: Engine) -> None:
    conversion(world, "O-2", "40.00")
    newest = conversion(world, "O-2", "50.00")  # R12: the newest action with the order id is meant
    body = f"ActionTrackerId={world.sale}&OrderId=O-2&Amount=30.00&DispositionCode=ITEM_RETURNED"
    uri = queued(put(api, world, body), world)
    drain(engine)
    assert get(api, world, uri)["ActionId"] == str(newest)
    got = native(api, world, newest)
    assert got["amount"] == "30.00" and got["updates"][-1]["reason"] == "ITEM_RETURNED"


def test_put_items_with_sku_quantity_and_item_amount(api: TestClient, world: World, engine: Engine) -> None:
    a = conversion(world, "O-3", amount=None, items=[{"sku": "RED", "quantity": 2, "amount": "80.00"},
                                                     {"sku": "BLUE", "quantity": 1, "amount": "40.00"}])
    queued(put(api, world, f"ActionId={a}&Sku=RED&Quantity=1&Reason=ITEM_RETURNED"), world)
    # with Sku, Amount is the item's new amount; Sku2/Quantity2 name a second item
    queued(put(api, world, f"ActionId={a}&Sku=BLUE&Quantity=1&Amount=25.00&Sku2=RED&Quantity2=1&Reason=Wrong_Size"),
           world)
    drain(engine)
    got = native(api, world, a)
    items = {i["sku"]: (i["quantity"], i["amount"]) for i in got["items"]}
    assert items == {"RED": (1, "40.00"), "BLUE": (1, "25.00")}
    assert got["amount"] == "65.00" and got["updates"][-1]["reason"] == "Wrong_Size"


def test_put_approve_reset_and_zero_amount(api: TestClient, world: World, engine: Engine) -> None:
    a = conversion(world, "O-4", "100.00")
    b = conversion(world, "O-5", "100.00")
    queued(put(api, world, f"ActionId={a}&Reason=APPROVED"), world)
    zero = queued(put(api, world, f"ActionId={b}&Amount=0&Reason=CONS_ERROR"), world)
    drain(engine)
    assert native(api, world, a)["state"] == "APPROVED"
    assert native(api, world, b)["state"] == "REVERSED"
    assert get(api, world, zero)["Type"] == "Reversal"
    queued(put(api, world, f"ActionId={b}&Reason=RESET"), world)
    drain(engine)
    assert native(api, world, b)["state"] == "PENDING" and native(api, world, b)["amount"] == "100.00"


def test_delete_reverses(api: TestClient, world: World, engine: Engine) -> None:
    a = conversion(world, "O-6", "100.00")
    b = conversion(world, "O-7", "60.00")
    first = queued(delete(api, world, f"ActionId={a}&DispositionCode=ITEM_RETURNED"), world)
    second = queued(delete(api, world, f"ActionTrackerId={world.sale}&OrderId=O-7"), world)
    drain(engine)
    got = native(api, world, a)
    assert got["state"] == "REVERSED" and got["status_detail"] == "ITEM_RETURNED" and got["payout"] == "0.00"
    assert got["updates"][-1]["channel"] == "api"
    assert native(api, world, b)["status_detail"] == "REJECTED"  # the default reversal reason
    for uri in (first, second):
        sub = get(api, world, uri)
        assert sub["Type"] == "Reversal" and sub["Outcome"] == "applied"
    # replaying is harmless: the second reversal with the same reason is unchanged
    again = queued(delete(api, world, f"ActionId={a}&DispositionCode=ITEM_RETURNED"), world)
    drain(engine)
    assert get(api, world, again)["Outcome"] == "unchanged"


def test_parameters_in_query_string_and_json(api: TestClient, world: World, engine: Engine) -> None:
    a = conversion(world, "O-8", "100.00")
    r = api.put(f"{base(world)}/Actions", params={"ActionId": a, "Amount": "90.00", "Reason": "ORDER_UPDATE"},
                headers=world.auth)
    queued(r, world)
    drain(engine)
    assert native(api, world, a)["amount"] == "90.00"
    r = api.put(f"{base(world)}/Actions", json={"ActionId": a, "Amount": 70.5, "Reason": "ORDER_UPDATE"},
                headers=world.auth)
    queued(r, world)
    r = api.request("DELETE", f"{base(world)}/Actions", json={"actionid": str(a), "reason": "CONS_FRAUD"},
                    headers=world.auth)
    queued(r, world)
    drain(engine)
    got = native(api, world, a)
    assert got["state"] == "REVERSED" and [u["kind"] for u in got["updates"]][-2:] == ["MODIFIED", "REVERSED"]
    assert got["updates"][-2]["delta_amount"] == "-19.50"


def test_refused_up_front_change_nothing(api: TestClient, world: World, engine: Engine) -> None:
    a = conversion(world, "O-9", "100.00")
    before = submission_count(engine, world)
    cases = [
        (put, "Amount=80.00&Reason=ORDER_UPDATE", 422, "missing_id"),
        (put, f"ActionTrackerId={world.sale}&Amount=1", 422, "missing_id"),
        (put, "ActionId=999999999&Amount=80.00&Reason=ORDER_UPDATE", 404, "not_found"),
        (put, "ActionId=1000.4636.158133&Amount=80.00", 404, "not_found"),
        (put, "ActionTrackerId=999999&OrderId=O-9&Amount=80.00", 404, "not_found"),
        (put, f"ActionTrackerId={world.sale}&OrderId=NOPE&Amount=80.00", 404, "not_found"),
        (put, f"ActionId={a}&Amount=-5&Reason=ORDER_UPDATE", 422, "invalid_amount"),
        (put, f"ActionId={a}&Amount=1.234&Reason=ORDER_UPDATE", 422, "invalid_amount"),
        (put, f"ActionId={a}&Amount=10&Reason=NOT_A_REASON", 422, "unknown_reason"),
        (put, f"ActionId={a}&Reason=ORDER_UPDATE", 422, "validation_error"),  # would reverse: DELETE does
        (put, f"ActionId={a}", 422, "validation_error"),
        (put, f"ActionId={a}&Amount=10&Reason=ORDER_UPDATE&DispositionCode=ITEM_RETURNED", 422, "validation_error"),
        (put, f"ActionId={a}&Amount=10&Colour=red", 422, "validation_error"),
        (put, f"ActionId={a}&Sku=X&ItemSubTotalDelta=-5", 422, "validation_error"),
        (put, f"ActionId={a}&Sku=RED", 422, "missing_quantity"),
        (put, f"ActionId={a}&Amount=10&CurrencyCode=EUR", 422, "wrong_currency"),
        (put, f"ActionId={a}&Amount=10&Note=%00", 422, "validation_error"),
        (delete, f"ActionId={a}&Amount=10", 422, "validation_error"),
        (delete, f"ActionId={a}&DispositionCode=APPROVED", 422, "validation_error"),
        (delete, f"ActionId={a}&DispositionCode=Wrong_Size", 422, "validation_error"),  # a modifying code
        (delete, "OrderId=O-9", 422, "missing_id"),
    ]
    for send, body, status, code in cases:
        r = send(api, world, body)
        assert r.status_code == status, (body, r.text)
        err = r.json()
        assert r.headers["content-type"].startswith("application/problem+json")
        assert err["code"] == code and err["Status"] == "ERROR" and err["Message"] == err["detail"], (body, err)
    r = api.put(f"{base(world)}/Actions", content=b"{not json", headers={**world.auth,
                                                                          "Content-Type": "application/json"})
    assert r.status_code == 422
    assert submission_count(engine, world) == before
    assert native(api, world, a)["amount"] == "100.00"


def test_engine_errors_show_in_the_api_submission(api: TestClient, world: World, engine: Engine) -> None:
    locked = conversion(world, "O-10", "100.00")
    api.post(f"/api/v1/actions/{locked}/approve", headers=world.auth)
    a = conversion(world, "O-11", "100.00")
    first = queued(put(api, world, f"ActionId={locked}&Amount=50.00&Reason=ORDER_UPDATE"), world)
    second = queued(put(api, world, f"ActionId={a}&Sku=NOPE&Quantity=0&Reason=ITEM_RETURNED"), world)
    drain(engine)
    sub = get(api, world, first)
    assert sub["Status"] == "Complete" and sub["ErrorCount"] == 1 and sub["Applied"] == 0
    assert sub["Outcome"] == "error" and sub["ErrorType"] == "Contract Error"
    assert sub["ErrorReason"] == "ACTION_LOCKED" and str(locked) in sub["ErrorMessage"]
    err = sub["Errors"][0]
    assert err["Line"] == 1 and err["Type"] == "CONTRACT" and err["Code"] == "action_locked"
    assert err["ActionId"] == str(locked) and err["OrderId"] == "O-10"
    sub = get(api, world, second)
    assert sub["ErrorType"] == "Validation" and sub["Errors"][0]["Column"] == "Sku1"
    assert sub["Errors"][0]["Code"] == "unknown_sku"


def test_idempotency_key_on_put(api: TestClient, world: World, engine: Engine) -> None:
    a = conversion(world, "O-12", "100.00")
    before = submission_count(engine, world)
    one = put(api, world, f"ActionId={a}&Amount=80&Reason=ORDER_UPDATE", headers={"Idempotency-Key": "k-1"})
    two = put(api, world, f"ActionId={a}&Amount=80&Reason=ORDER_UPDATE", headers={"Idempotency-Key": "k-1"})
    assert queued(one, world) == queued(two, world) and two.headers.get("Idempotent-Replayed") == "true"
    assert submission_count(engine, world) == before + 1


# --- reading actions ---------------------------------------------------------------------------


def test_get_one_action_in_pascal_case(api: TestClient, world: World, engine: Engine) -> None:
    a = conversion(world, "O-20", "100.00")
    got = get(api, world, f"{base(world)}/Actions/{a}")
    assert got["Id"] == str(a) and got["CampaignId"] == world.campaign_id and got["CampaignName"] == "Main"
    assert got["ActionTrackerId"] == world.sale and got["ActionTrackerName"] == "Online Sale"
    assert got["MediaPartnerId"] == world.partners[0] and got["MediaPartnerName"] == "Alpha"
    assert (got["State"], got["Amount"], got["Payout"], got["Currency"]) == ("PENDING", D("100.00"), D("10.00"), "USD")
    assert str(got["Amount"]) == "100.00"  # a JSON number with the currency's decimals, exactly
    assert (got["IntendedAmount"], got["IntendedPayout"]) == (D("100.00"), D("10.00"))
    assert (got["DeltaAmount"], got["DeltaPayout"]) == (D("100.00"), D("10.00"))  # unmodified: the amounts
    assert got["Oid"] == "O-20" and got["EventDate"] == "2026-11-20T10:00:00Z"
    assert got["LockingDate"] == "2026-12-28T00:00:00Z" and got["LockedDate"] == ""
    assert got["Uri"] == f"/Advertisers/{world.sid}/Actions/{a}"
    assert got["Items"][0]["SaleAmount"] == "100.00" and got["Items"][0]["Quantity"] == "1"
    api.post(f"/api/v1/actions/{a}/modify", headers=world.auth, json={"amount": "80.00", "note": "n"})
    got = get(api, world, f"{base(world)}/Actions/{a}")
    assert (got["Amount"], got["DeltaAmount"], got["DeltaPayout"], got["Note"]) == (D("80.00"), D("-20.00"),
                                                                                   D("-2.00"), "n")
    assert got["UpdateDate"] >= got["CreationDate"] and got["UpdateDate"].endswith("Z")
    assert get(api, world, f"{base(world)}/Actions/{a}/Items")["ActionItems"][0]["Payout"] == "8.00"
    for missing in ("999999999", "1000.4636.158133", "x"):
        err = get(api, world, f"{base(world)}/Actions/{missing}", 404)
        assert err["code"] == "not_found" and err["Status"] == "ERROR"


def test_list_actions_paging_and_filters(api: TestClient, engine: Engine) -> None:
    w = make_world(engine)
    ids = [conversion(w, f"L-{n}", "10.00", event_date=f"2026-0{n}-15T10:00:00Z") for n in range(1, 6)]
    lead = conversion(w, "L-lead", "1.00", event_type=w.lead, event_date="2026-03-01T00:00:00Z")
    with db.write(engine) as conn:  # reversed in February, before its locking date (R1)
        ledger.apply(conn, w.actor, ids[0], wf.Reverse("CONS_FRAUD"), now=datetime(2026, 2, 1, tzinfo=UTC))

    page = get(api, w, f"{base(w)}/Actions?PageSize=2")
    assert (page["@page"], page["@numpages"], page["@pagesize"], page["@total"]) == ("1", "3", "2", "6")
    assert (page["@start"], page["@end"], page["@previouspageuri"]) == ("0", "1", "")
    assert [x["Id"] for x in page["Actions"]] == [str(lead), str(ids[4])]  # newest first
    seen = [x["Id"] for x in page["Actions"]]
    while page["@nextpageuri"]:
        page = get(api, w, page["@nextpageuri"])
        seen += [x["Id"] for x in page["Actions"]]
    assert seen == [str(i) for i in [lead, *reversed(ids)]] and page["@page"] == "3"
    assert page["@lastpageuri"].endswith("Page=3") and "PageSize=2" in page["@firstpageuri"]

    def found(query: str) -> list[int]:
        return [int(x["Id"]) for x in get(api, w, f"{base(w)}/Actions?{query}")["Actions"]]

    assert found("State=REVERSED") == [ids[0]]
    assert found("state=pending&ActionTrackerId=" + str(w.lead)) == [lead]
    assert found(f"CampaignId={w.campaign_id}&MediaPartnerId={w.partners[0]}") == [lead, *reversed(ids)]
    # StartDate/EndDate: the last update (the reversal in February); ActionDateStart/End: the event date
    assert found("StartDate=2026-02-01T00:00:00Z&EndDate=2026-03-15T10:00:00Z") == [ids[0]]
    assert found("ActionDateStart=2026-02-01T00:00:00Z&ActionDateEnd=2026-03-15T10:00:00Z") == [lead, ids[2], ids[1]]
    assert found("ActionDateStart=2026-03-01&ActionDateEnd=2026-03-31") == [lead, ids[2]]
    assert found("Oid=L-4") == [ids[3]]
    # 0 months 27 days: a March action locks on 28 April
    assert found("LockingDateStart=2026-04-28T00:00:00Z&LockingDateEnd=2026-04-28T23:59:59Z") == [ids[2]]
    assert found("LockingDateStart=2026-04-28T10:00:00Z") == [ids[4], ids[3]]
    empty = get(api, w, f"{base(w)}/Actions?State=APPROVED")
    assert empty["Actions"] == [] and empty["@total"] == "0" and empty["@nextpageuri"] == ""
    for bad in ("State=LOCKED", "PageSize=0", "PageSize=20001", "Page=0", "CampaignId=abc", "StartDate=yesterday",
                "Page=1&Page=2"):
        assert get(api, w, f"{base(w)}/Actions?{bad}", 422)["code"] == "validation_error", bad
    assert get(api, w, f"{base(w)}/Actions?CampaignId=999999", 404)["code"] == "not_found"


# --- file submissions --------------------------------------------------------------------------


def post_file(api: TestClient, w: World, name: str, data: bytes) -> str:
    r = api.post("/api/v1/submissions", headers=w.auth, data={"campaign_id": str(w.campaign_id)},
                 files={"file": (name, data, "text/csv")})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def test_ftp_file_submissions_and_error_details(api: TestClient, world: World, engine: Engine) -> None:
    a = conversion(world, "F-1", "100.00")
    locked = conversion(world, "F-2", "100.00")
    api.post(f"/api/v1/actions/{locked}/approve", headers=world.auth)
    good = post_file(api, world, "returns.csv", (
        f"ActionId,Amount,Reason\r\n{a},80.00,ORDER_UPDATE\r\n{a},abc,ORDER_UPDATE\r\n999999999,0,ITEM_RETURNED\r\n"
        f"{locked},10.00,ORDER_UPDATE\r\n"
    ).encode())
    broken = post_file(api, world, "broken.csv", b"just,some\r\nthing,else\r\n")
    queued(put(api, world, f"ActionId={a}&Amount=70&Reason=ORDER_UPDATE"), world)  # an A-…: not listed
    drain(engine)

    listing = get(api, world, f"{base(world)}/FTPFileSubmissions")
    assert [s["BatchId"] for s in listing["FTPFileSubmissions"]] == [broken, good]
    assert listing["@total"] == "2" and listing["@numpages"] == "1"
    sub = listing["FTPFileSubmissions"][1]
    assert sub["FileName"] == "returns.csv" and sub["Status"] == "Complete" and sub["Channel"] == "file"
    assert (sub["TotalRecords"], sub["Applied"], sub["TotalErrors"]) == (4, 1, "3")  # TotalErrors: a text
    assert sub["ErrorsUri"] == f"/Advertisers/{world.sid}/FTPFileSubmissions/{good}/ErrorDetails"
    assert get(api, world, sub["Uri"])["BatchId"] == good
    assert get(api, world, f"{base(world)}/FTPFileSubmissions?PageSize=1&Page=2")["FTPFileSubmissions"][0][
        "BatchId"] == good
    assert get(api, world, f"{base(world)}/FTPFileSubmissions?SubmissionDateEnd=2020-01-01")["@total"] == "0"
    assert get(api, world, f"{base(world)}/FTPFileSubmissions?CompletedDateStart=2020-01-01")["@total"] == "2"

    errs = get(api, world, sub["ErrorsUri"])
    assert errs["@total"] == "3"
    got = [(e["Line"], e["Column"], e["Status"], e["Code"], e["Reason"]) for e in errs["ErrorDetail"]]
    assert got == [(2, "Amount", "Validation", "invalid_amount", "INVALID_AMOUNT"),
                   (3, "ActionId", "Validation", "unknown_action", "UNKNOWN_ACTION"),
                   (4, "", "Contract Error", "action_locked", "ACTION_LOCKED")]
    assert all(e["Message"] for e in errs["ErrorDetail"])
    last = errs["ErrorDetail"][2]
    assert (last["ActionId"], last["OrderId"], last["ActionTrackerId"], last["MediaPartnerId"], last["Type"]) == (
        str(locked), "F-2", world.sale, world.partners[0], "CONTRACT")
    second = get(api, world, f"{sub['ErrorsUri']}?PageSize=2&Page=2")
    assert [e["Line"] for e in second["ErrorDetail"]] == [4] and second["@nextpageuri"] == ""
    assert second["@previouspageuri"].endswith("Page=1")

    failed = get(api, world, f"{base(world)}/FTPFileSubmissions/{broken}")
    assert failed["Status"] == "Failed" and failed["Failure"]
    whole = get(api, world, f"{base(world)}/FTPFileSubmissions/{broken}/ErrorDetails")["ErrorDetail"]
    assert [(e["Line"], e["Code"]) for e in whole] == [(0, "file_rejected")] and whole[0]["Message"]

    # a file is not an API submission, and the other way round
    assert get(api, world, f"{base(world)}/APISubmissions/{good}", 404)["code"] == "not_found"
    assert get(api, world, f"{base(world)}/APISubmissions/{good[2:]}", 404)["code"] == "not_found"


# --- tenants and credentials -------------------------------------------------------------------


def test_tenant_isolation(api: TestClient, world: World, engine: Engine) -> None:
    other = make_world(engine)
    theirs = conversion(other, "T-1", "100.00")
    their_sub = queued(put(api, other, f"ActionId={theirs}&Amount=50&Reason=ORDER_UPDATE"), other)
    mine = conversion(world, "T-1", "100.00")
    before = submission_count(engine, other)

    # my credentials, their SID in the path
    for path in ("/Actions", f"/Actions/{theirs}", f"/APISubmissions/{their_sub.rsplit('/', 1)[1]}",
                 "/FTPFileSubmissions"):
        assert get(api, world, f"/Advertisers/{other.sid}{path}", 404)["code"] == "not_found"
    r = api.put(f"/Advertisers/{other.sid}/Actions", content=f"ActionId={theirs}&Amount=1",
                headers={**world.auth, **FORM})
    assert r.status_code == 404
    # my SID, their objects
    assert get(api, world, f"{base(world)}/Actions/{theirs}", 404)["code"] == "not_found"
    assert get(api, world, f"{base(world)}{their_sub.split(other.sid, 1)[1]}", 404)["code"] == "not_found"
    assert put(api, world, f"ActionId={theirs}&Amount=1&Reason=ORDER_UPDATE").status_code == 404
    assert delete(api, world, f"ActionTrackerId={other.sale}&OrderId=T-1").status_code == 404
    assert get(api, world, f"{base(world)}/Actions?CampaignId={other.campaign_id}", 404)["code"] == "not_found"
    assert [x["Id"] for x in get(api, world, f"{base(world)}/Actions?Oid=T-1")["Actions"]] == [str(mine)]
    assert get(api, world, f"{base(world)}/Actions")["@total"] == "1"
    assert submission_count(engine, other) == before


def test_credentials(api: TestClient, world: World) -> None:
    wrong = {"Authorization": "Basic " + base64.b64encode(f"{world.sid}:nope".encode()).decode()}
    for headers in (wrong, {}):
        r = api.get(f"{base(world)}/Actions", headers=headers)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
        assert r.json()["code"] == "unauthorized" and r.json()["Status"] == "ERROR"
    r = api.put(f"{base(world)}/Actions", content="ActionId=1&Amount=1", headers={**wrong, **FORM})
    assert r.status_code == 401


def test_an_unreadable_multipart_body_has_its_own_code(api: TestClient, world: World, engine: Engine) -> None:
    before = submission_count(engine, world)
    r = api.put(base(world) + "/Actions", headers={**world.auth, "Content-Type": "multipart/form-data"},
                content=b"--x\r\n")
    assert (r.status_code, r.json()["code"]) == (400, "malformed_multipart"), r.text
    assert "multipart body cannot be read" in r.json()["detail"]
    assert submission_count(engine, world) == before
