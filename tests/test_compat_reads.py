"""The impact.com-compatible reads of api/compat_reads.py: CompanyInformation, Campaigns, MediaPartners,
ActionUpdates and the list of APISubmissions, with impact.com's own example requests, their paging and
filters, the types the tap-impact client loads them with, and one account never seeing another's."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from xml.etree import ElementTree

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from payoutdesk.catalog import service as catalog
from payoutdesk.kit import db
from payoutdesk.ledger import service as ledger
from payoutdesk.ledger import workflow as wf
from tests.helpers import World, drain, make_world

FORM = {"Content-Type": "application/x-www-form-urlencoded"}

# The types the Singer tap tap-impact 2.1.1 loads each field with (its tap_impact/schemas/*.json, written
# out here rather than copied: that package is AGPL-3.0 and payoutdesk is not). Every field is nullable
# there, and the tap loads "" as null; "date-time" is a string in ISO 8601.
_CONTACT = {"cell_phone_number": "string", "cell_phone_number_country": "string", "email": "string",
            "name": "string", "user_id": "integer", "work_phone_number": "string",
            "work_phone_number_country": "string"}
_ADDRESS = {"address_line1": "string", "address_line2": "string", "city": "string", "country": "string",
            "postal_code": "string", "state": "string"}
TAP_TYPES: dict[str, dict[str, Any]] = {
    "company_information": {
        "billing_address": _ADDRESS, "commercial_contact": _CONTACT, "company_name": "string",
        "corporate_address": _ADDRESS, "currency": "string", "ein_ssn_foreign_tax_id": "string",
        "financial_contact": _CONTACT, "indirect_tax_number": "string",
        "industry": {"industry_id": "integer", "industry_name": "string"}, "minimum_contact_rating": "integer",
        "organization_type": "string", "primary_phone_number": "string", "primary_phone_number_country": "string",
        "registered_for_indirect_tax": "boolean", "secondary_phone_number": "string",
        "secondary_phone_number_country": "string", "technical_contact": _CONTACT, "timezone": "string",
        "uri": "string", "website": "string"},
    "campaigns": {
        "categories": {"additional_category": "string", "additional_sub_categories": ["string"],
                       "primary_category": "string", "primary_sub_categories": ["string"]},
        "company_contacts": [{"email_address": "string", "first_name": "string", "last_name": "string",
                              "phone_number": "string"}],
        "direct_tracking_settings": {"session_window_length": "integer", "unidentified_source_name": "string"},
        "display_future_ads": "boolean", "display_servicing_agency": "boolean", "gift_card_payouts": "boolean",
        "id": "integer", "identity_collapsing": "string", "impression_tracking": "boolean",
        "list_in_marketplace": "boolean", "long_description": "string", "mobile_ready_ads": "boolean",
        "name": "string", "promo_code_tracking": "boolean", "rating": "integer", "search_keywords": "string",
        "shipping_regions": "string", "short_description": "string", "site_definition": "string",
        "state": "string", "third_party_impression_pixel": "string", "tracking_domain": "string",
        "trademark_bidding": "boolean", "view_through_crediting": "boolean"},
    "media_partners": {
        "address_line1": "string", "address_line2": "string",
        "campaigns": [{"campaign_id": "integer", "campaign_name": "string", "insertion_order_id": "integer",
                       "insertion_order_name": "string", "join_date": "date-time"}],
        "city": "string",
        "contact": {"email_address": "string", "first_name": "string", "last_name": "string",
                    "phone_number": "string"},
        "country": "string", "country_state": "string", "currency": "string", "date_created": "date-time",
        "description": "string", "groups": [{"group_id": "integer", "group_name": "string"}], "id": "integer",
        "mp_value1": "string", "mp_value2": "string", "mp_value3": "string", "name": "string",
        "partner_type": "string", "phone_number": "string", "postal_code": "string",
        "primary_promotional_method": "string", "promoting_countries": "string", "promotional_methods": "string",
        "rating": "integer", "relationship_state": "string", "state": "string", "timezone": "string",
        "uri": "string", "website": "string"},
    "action_updates": {
        "action_date": "date-time", "action_id": "string", "action_tracker_id": "integer", "action_uri": "string",
        "ad_id": "integer", "caller_id": "string", "campaign_id": "integer", "category": "string",
        "clearing_date": "date-time", "currency": "string", "customer_id": "string", "customer_status": "string",
        "delta_amount": "number", "delta_payout": "number", "disposition": "string", "id": "string",
        "locking_date": "date-time", "media_partner_id": "integer", "order_id": "string", "quantity": "integer",
        "shared_id": "string", "sku": "string", "state": "string", "state_detail": "string",
        "state_detail_description": "string", "update_date": "date-time", "uri": "string"},
    "api_submissions": {
        "account_id": "integer", "action_tracker_id": "integer", "batch_id": "string", "campaign_id": "integer",
        "completion_date": "date-time", "error_reason": "string", "error_type": "string", "event_code": "string",
        "media_partner_id": "integer", "order_id": "string", "payload": "string", "status": "string",
        "submission_date": "date-time", "type": "string", "uri": "string"},
}
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def snake(key: str) -> str:
    """A key as the tap turns it into its schema's name (ActionTrackerId -> action_tracker_id)."""
    key = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", key)
    return re.sub("([a-z0-9])([A-Z])", r"\1_\2", key).lower()


