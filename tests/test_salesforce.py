"""The Salesforce channel (DESIGN §3, "Salesforce"; intake/salesforce.py): Outbound Messages posted to the
event type's outbound_url, and polling the REST API against a local TLS stand-in of Salesforce.

The parsing and mapping tests need no database; the others run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import ssl
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from payoutdesk.catalog import service as catalog
from payoutdesk.config import Settings
from payoutdesk.intake import repository as intake_repo
from payoutdesk.intake import runs
from payoutdesk.intake import salesforce as sf
from payoutdesk.intake import salesforce_repository as srepo
from payoutdesk.intake import salesforce_soap as soap
from payoutdesk.intake.common import IntakeContext
from payoutdesk.kit import db
from payoutdesk.kit.crypto import SecretBox
from payoutdesk.kit.time import utcnow
from payoutdesk.ledger import service as ledger
from payoutdesk.models import event_types, intake_cursors, salesforce_notifications
from payoutdesk.submissions import service as submissions
from tests.helpers import World, client_for, conversion, drain, free_port, make_world, self_signed

STATUS_MAP = {
    "Closed Won": {"operation": "approve"},
    "Closed Lost": {"operation": "reverse", "reason": "CONS_FRAUD"},
    "Cancelled": {"operation": "reverse"},
    "Adjusted": {"operation": "modify", "reason": "ITEM_RETURNED"},
    "Changed": {"operation": "modify"},
}
SETTINGS: dict[str, Any] = {"mode": "salesforce", "object": "Opportunity", "order_id_field": "Order_Id__c",
                            "status_field": "StageName", "amount_field": "Amount", "status_map": STATUS_MAP}
RULES = soap.Rules.of(SETTINGS)


def envelope(*notes: tuple[str, dict[str, str | None]], org: str = "00D000000000001") -> bytes:
    """An Outbound Message as Salesforce sends it: (notification id, fields of the sObject) ..."""
    parts = []
    for nid, fields in notes:
        cells = "".join(f'<sf:{k} xsi:nil="true"/>' if v is None else f"<sf:{k}>{v}</sf:{k}>"
                        for k, v in fields.items())
        parts.append(f'<Notification><Id>{nid}</Id><sObject xsi:type="sf:Opportunity" '
                     f'xmlns:sf="urn:sobject.enterprise.soap.sforce.com">{cells}</sObject></Notification>')
    return ('<?xml version="1.0" encoding="UTF-8"?>'
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            '<soapenv:Body><notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
            f"<OrganizationId>{org}</OrganizationId><ActionId>04k000000000001AAA</ActionId>"
            "<SessionId xsi:nil=\"true\"/><EnterpriseUrl>https://x.example/services/Soap/c/59.0</EnterpriseUrl>"
            "<PartnerUrl>https://x.example/services/Soap/u/59.0</PartnerUrl>"
            + "".join(parts) + "</notifications></soapenv:Body></soapenv:Envelope>").encode()


def opp(order: str, stage: str, amount: str | None = None, rid: str = "0065g00000AbCdEAAV") -> dict[str, str | None]:
    fields: dict[str, str | None] = {"Id": rid, "Order_Id__c": order, "StageName": stage}
    if amount is not None:
        fields["Amount"] = amount
    return fields


BOMB = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">'
        b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;">]><soapenv:Envelope '
        b'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>&lol3;</soapenv:Body>'
        b"</soapenv:Envelope>")
EXTERNAL = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>&e;'
            b"</soapenv:Body></soapenv:Envelope>")


# --- parsing and mapping, no database ----------------------------------------------------------------


def test_notifications_are_read_with_their_fields() -> None:
    msg = soap.parse_notifications(envelope(("04l000000000001AAA", opp("O-1", "Closed Won")),
                                            ("04l000000000002AAA", {"Id": "006B", "Order_Id__c": "O-2",
                                                                    "StageName": "Adjusted", "Amount": None}),
                                            ("04l000000000001AAA", opp("O-1", "Closed Won"))))
    assert msg.organization_id == "00D000000000001" and msg.action_id == "04k000000000001AAA"
    assert [n.id for n in msg.notifications] == ["04l000000000001AAA", "04l000000000002AAA"]  # a repeat once
    first, second = msg.notifications
    assert first.record_id == "0065g00000AbCdEAAV"
    assert first.fields == {"Id": "0065g00000AbCdEAAV", "Order_Id__c": "O-1", "StageName": "Closed Won"}
    assert second.fields["Amount"] is None  # xsi:nil


@pytest.mark.parametrize(("body", "says"), [
    (b"", "no body"),
    (b"this is not xml", "not well-formed"),
    (b"<a><b></a>", "not well-formed"),
    (BOMB, "DTD"),
    (EXTERNAL, "DTD"),
    (b'<Envelope xmlns="urn:other"/>', "not a SOAP"),
    (b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
     b"<login/></soapenv:Body></soapenv:Envelope>", "no notifications"),
    (envelope(), "no Notification"),
    (envelope(("", opp("O-1", "Closed Won"))), "no valid Id"),
    (envelope(("04l<x>", opp("O-1", "Closed Won"))), "not well-formed"),
    (envelope(("not/an id", opp("O-1", "Closed Won"))), "no valid Id"),
    (envelope(("04l000000000001AAA", opp("O-1", "Closed Won"))).replace(b"<sObject", b"<sThing")
     .replace(b"</sObject>", b"</sThing>"), "no sObject"),
])
def test_a_malformed_message_is_a_fault(body: bytes, says: str) -> None:
    with pytest.raises(soap.SoapFault) as caught:
        soap.parse_notifications(body)
    assert says in caught.value.message and caught.value.client


def test_the_answers_are_the_soap_salesforce_expects() -> None:
    from defusedxml.ElementTree import fromstring

    ack = fromstring(soap.ack())
    assert ack.tag == "{http://schemas.xmlsoap.org/soap/envelope/}Envelope"
    assert ack[0][0].tag == "{http://soap.sforce.com/2005/09/outbound}notificationsResponse"
    assert ack[0][0][0].tag == "{http://soap.sforce.com/2005/09/outbound}Ack" and ack[0][0][0].text == "true"
    fault = fromstring(soap.fault("bad <thing> & more"))
    assert fault[0][0].tag == "{http://schemas.xmlsoap.org/soap/envelope/}Fault"
    assert fault[0][0].find("faultcode").text == "soapenv:Client"  # type: ignore[union-attr]
    assert fault[0][0].find("faultstring").text == "bad <thing> & more"  # type: ignore[union-attr]
    assert b"soapenv:Server" in soap.fault("ours", client=False)


def test_statuses_map_to_rows_of_the_returns_file_format() -> None:
    row, why = soap.row_for(7, RULES, opp("O-1", "Closed Won"))
    assert why is None and row is not None
    assert {k: row[k] for k in ("ActionTrackerId", "Oid", "Reason")} == {
        "ActionTrackerId": "7", "Oid": "O-1", "Reason": "APPROVED"}
    assert "Amount" not in row and row["Note"] == "Salesforce Opportunity 0065g00000AbCdEAAV: StageName Closed Won"
    row, _ = soap.row_for(7, RULES, opp("O-1", "Closed Lost"))
    assert row is not None and row["Reason"] == "CONS_FRAUD" and "Amount" not in row  # a reason alone reverses
    row, _ = soap.row_for(7, RULES, opp("O-1", "Cancelled"))
    assert row is not None and row["Reason"] == "REJECTED"  # R15's default for reversals
    row, _ = soap.row_for(7, RULES, opp("O-1", "Adjusted", "80.0"))
    assert row is not None and (row["Amount"], row["Reason"]) == ("80", "ITEM_RETURNED")
    row, _ = soap.row_for(7, RULES, {"Order_Id__c": "O-1", "StageName": "Changed", "Amount": Decimal("1.5E7")})
    assert row is not None and (row["Amount"], row["Reason"]) == ("15000000", "ORDER_UPDATE")
    row, _ = soap.row_for(7, RULES, opp("O-1", "Changed", "0"))
    assert row is not None and row["Amount"] == "0"  # R6: an amount of 0 reverses
    # skipped, with the reason
    assert soap.row_for(7, RULES, opp("O-1", "Prospecting"))[1] == (
        "Opportunity 0065g00000AbCdEAAV: StageName 'Prospecting' is not in status_map")
    assert "StageName empty" in str(soap.row_for(7, RULES, {"Id": "006X", "Order_Id__c": "O-1"})[1])
    assert "Order_Id__c is empty" in str(soap.row_for(7, RULES, opp("", "Closed Won"))[1])
    assert "Amount is empty" in str(soap.row_for(7, RULES, opp("O-1", "Adjusted"))[1])
    # REST's JSON values: a checkbox status, a number as order id
    rules = soap.Rules.of({**SETTINGS, "status_field": "IsWon__c", "status_map": {"true": {"operation": "approve"}}})
    row, _ = soap.row_for(7, rules, {"Order_Id__c": Decimal("1001.0"), "IsWon__c": True})
    assert row is not None and (row["Oid"], row["Reason"]) == ("1001", "APPROVED")


@pytest.mark.parametrize(("given", "plain"), [
    ("150.0", "150"), ("19.990", "19.99"), ("1.5E7", "15000000"), ("0.0", "0"), ("-0.0", "0"), ("12", "12"),
    ("abc", "abc"), ("NaN", "NaN"), ("-5.50", "-5.5"),
])
def test_amounts_become_plain_decimal_strings(given: str, plain: str) -> None:
    assert soap.amount_text(given) == plain


def test_the_poll_query_and_its_cursor() -> None:
    assert soap.soql(RULES, "2026-11-25T12:00:00Z") == (
        "SELECT Id, Order_Id__c, StageName, Amount, SystemModstamp FROM Opportunity "
        "WHERE SystemModstamp > 2026-11-25T12:00:00Z ORDER BY SystemModstamp, Id")
    no_amount = soap.Rules.of({**SETTINGS, "amount_field": None, "status_map": {"Won": {"operation": "approve"}}})
    assert "Amount" not in soap.soql(no_amount, "2026-11-25T12:00:00Z")
    stamp = soap.parse_stamp("2026-11-25T12:34:56.000+0000")
    assert stamp == dt.datetime(2026, 11, 25, 12, 34, 56, tzinfo=dt.UTC)
    assert soap.parse_stamp("2026-11-25T14:34:56+02:00") == stamp
    assert soap.parse_stamp(soap.stamp_literal(stamp)) == stamp
    assert soap.stamp_literal(stamp) == "2026-11-25T12:34:56Z"
    for bad in (None, "", "yesterday", "2026-11-25T12:34:56"):
        with pytest.raises(ValueError):
            soap.parse_stamp(bad)


def test_the_login_answer() -> None:
    ok = (b'<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
          b'xmlns="urn:partner.soap.sforce.com"><soapenv:Body><loginResponse><result>'
          b"<serverUrl>https://eu5.salesforce.com/services/Soap/u/59.0/00D</serverUrl><sessionId>SID!x</sessionId>"
          b"</result></loginResponse></soapenv:Body></soapenv:Envelope>")
    assert soap.parse_login_response(200, ok) == ("SID!x", "https://eu5.salesforce.com")
    with pytest.raises(soap.LoginFailed, match="INVALID_LOGIN"):
        soap.parse_login_response(500, LOGIN_FAULT)
    with pytest.raises(soap.LoginFailed, match="not a SOAP message"):
        soap.parse_login_response(502, b"<html>Bad gateway")
    with pytest.raises(soap.LoginFailed, match="https://"):
        soap.parse_login_response(200, ok.replace(b"https://eu5", b"http://eu5"))
    body = soap.login_envelope("a&b@x.example", "p<w>" + "TOKEN").decode()
    assert "<urn:username>a&amp;b@x.example</urn:username>" in body and "p&lt;w&gt;TOKEN" in body


def test_slots_are_floored_to_the_poll_interval() -> None:
    now = dt.datetime(2026, 11, 26, 12, 44, 59, tzinfo=dt.UTC)
    assert sf.slot(now, 15) == "2026-11-26T12:30"
    assert sf.slot(now, 1) == "2026-11-26T12:44"
    assert sf.slot(now, 1440) == "2026-11-26T00:00"
    assert sf.slot(now.replace(tzinfo=None), 15) == "2026-11-26T12:30"  # a naive time is UTC
    assert sf.slot(now.astimezone(dt.timezone(dt.timedelta(hours=2))), 15) == "2026-11-26T12:30"


# --- Outbound Messages, on both databases ------------------------------------------------------------


def salesforce_mode(w: World, event_type: int | None = None, **extra: Any) -> str:
    """Put the event type (the sale by default) in Salesforce mode; its outbound token."""
    et = event_type or w.sale
    with db.write(w.engine) as conn:
        catalog.patch_event_type(conn, w.actor, et, {"returns_processing": {**SETTINGS, **extra}},
                                 SecretBox("test-secret"))
        return str(conn.execute(select(event_types.c.outbound_token).where(event_types.c.id == et)).scalar_one())


def post(api: TestClient, token: str, body: bytes) -> Any:
    return api.post(f"/salesforce/outbound/{token}", content=body,
                    headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'})


def is_ack(r: Any) -> bool:
    return bool(r.status_code == 200 and r.headers["content-type"].startswith("text/xml")
                and "<Ack>true</Ack>" in r.text and "notificationsResponse" in r.text)


def submissions_of(w: World) -> list[dict[str, Any]]:
    with db.read(w.engine) as conn:
        return list(submissions.list_latest(conn, w.account_id)["items"])


def action(w: World, action_id: int) -> dict[str, Any]:
    with db.read(w.engine) as conn:
        return ledger.get_action(conn, w.account_id, action_id)


def last_run(w: World) -> dict[str, Any]:
    with db.read(w.engine) as conn:
        return runs.recent(conn, w.account_id, channel="salesforce", limit=1)[0]


def test_the_event_type_shows_its_outbound_url(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    token = salesforce_mode(w, password="secret", username="u@x.example")
    api = client_for(engine, tmp_path, PAYOUTDESK_PUBLIC_URL="https://payouts.example.com/")
    shown = api.get(f"/api/v1/event-types/{w.sale}", headers=w.auth).json()["returns_processing"]
    assert shown["outbound_url"] == f"https://payouts.example.com/salesforce/outbound/{token}"
    assert shown["password_set"] is True and "password" not in shown
    listed = api.get("/api/v1/event-types", headers=w.auth).json()["items"]
    assert [e["returns_processing"].get("outbound_url") for e in listed] == [shown["outbound_url"], None]
    assert sf.outbound_url("https://payouts.example.com/", token) == shown["outbound_url"]


def test_one_notification_approves(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    a = conversion(w, "SF-1")
    token = salesforce_mode(w)
    api = client_for(engine, tmp_path)
    r = post(api, token, envelope(("04l000000000001AAA", opp("SF-1", "Closed Won"))))
    assert is_ack(r), r.text
    [sub] = submissions_of(w)
    assert (sub["channel"], sub["id"][:2], sub["status"], sub["total_records"]) == ("salesforce", "A-", "QUEUED", None)
    assert sub["actor"] == "salesforce outbound"
    drain(engine)
    got = action(w, a)
    assert got["state"] == "APPROVED"
    assert got["updates"][-1]["channel"] == "salesforce" and got["updates"][-1]["submission_id"] == sub["id"]
    assert "notification 04l000000000001AAA" in (got["updates"][-1]["note"] or "")
    run = last_run(w)
    assert (run["trigger"], run["outcome"], run["submissions"], run["files_taken"]) == (
        "outbound_message", "ok", [sub["id"]], 1)
    with db.read(engine) as conn:
        seen = conn.execute(select(salesforce_notifications).where(
            salesforce_notifications.c.event_type_id == w.sale)).all()
    assert [(s.notification_id, s.submission_id) for s in seen] == [
        ("04l000000000001AAA", submissions.parse_id(sub["id"]))]


def test_several_notifications_approve_reverse_and_modify_in_one_submission(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    won, lost, adjusted, changed, other = (conversion(w, f"SF-{n}") for n in range(1, 6))
    token = salesforce_mode(w)
    api = client_for(engine, tmp_path)
    r = post(api, token, envelope(
        ("04l000000000001AAA", opp("SF-1", "Closed Won")),
        ("04l000000000002AAA", opp("SF-2", "Closed Lost")),
        ("04l000000000003AAA", opp("SF-3", "Adjusted", "60.0")),
        ("04l000000000004AAA", opp("SF-4", "Changed", "1.25E2")),
        ("04l000000000005AAA", opp("SF-5", "Prospecting")),  # not in the map: skipped
    ))
    assert is_ack(r), r.text
    [sub] = submissions_of(w)
    drain(engine)
    with db.read(engine) as conn:
        done = submissions.get(conn, w.account_id, sub["id"])
    assert (done["status"], done["total_records"], done["applied"], done["errors"]) == ("COMPLETE", 4, 4, 0)
    assert action(w, won)["state"] == "APPROVED"
    got = action(w, lost)
    assert (got["state"], got["status_detail"], got["amount"]) == ("REVERSED", "CONS_FRAUD", "0.00")
    got = action(w, adjusted)
    assert (got["state"], got["amount"], got["payout"], got["updates"][-1]["reason"]) == (
        "PENDING", "60.00", "6.00", "ITEM_RETURNED")
    got = action(w, changed)
    assert (got["amount"], got["updates"][-1]["reason"]) == ("125.00", "ORDER_UPDATE")
    assert action(w, other)["amount"] == "100.00" and len(action(w, other)["updates"]) == 1
    run = last_run(w)
    assert (run["outcome"], run["skipped"], run["duplicates"]) == ("ok", 1, 0)
    assert "'Prospecting' is not in status_map" in run["detail"]


def test_a_replayed_message_is_acknowledged_and_applies_nothing_again(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    a, b = conversion(w, "SF-1"), conversion(w, "SF-2")
    token = salesforce_mode(w)
    api = client_for(engine, tmp_path)
    message = envelope(("04l000000000001AAA", opp("SF-1", "Adjusted", "90")),
                       ("04l000000000002AAA", opp("SF-2", "Closed Lost")))
    assert is_ack(post(api, token, message))
    drain(engine)
    before = action(w, a), action(w, b)
    assert before[0]["amount"] == "90.00" and before[1]["state"] == "REVERSED"
    assert is_ack(post(api, token, message))  # Salesforce did not get the first Ack: it sends again
    assert len(submissions_of(w)) == 1
    drain(engine)
    assert (action(w, a), action(w, b)) == before
    run = last_run(w)
    assert (run["outcome"], run["duplicates"], run["submissions"], run["files_taken"]) == ("ok", 2, [], 0)
    # a message with a seen and a new notification takes the new one only
    c = conversion(w, "SF-3")
    assert is_ack(post(api, token, envelope(("04l000000000002AAA", opp("SF-2", "Closed Lost")),
                                            ("04l000000000003AAA", opp("SF-3", "Closed Won")))))
    assert len(submissions_of(w)) == 2
    drain(engine)
    assert action(w, c)["state"] == "APPROVED" and action(w, b) == before[1]
    assert last_run(w)["duplicates"] == 1


def test_a_message_whose_notifications_are_all_skipped_is_acknowledged(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    a = conversion(w, "SF-1")
    token = salesforce_mode(w)
    api = client_for(engine, tmp_path)
    r = post(api, token, envelope(("04l000000000001AAA", opp("SF-1", "Negotiation")),
                                  ("04l000000000002AAA", {"Id": "006X", "Order_Id__c": None,
                                                          "StageName": "Closed Won"})))
    assert is_ack(r)
    assert submissions_of(w) == []
    run = last_run(w)
    assert (run["outcome"], run["skipped"], run["submissions"]) == ("ok", 2, [])
    assert "Order_Id__c is empty" in run["detail"]
    assert action(w, a)["state"] == "PENDING"
    assert is_ack(post(api, token, envelope(("04l000000000001AAA", opp("SF-1", "Negotiation")))))
    assert last_run(w)["duplicates"] == 1  # recorded as taken: not counted as skipped again


@pytest.mark.parametrize("body", [
    b"not xml at all", BOMB, EXTERNAL,
    envelope(("04l000000000001AAA", opp("SF-1", "Closed Won")),
             ("04l000000000002AAA", opp("SF-1", "Closed Won"))).replace(b"<Id>04l000000000002AAA</Id>", b""),
    envelope(("04l000000000001AAA", opp("SF-1", "Closed Won"))).replace(b"sObject", b"Other"),
    envelope(),
], ids=["not-xml", "entity-bomb", "external-entity", "notification-without-id", "without-sobject", "empty"])
def test_a_malformed_message_is_a_fault_and_queues_nothing(engine: Engine, tmp_path: Path, body: bytes) -> None:
    w = make_world(engine)
    a = conversion(w, "SF-1")
    token = salesforce_mode(w)
    api = client_for(engine, tmp_path)
    r = post(api, token, body)
    assert r.status_code == 500 and r.headers["content-type"].startswith("text/xml")
    assert "<soapenv:Fault>" in r.text and "<faultcode>soapenv:Client</faultcode>" in r.text
    assert "<Ack>" not in r.text
    assert submissions_of(w) == []
    with db.read(engine) as conn:
        assert conn.execute(select(salesforce_notifications).where(
            salesforce_notifications.c.event_type_id == w.sale)).all() == []
    drain(engine)
    assert action(w, a)["state"] == "PENDING"
    run = last_run(w)
    assert run["outcome"] == "failed" and run["detail"].startswith("Outbound Message refused: ")


def test_a_wrong_address_is_not_found_and_other_modes_refuse(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    a = conversion(w, "SF-1")
    salesforce_mode(w)
    api = client_for(engine, tmp_path)
    message = envelope(("04l000000000001AAA", opp("SF-1", "Closed Won")))
    for token in ("0" * 32, "nope", "x" * 200):
        r = post(api, token, message)
        assert r.status_code == 404 and "<soapenv:Fault>" in r.text, token
    # the lead event type is in manual mode: its own token is refused
    with db.read(engine) as conn:
        lead_token = conn.execute(select(event_types.c.outbound_token).where(event_types.c.id == w.lead)).scalar_one()
    r = post(api, lead_token, message)
    assert r.status_code == 500 and "is manual" in r.text
    assert api.get(f"/salesforce/outbound/{lead_token}").status_code == 405
    assert submissions_of(w) == []
    assert action(w, a)["state"] == "PENDING"
    assert "/salesforce/outbound/{token}" not in api.get("/api/v1/openapi.json").json()["paths"]


def test_another_accounts_order_is_untouched(engine: Engine, tmp_path: Path) -> None:
    w, other = make_world(engine), make_world(engine)
    theirs = conversion(other, "SF-THEIRS")
    mine = conversion(w, "SF-MINE")
    token = salesforce_mode(w)
    salesforce_mode(other)
    api = client_for(engine, tmp_path)
    r = post(api, token, envelope(("04l000000000001AAA", opp("SF-THEIRS", "Closed Lost")),
                                  ("04l000000000002AAA", opp("SF-MINE", "Closed Lost"))))
    assert is_ack(r)
    drain(engine)
    [sub] = submissions_of(w)
    with db.read(engine) as conn:
        done = submissions.get(conn, w.account_id, sub["id"])
        errors = submissions.errors(conn, w.account_id, sub["id"])["items"]
    assert (done["applied"], done["errors"]) == (1, 1)
    assert errors[0]["row"] == 1 and errors[0]["code"] == "unknown_action"
    assert action(other, theirs)["state"] == "PENDING" and len(action(other, theirs)["updates"]) == 1
    assert action(w, mine)["state"] == "REVERSED"
    assert submissions_of(other) == []


# --- polling, against a local TLS stand-in of Salesforce ---------------------------------------------

LOGIN_FAULT = (b'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
               b'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
               b'xmlns:sf="urn:fault.partner.soap.sforce.com">'
               b"<soapenv:Body><soapenv:Fault><faultcode>sf:INVALID_LOGIN</faultcode><faultstring>INVALID_LOGIN: "
               b"Invalid username, password, security token; or user locked out.</faultstring><detail>"
               b"<sf:LoginFault><sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode></sf:LoginFault></detail>"
               b"</soapenv:Fault></soapenv:Body></soapenv:Envelope>")


class StandIn:
    """The parts of Salesforce that polling uses: the SOAP login, and /services/data/vXX.X/query with
    nextRecordsUrl pages of ``page`` records. ``records`` are Opportunities with a SystemModstamp."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.username, self.password = "ops@brand.example", "hunter2" + "TOKEN123"
        self.session = "00D!session"
        self.records: list[dict[str, Any]] = []
        self.queries: list[str] = []
        self.requests: list[str] = []
        self.page = 2
        self.pages: dict[str, list[dict[str, Any]]] = {}
        self.query_delay = 0.0  # seconds before a query answers
        self.fail_pages = False  # the pages after the first answer an error

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def add(self, rid: str, order: str, stage: str, amount: float | None, stamp: dt.datetime) -> None:
        self.records.append({"attributes": {"type": "Opportunity", "url": f"/services/data/v59.0/sobjects/"
                                                                          f"Opportunity/{rid}"},
                             "Id": rid, "Order_Id__c": order, "StageName": stage, "Amount": amount,
                             "SystemModstamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.000+0000")})

    def answer(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, str, bytes]:
        self.requests.append(f"{method} {urlparse(path).path}")
        if method == "POST" and path == "/services/Soap/u/59.0":
            text = body.decode()
            user = re.search(r"<urn:username>(.*?)</urn:username>", text)
            password = re.search(r"<urn:password>(.*?)</urn:password>", text)
            if not user or not password or (user.group(1), password.group(1)) != (self.username, self.password):
                return 500, "text/xml", LOGIN_FAULT
            return 200, "text/xml", (
                '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
                'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns="urn:partner.soap.sforce.com">'
                f"<soapenv:Body><loginResponse><result><serverUrl>{self.url}/services/Soap/u/59.0/00D000000000001"
                f"</serverUrl><sessionId>{self.session}</sessionId><userId>005000000000001</userId></result>"
                "</loginResponse></soapenv:Body></soapenv:Envelope>").encode()
        if headers.get("Authorization") != f"Bearer {self.session}":
            return 401, "application/json", json.dumps(
                [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]).encode()
        url = urlparse(path)
        if method == "GET" and url.path == "/services/data/v59.0/query/":
            query = parse_qs(url.query)["q"][0]
            self.queries.append(query)
            time.sleep(self.query_delay)
            m = re.search(r"FROM Opportunity WHERE SystemModstamp > (\S+) ORDER BY SystemModstamp, Id$", query)
            if m is None or not query.startswith("SELECT Id, Order_Id__c, StageName, Amount, SystemModstamp "):
                return 400, "application/json", json.dumps(
                    [{"message": "unexpected query", "errorCode": "MALFORMED_QUERY"}]).encode()
            after = soap.parse_stamp(m.group(1))
            found = sorted((r for r in self.records if soap.parse_stamp(r["SystemModstamp"]) > after),
                           key=lambda r: (r["SystemModstamp"], r["Id"]))
            return self._page(found, f"01g{len(self.queries)}")
        if method == "GET" and url.path.startswith("/services/data/v59.0/query/01g"):
            locator = url.path.rsplit("/", 1)[-1]
            if self.fail_pages:
                return 500, "application/json", json.dumps(
                    [{"message": "An unexpected error occurred.", "errorCode": "UNKNOWN_EXCEPTION"}]).encode()
            return self._page(self.pages.pop(locator), locator.split("-")[0])
        return 404, "application/json", b'[{"message": "no such resource", "errorCode": "NOT_FOUND"}]'

    def _page(self, found: list[dict[str, Any]], locator: str) -> tuple[int, str, bytes]:
        head, rest = found[:self.page], found[self.page:]
        out: dict[str, Any] = {"totalSize": len(found), "done": not rest, "records": head}
        if rest:
            nxt = f"{locator}-{len(self.pages) + 1}"
            self.pages[nxt] = rest
            out["nextRecordsUrl"] = f"/services/data/v59.0/query/{nxt}"
        return 200, "application/json", json.dumps(out).encode()


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    made = self_signed(tmp_path / "tls")
    cert, key = made.cert, made.key
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    holder: dict[str, StandIn] = {}

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, ctype, out = holder["s"].answer(self.command, self.path, self.headers, body)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that gave up waiting (the timeout test): nothing to report

    server = Server(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    holder["s"] = StandIn(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder["s"]
    finally:
        server.shutdown()
        server.server_close()


def intake_ctx(engine: Engine, tmp_path: Path) -> IntakeContext:
    settings = Settings.from_env({"PAYOUTDESK_DATA_DIR": str(tmp_path), "PAYOUTDESK_SECRET_KEY": "test-secret"})
    return IntakeContext(settings, engine, SecretBox("test-secret"))


def polling(w: World, s: StandIn, **extra: Any) -> None:
    salesforce_mode(w, instance_url=s.url, username=s.username, password="hunter2", security_token="TOKEN123",
                    poll_every_minutes=15, **extra)


def cursor_of(w: World) -> str | None:
    with db.read(w.engine) as conn:
        value = conn.execute(select(intake_cursors.c.cursor).where(intake_cursors.c.event_type_id == w.sale)).scalar()
    return None if value is None else str(value)


def test_polling_takes_the_changes_after_its_cursor(engine: Engine, tmp_path: Path, stand_in: StandIn) -> None:
    w = make_world(engine)
    a, b, c, d, e = (conversion(w, f"SF-{n}") for n in range(1, 6))
    polling(w, stand_in)
    now = utcnow().replace(microsecond=0)
    stand_in.add("006000000000001", "SF-1", "Closed Won", None, now - dt.timedelta(hours=30))  # before the start
    stand_in.add("006000000000002", "SF-2", "Closed Lost", None, now - dt.timedelta(hours=3))
    stand_in.add("006000000000003", "SF-3", "Adjusted", 70.0, now - dt.timedelta(hours=2))
    stand_in.add("006000000000004", "SF-4", "Prospecting", 1.0, now - dt.timedelta(hours=1))  # skipped
    stand_in.add("006000000000005", "SF-5", "Closed Won", None, now - dt.timedelta(minutes=30))
    ctx = intake_ctx(engine, tmp_path)

    run = sf.poll(ctx, w.sale, "run_now")
    assert (run["outcome"], run["channel"], run["trigger"], run["skipped"], run["files_taken"]) == (
        "ok", "salesforce", "run_now", 1, 1), run
    assert run["detail"].startswith("4 record(s) changed after ")
    expected_start = soap.stamp_literal(now - sf.FIRST_POLL_BACK)
    assert stand_in.queries[0].endswith(f"WHERE SystemModstamp > {expected_start} ORDER BY SystemModstamp, Id")
    assert sum(r.startswith("GET /services/data/v59.0/query/01g") for r in stand_in.requests) == 1  # page 2 of 2
    [sub] = submissions_of(w)
    assert run["submissions"] == [sub["id"]] and sub["channel"] == "salesforce" and sub["actor"] == "salesforce poll"
    assert cursor_of(w) == soap.stamp_literal(now - dt.timedelta(minutes=30))
    drain(engine)
    assert action(w, a)["state"] == "PENDING"
    assert (action(w, b)["state"], action(w, b)["status_detail"]) == ("REVERSED", "CONS_FRAUD")
    assert (action(w, c)["amount"], action(w, c)["updates"][-1]["reason"]) == ("70.00", "ITEM_RETURNED")
    assert action(w, d)["state"] == "PENDING"
    assert action(w, e)["state"] == "APPROVED"
    assert action(w, e)["updates"][-1]["channel"] == "salesforce"

    # nothing new: no submission, the cursor stays
    run = sf.poll(ctx, w.sale, "schedule")
    assert (run["outcome"], run["submissions"]) == ("ok", [])
    assert run["detail"].startswith("no record changed after ")
    assert len(submissions_of(w)) == 1

    # a second change of SF-3 and one of SF-1: only these are taken
    stand_in.add("006000000000003", "SF-3", "Adjusted", 50.0, now + dt.timedelta(minutes=1))
    stand_in.add("006000000000001", "SF-1", "Closed Lost", None, now + dt.timedelta(minutes=2))
    run = sf.poll(ctx, w.sale, "schedule")
    assert (run["outcome"], run["skipped"], len(run["submissions"])) == ("ok", 0, 1)
    assert stand_in.queries[-1].endswith(
        f"WHERE SystemModstamp > {soap.stamp_literal(now - dt.timedelta(minutes=30))} ORDER BY SystemModstamp, Id")
    drain(engine)
    with db.read(engine) as conn:
        second = submissions.get(conn, w.account_id, run["submissions"][0])
    assert (second["total_records"], second["applied"], second["errors"]) == (2, 2, 0)
    assert action(w, c)["amount"] == "50.00" and action(w, a)["state"] == "REVERSED"
    assert action(w, e)["state"] == "APPROVED" and len(action(w, e)["updates"]) == 2  # not applied twice
    assert cursor_of(w) == soap.stamp_literal(now + dt.timedelta(minutes=2))


def test_a_poll_in_chunks_moves_the_cursor_with_each_submission(engine: Engine, tmp_path: Path, stand_in: StandIn,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    w = make_world(engine)
    ids = [conversion(w, f"SF-{n}") for n in range(1, 6)]
    polling(w, stand_in)
    now = utcnow().replace(microsecond=0)
    for n, minutes in enumerate((50, 40, 40, 30, 20), 1):  # two records share a second: never split
        stand_in.add(f"00600000000000{n}", f"SF-{n}", "Closed Won", None, now - dt.timedelta(minutes=minutes))
    monkeypatch.setattr(sf, "CHUNK_RECORDS", 2)
    run = sf.poll(intake_ctx(engine, tmp_path), w.sale, "run_now")
    assert run["outcome"] == "ok" and len(run["submissions"]) == 2, run
    drain(engine)
    with db.read(engine) as conn:
        totals = [submissions.get(conn, w.account_id, label)["total_records"] for label in run["submissions"]]
    assert totals == [3, 2]  # the two records of one second went into one submission
    assert all(action(w, i)["state"] == "APPROVED" for i in ids)
    assert cursor_of(w) == soap.stamp_literal(now - dt.timedelta(minutes=20))


def test_a_refused_login_is_a_failed_run(engine: Engine, tmp_path: Path, stand_in: StandIn) -> None:
    w = make_world(engine)
    a = conversion(w, "SF-1")
    polling(w, stand_in)
    stand_in.add("006000000000001", "SF-1", "Closed Won", None, utcnow() - dt.timedelta(hours=1))
    stand_in.password = "changed" + "TOKEN123"
    ctx = intake_ctx(engine, tmp_path)
    run = sf.poll(ctx, w.sale, "run_now")
    assert run["outcome"] == "failed" and run["submissions"] == []
    assert "login as ops@brand.example" in run["detail"] and "INVALID_LOGIN" in run["detail"]
    assert "hunter2" not in run["detail"] and "TOKEN123" not in run["detail"]
    assert stand_in.queries == [] and cursor_of(w) is None and submissions_of(w) == []
    with db.read(engine) as conn:
        [spell] = intake_repo.spells(conn, w.account_id, [f"event_type:{w.sale}"])
    assert spell.failures == 1 and "INVALID_LOGIN" in spell.last_error
    # the password fixed: the next poll takes the change and closes the failure spell
    stand_in.password = "hunter2" + "TOKEN123"
    assert sf.poll(ctx, w.sale, "run_now")["outcome"] == "ok"
    drain(engine)
    assert action(w, a)["state"] == "APPROVED"
    with db.read(engine) as conn:
        assert intake_repo.spells(conn, w.account_id, [f"event_type:{w.sale}"]) == []


def test_unreachable_salesforce_and_missing_credentials_fail_clearly(engine: Engine, tmp_path: Path,
                                                                     stand_in: StandIn) -> None:
    w = make_world(engine)
    ctx = intake_ctx(engine, tmp_path)
    salesforce_mode(w)  # Outbound Messages only: no credentials
    run = sf.poll(ctx, w.sale, "run_now")
    assert run["outcome"] == "failed" and "no Salesforce username and password" in run["detail"]
    nobody = free_port()
    with db.write(engine) as conn:  # nothing listens there
        catalog.patch_event_type(conn, w.actor, w.sale, {"returns_processing": {
            **SETTINGS, "instance_url": f"https://127.0.0.1:{nobody}", "username": "u", "password": "p"}},
            SecretBox("test-secret"))
    run = sf.poll(ctx, w.sale, "run_now")
    assert run["outcome"] == "failed" and f"cannot reach Salesforce at https://127.0.0.1:{nobody}" in run["detail"]
    with db.read(engine) as conn:
        manual = conn.execute(select(event_types.c.id).where(event_types.c.id == w.lead)).scalar_one()
    run = sf.poll(ctx, manual, "run_now")
    assert run["outcome"] == "failed" and "not in Salesforce mode" in run["detail"]


def test_scheduled_polls(engine: Engine, tmp_path: Path, stand_in: StandIn) -> None:
    w = make_world(engine)
    a = conversion(w, "SF-1")
    polling(w, stand_in)
    other = make_world(engine)
    salesforce_mode(other)  # no credentials: not polled
    stand_in.add("006000000000001", "SF-1", "Closed Won", None, utcnow() - dt.timedelta(minutes=5))
    ctx = intake_ctx(engine, tmp_path)
    now = dt.datetime(2026, 11, 26, 12, 44, 59, tzinfo=dt.UTC)
    jobs = {name: (slot, fn) for name, slot, fn in sf.scheduled(ctx, now)}
    assert f"poll:{w.sale}" in jobs and f"poll:{other.sale}" not in jobs
    slot, fn = jobs[f"poll:{w.sale}"]
    assert slot == "2026-11-26T12:30"
    result = fn()
    assert result.startswith("ok: 1 submission(s) A-") and "\n" not in result
    assert last_run(w)["trigger"] == "schedule"
    drain(engine)
    assert action(w, a)["state"] == "APPROVED"


def test_two_deliveries_of_one_message_at_once_queue_it_once(engine: Engine, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    w = make_world(engine)
    a = conversion(w, "SF-1")
    token = salesforce_mode(w)
    api = client_for(engine, tmp_path)
    message = envelope(("04l000000000001AAA", opp("SF-1", "Closed Won")))
    assert is_ack(post(api, token, message))
    # the second delivery read the seen ids before the first one committed: its insert loses, it starts again
    real = srepo.seen_notifications
    calls: list[int] = []

    def stale(conn: Any, event_type_id: int, ids: Any) -> set[str]:
        calls.append(1)
        return set() if len(calls) == 1 else real(conn, event_type_id, ids)

    monkeypatch.setattr(srepo, "seen_notifications", stale)
    assert is_ack(post(api, token, message))
    assert len(calls) == 2 and len(submissions_of(w)) == 1  # the losing attempt's submission was rolled back
    drain(engine)
    assert action(w, a)["state"] == "APPROVED" and len(action(w, a)["updates"]) == 2


def test_two_polls_at_once_take_the_changes_once(engine: Engine, tmp_path: Path, stand_in: StandIn,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    w = make_world(engine)
    a = conversion(w, "SF-1")
    polling(w, stand_in)
    stand_in.add("006000000000001", "SF-1", "Closed Won", None, utcnow() - dt.timedelta(hours=1))
    ctx = intake_ctx(engine, tmp_path)
    assert len(sf.poll(ctx, w.sale, "schedule")["submissions"]) == 1
    moved = cursor_of(w)
    stand_in.add("006000000000001", "SF-1", "Closed Won", None, utcnow() - dt.timedelta(minutes=1))
    # this poll read the cursor before the other one moved it (None: before the other's first poll, or an
    # older value): the other one took the records, this one takes nothing
    for stale in (None, soap.stamp_literal(utcnow() - dt.timedelta(hours=2))):
        monkeypatch.setattr(srepo, "cursor", lambda conn, event_type_id, value=stale: value)
        run = sf.poll(ctx, w.sale, "run_now")
        assert (run["outcome"], run["submissions"]) == ("ok", []), run
        assert "another poll took these changes" in run["detail"]
        assert cursor_of(w) == moved
    assert len(submissions_of(w)) == 1
    drain(engine)
    assert len(action(w, a)["updates"]) == 2


def test_a_query_that_does_not_answer_in_time_is_a_failed_run(engine: Engine, tmp_path: Path, stand_in: StandIn,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    w = make_world(engine)
    polling(w, stand_in)
    stand_in.add("006000000000001", "SF-1", "Closed Won", None, utcnow() - dt.timedelta(hours=1))
    stand_in.query_delay = 4.0
    monkeypatch.setattr(sf, "TIMEOUT", (2.0, 0.2))
    began = time.monotonic()
    run = sf.poll(intake_ctx(engine, tmp_path), w.sale, "schedule")
    assert time.monotonic() - began < 3.0  # the read timeout, not the stand-in, ended the wait
    assert run["outcome"] == "failed" and "the SOQL query failed: ReadTimeout" in run["detail"], run
    assert cursor_of(w) is None and submissions_of(w) == []


def test_an_organization_id_setting_refuses_messages_of_other_organizations(engine: Engine, tmp_path: Path) -> None:
    from payoutdesk.catalog import returns_settings
    from payoutdesk.errors import ValidationFailed

    assert returns_settings.check({**SETTINGS, "organization_id": "00D5g000000ABCD"})["organization_id"] == (
        "00D5g000000ABCD")
    for bad in ("005000000000001", "00D5g", "00D5g000000ABCDEAAAX"):
        with pytest.raises(ValidationFailed):
            returns_settings.check({**SETTINGS, "organization_id": bad})
    w = make_world(engine)
    a = conversion(w, "SF-1")
    token = salesforce_mode(w, organization_id="00D5g000000ABCD")
    api = client_for(engine, tmp_path)
    r = post(api, token, envelope(("04l000000000001AAA", opp("SF-1", "Closed Won")), org="00D5g000000WXYZEAA"))
    assert r.status_code == 500 and "not from 00D5g000000ABCD" in r.text
    assert submissions_of(w) == [] and last_run(w)["outcome"] == "failed"
    r = post(api, token, envelope(("04l000000000001AAA", opp("SF-1", "Closed Won")), org="00D5g000000ABCDEAA"))
    assert is_ack(r)  # the 18-character form of the same id
    drain(engine)
    assert action(w, a)["state"] == "APPROVED"


def test_a_poll_that_fails_half_way_keeps_what_it_queued_and_resumes_there(
        engine: Engine, tmp_path: Path, stand_in: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    w = make_world(engine)
    ids = [conversion(w, f"SF-{n}") for n in range(1, 6)]
    polling(w, stand_in)
    now = utcnow().replace(microsecond=0)
    for n in range(1, 6):
        stand_in.add(f"00600000000000{n}", f"SF-{n}", "Closed Lost", None, now - dt.timedelta(minutes=60 - n))
    monkeypatch.setattr(sf, "CHUNK_RECORDS", 2)
    stand_in.page, stand_in.fail_pages = 3, True
    ctx = intake_ctx(engine, tmp_path)
    run = sf.poll(ctx, w.sale, "schedule")
    assert run["outcome"] == "failed" and "UNKNOWN_EXCEPTION" in run["detail"] and len(run["submissions"]) == 1
    assert cursor_of(w) == soap.stamp_literal(now - dt.timedelta(minutes=58))  # the first two records
    stand_in.fail_pages = False
    run = sf.poll(ctx, w.sale, "schedule")
    assert run["outcome"] == "ok" and len(run["submissions"]) == 2, run
    assert stand_in.queries[-1].endswith(f"> {soap.stamp_literal(now - dt.timedelta(minutes=58))} "
                                         "ORDER BY SystemModstamp, Id")
    drain(engine)
    assert [len(action(w, i)["updates"]) for i in ids] == [2, 2, 2, 2, 2]  # each reversed once
    assert all(action(w, i)["state"] == "REVERSED" for i in ids)
