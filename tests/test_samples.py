"""The sample returns files of tests/samples behave as their README says, through the API,
the worker and the CLI; whole-file failures change nothing."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from payoutdesk.models import action_items, action_updates, actions
from payoutdesk.worker.runner import run_once
from tests.conftest import SAMPLES
from tests.helpers import World, conversion


def sample(name: str, **ids: int) -> bytes:
    """A sample with its example ids rewritten to this test's ids (``sample(name, **{"2001": 17})``
    writes 17 for every 2001), in one pass, so that an id written in never gets rewritten again."""
    text = (SAMPLES / name).read_bytes().decode("utf-8")
    if ids:
        text = re.sub("|".join(map(re.escape, ids)), lambda m: str(ids[m.group(0)]), text)
    return text.encode("utf-8")


def upload(api: TestClient, w: World, name: str, data: bytes, **form: str) -> dict[str, Any]:
    r = api.post("/api/v1/submissions", headers=w.auth, files={"file": (name, data, "text/csv")},
                 data={"campaign_id": str(w.campaign_id), **form})
    assert r.status_code == 202, r.text
    return dict(r.json())


def finish(api: TestClient, w: World, engine: Engine, sid: str) -> dict[str, Any]:
    while run_once(engine, "test") is not None:
        pass
    return dict(api.get(f"/api/v1/submissions/{sid}", headers=w.auth).json())


def state(api: TestClient, w: World, aid: int) -> tuple[str, str, str | None]:
    a = api.get(f"/api/v1/actions/{aid}", headers=w.auth).json()
    return a["state"], a["amount"], a["status_detail"]


def test_order_level_by_oid_bom_crlf(api: TestClient, world: World, engine: Engine) -> None:
    data = (SAMPLES / "order_level_by_oid.csv").read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and b"\r\n" in data
    ids = [conversion(world, f"ORD-500{n}", "100.00") for n in (1, 2, 3)]
    text = data.decode("utf-8").replace("\r\n7,", f"\r\n{world.sale},")
    s = upload(api, world, "order_level_by_oid.csv", text.encode("utf-8"))
    done = finish(api, world, engine, s["id"])
    assert done["status"] == "COMPLETE" and done["applied"] == 3 and done["errors"] == 0
    assert done["id"].startswith("F-") and done["format"] == "csv" and done["channel"] == "file"
    assert state(api, world, ids[0]) == ("REVERSED", "0.00", "ITEM_RETURNED")
    assert state(api, world, ids[1]) == ("PENDING", "62.40", None)
    assert state(api, world, ids[2]) == ("REVERSED", "0.00", "CONS_FRAUD")


def test_order_level_by_action_id(api: TestClient, world: World, engine: Engine) -> None:
    ids = [conversion(world, f"A-{n}", "100.00") for n in range(4)]
    api.post(f"/api/v1/actions/{ids[3]}/modify", headers=world.auth, json={"amount": "10.00"})
    data = sample("order_level_by_action_id.csv", **{str(2001 + n): ids[n] for n in range(4)})
    done = finish(api, world, engine, upload(api, world, "x.csv", data)["id"])
    assert (done["applied"], done["errors"]) == (4, 0)
    assert state(api, world, ids[0]) == ("PENDING", "75.25", None)
    note = api.get(f"/api/v1/actions/{ids[0]}", headers=world.auth).json()["updates"][-1]["note"]
    assert note == "partial refund RMA-3141"
    assert state(api, world, ids[1]) == ("REVERSED", "0.00", "ITEM_RETURNED")
    assert state(api, world, ids[2])[0] == "APPROVED"
    assert state(api, world, ids[3]) == ("PENDING", "100.00", None)


def test_item_level(api: TestClient, world: World, engine: Engine) -> None:
    a = conversion(world, "ORD-6001", amount=None, items=[{"sku": "SKU-JACKET-M", "quantity": 1, "amount": "120.00"},
                                                           {"sku": "SKU-SCARF", "quantity": 2, "amount": "49.00"}])
    b = conversion(world, "ORD-6002", amount=None, items=[{"sku": "SKU-GLOVES", "quantity": 2, "amount": "30.00"}])
    text = (SAMPLES / "item_level.csv").read_text().replace("\n7,", f"\n{world.sale},")
    done = finish(api, world, engine, upload(api, world, "item_level.csv", text.encode())["id"])
    assert (done["applied"], done["errors"]) == (2, 0)
    items = api.get(f"/api/v1/actions/{a}", headers=world.auth).json()["items"]
    assert [(i["sku"], i["quantity"], i["amount"]) for i in items] == [
        ("SKU-JACKET-M", 0, "0.00"), ("SKU-SCARF", 1, "24.50")]
    assert state(api, world, b) == ("PENDING", "15.00", None)


def test_semicolon_decimal_comma(api: TestClient, world: World, engine: Engine) -> None:
    a, b = conversion(world, "ORD-7001", "50.00"), conversion(world, "ORD-7002", "50.00")
    text = (SAMPLES / "semicolon_decimal_comma.csv").read_text().replace("\n7;", f"\n{world.sale};")
    done = finish(api, world, engine, upload(api, world, "eu.csv", text.encode())["id"])
    assert (done["applied"], done["errors"]) == (2, 0)
    assert state(api, world, a) == ("PENDING", "34.75", None)
    assert state(api, world, b)[0] == "REVERSED"


def test_xml(api: TestClient, world: World, engine: Engine) -> None:
    a = conversion(world, "ORD-5001", "100.00")
    b = conversion(world, "ORD-9", "100.00")
    data = sample("order_level.xml", **{"<ActionTrackerId>7<": f"<ActionTrackerId>{world.sale}<", "2001": b})
    done = finish(api, world, engine, upload(api, world, "r.xml", data)["id"])
    assert done["format"] == "xml" and (done["applied"], done["errors"]) == (2, 0)
    assert state(api, world, a)[0] == "REVERSED" and state(api, world, b)[1] == "64.90"


def test_bad_rows(api: TestClient, world: World, engine: Engine) -> None:
    ids = [conversion(world, f"X-{n}", "100.00") for n in range(4)]
    data = sample("bad_rows.csv", **{str(2001 + n): ids[n] for n in range(4)})
    s = upload(api, world, "bad_rows.csv", data)
    done = finish(api, world, engine, s["id"])
    assert done["status"] == "COMPLETE" and done["errors"] == 5 and done["applied"] == 0
    errs = api.get(f"/api/v1/submissions/{s['id']}/errors", headers=world.auth).json()["items"]
    assert [(e["row"], e["column"], e["code"]) for e in errs] == [
        (1, "Amount", "invalid_amount"), (2, "Amount", "invalid_amount"), (3, "Reason", "missing_reason"),
        (4, "ActionId", "unknown_action"), (5, "Reason", "unknown_reason")]
    assert all(state(api, world, i)[1] == "100.00" for i in ids)


def _snapshot(engine: Engine, w: World) -> tuple[Any, ...]:
    with engine.connect() as conn:
        return (
            conn.execute(select(actions.c.id, actions.c.state, actions.c.amount, actions.c.version)
                         .where(actions.c.account_id == w.account_id).order_by(actions.c.id)).all(),
            conn.execute(select(func.count()).select_from(action_updates)).scalar_one(),
            conn.execute(select(func.sum(action_items.c.amount))).scalar_one(),
        )


def _zip(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, data)
    return buf.getvalue()


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Actions><Action><ActionId>1</ActionId><Amount>&lol3;</Amount><Reason>OTHER</Reason></Action></Actions>"""