def check_value(value: Any, expected: Any, where: str) -> None:
    if value is None or (value == "" and not isinstance(expected, (dict, list))):
        return  # null (the tap loads "" as null)
    if isinstance(expected, dict):
        assert isinstance(value, dict), where
        check_record(value, expected, where)
    elif isinstance(expected, list):
        assert isinstance(value, list), where
        for n, item in enumerate(value):
            check_value(item, expected[0], f"{where}[{n}]")
    elif expected == "string":
        assert isinstance(value, str), (where, value)
    elif expected == "date-time":
        assert isinstance(value, str) and ISO_UTC.match(value), (where, value)
    elif expected == "integer":
        assert isinstance(value, int) and not isinstance(value, bool), (where, value)
    elif expected == "number":
        assert isinstance(value, (int, Decimal)) and not isinstance(value, bool), (where, value)
    elif expected == "boolean":
        assert isinstance(value, bool), (where, value)


def check_record(record: dict[str, Any], types: dict[str, Any], where: str) -> int:
    """Every key the tap's schema knows has its type there; returns how many keys it knows."""
    known = 0
    for key, value in record.items():
        name = "order_id" if snake(key) == "oid" else snake(key)  # the tap's oid -> order_id
        if name in types:
            known += 1
            check_value(value, types[name], f"{where}.{key}")
    return known


def loads(text: str) -> Any:
    return json.loads(text, parse_float=Decimal)


def base(w: World) -> str:
    return f"/Advertisers/{w.sid}"


def get(api: TestClient, w: World, path: str, status: int = 200) -> Any:
    r = api.get(path, headers=w.auth)
    assert r.status_code == status, r.text
    return loads(r.text)


def get_xml(api: TestClient, w: World, path: str) -> ElementTree.Element:
    r = api.get(path, headers=w.auth)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/xml")
    root = ElementTree.fromstring(r.content)
    assert root.tag == "ImpactRadiusResponse"
    return root


def all_pages(api: TestClient, w: World, path: str, key: str) -> list[dict[str, Any]]:
    """Every record of a list, following ``@nextpageuri`` as the tap does."""
    page = get(api, w, path)
    out = list(page[key])
    while page["@nextpageuri"]:
        page = get(api, w, page["@nextpageuri"])
        out += page[key]
    return out


# --- CompanyInformation ------------------------------------------------------------------------


def test_company_information(api: TestClient, world: World) -> None:
    got = get(api, world, f"{base(world)}/CompanyInformation")
    assert got["CompanyName"] == "Test brand" and got["Currency"] == "USD" and got["Timezone"] == "UTC"
    assert got["Uri"] == f"{base(world)}/CompanyInformation"
    assert got["TechnicalContact"]["Email"] == "" and got["BillingAddress"]["City"] == ""
    assert check_record(got, TAP_TYPES["company_information"], "CompanyInformation") == 20
    # the tap asks .json with PageSize (it sends it everywhere): the same answer
    assert get(api, world, f"{base(world)}/CompanyInformation.json?PageSize=20000") == got
    api.patch("/api/v1/account", headers=world.auth, json={"alert_email": "ops@brand.test"})
    assert get(api, world, f"{base(world)}/CompanyInformation")["TechnicalContact"]["Email"] == "ops@brand.test"
    err = get(api, world, f"{base(world)}/CompanyInformation?Name=x", 422)
    assert err["code"] == "validation_error" and "Name" in err["detail"] and err["Status"] == "ERROR"
    root = get_xml(api, world, f"{base(world)}/CompanyInformation.xml")
    assert root.findtext("CompanyName") == "Test brand" and root.findtext("TechnicalContact/Email") == "ops@brand.test"


# --- Campaigns and MediaPartners ---------------------------------------------------------------


