"""The compatible API's formats and Actions parameters (issue 14): ``.json``/``.xml`` paths, XML answers shaped
as impact.com's, the Actions list's parameters (last update, event date, locking date, keyset pages), exact
money and another account's data never shown (docs/COMPAT.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from xml.etree.ElementTree import Element

import pytest
from defusedxml.ElementTree import fromstring
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from payoutdesk.api.compat_format import json_to_xml, record_name, split_suffix, to_xml, wants_xml
from payoutdesk.kit import db
from payoutdesk.ledger import service as ledger
from payoutdesk.ledger import workflow as wf
from tests.helpers import World, conversion, make_world

D = Decimal  # money read exactly from a JSON answer

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
PAGING = ("page", "numpages", "pagesize", "total", "start", "end", "uri", "firstpageuri", "previouspageuri",
          "nextpageuri", "lastpageuri")


def base(w: World) -> str:
    return f"/Advertisers/{w.sid}"


def as_json(r: Any, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return json.loads(r.text, parse_float=D)


def as_xml(r: Any, status: int = 200) -> Element:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/xml"), r.headers
    root = fromstring(r.content)
    assert root.tag == "ImpactRadiusResponse"
    return root


def ids_of(page: Any) -> list[int]:
    return [int(x["Id"]) for x in page["Actions"]]


# --- the pure parts ------------------------------------------------------------------------------


def test_suffixes_and_accept() -> None:
    assert split_suffix("/Advertisers/IR1/Actions.json") == ("/Advertisers/IR1/Actions", ".json")
    assert split_suffix("/Advertisers/IR1/Actions/7.XML") == ("/Advertisers/IR1/Actions/7", ".xml")
    assert split_suffix("/Advertisers/IR1/FTPFileSubmissions/F-3/ErrorDetails.json")[1] == ".json"
    assert split_suffix("/Advertisers/IR1/Actions") == ("/Advertisers/IR1/Actions", "")
    assert split_suffix("/Advertisers/IR1/Actions.csv") == ("/Advertisers/IR1/Actions.csv", "")
    assert split_suffix("/api/v1/actions.json") == ("/api/v1/actions.json", "")  # the native API is left alone
    assert split_suffix("/Advertisers/IR1/.json") == ("/Advertisers/IR1/.json", "")
    assert wants_xml(".xml", "application/json") and not wants_xml(".json", "application/xml")
    assert wants_xml("", "application/xml") and wants_xml("", "text/xml, application/json")
    assert not wants_xml("", "application/json, application/xml") and not wants_xml("", "*/*")
    assert not wants_xml("", "") and not wants_xml("", "application/xml;q=0, application/json")
    assert [record_name(n) for n in ("Actions", "Campaigns", "Items", "ErrorDetail", "APISubmission",
                                     "ActionInquiries")] == ["Action", "Campaign", "Item", "ErrorDetail",
                                                             "APISubmission", "ActionInquiry"]


def test_to_xml_of_a_page_and_of_an_object() -> None:
    page = {"@page": "1", "@numpages": "2", "@pagesize": "1", "@total": "2", "@start": "0", "@end": "0",
            "@uri": "/A/Actions.xml?Page=1", "@firstpageuri": "/A/Actions.xml?Page=1", "@previouspageuri": "",
            "@nextpageuri": "/A/Actions.xml?Page=2&PageKey=9-2", "@lastpageuri": "/A/Actions.xml?Page=2",
            "Actions": [{"Id": "9", "Amount": D("80.00"), "Oid": "<&\"'>", "Items": [{"Sku": "A"}, {"Sku": "B"}],
                         "Flag": True, "None": None}]}
    root = fromstring(json_to_xml(json.dumps(page, default=str).replace('"80.00"', "80.00").encode()))
    assert root.tag == "ImpactRadiusResponse" and [c.tag for c in root] == ["Actions"]
    actions = root[0]
    assert {k: actions.get(k) for k in PAGING} == {k[1:]: v for k, v in page.items() if k.startswith("@")} | {
        "previouspageuri": ""}
    (action,) = list(actions)
    assert action.tag == "Action"
    assert action.findtext("Amount") == "80.00"  # the number exactly as sent
    assert action.findtext("Oid") == "<&\"'>" and action.findtext("Flag") == "true" and action.findtext("None") == ""
    assert [i.findtext("Sku") for i in action.find("Items")] == ["A", "B"]  # type: ignore[union-attr]
    assert [i.tag for i in action.find("Items")] == ["Item", "Item"]  # type: ignore[union-attr]
    one = fromstring(to_xml({"Status": "QUEUED", "QueuedUri": "/x", "Errors": []}))
    assert (one.findtext("Status"), one.findtext("QueuedUri"), len(one.find("Errors"))) == (  # type: ignore[arg-type]
        "QUEUED", "/x", 0)
    # what XML cannot hold is left out, the answer stays well formed
    assert fromstring(to_xml({"Note": "a\x01b\ufffe"})).findtext("Note") == "ab"


# --- every route with and without a suffix ------------------------------------------------------


def _routes(api: TestClient, w: World, engine: Engine) -> dict[str, str]:
    a = conversion(w, "S-1", "100.00")
    r = api.put(f"{base(w)}/Actions.json", content=f"ActionId={a}&Amount=80&Reason=ORDER_UPDATE",
                headers={**w.auth, **FORM})
    queued = as_json(r)
    assert queued["Status"] == "QUEUED" and queued["QueuedUri"].startswith(f"{base(w)}/APISubmissions/A-")
    up = api.post("/api/v1/submissions", headers=w.auth, data={"campaign_id": str(w.campaign_id)},
                  files={"file": ("r.csv", b"ActionId,Amount\nnope,1\n", "text/csv")})
    assert up.status_code == 202, up.text
    f_id = up.json()["id"]
    return {"Actions": f"{base(w)}/Actions", "Action": f"{base(w)}/Actions/{a}",
            "Items": f"{base(w)}/Actions/{a}/Items", "APISubmission": queued["QueuedUri"],
            "Files": f"{base(w)}/FTPFileSubmissions", "File": f"{base(w)}/FTPFileSubmissions/{f_id}",
            "Errors": f"{base(w)}/FTPFileSubmissions/{f_id}/ErrorDetails"}


def test_every_route_answers_json_and_xml_paths(api: TestClient, world: World, engine: Engine) -> None:
    routes = _routes(api, world, engine)
    for name, path in routes.items():
        bare = api.get(path, headers=world.auth)
        dotted_r = api.get(path + ".json", headers=world.auth)
        dotted = as_json(dotted_r)
        # the same answer; the paging URIs keep the suffix they were asked with
        assert dotted_r.text.replace(".json?", "?") == bare.text, name
        if "@nextpageuri" in dotted:
            assert dotted["@uri"].startswith(path + ".json?"), dotted["@uri"]
        # JSON with .json whatever Accept says; XML with .xml, or Accept: application/xml without a suffix
        assert as_json(api.get(path + ".json", headers={**world.auth, "Accept": "application/xml"})) == dotted
        for r in (api.get(path + ".xml", headers=world.auth),
                  api.get(path, headers={**world.auth, "Accept": "application/xml"})):
            root = as_xml(r)
            assert len(root), name
    # a list in XML: its element carries the paging attributes, one element per record
    root = as_xml(api.get(routes["Actions"] + ".xml?PageSize=1", headers=world.auth))
    (lst,) = list(root)
    assert lst.tag == "Actions" and set(PAGING) <= set(lst.keys())
    assert lst.get("uri", "").startswith(routes["Actions"] + ".xml?") and lst.get("total") == "1"
    (act,) = list(lst)
    assert act.tag == "Action" and act.findtext("Oid") == "S-1" and act.findtext("Amount") == "100.00"
    files = as_xml(api.get(routes["Files"] + ".xml", headers=world.auth))[0]
    assert files.tag == "FTPFileSubmissions" and [c.tag for c in files] == ["FTPFileSubmission"]
    one = as_xml(api.get(routes["Action"] + ".xml", headers=world.auth))
    assert one.findtext("Id") and [i.tag for i in one.find("Items")] == ["Item"]  # type: ignore[union-attr]
    # PUT and DELETE take the suffixes as well, and answer XML for .xml
    a = conversion(world, "S-2", "50.00")
    queued = as_xml(api.request("DELETE", f"{base(world)}/Actions.xml", content=f"ActionId={a}",
                                headers={**world.auth, **FORM}))
    assert queued.findtext("Status") == "QUEUED" and "/APISubmissions/A-" in (queued.findtext("QueuedUri") or "")


def test_errors_in_json_and_xml(api: TestClient, world: World) -> None:
    err = as_json(api.get(f"{base(world)}/Actions.json?Nope=1", headers=world.auth), 422)
    assert err["code"] == "validation_error" and "Nope" in err["detail"] and err["Status"] == "ERROR"
    root = as_xml(api.get(f"{base(world)}/Actions.xml?Nope=1", headers=world.auth), 422)
    assert root.findtext("Status") == "ERROR" and root.findtext("code") == "validation_error"
    assert "Nope" in (root.findtext("Message") or "")
    assert as_xml(api.get(f"{base(world)}/Actions/123456789.xml", headers=world.auth), 404).findtext(
        "code") == "not_found"
    unauthorized = api.get(f"{base(world)}/Actions.xml")
    assert unauthorized.status_code == 401 and unauthorized.headers["WWW-Authenticate"].startswith("Basic")
    assert as_xml(unauthorized, 401).findtext("code") == "unauthorized"
    # an unknown path under /Advertisers is still 404, in the format asked
    assert api.get(f"{base(world)}/Nothing.json", headers=world.auth).status_code == 404


# --- the Actions list's parameters --------------------------------------------------------------


def _three(w: World) -> tuple[int, int, int]:
    early = conversion(w, "P-1", "100.00", event_date="2026-11-02T08:00:00Z")
    late = conversion(w, "P-2", "60.00", event_date="2026-11-25T23:00:00Z")
    lead = conversion(w, "P-3", "1.00", event_type=w.lead, event_date="2026-11-10T12:00:00Z")  # open-ended
    return early, late, lead


def test_impact_example_requests(api: TestClient, world: World) -> None:
    early, late, lead = _three(world)
    # impact.com's example: one campaign, a month of event dates, 100 a page
    q = (f"CampaignId={world.campaign_id}&ActionDateStart=2026-11-01T00:00:00Z&ActionDateEnd=2026-11-30T00:00:00Z"
         "&PageSize=100")
    page = as_json(api.get(f"{base(world)}/Actions.json?{q}", headers=world.auth))
    assert ids_of(page) == [lead, late, early] and page["@total"] == "3" and page["@pagesize"] == "100"
    assert ids_of(as_json(api.get(f"{base(world)}/Actions.json?ActionDateStart=2026-11-05&ActionDateEnd=2026-11-24",
                                  headers=world.auth))) == [lead]
    assert ids_of(as_json(api.get(f"{base(world)}/Actions.json?State=PENDING&ActionDateEnd=2026-11-10",
                                  headers=world.auth))) == [lead, early]
    # XML of the same request
    lst = as_xml(api.get(f"{base(world)}/Actions.xml?{q}", headers=world.auth))[0]
    assert [int(a.findtext("Id") or 0) for a in lst] == [lead, late, early] and lst.get("total") == "3"


def test_types_as_the_tap_schema_has_them(api: TestClient, world: World) -> None:
    early, _late, lead = _three(world)
    page = as_json(api.get(f"{base(world)}/Actions.json", headers=world.auth))
    got = {int(a["Id"]): a for a in page["Actions"]}
    a = got[early]
    for key in ("CampaignId", "ActionTrackerId", "MediaPartnerId"):
        assert type(a[key]) is int, key
    for key in ("Amount", "Payout", "DeltaAmount", "DeltaPayout", "IntendedAmount", "IntendedPayout"):
        assert isinstance(a[key], D), key  # a JSON number ...
    assert a["Amount"] == D("100.00") and str(a["Amount"]) == "100.00"  # ... with its decimals, exactly
    for key in ("Id", "State", "Currency", "Oid", "Uri", "EventDate", "CreationDate", "UpdateDate", "LockingDate"):
        assert isinstance(a[key], str), key
    for key in ("EventDate", "CreationDate", "UpdateDate", "LockingDate"):
        datetime.fromisoformat(a[key].replace("Z", "+00:00"))
    native = api.get(f"/api/v1/actions/{early}", headers=world.auth).json()
    assert a["EventDate"] == "2026-11-02T08:00:00Z" and a["LockingDate"] == f"{native['locking_date']}T00:00:00Z"
    # an open-ended action has no locking date: empty, as impact.com shows it
    assert got[lead]["LockingDate"] == "" and got[lead]["LockedDate"] == ""
    # the single action is the same object (and its items)
    one = as_json(api.get(f"{base(world)}/Actions/{early}.json", headers=world.auth))
    assert {k: v for k, v in one.items() if k != "Items"} == a


def test_jpy_and_negative_deltas_are_exact(api: TestClient, engine: Engine) -> None:
    w = make_world(engine, currency="JPY", fixed_lead="250")
    a = conversion(w, "Y-1", "1250")
    api.post(f"/api/v1/actions/{a}/modify", headers=w.auth, json={"amount": "1000"})
    got = json.loads(api.get(f"{base(w)}/Actions/{a}.json", headers=w.auth).text, parse_float=D)
    assert (got["Amount"], got["DeltaAmount"], got["DeltaPayout"]) == (1000, -250, -25)
    raw = api.get(f"{base(w)}/Actions.json", headers=w.auth).text
    assert '"Amount":1000,' in raw and '"DeltaAmount":-250,' in raw


def test_last_update_filter(api: TestClient, world: World, engine: Engine) -> None:
    early, late, lead = _three(world)  # created at the tests' clock, 2026-11-26 12:00
    feb, sep = datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 9, 1, tzinfo=UTC)
    with db.write(engine) as conn:
        ledger.apply(conn, world.actor, early, wf.Modify(amount=50_00, reason="ORDER_UPDATE"), now=feb)
        ledger.apply(conn, world.actor, late, wf.Modify(amount=40_00, reason="ORDER_UPDATE"), now=feb)
        ledger.apply(conn, world.actor, late, wf.Reverse("CONS_FRAUD"), now=sep)  # its last update: September

    def found(q: str) -> list[int]:
        return ids_of(as_json(api.get(f"{base(world)}/Actions.json?{q}", headers=world.auth)))

    assert found("StartDate=2026-01-01&EndDate=2026-02-28") == [early]  # late's last update is later
    assert found("StartDate=2026-08-31T00:00:00Z&EndDate=2026-09-01T00:00:00Z") == [late]  # inclusive end
    assert found("StartDate=2026-09-01T00:00:01Z") == [lead]  # created (its only update) on 26 November
    assert found("EndDate=2026-10-01") == [late, early]
    assert found("StartDate=2026-11-26&EndDate=2026-11-26") == [lead]
    page = as_json(api.get(f"{base(world)}/Actions.json?StartDate=2026-01-01&EndDate=2026-02-28", headers=world.auth))
    assert page["Actions"][0]["UpdateDate"] == "2026-02-01T00:00:00Z" and page["@total"] == "1"
    # the filters combine
    assert found("StartDate=2026-01-01&EndDate=2026-12-31&State=REVERSED") == [late]
    assert found("StartDate=2026-01-01&EndDate=2026-12-31&ActionDateStart=2026-11-20") == [lead, late][1:]


def test_locking_date_filters(api: TestClient, world: World) -> None:
    early, late, _lead = _three(world)  # the lead is open-ended: no locking date
    day = {a: api.get(f"/api/v1/actions/{a}", headers=world.auth).json()["locking_date"] for a in (early, late)}

    def found(q: str) -> list[int]:
        return ids_of(as_json(api.get(f"{base(world)}/Actions.json?{q}", headers=world.auth)))

    assert found(f"LockingDateStart={day[early]}&LockingDateEnd={day[early]}") == (
        [late, early] if day[late] == day[early] else [early])
    assert found(f"LockingDateStart={day[late]}T00:00:00Z") == [late, early][: 1 if day[late] > day[early] else 2]
    assert found("LockingDateEnd=2099-12-31T00:00:00Z") == [late, early]  # open-ended actions never match
    assert found("LockingDateStart=2099-01-01") == []


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_keyset_next_pages_equal_offset_pages(api: TestClient, engine: Engine, size: int) -> None:
    w = make_world(engine)
    made = [conversion(w, f"K-{n}", f"{n + 1}.00", event_date=f"2026-11-{n + 1:02d}T10:00:00Z") for n in range(7)]
    with db.write(engine) as conn:
        ledger.apply(conn, w.actor, made[2], wf.Reverse("CONS_FRAUD"))
    for query in ("", "&State=PENDING", f"&CampaignId={w.campaign_id}&ActionDateStart=2026-11-02"):
        first = as_json(api.get(f"{base(w)}/Actions.json?PageSize={size}{query}", headers=w.auth))
        total, numpages = int(first["@total"]), int(first["@numpages"])
        page, n, seen = first, 1, []
        while True:
            offset = as_json(api.get(f"{base(w)}/Actions.json?PageSize={size}{query}&Page={n}", headers=w.auth))
            assert page["Actions"] == offset["Actions"], (query, n)
            for k in ("@page", "@numpages", "@pagesize", "@total", "@start", "@end", "@previouspageuri",
                      "@firstpageuri", "@lastpageuri"):
                assert page[k] == offset[k], (k, query, n)
            seen += ids_of(page)
            if not page["@nextpageuri"]:
                break
            assert "PageKey=" in page["@nextpageuri"] and "PageKey" not in offset["@uri"]
            page = as_json(api.get(page["@nextpageuri"], headers=w.auth))
            n += 1
        assert n == numpages and len(seen) == total == len(set(seen))
        assert seen == sorted(seen, reverse=True)
    bad = as_json(api.get(f"{base(w)}/Actions.json?PageKey=x-1", headers=w.auth), 422)
    assert bad["code"] == "validation_error" and "PageKey" in bad["detail"]


def test_another_accounts_actions_never_appear(api: TestClient, world: World, engine: Engine) -> None:
    other = make_world(engine)
    theirs = [conversion(other, f"X-{n}", "10.00") for n in range(3)]
    mine = conversion(world, "M-1", "10.00")
    with db.write(engine) as conn:
        ledger.apply(conn, other.actor, theirs[0], wf.Modify(amount=5_00, reason="ORDER_UPDATE"))
    for q in ("", "?PageSize=1", "?StartDate=2026-01-01&EndDate=2027-01-01", "?ActionDateStart=2026-01-01",
              f"?PageKey={max(theirs) + 1}-9&Page=2&PageSize=1"):
        for suffix in (".json", ".xml", ""):
            r = api.get(f"{base(world)}/Actions{suffix}{q}", headers=world.auth)
            assert r.status_code == 200, r.text
            for t in theirs:
                assert f"X-{theirs.index(t)}" not in r.text
    assert ids_of(as_json(api.get(f"{base(world)}/Actions.json", headers=world.auth))) == [mine]
    # their SID in the path with my credentials, suffixed or not: 404
    for suffix in (".json", ".xml", ""):
        r = api.get(f"/Advertisers/{other.sid}/Actions{suffix}", headers=world.auth)
        assert r.status_code == 404
        r = api.get(f"{base(world)}/Actions/{theirs[0]}{suffix}", headers=world.auth)
        assert r.status_code == 404
