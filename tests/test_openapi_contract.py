"""The API's contract (DESIGN §6, "A usable contract"): the OpenAPI document describes every
operation, /docs works with no network, and schemathesis (every check) finds nothing against a
real server on 127.0.0.1, on SQLite and on PostgreSQL.

The schemathesis run is the CLI, as a brand's engineer would run it, against uvicorn serving the
application over a fresh database of each backend with an account and some data (campaign, event
types, partners, contracts, actions in every state, a JSON and a file submission with errors), so
that paths with ids reach real objects. Its configuration is tests/schemathesis.toml: the few
places where a check cannot apply are written there, per operation and status, with the reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from payoutdesk.api import openapi
from payoutdesk.api.app import create_app
from payoutdesk.config import Settings
from payoutdesk.kit import db
from payoutdesk.submissions import service as submissions
from tests.helpers import World, client_for, conversion, drain, make_world, serving

ROOT = Path(__file__).resolve().parent.parent
CONFIG = Path(__file__).resolve().parent / "schemathesis.toml"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"  # the test extras' CLI, beside this Python
# bounded: both backends together stay within about three minutes on two cores (docs/API.md); a deeper
# run by hand: PAYOUTDESK_SCHEMATHESIS_EXAMPLES=100 PAYOUTDESK_SCHEMATHESIS_SEED=<any> pytest -k schemathesis
MAX_EXAMPLES = int(os.environ.get("PAYOUTDESK_SCHEMATHESIS_EXAMPLES", "12"))
SEED = int(os.environ.get("PAYOUTDESK_SCHEMATHESIS_SEED", "20261207"))


def _document(tmp_path: Path) -> dict[str, Any]:
    settings = Settings.from_env({"PAYOUTDESK_DATA_DIR": str(tmp_path), "PAYOUTDESK_SECRET_KEY": "test-secret"})
    app = create_app(settings, db.make_engine(f"sqlite:///{tmp_path / 'doc.db'}"))
    with TestClient(app) as client:
        r = client.get("/api/v1/openapi.json")
    assert r.status_code == 200
    doc: dict[str, Any] = r.json()
    return doc


# --- the document ------------------------------------------------------------------------------


def test_every_operation_has_its_answers_described(tmp_path: Path) -> None:
    doc = _document(tmp_path)
    assert openapi.undescribed(doc) == [], "add these operations to api.openapi.OPERATIONS"
    scheme = doc["components"]["securitySchemes"]["basicAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "basic") and "Account SID" in scheme["description"]
    problem = doc["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "code"}
    shared = doc["components"]["responses"]
    count = 0
    for path, item in doc["paths"].items():
        for method, op in item.items():
            count += 1
            where = f"{method.upper()} {path}"
            assert op.get("security") == [{"basicAuth": []}], where
            successes = [code for code in op["responses"] if code.startswith("2")]
            # one success answer; POST /reprocess has two: 200 with the counts, 202 with a job (R13)
            assert len(successes) == 1 or (where == "POST /api/v1/reprocess" and successes == ["200", "202"]), where
            content = op["responses"][successes[0]]["content"]
            assert content and all(media.get("schema") for media in content.values()), where
            assert op["responses"][successes[0]]["headers"]["X-RateLimit-Remaining"] == {
                "$ref": "#/components/headers/X-RateLimit-Remaining"}, where
            for status in ("401", "422", "429"):
                assert status in op["responses"], f"{where} does not list {status}"
            if "{" in path:
                assert "404" in op["responses"], f"{where} does not list 404"
            if "requestBody" in op:
                assert "413" in op["responses"], f"{where} does not list 413"
            for code, ref in op["responses"].items():
                if code.startswith("4"):
                    answer = shared[ref["$ref"].rsplit("/", 1)[-1]]
                    assert answer["content"] == {"application/problem+json": {
                        "schema": {"$ref": "#/components/schemas/Problem"}}}, f"{where} {code}"
            assert shared[op["responses"]["429"]["$ref"].rsplit("/", 1)[-1]]["headers"]["Retry-After"]["required"]
    assert count >= 40
    assert "HTTPValidationError" not in doc["components"]["schemas"]  # FastAPI's 422 shape is never sent


def test_the_documented_shapes_name_the_fields_of_the_design(tmp_path: Path) -> None:
    doc = _document(tmp_path)
    schemas = doc["components"]["schemas"]
    paths = doc["paths"]

    def answer(path: str, method: str = "get") -> dict[str, Any]:
        responses = paths[path][method]["responses"]
        ok = next(v for k, v in responses.items() if k.startswith("2"))
        media = next(iter(ok["content"].values()))
        ref = media["schema"].get("$ref", "")
        return dict(schemas[ref.rsplit("/", 1)[-1]]) if ref else dict(media)

    listing = answer("/api/v1/actions")
    assert set(listing["required"]) == {"items", "next_cursor"}
    action = schemas["Action"]
    for name in ("id", "campaign_id", "order_id", "state", "amount", "payout", "locking_date", "items", "updates"):
        assert name in action["required"], name
    assert schemas["ActionItem"]["properties"]["amount"]["pattern"] == r"^-?[0-9]+(\.[0-9]+)?$"
    assert "outcome" in answer("/api/v1/actions/{action_id}/modify", "post")["required"]
    assert set(answer("/api/v1/locking/run", "post")["required"]) == {"locked"}
    assert "status" in answer("/api/v1/submissions", "post")["required"]
    assert paths["/api/v1/submissions"]["post"]["responses"].keys() >= {"202", "409", "413"}
    assert "text/csv" in paths["/api/v1/actions/export"]["get"]["responses"]["200"]["content"]
    # the compatible API: PascalCase envelopes, the PUT/DELETE parameters in three encodings
    envelope = answer("/Advertisers/{AccountSID}/Actions")
    assert {"@page", "@numpages", "@total", "Actions"} <= set(envelope["required"])
    assert set(answer("/Advertisers/{AccountSID}/Actions", "put")["required"]) >= {"Status", "QueuedUri"}
    for method in ("put", "delete"):
        body = paths["/Advertisers/{AccountSID}/Actions"][method]["requestBody"]["content"]
        assert set(body) == {"application/x-www-form-urlencoded", "multipart/form-data", "application/json"}
        assert {"ActionId", "Amount", "Reason", "DispositionCode", "Sku", "Quantity"} <= set(
            body["application/x-www-form-urlencoded"]["schema"]["properties"])
    query = {p["name"] for p in paths["/Advertisers/{AccountSID}/Actions"]["get"]["parameters"]}
    assert {"CampaignId", "State", "StartDate", "EndDate", "Page", "PageSize"} <= query
    query = {p["name"] for p in paths["/Advertisers/{AccountSID}/FTPFileSubmissions"]["get"]["parameters"]}
    assert {"SubmissionDateStart", "CompletedDateEnd", "Page", "PageSize"} <= query


# --- /docs with no network ---------------------------------------------------------------------


def test_docs_are_served_from_the_package_with_no_external_url(tmp_path: Path) -> None:
    settings = Settings.from_env({"PAYOUTDESK_DATA_DIR": str(tmp_path), "PAYOUTDESK_SECRET_KEY": "test-secret"})
    client = TestClient(create_app(settings, db.make_engine(f"sqlite:///{tmp_path / 'doc.db'}")))
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "//" not in re.sub(r"^\s*//.*$", "", html, flags=re.MULTILINE).replace("<!--", ""), \
        "the page names no other host"
    assert "cdn" not in html.lower()
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert {a.rsplit("/", 1)[-1] for a in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
    for asset in assets:
        assert asset.startswith("/"), asset
        r = client.get(asset)
        assert r.status_code == 200, asset
        assert len(r.content) > 500, asset
    assert "'/api/v1/openapi.json'" in html or '"/api/v1/openapi.json"' in html
    assert '"validatorUrl": null' in html  # Swagger UI would fetch a badge from swagger.io otherwise
    bundle = client.get("/docs/assets/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith(("application/javascript", "text/javascript"))
    version = (ROOT / "src/payoutdesk/api/static/swagger-ui/VERSION").read_text()
    assert "swagger-ui-dist 5." in version  # OpenAPI 3.1 documents need Swagger UI 5


# --- schemathesis against a real server, on both databases -------------------------------------


def _seed(engine: Engine, tmp_path: Path) -> tuple[World, dict[str, str]]:
    """An account with data in every state the routes show; the values the configuration names."""
    w = make_world(engine)
    pending = [conversion(w, f"ST-{n}", "100.00") for n in range(4)]
    items = conversion(w, "ST-ITEMS", None, items=[{"sku": "SKU-1", "quantity": 2, "amount": "60.00"},
                                                   {"sku": "SKU-2", "quantity": 1, "amount": "40.00"}])
    lead = conversion(w, "ST-LEAD", "10.00", event_type=w.lead, partner=w.partners[1])
    api = client_for(engine, tmp_path)
    assert api.post(f"/api/v1/actions/{pending[1]}/approve", headers=w.auth).status_code == 200
    assert api.post(f"/api/v1/actions/{pending[2]}/reverse", json={"reason": "ITEM_RETURNED"},
                    headers=w.auth).status_code == 200
    with db.write(engine) as conn:
        rows = submissions.create_from_rows(conn, w.actor, w.campaign_id, [
            {"ActionId": pending[0], "Amount": "80.00", "Reason": "ORDER_UPDATE"},
            {"ActionId": 999_999_999, "Amount": "1.00"}])
        file = submissions.create(conn, w.actor, w.campaign_id,
                                  f"ActionId,Amount\n{items},90.00\n999999998,5.00\n".encode(),
                                  file_name="returns.csv", content_type="text/csv")
    drain(engine)
    values = {
        "SID": w.sid,
        "ACTION_IDS": ", ".join(str(i) for i in (*pending, items, lead)),
        "ACTION_ID_TEXTS": ", ".join(f'"{i}"' for i in (*pending, items, lead)),
        "CAMPAIGN_IDS": str(w.campaign_id),
        "PARTNER_IDS": ", ".join(str(p) for p in w.partners),
        "EVENT_TYPE_IDS": f"{w.sale}, {w.lead}",
        "CONTRACT_IDS": str(w.contract_id),
        "SUBMISSION_IDS": f'"{rows["id"]}", "{file["id"]}"',
        "API_SUBMISSION_IDS": f'"{rows["id"]}"',
        "FILE_SUBMISSION_IDS": f'"{file["id"]}"',
    }
    return w, values


@pytest.fixture
def served(fresh_engine: Engine, tmp_path: Path) -> Iterator[tuple[int, World, dict[str, str]]]:
    world, values = _seed(fresh_engine, tmp_path)
    # the rate limits off: the run's thousands of requests (and the ignored_auth check's wrong
    # credentials, which the sign-in limit would count against 127.0.0.1) must reach the routes
    settings = Settings.from_env({"PAYOUTDESK_DATA_DIR": str(tmp_path), "PAYOUTDESK_API_RATE_LIMIT": "0",
                                  "PAYOUTDESK_LOGIN_RATE_LIMIT": "0", "PAYOUTDESK_SECRET_KEY": "test-secret"})
    with serving(create_app(settings, fresh_engine)) as port:
        yield port, world, values


def _config(values: dict[str, str]) -> str:
    text = CONFIG.read_text()
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value)
    assert "{{" not in text, "a value of tests/schemathesis.toml is not filled in"
    return text


def test_schemathesis_finds_no_failure(served: tuple[int, World, dict[str, str]], tmp_path: Path) -> None:
    port, world, values = served
    assert SCHEMATHESIS.exists(), "schemathesis is missing: pip install -e '.[test]'"
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(values))
    report = tmp_path / "report.json"
    command = [
        str(SCHEMATHESIS), "--no-color", "--config-file", str(config), "run",
        f"http://127.0.0.1:{port}/api/v1/openapi.json",
        "--checks", "all", "--auth", f"{world.sid}:{world.token}",
        "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1",
        "--report", "ndjson", "--report-ndjson-path", str(report),
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.monotonic()
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    elapsed = time.monotonic() - started
    out = done.stdout + done.stderr
    summary = out[out.rfind("SUMMARY"):] if "SUMMARY" in out else out[-3000:]
    if done.returncode != 0:
        print(out)  # every failure with its curl line, for the report
    assert done.returncode == 0, f"schemathesis failed after {elapsed:.0f} s:\n{summary}"
    assert "Tested: " in summary and " 0 failures" not in summary.replace("no failures", "")
    tested = re.search(r"Tested:\s+(\d+)", summary)
    assert tested is not None and int(tested.group(1)) >= 40, summary
    phases = "; ".join(re.findall(r"(?:Examples|Coverage|Fuzzing|Stateful) \(in [0-9.]+m?s\)", out))
    print(f"schemathesis: {elapsed:.1f} s ({phases})\n{summary}")


# --- handler fixes that schemathesis found (each failed before its fix) ---------------------------


def test_a_405_allows_every_method_of_the_path(api: TestClient, world: World) -> None:
    r = api.request("OPTIONS", "/api/v1/campaigns", headers=world.auth)
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, POST"  # Starlette named only the first route's POST
    r = api.request("OPTIONS", f"/Advertisers/{world.sid}/Actions", headers=world.auth)
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET, PUT"


def test_dates_are_written_as_dates(api: TestClient, world: World) -> None:
    # pydantic alone took 0 (and "0") for 1970-01-01
    r = api.post("/api/v1/locking/run", json={"as_of": 0}, headers=world.auth)
    assert r.status_code == 422 and r.json()["code"] == "validation_error", r.text
    r = api.get("/api/v1/actions", params={"locking_date_to": "0"}, headers=world.auth)
    assert r.status_code == 422, r.text
    assert api.post("/api/v1/locking/run", json={"as_of": "2026-01-15"}, headers=world.auth).status_code == 200


def test_a_page_of_rows_needs_a_limit_of_one_or_more(api: TestClient, world: World) -> None:
    with db.write(world.engine) as conn:
        sub = submissions.create_from_rows(conn, world.actor, world.campaign_id, [{"ActionId": 1, "Amount": "1"}])
    for route in ("errors", "results"):
        r = api.get(f"/api/v1/submissions/{sub['id']}/{route}", params={"limit": 0}, headers=world.auth)
        assert r.status_code == 422, r.text  # a negative LIMIT means none on SQLite and fails on PostgreSQL
        r = api.get(f"/api/v1/submissions/{sub['id']}/{route}", params={"cursor": -1}, headers=world.auth)
        assert r.status_code == 422, r.text


def test_the_schemathesis_exceptions_are_per_operation(tmp_path: Path) -> None:
    """Each exception of tests/schemathesis.toml names whole operations of the document (a renamed
    route must not leave a stale exception, nor may an exception match more than it says)."""
    import tomllib

    labels = {f"{method.upper()} {path}" for path, item in _document(tmp_path)["paths"].items() for method in item}
    config = tomllib.loads(re.sub(r"\{\{[A-Z_]+\}\}", "1", CONFIG.read_text()))
    assert config["operations"]
    for block in config["operations"]:
        assert set(block) <= {"include-name", "checks", "parameters"}, block  # include-method alone matches all
        names = block["include-name"] if isinstance(block["include-name"], list) else [block["include-name"]]
        assert set(names) <= labels, names
        for check, settings in block.get("checks", {}).items():
            assert check == "positive_data_acceptance" and set(settings) == {"expected-statuses"}, check
            assert set(settings["expected-statuses"]) - {"2xx", "401", "404", "409", "429"} <= {"400", "422"}
    assert "enabled" not in CONFIG.read_text()  # no check is switched off


def test_the_compatible_query_parameters_are_those_the_routes_take(tmp_path: Path) -> None:
    from payoutdesk.api.compat_common import QUERY_PARAMETERS

    paths = _document(tmp_path)["paths"]
    for (method, route), names in QUERY_PARAMETERS.items():
        operation = paths["/Advertisers/{AccountSID}" + route][method.lower()]
        documented = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
        assert documented == set(names), route


def test_times_before_the_year_1000_are_iso_8601(api: TestClient, world: World) -> None:
    # strftime wrote the year 244 as "244-09-06T…", which no date-time parser reads
    r = api.post("/api/v1/clicks", json={"campaign_id": world.campaign_id, "partner_id": world.partners[0],
                                         "customer_id": "c-1", "clicked_at": "0244-09-06T21:35:35Z"},
                 headers=world.auth)
    assert r.status_code == 201, r.text
    assert r.json()["clicked_at"] == "0244-09-06T21:35:35Z"