@pytest.mark.parametrize(("name", "data", "words"), [
    ("missing_columns.csv", None, "ActionId"),
    ("garbage.bin", bytes(range(256)) * 40, ""),
    ("latin1.csv", "ActionId,Amount,Reason\n1,10,ORDER_UPDATE\n2,\xe9,OTHER\n".encode("latin-1"), "UTF-8"),
    ("header_only.csv", b"ActionId,Amount,Reason\r\n", "no rows"),
    ("bomb.xml", BOMB, ""),
    ("bomb.csv.gz", gzip.compress(b"ActionId,Amount,Reason\n" + b"1" * 300_000_000), ""),
    ("two.zip", None, ""),
])
def test_whole_file_failures_change_nothing(api: TestClient, world: World, engine: Engine, name: str,
                                            data: bytes | None, words: str) -> None:
    a = conversion(world, "O-1", "100.00")
    if name == "missing_columns.csv":
        data = (SAMPLES / name).read_bytes()
    if name == "two.zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("a.csv", f"ActionId,Amount,Reason\n{a},1,OTHER\n")
            z.writestr("b.csv", f"ActionId,Amount,Reason\n{a},2,OTHER\n")
        data = buf.getvalue()
    assert data is not None
    before = _snapshot(engine, world)
    done = finish(api, world, engine, upload(api, world, name, data)["id"])
    assert done["status"] == "FAILED" and done["failure"], done
    assert words in done["failure"]
    assert (done["applied"], done["unchanged"], done["errors"]) == (0, 0, 0)
    assert _snapshot(engine, world) == before


