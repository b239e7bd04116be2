"""Strict inputs (DESIGN §6, issue 10 items 4, 5, 6 and 9): ids, amounts, unknown query parameters,
the 200-character rule of error texts, the history's submission labels. On SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote as urlquote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.helpers import World, conversion, drain

HUGE = 2**40  # a well-formed id of a 32-bit table that names nothing (cast to a 32-bit integer it overflowed)
PROBLEM = "application/problem+json"


def problem(r: Any, status: int, code: str, *words: str) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith(PROBLEM), r.headers["content-type"]
    body = dict(r.json())
    assert body["code"] == code, body
    for word in words:
        assert word in body["detail"], (word, body["detail"])
    return body


def compat(w: World) -> str:
    return f"/Advertisers/{w.sid}"


# --- ids: 1 … 2^63-1, else 404 in a path and 422 in a query ---------------------------------------

# every one of these answered 500 on one database or both (issue 10 item 4)
PATHS_NOT_FOUND = [
    ("GET", "/api/v1/campaigns/-171132103893664627010043904"),
    ("GET", "/api/v1/partners/-9581853708550039552"),
    ("POST", "/api/v1/actions/-8461162479116398919676298677714944/approve"),
    ("GET", "/api/v1/submissions/%C2%B9"),  # a superscript one passes str.isdigit
    ("GET", "/api/v1/submissions/F-%C2%B9/errors"),
    ("GET", "/api/v1/submissions/F-99999999999999999999"),
    ("GET", "{compat}/APISubmissions/A-9223372036854775808"),
    ("GET", "{compat}/FTPFileSubmissions/F-9223372036854775808/ErrorDetails"),
    ("GET", "{compat}/FTPFileSubmissions/F-%C2%B9"),
    ("GET", "{compat}/Actions/9223372036854775808"),
    # 32-bit tables: a 64-bit id is well formed and names nothing
    ("GET", f"/api/v1/campaigns/{HUGE}"),
    ("GET", f"/api/v1/partners/{HUGE}"),
    ("GET", f"/api/v1/event-types/{HUGE}"),
    ("GET", f"/api/v1/contracts/{HUGE}"),
    ("GET", "/api/v1/actions/0"),
    ("GET", "/api/v1/actions/9223372036854775808"),
    ("GET", "/api/v1/actions/%D9%A1%D9%A2"),  # Arabic-Indic digits
    ("GET", "/api/v1/campaigns/1_000"),
    ("GET", "/api/v1/campaigns/+1"),
    ("POST", "/api/v1/actions/99999999999999999999/modify"),
]


@pytest.mark.parametrize(("method", "path"), PATHS_NOT_FOUND)
def test_an_id_that_cannot_exist_in_a_path_is_not_found(api: TestClient, world: World, method: str,
                                                        path: str) -> None:
    r = api.request(method, path.format(compat=compat(world)), headers=world.auth,
                    json={"amount": "1.00"} if path.endswith("/modify") else None)
    problem(r, 404, "not_found")


QUERIES_REFUSED = [
    ("/api/v1/contracts", {"campaign_id": "-1758000000000000000000000"}, "campaign_id"),
    ("/api/v1/submissions", {"campaign_id": "1106976436428196405267549650944"}, "campaign_id"),
    ("/api/v1/event-types", {"campaign_id": "0"}, "campaign_id"),
    ("/api/v1/actions", {"partner_id": "9223372036854775808"}, "partner_id"),
    ("/api/v1/actions", {"action_id": "\u00b9"}, "action_id"),
    ("/api/v1/actions", {"event_type_id": "1_0"}, "event_type_id"),
    ("/api/v1/reasons", {"event_type_id": "-1"}, "event_type_id"),
    ("/api/v1/actions/export", {"campaign_id": "-1758000000000000000000000"}, "campaign_id"),
    ("/api/v1/actions/export", {"action_id": str(2**64)}, "action_id"),
    ("{compat}/Actions", {"CampaignId": str(2**64)}, "CampaignId"),
    ("{compat}/Actions", {"MediaPartnerId": "-5"}, "MediaPartnerId"),
    ("{compat}/FTPFileSubmissions", {"CampaignId": "1e3"}, "CampaignId"),
]


@pytest.mark.parametrize(("path", "params", "name"), QUERIES_REFUSED)
def test_an_id_that_cannot_exist_in_a_query_is_a_validation_error_naming_it(
        api: TestClient, world: World, path: str, params: dict[str, str], name: str) -> None:
    r = api.get(path.format(compat=compat(world)), params=params, headers=world.auth)
    problem(r, 422, "validation_error", name)


def test_submission_cursors_beyond_any_row(api: TestClient, world: World, engine: Engine) -> None:
    a = conversion(world, "CUR-1")
    r = api.post("/api/v1/submissions", headers=world.auth,
                 json={"campaign_id": world.campaign_id, "rows": [{"ActionId": a, "Amount": "x", "Reason": "X"}]})
    assert r.status_code == 202, r.text
    sid = r.json()["id"]
    drain(engine)
    for part in ("errors", "results"):
        for cursor in (str(2**40), str(2**63 - 1)):  # a row number is 32-bit: nothing follows
            r = api.get(f"/api/v1/submissions/{sid}/{part}", params={"cursor": cursor}, headers=world.auth)
            assert r.status_code == 200 and r.json()["items"] == [], r.text
        for cursor in (str(2**64), "-1", "\u00b9", "1.5"):
            r = api.get(f"/api/v1/submissions/{sid}/{part}", params={"cursor": cursor}, headers=world.auth)
            problem(r, 422, "validation_error", "cursor")
    r = api.get("/api/v1/submissions", params={"cursor": "\u00b2"}, headers=world.auth)
    problem(r, 422, "validation_error", "cursor")


def test_a_64_bit_filter_of_a_32_bit_table_matches_nothing(api: TestClient, world: World) -> None:
    conversion(world, "HUGE-1")
    for path, params in [("/api/v1/actions", {"campaign_id": HUGE}), ("/api/v1/actions", {"partner_id": HUGE}),
                         ("/api/v1/actions", {"event_type_id": HUGE, "sort": "amount"}),
                         ("/api/v1/event-types", {"campaign_id": HUGE}), ("/api/v1/contracts", {"partner_id": HUGE}),
                         ("/api/v1/submissions", {"campaign_id": HUGE})]:
        r = api.get(path, params=params, headers=world.auth)
        assert r.status_code == 200 and r.json()["items"] == [], (path, r.text)
    r = api.get("/api/v1/actions/export", params={"campaign_id": HUGE}, headers=world.auth)
    assert r.status_code == 200 and r.text.count("\r\n") == 1, r.text  # the header alone
    r = api.get(f"{compat(world)}/Actions", params={"MediaPartnerId": HUGE}, headers=world.auth)
    assert r.status_code == 200 and r.json()["Actions"] == [], r.text
    problem(api.get(f"{compat(world)}/Actions", params={"CampaignId": HUGE}, headers=world.auth), 404, "not_found")
    problem(api.get("/api/v1/reasons", params={"event_type_id": HUGE}, headers=world.auth), 404, "not_found")


def test_the_export_refuses_a_bad_filter_before_any_byte(api: TestClient, world: World) -> None:
    """A 200 would have started the stream (and broken it); the answer is the error itself."""
    conversion(world, "EXP-1")
    with api.stream("GET", "/api/v1/actions/export", params={"action_id": str(2**64)}, headers=world.auth) as r:
        assert r.status_code == 422
        body = r.read()
    assert b"action_id" in body and b"action_id,campaign_id" not in body


# --- amounts: plain decimal strings -----------------------------------------------------------------

LOOSE = ["1e5", "1_000", "\u0661\u0662", "+5", ".5", "12.", "-0", "Infinity", "NaN", "0x10", "1,5", "12.5.0",
         "\u00b9"]


@pytest.mark.parametrize("amount", LOOSE)
def test_a_loose_amount_is_refused_by_the_native_api(api: TestClient, world: World, amount: str) -> None:
    a = conversion(world, f"LOOSE-N-{LOOSE.index(amount)}")
    r = api.post(f"/api/v1/actions/{a}/modify", json={"amount": amount}, headers=world.auth)
    problem(r, 422, "invalid_amount")
    r = api.post(f"/api/v1/actions/{a}/modify", json={"items": [{"sku": "ORDER", "quantity": 1, "amount": amount}]},
                 headers=world.auth)
    problem(r, 422, "invalid_amount")
    got = api.get(f"/api/v1/actions/{a}", headers=world.auth).json()
    assert got["amount"] == "100.00" and got["state"] == "PENDING" and len(got["updates"]) == 1


def test_a_json_number_is_not_money(api: TestClient, world: World) -> None:
    """Money is a decimal string (DESIGN §4): a JSON number is refused, with a hint to quote it."""
    a = conversion(world, "NUMBER-1")
    for number in (10, 0, 12.5, 1e5, -0.0):
        r = api.post(f"/api/v1/actions/{a}/modify", json={"amount": number}, headers=world.auth)
        problem(r, 422, "invalid_amount", "in quotes")
    r = api.post("/api/v1/conversions", headers=world.auth, json={
        "event_type_id": world.sale, "order_id": "NUMBER-2", "event_date": "2026-11-20T10:00:00Z",
        "partner_id": world.partners[0], "amount": 100})
    problem(r, 422, "invalid_amount", "in quotes")
    r = api.post(f"/api/v1/actions/{a}/modify", json={"amount": "0012.50"}, headers=world.auth)
    assert r.status_code == 200 and r.json()["amount"] == "12.50", r.text


@pytest.mark.parametrize("amount", LOOSE)
def test_a_loose_amount_is_refused_by_the_compatible_api(api: TestClient, world: World, engine: Engine,
                                                          amount: str) -> None:
    a = conversion(world, f"LOOSE-C-{LOOSE.index(amount)}")
    r = api.put(f"{compat(world)}/Actions", data={"ActionId": str(a), "Amount": amount, "Reason": "ORDER_UPDATE"},
                headers=world.auth)
    problem(r, 422, "invalid_amount")
    drain(engine)
    assert api.get(f"/api/v1/actions/{a}", headers=world.auth).json()["amount"] == "100.00"


def test_a_loose_amount_in_a_file_row_is_a_row_error(api: TestClient, world: World, engine: Engine) -> None:
    """Through a CSV file (the engine's fast lane and ``interpret``) and JSON rows: each loose amount is an
    ``invalid_amount`` row error and changes nothing; spaces around an amount are allowed in a file."""
    ids = [conversion(world, f"LOOSE-F-{n}") for n in range(len(LOOSE) + 1)]
    lines = ["ActionId,Amount,Reason"] + [f'{a},"{v}",ORDER_UPDATE' for a, v in zip(ids, LOOSE, strict=False)]
    lines.append(f'{ids[-1]}," 80.00 ",ORDER_UPDATE')
    r = api.post("/api/v1/submissions", headers=world.auth, data={"campaign_id": str(world.campaign_id)},
                 files={"file": ("loose.csv", ("\n".join(lines) + "\n").encode(), "text/csv")})
    assert r.status_code == 202, r.text
    csv_id = r.json()["id"]
    r = api.post("/api/v1/submissions", headers=world.auth, json={"campaign_id": world.campaign_id, "rows": [
        {"ActionId": a, "Amount": v, "Reason": "ORDER_UPDATE"} for a, v in zip(ids, LOOSE, strict=False)]})
    assert r.status_code == 202, r.text
    json_id = r.json()["id"]
    drain(engine)
    for sid in (csv_id, json_id):
        errors = api.get(f"/api/v1/submissions/{sid}/errors", headers=world.auth).json()["items"]
        assert [(e["row"], e["column"], e["code"]) for e in errors] == [
            (n, "Amount", "invalid_amount") for n in range(1, len(LOOSE) + 1)], errors
    for a in ids[:-1]:
        assert api.get(f"/api/v1/actions/{a}", headers=world.auth).json()["amount"] == "100.00"
    assert api.get(f"/api/v1/actions/{ids[-1]}", headers=world.auth).json()["amount"] == "80.00"


def test_percentages_of_contracts_are_strict(api: TestClient, world: World) -> None:
    for percent in ("1e1", "+8", "8.", ".5", "-0", "8_0", "\u0668", 8):
        r = api.post("/api/v1/contracts", headers=world.auth, json={
            "campaign_id": world.campaign_id, "partner_id": world.partners[0], "starts_on": "2027-01-01",
            "payout": [{"event_type_id": world.sale, "percent": percent}]})
        problem(r, 422, "invalid_amount")


# --- unknown query parameters -----------------------------------------------------------------------


@pytest.mark.parametrize(("path", "params", "named"), [
    ("/api/v1/actions", {"status": "PENDING"}, "status"),
    ("/api/v1/actions", {"state": "PENDING", "campaign": "1"}, "campaign"),
    ("/api/v1/actions/export", {"State": "PENDING"}, "State"),
    ("/api/v1/actions/$aid", {"expand": "items"}, "expand"),
    ("/api/v1/campaigns", {"limit": "5"}, "limit"),
    ("/api/v1/partners/$partner", {"x": "1"}, "x"),
    ("/api/v1/reasons", {"eventtype": "1"}, "eventtype"),
    ("/api/v1/submissions", {"status": "QUEUED"}, "status"),
    ("/api/v1/contracts", {"campaign_id": "$campaign", "partnerid": "1"}, "partnerid"),
    ("{compat}/Actions", {"ActionStatus": "PENDING"}, "ActionStatus"),
    ("{compat}/Actions/$aid", {"Fields": "Id"}, "Fields"),
    ("{compat}/FTPFileSubmissions", {"Status": "Complete"}, "Status"),
])
def test_an_unknown_query_parameter_is_refused_naming_it(api: TestClient, world: World, path: str,
                                                         params: dict[str, str], named: str) -> None:
    aid = conversion(world, "UNKNOWN-1")
    path = path.format(compat=compat(world)).replace("$aid", str(aid)).replace(
        "$partner", str(world.partners[0])).replace("$campaign", str(world.campaign_id))
    params = {k: v.replace("$campaign", str(world.campaign_id)) for k, v in params.items()}
    r = api.get(path, params=params, headers=world.auth)
    problem(r, 422, "validation_error", named)


def test_unknown_query_parameters_on_changes_and_known_ones_in_any_case(api: TestClient, world: World) -> None:
    a = conversion(world, "UNKNOWN-2")
    r = api.post(f"/api/v1/actions/{a}/approve", params={"force": "1"}, headers=world.auth)
    problem(r, 422, "validation_error", "force")
    assert api.get(f"/api/v1/actions/{a}", headers=world.auth).json()["state"] == "PENDING"
    r = api.post(f"/api/v1/actions/{a}/modify", params={"amount": "1.00"}, json={"amount": "5.00"},
                 headers=world.auth)
    problem(r, 422, "validation_error", "amount")
    r = api.get(f"{compat(world)}/Actions", params={"state": "PENDING", "pagesize": "5"}, headers=world.auth)
    assert r.status_code == 200, r.text  # impact.com's names match in any case
    r = api.put(f"{compat(world)}/Actions", params={"ActionStatus": "x"},
                data={"ActionId": str(a), "Amount": "5.00"}, headers=world.auth)
    problem(r, 422, "validation_error", "ActionStatus")


# --- the list: promo_code, reason, sort ---------------------------------------------------------------


def test_promo_code_and_reason_filter_the_list_and_the_export(api: TestClient, world: World) -> None:
    a = conversion(world, "PROMO-1")
    r = api.post("/api/v1/conversions", headers=world.auth, json={
        "event_type_id": world.sale, "order_id": "PROMO-2", "event_date": "2026-11-20T10:00:00Z",
        "partner_id": world.partners[0], "promo_code": "WINTER", "amount": "50.00"})
    assert r.status_code == 201, r.text
    b = r.json()["id"]
    r = api.post(f"/api/v1/actions/{a}/reverse", json={"reason": "CONS_FRAUD"}, headers=world.auth)
    assert r.status_code == 200, r.text

    def ids(params: dict[str, str]) -> list[int]:
        r = api.get("/api/v1/actions", params=params, headers=world.auth)
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()["items"]]

    assert ids({"promo_code": "WINTER"}) == [b]
    assert ids({"reason": "CONS_FRAUD"}) == [a]
    assert ids({"reason": "CONS_FRAUD", "sort": "amount"}) == [a]
    assert ids({"promo_code": "SUMMER"}) == []
    r = api.get("/api/v1/actions/export", params={"promo_code": "WINTER"}, headers=world.auth)
    assert r.status_code == 200 and r.text.count("\r\n") == 2 and "WINTER" in r.text
    r = api.get("/api/v1/actions", params={"promo_code": "A\x00"}, headers=world.auth)
    problem(r, 422, "validation_error", "promo_code")


def test_cursors_are_bound_to_their_sort(api: TestClient, world: World) -> None:
    for n in range(3):
        conversion(world, f"CURSOR-{n}", amount=f"{n + 1}.00")
    first = api.get("/api/v1/actions", params={"sort": "amount", "limit": 1}, headers=world.auth).json()
    cursor = first["next_cursor"]
    assert cursor and not cursor.isdigit()
    r = api.get("/api/v1/actions", params={"sort": "-payout", "cursor": cursor}, headers=world.auth)
    problem(r, 422, "validation_error", "cursor")
    r = api.get("/api/v1/actions", params={"cursor": cursor}, headers=world.auth)  # the default sort
    problem(r, 422, "validation_error", "cursor")
    default = api.get("/api/v1/actions", params={"limit": 1}, headers=world.auth).json()["next_cursor"]
    r = api.get("/api/v1/actions", params={"sort": "amount", "cursor": default}, headers=world.auth)
    problem(r, 422, "validation_error", "cursor")
    forged = base64.urlsafe_b64encode(b'["amount","1","x"]').decode().rstrip("=")
    for bad in (forged, "!!", "a" * 500, base64.urlsafe_b64encode(b"[]").decode()):
        r = api.get("/api/v1/actions", params={"sort": "amount", "cursor": bad}, headers=world.auth)
        problem(r, 422, "validation_error", "cursor")
    problem(api.get("/api/v1/actions", params={"sort": "state"}, headers=world.auth), 422, "validation_error", "sort")


# --- error texts quote at most 200 characters of what was sent ---------------------------------------


def test_error_texts_quote_at_most_200_characters(api: TestClient, world: World, engine: Engine) -> None:
    a = conversion(world, "LONG-1")
    long = "R" * 10_000
    answers = [
        api.post(f"/api/v1/actions/{a}/reverse", json={"reason": long}, headers=world.auth),
        api.post(f"/api/v1/actions/{a}/modify", json={"amount": "9" * 10_000}, headers=world.auth),
        api.post(f"/api/v1/actions/{a}/modify", json={"amount": "x" * 10_000}, headers=world.auth),
        api.get(f"/api/v1/actions/{'9' * 5000}", headers=world.auth),
        api.get("/api/v1/actions", params={"campaign_id": "9" * 5000}, headers=world.auth),
        api.get(f"/api/v1/submissions/{'F-' + 'x' * 5000}", headers=world.auth),
        api.get(f"{compat(world)}/Actions", params={"State": long}, headers=world.auth),
        api.get(f"{compat(world)}/Actions/{'x' * 5000}", headers=world.auth),
        api.put(f"{compat(world)}/Actions", data={"ActionId": str(a), "Reason": long, "Amount": "5"},
                headers=world.auth),
        api.put(f"{compat(world)}/Actions", data={"ActionId": str(a), "Amount": "1" * 10_000}, headers=world.auth),
        api.get("/api/v1/actions", params={"x" * 5000: "1"}, headers=world.auth),
        api.post(f"/api/v1/actions/{a}/modify", json={"items": [{"sku": "S" * 10_000, "quantity": 1}]},
                 headers=world.auth),
    ]
    for r in answers:
        assert 400 <= r.status_code < 500, r.text[:300]
        assert len(r.json()["detail"]) < 600, (r.request.url, len(r.json()["detail"]))
    # a file row's stored error too
    r = api.post("/api/v1/submissions", headers=world.auth, json={"campaign_id": world.campaign_id, "rows": [
        {"ActionId": a, "Amount": "5.00", "Reason": long}, {"ActionId": "x" * 5000, "Reason": "X"},
        {"ActionTrackerId": world.sale, "Oid": "O" * 5000, "Reason": "REJECTED"},
        {"ActionId": a, "Amount": "y" * 10_000, "Reason": "ORDER_UPDATE"},
        {"ActionId": a, "Sku1": "S" * 10_000, "Quantity1": "1", "Reason": "ORDER_UPDATE"}]})
    assert r.status_code == 202, r.text
    drain(engine)
    errors = api.get(f"/api/v1/submissions/{r.json()['id']}/errors", headers=world.auth).json()["items"]
    assert len(errors) == 5 and all(len(e["message"]) < 600 for e in errors), [len(e["message"]) for e in errors]
    assert "(10,000 characters)" in errors[0]["message"]
    assert "There is no action of event type" in errors[2]["message"]  # not "There is no an action"


# --- the history names its submission as the API does -----------------------------------------------


def test_the_history_names_submissions_by_their_label(api: TestClient, world: World, engine: Engine) -> None:
    a = conversion(world, "LABEL-1")
    r = api.post("/api/v1/submissions", headers=world.auth, data={"campaign_id": str(world.campaign_id)},
                 files={"file": ("l.csv", f"ActionId,Amount,Reason\n{a},90.00,ORDER_UPDATE\n".encode(), "text/csv")})
    file_id = r.json()["id"]
    r = api.post("/api/v1/submissions", headers=world.auth, json={
        "campaign_id": world.campaign_id, "rows": [{"ActionId": a, "Amount": "80.00", "Reason": "ORDER_UPDATE"}]})
    rows_id = r.json()["id"]
    drain(engine)
    assert file_id.startswith("F-") and rows_id.startswith("A-")
    got = api.get(f"/api/v1/actions/{a}", headers=world.auth).json()
    assert [u["submission_id"] for u in got["updates"]] == [None, file_id, rows_id]
    # the answer of a change shows the same history
    changed = api.post(f"/api/v1/actions/{a}/modify", json={"amount": "70.00"}, headers=world.auth).json()
    assert [u["submission_id"] for u in changed["updates"]] == [None, file_id, rows_id, None]


def test_quoted_path_values_are_shortened(api: TestClient, world: World) -> None:
    r = api.get(f"/api/v1/campaigns/{urlquote('é' * 3000)}", headers=world.auth)
    body = problem(r, 404, "not_found")
    assert len(body["detail"]) < 600


def test_file_row_ids_are_ascii_digits(api: TestClient, world: World, engine: Engine) -> None:
    """``str.isdigit`` takes '¹' (int() then fails) and '١٢' (int() reads 12): both are invalid ids."""
    a = conversion(world, "DIGITS-1")
    r = api.post("/api/v1/submissions", headers=world.auth, json={"campaign_id": world.campaign_id, "rows": [
        {"ActionId": "\u00b9", "Amount": "5.00", "Reason": "ORDER_UPDATE"},
        {"ActionId": "".join(chr(0x660 + int(d)) for d in str(a)), "Amount": "5.00", "Reason": "ORDER_UPDATE"},
        {"ActionTrackerId": "\u00b2", "Oid": "DIGITS-1", "Amount": "5.00", "Reason": "ORDER_UPDATE"}]})
    assert r.status_code == 202, r.text
    drain(engine)
    done = api.get(f"/api/v1/submissions/{r.json()['id']}", headers=world.auth).json()
    assert done["status"] == "COMPLETE" and done["errors"] == 3, done
    errors = api.get(f"/api/v1/submissions/{r.json()['id']}/errors", headers=world.auth).json()["items"]
    assert [e["code"] for e in errors] == ["invalid_id"] * 3
    assert api.get(f"/api/v1/actions/{a}", headers=world.auth).json()["amount"] == "100.00"


def test_long_names_are_shortened_too(api: TestClient, world: World) -> None:
    """Field and parameter names are what was sent as well: a 5,000-character one is cut."""
    a = conversion(world, "NAMES-1")
    name = "n" * 5000
    answers = [
        api.post(f"/api/v1/actions/{a}/reverse", json={name: "x"}, headers=world.auth),
        api.post(f"/api/v1/actions/{a}/reverse", json={"note": {name: "a\x00b"}}, headers=world.auth),
        api.put(f"{compat(world)}/Actions", data={"ActionId": str(a), name: "1"}, headers=world.auth),
        api.put(f"{compat(world)}/Actions", json={"ActionId": str(a), name: [1]}, headers=world.auth),
        api.get(f"{compat(world)}/Actions", params=[(name, "1"), (name, "2")], headers=world.auth),
        api.put(f"{compat(world)}/Actions", headers={**world.auth, "Idempotency-Key": "k" * 255},
                data={"ActionId": str(a), "Amount": "5.00"}),
        api.put(f"{compat(world)}/Actions", headers={**world.auth, "Idempotency-Key": "k" * 255},
                data={"ActionId": str(a), "Amount": "6.00"}),
    ]
    assert answers[-2].status_code == 200, answers[-2].text
    for r in [*answers[:-2], answers[-1]]:
        assert 400 <= r.status_code < 500, r.text[:300]
        assert len(r.json()["detail"]) < 600, (r.request.url, len(r.json()["detail"]))