def test_campaigns_list_one_and_paging(api: TestClient, world: World, engine: Engine) -> None:
    with db.write(engine) as conn:
        extra = [catalog.create_campaign(conn, world.actor, f"Shop {n}", cur, None, "mail.test")["id"]
                 for n, cur in ((2, "EUR"), (3, "JPY"))]
    listed = get(api, world, f"{base(world)}/Campaigns")
    assert listed["@total"] == "3" and listed["@nextpageuri"] == ""
    assert [(c["Id"], c["Name"], c["Currency"]) for c in listed["Campaigns"]] == [
        (world.campaign_id, "Main", "USD"), (extra[0], "Shop 2", "EUR"), (extra[1], "Shop 3", "JPY")]
    first = listed["Campaigns"][0]
    assert (first["AdvertiserId"], first["AdvertiserName"], first["CampaignName"], first["CampaignUrl"]) == (
        world.account_id, "Test brand", "Main", "")
    assert first["Uri"] == f"{base(world)}/Campaigns/{world.campaign_id}" and first["State"] == "ACTIVE"
    for c in listed["Campaigns"]:
        assert check_record(c, TAP_TYPES["campaigns"], "Campaign") == 13
    assert get(api, world, first["Uri"]) == first
    # paging: PageSize=2, two pages, followed as the tap follows them
    paged = all_pages(api, world, f"{base(world)}/Campaigns?PageSize=2", "Campaigns")
    assert [c["Id"] for c in paged] == [c["Id"] for c in listed["Campaigns"]]
    second = get(api, world, f"{base(world)}/Campaigns?PageSize=2&Page=2")
    assert (second["@page"], second["@numpages"], second["@start"], len(second["Campaigns"])) == ("2", "2", "2", 1)
    assert get(api, world, f"{base(world)}/Campaigns.json?PageSize=20000")["Campaigns"] == listed["Campaigns"]
    for bad in ("PageSize=0", "PageSize=20001", "Page=0", "CampaignId=1"):
        assert get(api, world, f"{base(world)}/Campaigns?{bad}", 422)["code"] == "validation_error", bad
    for missing in ("999999", "0", "x", "99999999999"):
        assert get(api, world, f"{base(world)}/Campaigns/{missing}", 404)["code"] == "not_found"
    root = get_xml(api, world, f"{base(world)}/Campaigns.xml?PageSize=2")
    listing = root.find("Campaigns")
    assert listing is not None and listing.get("total") == "3" and listing.get("nextpageuri", "").startswith(
        f"{base(world)}/Campaigns.xml?")
    assert [e.findtext("Name") for e in listing.findall("Campaign")] == ["Main", "Shop 2"]


def test_media_partners_with_their_campaigns(api: TestClient, world: World, engine: Engine) -> None:
    with db.write(engine) as conn:  # a newer contract of Alpha supersedes the first from 2026
        newer = catalog.create_contract(conn, world.actor, {
            "campaign_id": world.campaign_id, "partner_id": world.partners[0], "starts_on": date(2026, 1, 1),
            "payout": [{"event_type_id": world.sale, "percent": "12"}],
            "lock_after": {"months": 0, "days": 27}, "pay_after": {"months": 0, "days": 20},
            "referral_window_days": 30})
    listed = get(api, world, f"{base(world)}/MediaPartners")
    assert [(p["Id"], p["Name"]) for p in listed["MediaPartners"]] == list(zip(world.partners,
                                                                               ["Alpha", "Beta", "Gamma"], strict=True))
    alpha = listed["MediaPartners"][0]
    assert alpha["Campaigns"] == [{"CampaignId": world.campaign_id, "CampaignName": "Main",
                                   "InsertionOrderId": newer, "InsertionOrderName": "",
                                   "JoinDate": "2020-01-01T00:00:00Z"}]
    assert alpha["Uri"] == f"{base(world)}/MediaPartners/{world.partners[0]}" and ISO_UTC.match(alpha["DateCreated"])
    for p in listed["MediaPartners"]:
        assert check_record(p, TAP_TYPES["media_partners"], "MediaPartner") == 28
    assert get(api, world, alpha["Uri"]) == alpha
    paged = all_pages(api, world, f"{base(world)}/MediaPartners.json?PageSize=2", "MediaPartners")
    assert [p["Id"] for p in paged] == world.partners
    assert get(api, world, f"{base(world)}/MediaPartners?Name=Alpha", 422)["code"] == "validation_error"
    root = get_xml(api, world, f"{base(world)}/MediaPartners.xml")
    first = root.find("MediaPartners/MediaPartner")
    assert first is not None and first.findtext("Name") == "Alpha"
    assert first.findtext("Campaigns/Campaign/InsertionOrderId") == str(newer)


# --- ActionUpdates -----------------------------------------------------------------------------


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def record(w: World, order_id: str, amount: str, event_date: str, when: str, *, lead: bool = False,
           partner: int = 0) -> int:
    with db.write(w.engine) as conn:
        return ledger.record_conversion(conn, w.actor, {
            "event_type_id": w.lead if lead else w.sale, "order_id": order_id, "amount": amount,
            "event_date": event_date, "partner_id": w.partners[partner]}, now=at(when))


