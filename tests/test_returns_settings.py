"""Returns-processing settings are checked per mode; secrets are sealed and never shown back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from payoutdesk.catalog.returns_settings import check
from payoutdesk.errors import ValidationFailed
from payoutdesk.models import event_types
from tests.helpers import client_for, make_world

PULL = {"mode": "ftp_pull", "protocol": "sftp", "host": "files.brand.example", "username": "u",
        "password": "s3cret", "folder": "/out", "pattern": "*.csv", "schedule": {"every_hours": 4}, "after": "keep"}
SF = {"mode": "salesforce", "object": "Opportunity", "order_id_field": "Order_Id__c", "status_field": "StageName",
      "amount_field": "Amount", "status_map": {"Closed Lost": {"operation": "reverse", "reason": "CONS_FRAUD"},
                                               "Closed Won": {"operation": "approve"},
                                               "Adjusted": {"operation": "modify", "reason": "ORDER_UPDATE"}}}


def test_valid_settings() -> None:
    assert check({"mode": "manual"}) == {}
    pull = check(PULL)
    assert pull["port"] == 22 and pull["schedule"] == {"every_hours": 4} and pull["password"] == "s3cret"
    assert check({**PULL, "protocol": "ftp", "port": None} | {"port": 2121})["port"] == 2121
    assert check({"mode": "email", "allowed_senders": ["Returns@Brand.example"]}) == {
        "allowed_senders": ["returns@brand.example"]}
    assert check(SF)["status_map"]["Closed Won"] == {"operation": "approve"}


@pytest.mark.parametrize(("settings", "words"), [
    ({**PULL, "protocol": "gopher"}, "ftp, ftps or sftp"),
    ({**PULL, "port": "abc"}, "port"),
    ({**PULL, "port": 70000}, "port"),
    ({**PULL, "schedule": {"every_hours": -1}}, "every_hours"),
    ({**PULL, "schedule": {"daily_at": "25:00"}}, "daily_at"),
    ({**PULL, "after": "move"}, "move_to"),
    ({**PULL, "host": ""}, "host"),
    ({**PULL, "colour": "red"}, "colour"),
    ({"mode": "email", "allowed_senders": "a@b.example"}, "allowed_senders"),
    ({"mode": "email", "allowed_senders": ["not-an-address"]}, "allowed_senders"),
    ({**SF, "status_map": {"X": {"operation": "explode"}}}, "operation"),
    ({**SF, "amount_field": None}, "amount_field"),
    ({**SF, "object": "Robert'); DROP TABLE"}, "API name"),
    ({**SF, "instance_url": "http://x.example"}, "https"),
    ({"mode": "api", "host": "x"}, "host"),
    ({"mode": "fax"}, "mode"),
])
def test_refused(settings: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationFailed, match=words):
        check(settings)


def test_api_seals_secrets(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    api = client_for(engine, tmp_path)
    r = api.patch(f"/api/v1/event-types/{w.sale}", headers=w.auth, json={"returns_processing": PULL})
    assert r.status_code == 200, r.text
    assert "s3cret" not in r.text and r.json()["returns_processing"]["password_set"] is True
    with engine.connect() as conn:
        stored = conn.execute(select(event_types.c.returns_settings).where(event_types.c.id == w.sale)).scalar_one()
    assert "s3cret" not in stored
    # changing another setting keeps the stored secret
    again = api.patch(f"/api/v1/event-types/{w.sale}", headers=w.auth,
                      json={"returns_processing": {k: v for k, v in PULL.items() if k != "password"} | {
                          "pattern": "returns_*.csv"}})
    assert again.json()["returns_processing"]["password_set"] is True
    bad = api.patch(f"/api/v1/event-types/{w.sale}", headers=w.auth,
                    json={"returns_processing": {**PULL, "protocol": "gopher"}})
    assert bad.status_code == 422 and bad.json()["code"] == "validation_error"
    sf = api.patch(f"/api/v1/event-types/{w.sale}", headers=w.auth, json={"returns_processing": SF})
    assert sf.status_code == 200 and sf.json()["returns_processing"]["status_map"]["Adjusted"]["operation"] == "modify"


def test_pull_receipts_and_results_are_off_unless_asked() -> None:
    pull = check(PULL)
    assert pull["write_receipts"] is False and pull["write_results"] is False
    on = check({**PULL, "write_receipts": True, "write_results": True})
    assert on["write_receipts"] is True and on["write_results"] is True
    assert check({**PULL, "write_results": None})["write_results"] is False
    for flag in ("write_receipts", "write_results"):
        for bad in ("yes", 1, ["x"]):
            with pytest.raises(ValidationFailed, match=flag):
                check({**PULL, flag: bad})