def test_compressed_and_duplicates(api: TestClient, world: World, engine: Engine) -> None:
    a = conversion(world, "O-1", "100.00")
    csv = f"ActionId,Amount,Reason\n{a},90.00,ORDER_UPDATE\n".encode()
    dry = upload(api, world, "r.csv", csv, dry_run="true")
    assert finish(api, world, engine, dry["id"])["applied"] == 1
    assert state(api, world, a)[1] == "100.00"  # the dry run changed nothing and does not count
    first = upload(api, world, "r.csv", csv)
    assert finish(api, world, engine, first["id"])["applied"] == 1
    again = api.post("/api/v1/submissions", headers=world.auth, files={"file": ("r.csv", csv, "text/csv")},
                     data={"campaign_id": str(world.campaign_id)})
    assert again.status_code == 409 and again.json()["code"] == "duplicate_file"
    assert first["id"] in again.json()["detail"]
    forced = upload(api, world, "r.csv", csv, force="true")
    assert finish(api, world, engine, forced["id"])["unchanged"] == 1
    gz = upload(api, world, "r.csv.gz", gzip.compress(f"ActionId,Amount,Reason\n{a},80.00,OTHER\n".encode()))
    assert finish(api, world, engine, gz["id"])["format"] == "csv+gzip"
    zp = upload(api, world, "r.zip", _zip("in.csv", f"ActionId;Amount;Reason\n{a};70,00;OTHER\n".encode()))
    assert finish(api, world, engine, zp["id"])["applied"] == 1
    assert state(api, world, a)[1] == "70.00"
    original = api.get(f"/api/v1/submissions/{first['id']}/file", headers=world.auth)
    assert original.status_code == 200 and original.content == csv
    assert "r.csv" in original.headers["content-disposition"]


def test_cli_submit(world: World, engine: Engine, db_url: str, tmp_path: Path) -> None:
    a = conversion(world, "O-1", "100.00")
    good = tmp_path / "returns.csv"
    good.write_text(f"ActionId,Amount,Reason\n{a},55.00,ITEM_RETURNED\n{a},x,OTHER\n")
    env = {**os.environ, "PAYOUTDESK_DATABASE_URL": db_url, "PAYOUTDESK_DATA_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "payoutdesk.cli", "submit"]
    dry = subprocess.run([*cmd, str(good), "--campaign", str(world.campaign_id), "--dry-run"],
                         env=env, capture_output=True, text=True, check=False)
    assert dry.returncode == 0, dry.stderr
    assert "1 would change (dry run)" in dry.stdout and "row 2 Amount" in dry.stdout
    out = subprocess.run([*cmd, str(good), "--campaign", str(world.campaign_id), "--json"],
                         env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["status"] == "COMPLETE" and body["applied"] == 1 and body["errors"] == 1
    assert body["first_errors"][0]["code"] == "invalid_amount"
    bad = tmp_path / "bad.csv"
    bad.write_text("OrderNumber,Total\nO-1,0\n")
    failed = subprocess.run([*cmd, str(bad), "--campaign", str(world.campaign_id)], env=env, capture_output=True,
                            text=True, check=False)
    assert failed.returncode == 1 and "failed as a whole" in failed.stdout