def change(w: World, action_id: int, command: wf.Command, when: str, note: str | None = None) -> None:
    with db.write(w.engine) as conn:
        ledger.apply(conn, w.actor, action_id, command, note=note, now=at(when))


def history_world(engine: Engine) -> tuple[World, dict[str, int]]:
    """An account whose history has every kind of entry, at known times (a lock run on 28 November)."""
    w = make_world(engine)
    ids = {
        "a": record(w, "U-A", "100.00", "2026-10-30T10:00:00Z", "2026-11-01T09:00:00Z"),
        "b": record(w, "U-B", "50.00", "2026-10-31T10:00:00Z", "2026-11-02T09:00:00Z", lead=True, partner=1),
        "c": record(w, "U-C", "30.00", "2026-10-29T10:00:00Z", "2026-11-03T09:00:00Z"),
    }
    change(w, ids["c"], wf.Reverse("ITEM_RETURNED"), "2026-11-04T09:00:00Z")
    change(w, ids["a"], wf.Modify(amount=8000), "2026-11-10T00:00:00Z", note="partial refund")
    change(w, ids["a"], wf.Reverse("CONS_FRAUD"), "2026-11-20T12:00:00Z")
    change(w, ids["a"], wf.Approve(), "2026-11-25T00:00:00Z")  # on a reversed action: restore (R4)
    # October's sales lock on 28 November (0 months 27 days): a as APPROVED, c stays REVERSED
    assert ledger.lock_run(engine, date(2026, 11, 28), w.account_id, now=at("2026-11-28T00:00:00Z")) == 2
    change(w, ids["b"], wf.Approve(), "2026-12-01T00:00:00Z")  # the open-ended lead, approved
    return w, ids


EXPECTED = [  # (action, Kind, State, StateDetail, Disposition, DeltaAmount, DeltaPayout, UpdateDate)
    ("a", "CREATED", "PENDING", "", "", "100.00", "10.00", "2026-11-01T09:00:00Z"),
    ("b", "CREATED", "PENDING", "", "", "50.00", "2.50", "2026-11-02T09:00:00Z"),
    ("c", "CREATED", "PENDING", "", "", "30.00", "3.00", "2026-11-03T09:00:00Z"),
    ("c", "REVERSED", "REVERSED", "ITEM_RETURNED", "ITEM_RETURNED", "-30.00", "-3.00", "2026-11-04T09:00:00Z"),
    ("a", "MODIFIED", "PENDING", "", "ORDER_UPDATE", "-20.00", "-2.00", "2026-11-10T00:00:00Z"),
    ("a", "REVERSED", "REVERSED", "CONS_FRAUD", "CONS_FRAUD", "-80.00", "-8.00", "2026-11-20T12:00:00Z"),
    ("a", "RESTORED", "PENDING", "", None, "80.00", "8.00", "2026-11-25T00:00:00Z"),
    ("a", "LOCKED", "APPROVED", "", "", "0.00", "0.00", "2026-11-28T00:00:00Z"),
    ("c", "LOCKED", "REVERSED", "ITEM_RETURNED", "", "0.00", "0.00", "2026-11-28T00:00:00Z"),
    ("b", "APPROVED", "APPROVED", "", None, "0.00", "0.00", "2026-12-01T00:00:00Z"),
]


def summary(ids: dict[str, int], rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    by_id = {v: k for k, v in ids.items()}
    return [(by_id[int(r["ActionId"])], r["Kind"], r["State"], r["StateDetail"], r["Disposition"],
             str(r["DeltaAmount"]), str(r["DeltaPayout"]), r["UpdateDate"]) for r in rows]


def same(got: list[tuple[Any, ...]], expected: list[tuple[Any, ...]]) -> bool:
    """``got`` is in update time order, and is ``expected`` (None: a value not checked). Entries of the same
    time (the two locks of a lock run) may come in either order here: their ids order them (checked apart)."""
    assert [row[-1] for row in got] == sorted(row[-1] for row in got)
    masked = [tuple(g if e is not None else None for g, e in zip(row, want, strict=True))
              for row, want in zip(sorted(got, key=str), sorted(expected, key=str), strict=False)]
    assert (len(got), masked) == (len(expected), sorted(expected, key=str))
    return True


def test_action_updates_change_log(api: TestClient, engine: Engine) -> None:
    w, ids = history_world(engine)
    c = w.campaign_id
    # impact.com's example request: a campaign's updates of one month, as the tap sends it
    page = get(api, w, f"{base(w)}/ActionUpdates?CampaignId={c}&StartDate=2026-11-01T00:00:00Z"
                       f"&EndDate=2026-12-01T00:00:00Z&PageSize=100")
    assert same(summary(ids, page["ActionUpdates"]), EXPECTED[:-1])  # the end is exclusive: b's approval is not in
    assert (page["@total"], page["@numpages"], page["@nextpageuri"]) == ("9", "1", "")
    # one of them in full
    modified = page["ActionUpdates"][4]
    assert modified["ActionId"] == str(ids["a"]) and modified["Id"].isdigit()
    assert (modified["CampaignId"], modified["ActionTrackerId"], modified["MediaPartnerId"]) == (
        c, w.sale, w.partners[0])
    assert (modified["CampaignName"], modified["ActionTrackerName"], modified["MediaPartnerName"]) == (
        "Main", "Online Sale", "Alpha")
    assert (modified["Currency"], modified["Oid"], modified["ActionDate"], modified["LockingDate"]) == (
        "USD", "U-A", "2026-10-30T10:00:00Z", "2026-11-28T00:00:00Z")
    assert (modified["Note"], modified["Channel"], modified["SubmissionId"]) == ("partial refund", "api", "")
    assert modified["ActionUri"] == f"{base(w)}/Actions/{ids['a']}"
    assert modified["Uri"] == f"{base(w)}/ActionUpdates/{modified['Id']}"
    assert get(api, w, modified["Uri"]) == modified
    reversal = page["ActionUpdates"][5]
    assert reversal["StateDetailDescription"] and reversal["StateDetail"] == "CONS_FRAUD"
    # money is an exact JSON number with the currency's decimals
    raw = api.get(modified["Uri"], headers=w.auth).text
    assert '"DeltaAmount":-20.00,' in raw and '"DeltaPayout":-2.00,' in raw
    for r in page["ActionUpdates"]:
        assert check_record(r, TAP_TYPES["action_updates"], "ActionUpdate") == 21
    # no window: everything, oldest first (by time, then id)
    everything = get(api, w, f"{base(w)}/ActionUpdates")["ActionUpdates"]
    assert same(summary(ids, everything), EXPECTED)
    assert [int(r["Id"]) for r in everything[7:9]] == sorted(int(r["Id"]) for r in everything[7:9])

    def found(query: str) -> list[tuple[Any, ...]]:
        return summary(ids, get(api, w, f"{base(w)}/ActionUpdates.json?{query}")["ActionUpdates"])

    assert same(found("StartDate=2026-11-10T00:00:00Z&EndDate=2026-11-20T12:00:00Z"), EXPECTED[4:5])  # [start, end)
    assert same(found("StartDate=2026-11-10&EndDate=2026-11-20"), EXPECTED[4:5])  # a date alone is its midnight
    assert same(found("EndDate=2026-11-03T09:00:00Z"), EXPECTED[:2])
    assert same(found("startdate=2026-11-28T00:00:00Z"), EXPECTED[7:])
    assert same(found(f"ActionId={ids['b']}"), [EXPECTED[1], EXPECTED[9]])
    assert same(found(f"ActionId={ids['c']}&State=REVERSED"), [EXPECTED[3], EXPECTED[8]])
    assert same(found("State=approved"), [EXPECTED[7], EXPECTED[9]])
    assert found("StartDate=2026-12-02T00:00:00Z") == []
    # paging through several pages by @nextpageuri gives the same records in the same order
    paged = all_pages(api, w, f"{base(w)}/ActionUpdates.json?CampaignId={c}&PageSize=3", "ActionUpdates")
    assert paged == everything
    last = get(api, w, f"{base(w)}/ActionUpdates?PageSize=3&Page=4")
    assert (last["@page"], last["@numpages"], last["@start"], last["@end"], last["@nextpageuri"]) == (
        "4", "4", "9", "9", "")
    beyond = get(api, w, f"{base(w)}/ActionUpdates?PageSize=3&Page=5")
    assert (beyond["ActionUpdates"], beyond["@total"], beyond["@numpages"]) == ([], "10", "4")
    for bad in ("State=LOCKED", "PageSize=0", "PageSize=20001", "StartDate=yesterday", "ActionId=x",
                "CampaignId=-1"):
        assert get(api, w, f"{base(w)}/ActionUpdates?{bad}", 422)["code"] == "validation_error", bad
    err = get(api, w, f"{base(w)}/ActionUpdates?UpdateDateStart=2026-11-01", 422)
    assert "UpdateDateStart" in err["detail"] and err["Message"] == err["detail"]
    # in XML: the list's element carries the paging, one ActionUpdate element per record
    root = get_xml(api, w, f"{base(w)}/ActionUpdates.xml?CampaignId={c}&PageSize=4")
    listing = root.find("ActionUpdates")
    assert listing is not None and (listing.get("total"), listing.get("numpages")) == ("10", "3")
    assert listing.get("nextpageuri", "").startswith(f"{base(w)}/ActionUpdates.xml?")
    xml_rows = listing.findall("ActionUpdate")
    assert [e.findtext("Kind") for e in xml_rows] == ["CREATED", "CREATED", "CREATED", "REVERSED"]
    assert xml_rows[3].findtext("DeltaAmount") == "-30.00" and xml_rows[3].findtext("StateDetail") == "ITEM_RETURNED"


def test_action_updates_in_jpy_and_of_a_submission(api: TestClient, engine: Engine) -> None:
    w = make_world(engine, currency="JPY", fixed_lead="250")
    a = record(w, "Y-1", "1250", "2026-11-20T10:00:00Z", "2026-11-21T00:00:00Z")
    r = api.put(f"{base(w)}/Actions", content=f"ActionId={a}&Amount=1000", headers={**w.auth, **FORM})
    assert r.status_code == 200, r.text
    drain(engine)
    rows = get(api, w, f"{base(w)}/ActionUpdates?ActionId={a}")["ActionUpdates"]
    assert [(r["Kind"], r["DeltaAmount"], r["Currency"]) for r in rows] == [
        ("CREATED", 1250, "JPY"), ("MODIFIED", -250, "JPY")]
    assert rows[1]["SubmissionId"] == r.json()["BatchId"] and rows[1]["Channel"] == "api"
    assert '"DeltaAmount":-250,' in api.get(rows[1]["Uri"], headers=w.auth).text


def test_another_accounts_history_never_appears(api: TestClient, engine: Engine) -> None:
    w, ids = history_world(engine)
    other, other_ids = history_world(engine)  # the same history, in another account
    mine = get(api, w, f"{base(w)}/ActionUpdates")["ActionUpdates"]
    theirs = get(api, other, f"{base(other)}/ActionUpdates")["ActionUpdates"]
    assert len(mine) == len(theirs) == len(EXPECTED)
    assert {r["ActionId"] for r in mine} == {str(i) for i in ids.values()}
    assert not {r["Id"] for r in mine} & {r["Id"] for r in theirs}
    window = get(api, w, f"{base(w)}/ActionUpdates?StartDate=2026-11-01&EndDate=2026-12-02")["ActionUpdates"]
    assert {r["ActionId"] for r in window} == {str(i) for i in ids.values()}
    # their ids answer 404 here, as unknown ones do
    assert get(api, w, theirs[0]["Uri"].replace(other.sid, w.sid), 404)["code"] == "not_found"
    assert get(api, w, f"{base(w)}/ActionUpdates?ActionId={other_ids['a']}", 404)["code"] == "not_found"
    assert get(api, w, f"{base(w)}/ActionUpdates?CampaignId={other.campaign_id}", 404)["code"] == "not_found"
    assert get(api, w, f"{base(w)}/Campaigns/{other.campaign_id}", 404)["code"] == "not_found"
    assert get(api, w, f"{base(w)}/MediaPartners/{other.partners[0]}", 404)["code"] == "not_found"
    assert other.campaign_id not in [c["Id"] for c in get(api, w, f"{base(w)}/Campaigns")["Campaigns"]]
    assert not set(other.partners) & {p["Id"] for p in get(api, w, f"{base(w)}/MediaPartners")["MediaPartners"]}
    for path in ("ActionUpdates/1", "CompanyInformation", "Campaigns", "MediaPartners", "ActionUpdates",
                 "APISubmissions"):  # another account's SID in the path
        assert get(api, w, f"{base(other)}/{path}", 404)["code"] == "not_found", path
    for path in ("ActionUpdates/0", "ActionUpdates/x", "ActionUpdates/99999999999999999999"):
        assert get(api, w, f"{base(w)}/{path}", 404)["code"] == "not_found", path


# --- APISubmissions (the list) -----------------------------------------------------------------


def test_api_submissions_list(api: TestClient, world: World, engine: Engine) -> None:
    w = world
    a = record(w, "S-1", "100.00", "2026-11-20T10:00:00Z", "2026-11-21T00:00:00Z")
    uris = []
    for body in (f"ActionId={a}&Amount=80.00", f"ActionId={a}&Amount=70.00", f"ActionId={a}&Amount=-1"):
        r = api.put(f"{base(w)}/Actions", content=body, headers={**w.auth, **FORM})
        if r.status_code == 200:
            uris.append(r.json()["QueuedUri"])
    r = api.post("/api/v1/submissions", headers=w.auth, json={"campaign_id": w.campaign_id, "rows": [
        {"ActionId": str(a), "Amount": "60.00", "Reason": "ORDER_UPDATE"}]})
    assert r.status_code == 202, r.text
    uris.append(f"{base(w)}/APISubmissions/{r.json()['id']}")
    assert len(uris) == 3
    queued = get(api, w, f"{base(w)}/APISubmissions")
    assert [s["Uri"] for s in queued["APISubmission"]] == list(reversed(uris))  # newest first
    assert {s["Status"] for s in queued["APISubmission"]} == {"Queued"}
    drain(engine)
    listed = get(api, w, f"{base(w)}/APISubmissions.json?PageSize=20000")
    assert listed["@total"] == "3"
    for item in listed["APISubmission"]:
        assert item == get(api, w, item["Uri"])  # the same shape as GET /APISubmissions/{BatchId}
        assert item["Status"] == "Complete" and item["AccountId"] == w.account_id
        assert check_record(item, TAP_TYPES["api_submissions"], "APISubmission") == 14
    assert [s["Outcome"] for s in listed["APISubmission"]] == ["applied"] * 3
    paged = all_pages(api, w, f"{base(w)}/APISubmissions?PageSize=2", "APISubmission")
    assert paged == listed["APISubmission"]

    def count(query: str) -> int:
        return len(get(api, w, f"{base(w)}/APISubmissions?{query}")["APISubmission"])

    # the tests' clock starts on 26 November 2026, 12:00 UTC (tests/conftest.py)
    assert count("SubmissionDateStart=2026-11-26") == 3 and count("SubmissionDateEnd=2026-11-25") == 0
    assert count("SubmissionDateStart=2026-11-27T00:00:00Z") == 0
    assert count("CompletedDateStart=2026-11-26&CompletedDateEnd=2026-11-30") == 3
    assert count(f"CampaignId={w.campaign_id}") == 3
    other = make_world(engine)
    assert get(api, other, f"{base(other)}/APISubmissions")["APISubmission"] == []
    assert get(api, w, f"{base(w)}/APISubmissions?CampaignId={other.campaign_id}", 404)["code"] == "not_found"
    assert get(api, w, f"{base(w)}/APISubmissions?Status=Complete", 422)["code"] == "validation_error"
    root = get_xml(api, w, f"{base(w)}/APISubmissions.xml")
    listing = root.find("APISubmission")
    assert listing is not None and listing.get("total") == "3"
    assert [e.findtext("BatchId") for e in listing.findall("APISubmission")] == [
        s["BatchId"] for s in listed["APISubmission"]]


@pytest.mark.parametrize("path", ["CompanyInformation", "Campaigns", "MediaPartners", "ActionUpdates",
                                  "APISubmissions"])
def test_credentials_are_needed(api: TestClient, world: World, path: str) -> None:
    r = api.get(f"{base(world)}/{path}")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")


def test_api_submissions_list_of_every_kind_in_a_constant_number_of_queries(api: TestClient, world: World,
                                                                            engine: Engine) -> None:
    """One-row changes (applied, refused by the worker, a reversal, by order id), a batch with errors of
    every kind, its undo and a queued change: the list shows each as GET /APISubmissions/{BatchId} does,
    and reads a page in the same number of statements whatever its size."""
    from sqlalchemy import event

    w = world
    a = record(w, "V-1", "100.00", "2026-11-20T10:00:00Z", "2026-11-21T00:00:00Z")
    b = record(w, "V-2", "50.00", "2026-11-20T11:00:00Z", "2026-11-21T00:00:00Z")
    c = record(w, "V-3", "30.00", "2026-11-20T12:00:00Z", "2026-11-21T00:00:00Z")
    for body in (f"ActionId={a}&Amount=80.00&Note=less", f"ActionId={b}&Amount=999.00",
                 f"Oid=V-3&ActionTrackerId={w.sale}&Amount=20.00"):
        assert api.put(f"{base(w)}/Actions", content=body, headers={**w.auth, **FORM}).status_code == 200
    r = api.delete(f"{base(w)}/Actions", params={"ActionId": str(c), "DispositionCode": "ORDER_ERROR"},
                   headers=w.auth)
    assert r.status_code == 200, r.text
    r = api.put(f"{base(w)}/Actions", content=f"ActionId={c}&Amount=10.00", headers={**w.auth, **FORM})
    assert r.status_code == 200, r.text  # a reversed action: refused by the worker
    rows = [{"ActionId": str(a), "Amount": "75.00", "Reason": "ORDER_UPDATE"},
            {"ActionId": str(b), "Amount": "nope", "Reason": "ORDER_UPDATE"},
            {"ActionId": str(c), "Amount": "5.00", "Reason": "ORDER_UPDATE"},
            {"ActionId": str(10**12), "Amount": "1.00", "Reason": "ORDER_UPDATE"}]
    r = api.post("/api/v1/submissions", headers=w.auth, json={"campaign_id": w.campaign_id, "rows": rows})
    assert r.status_code == 202, r.text
    batch = r.json()["id"]
    drain(engine)
    assert api.post(f"/api/v1/submissions/{batch}/undo", headers=w.auth).status_code == 202
    drain(engine)
    assert api.put(f"{base(w)}/Actions", content=f"ActionId={b}&Amount=40.00",
                   headers={**w.auth, **FORM}).status_code == 200  # left queued

    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", count)
    try:
        listed = get(api, w, f"{base(w)}/APISubmissions?PageSize=20000")["APISubmission"]
        whole_page = len(statements)
        statements.clear()
        get(api, w, f"{base(w)}/APISubmissions?PageSize=2&Page=2")
        small_page = len(statements)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(listed) == 8 and whole_page == small_page, (whole_page, small_page)
    for item in listed:
        assert item == get(api, w, item["Uri"])
        assert check_record(item, TAP_TYPES["api_submissions"], "APISubmission") == 14
    got = [(s["Type"], s["Status"], s["ActionId"], s["ActionTrackerId"], s["OrderId"], s["MediaPartnerId"],
            s["Outcome"], s["ErrorReason"], [(e["Row"], e["ActionId"], e["OrderId"], e["Code"]) for e in s["Errors"]])
           for s in listed]
    p = w.partners[0]
    assert got == [
        ("Modification", "Queued", str(b), "", "", "", "", "", []),
        ("Undo", "Complete", "", "", "", "", "", "", []),
        ("Modification", "Complete", "", "", "", "", "", "INVALID_AMOUNT INVALID_STATE UNKNOWN_ACTION",
         [(2, "", "", "invalid_amount"), (3, str(c), "V-3", "invalid_state"), (4, "", "", "unknown_action")]),
        ("Modification", "Complete", str(c), w.sale, "V-3", p, "error", "INVALID_STATE",
         [(1, str(c), "V-3", "invalid_state")]),
        ("Reversal", "Complete", str(c), w.sale, "V-3", p, "applied", "", []),
        ("Modification", "Complete", str(c), w.sale, "V-3", p, "applied", "", []),
        ("Modification", "Complete", str(b), w.sale, "V-2", p, "applied", "", []),
        ("Modification", "Complete", str(a), w.sale, "V-1", p, "applied", "", []),
    ]
    assert listed[0]["Payload"] == f"ActionId={b}&Amount=40.00&Reason=ORDER_UPDATE"
    assert listed[2]["Payload"] == "" and listed[2]["ErrorType"] == "Validation"


def test_action_updates_next_page_is_a_keyset_position(api: TestClient, engine: Engine) -> None:
    """Following @nextpageuri (which carries PageKey) returns every entry once, in order, whatever the page
    size and the filters, the two locks of the same time included; Page=N alone stays an offset."""
    w, ids = history_world(engine)
    for query in ("", f"CampaignId={w.campaign_id}", f"ActionId={ids['a']}", f"ActionId={ids['c']}",
                  "StartDate=2026-11-03&EndDate=2026-11-29", "StartDate=2026-11-28T00:00:00Z",
                  f"CampaignId={w.campaign_id}&StartDate=2026-11-02T09:00:00Z&EndDate=2026-12-01"):
        whole = get(api, w, f"{base(w)}/ActionUpdates?{query}&PageSize=100")
        assert whole["@nextpageuri"] == "" and whole["ActionUpdates"], query
        for size in (1, 2, 3):
            page = get(api, w, f"{base(w)}/ActionUpdates.json?{query}&PageSize={size}")
            walked, pages = list(page["ActionUpdates"]), 1
            while page["@nextpageuri"]:
                assert "PageKey=" in page["@nextpageuri"] and page["@nextpageuri"].startswith(
                    f"{base(w)}/ActionUpdates.json?")
                page = get(api, w, page["@nextpageuri"])
                assert page["@total"] == whole["@total"] and page["@page"] == str(pages + 1)
                assert "PageKey" not in page["@uri"] + page["@previouspageuri"] + page["@lastpageuri"]
                walked += page["ActionUpdates"]
                pages += 1
            assert walked == whole["ActionUpdates"], (query, size)
            assert pages == int(whole["@total"]) // size + (int(whole["@total"]) % size > 0)
            # Page=N asked alone: the same pages, by offset
            if size == 2:
                second = get(api, w, f"{base(w)}/ActionUpdates?{query}&PageSize=2&Page=2")["ActionUpdates"]
                assert second == whole["ActionUpdates"][2:4]
    first = whole["ActionUpdates"][0]["Id"]
    for bad in ("x", f"{first}", f"{first}-", "-5", f"{10**12}-5"):
        assert get(api, w, f"{base(w)}/ActionUpdates?PageKey={bad}", 422)["code"] == "validation_error"
    other, _ = history_world(engine)
    theirs = get(api, other, f"{base(other)}/ActionUpdates?PageSize=1")["ActionUpdates"][0]["Id"]
    assert get(api, w, f"{base(w)}/ActionUpdates?PageKey={theirs}-3", 422)["code"] == "validation_error"
