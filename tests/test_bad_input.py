"""Bad input on every endpoint: a 4xx problem+json a person understands, and nothing changed.

Each case is one request with something wrong in it. It must answer the expected status and
code, with a ``detail`` that names the problem (asserted on a telling word), and the whole
database (every table of ``payoutdesk.models.metadata``: row count and a checksum of the rows)
must be the same after as before.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, inspect, select

from payoutdesk.catalog import service as catalog
from payoutdesk.kit import db
from payoutdesk.kit.crypto import SecretBox
from payoutdesk.models import metadata
from tests.helpers import World, client_for, conversion, make_world

PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}


# --- the database snapshot -------------------------------------------------------------------


def db_snapshot(engine: Engine) -> dict[str, tuple[int, str]]:
    """Row count and a checksum of the rows of every table of the schema, in primary-key order."""
    out: dict[str, tuple[int, str]] = {}
    with db.read(engine) as conn:
        present = set(inspect(conn).get_table_names())
        for table in metadata.sorted_tables:
            if table.name not in present:
                continue
            order = list(table.primary_key.columns) or list(table.columns)
            digest, n = hashlib.sha256(), 0
            for row in conn.execute(select(table).order_by(*order)):
                digest.update(repr(tuple(row)).encode())
                n += 1
            out[table.name] = (n, digest.hexdigest())
    assert "actions" in out and "action_updates" in out
    return out


def assert_problem(r: Any, status: int, code: str | None = None, word: str | None = None) -> dict[str, Any]:
    """The answer is problem+json with the given status (and code), whose detail contains ``word``."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers["content-type"]
    body = r.json()
    assert set(body) >= PROBLEM_KEYS, body
    assert body["status"] == status and body["type"] == f"/problems/{body['code']}"
    assert isinstance(body["detail"], str) and len(body["detail"]) > 5 and body["title"]
    if code is not None:
        assert body["code"] == code, body
    if word is not None:
        assert word.lower() in body["detail"].lower(), (word, body["detail"])
    return dict(body)


# --- one tenant with everything the cases point at ---------------------------------------------


@dataclass
class Scene:
    api: TestClient
    world: World
    ctx: dict[str, Any]


@pytest.fixture(scope="module")
def scene(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    w = make_world(engine)
    other = make_world(engine)
    box = SecretBox("test-secret")
    with db.write(engine) as conn:  # a JPY campaign of the same account
        jcamp = catalog.create_campaign(conn, w.actor, "Japan", "JPY", None, "mail.test")["id"]
        jsale = catalog.create_event_type(conn, w.actor, {"campaign_id": jcamp, "name": "Sale JP"}, box)
        catalog.create_contract(conn, w.actor, {
            "campaign_id": jcamp, "partner_id": w.partners[0], "starts_on": date(2020, 1, 1),
            "payout": [{"event_type_id": jsale, "percent": "5"}]})
    ctx = {
        "campaign": w.campaign_id, "sale": w.sale, "lead": w.lead, "partner": w.partners[0],
        "aid": conversion(w, "BAD-1"),
        "iaid": conversion(w, "BAD-2", items=[{"sku": "RED", "quantity": 2, "amount": "80.00"},
                                             {"sku": "BIG", "quantity": 1, "amount": "1000000000.00"}]),
        "jcampaign": jcamp, "jsale": jsale,
        "jaid": conversion(w, "BAD-JP", amount="1500", event_type=jsale),
        "other_aid": conversion(other, "THEIRS"), "other_sale": other.sale,
        "other_campaign": other.campaign_id, "other_partner": other.partners[0],
    }
    with client_for(engine, tmp_path_factory.mktemp("bad-input")) as api:
        yield Scene(api, w, ctx)


def fill(value: Any, ctx: dict[str, Any]) -> Any:
    """Replace "$name" placeholders (whole strings, or inside paths) with the scene's ids."""
    if isinstance(value, str):
        whole = re.fullmatch(r"\$(\w+)", value)
        if whole:
            return ctx[whole.group(1)]
        return re.sub(r"\$(\w+)", lambda m: str(ctx[m.group(1)]), value)
    if isinstance(value, dict):
        return {k: fill(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, ctx) for v in value]
    return value


_NOT_GIVEN = object()


def case(name: str, method: str, path: str, body: Any = _NOT_GIVEN, status: int = 422, code: str | None = None,
         word: str | None = None, *, raw: bytes | None = None, params: dict[str, Any] | None = None,
         headers: dict[str, str] | None = None) -> Any:
    return pytest.param(method, path, body, status, code, word, raw, params, headers, id=name)


# --- the cases -------------------------------------------------------------------------------

NUMBER, DECIMALS, FINITE, LARGE, NEG = "plain decimal", "decimals", "finite", "too large", "negative"
QUOTED = "in quotes"  # a JSON number: money is a decimal string
INV, VAL, NF = "invalid_amount", "validation_error", "not_found"

CONV = {"event_type_id": "$sale", "order_id": "X-1", "event_date": "2026-01-15T10:00:00Z", "partner_id": "$partner"}
CONTRACT = {"campaign_id": "$campaign", "partner_id": "$partner", "starts_on": "2026-01-01",
            "payout": [{"event_type_id": "$sale", "percent": "8"}]}
CLICK = {"campaign_id": "$campaign", "partner_id": "$partner", "customer_id": "c-1",
         "clicked_at": "2026-01-01T00:00:00Z"}

# (endpoint, method, path, a valid body, its required fields)
ENDPOINTS: list[tuple[str, str, str, dict[str, Any], list[str]]] = [
    ("campaigns", "POST", "/campaigns", {"name": "N", "currency": "USD"}, ["name", "currency"]),
    ("partners", "POST", "/partners", {"name": "N"}, ["name"]),
    ("event-types", "POST", "/event-types", {"campaign_id": "$campaign", "name": "S"}, ["campaign_id", "name"]),
    ("event-type-patch", "PATCH", "/event-types/$sale", {"name": "S"}, []),
    ("contracts", "POST", "/contracts", CONTRACT, ["campaign_id", "partner_id", "starts_on", "payout"]),
    ("clicks", "POST", "/clicks", CLICK, ["campaign_id", "partner_id", "customer_id"]),
    ("conversions", "POST", "/conversions", {**CONV, "amount": "1.00"}, ["event_type_id", "order_id", "event_date"]),
    ("approve", "POST", "/actions/$aid/approve", {"note": "n"}, []),
    ("reverse", "POST", "/actions/$aid/reverse", {"reason": "CONS_FRAUD"}, []),
    ("modify", "POST", "/actions/$aid/modify", {"amount": "5.00"}, []),
    ("reset", "POST", "/actions/$aid/reset", {"note": "n"}, []),
    ("locking-run", "POST", "/locking/run", {"as_of": "2000-01-01"}, []),
]


def _generic_cases() -> list[Any]:
    """For every write endpoint: malformed JSON, an unknown field, a wrong body type, each field missing."""
    out = []
    for name, method, path, body, required in ENDPOINTS:
        out += [
            case(f"{name}-malformed-json", method, path, raw=b'{"name": ', status=400, code="malformed_json",
                 word="JSON"),
            case(f"{name}-single-quotes", method, path, raw=b"{'name': 'x'}", status=400, code="malformed_json",
                 word="not valid JSON"),
            case(f"{name}-not-utf8", method, path, raw=b'{"name": "\xff\xfe"}', status=400, code="malformed_json",
                 word="JSON"),
            case(f"{name}-unknown-field", method, path, {**body, "colour": "red"}, code=VAL,
                 word="colour: is not a field"),
            case(f"{name}-body-is-a-list", method, path, [body], code=VAL, word="JSON object"),
            case(f"{name}-nul-in-text", method, path, {**body, "note" if "note" in body else "colour": "a\x00b"},
                 code=VAL, word="NUL character"),
        ]
        out += [case(f"{name}-missing-{f}", method, path, {k: v for k, v in body.items() if k != f}, code=VAL,
                     word=f"{f}: is required") for f in required]
    return out


def _amount_cases(prefix: str, method: str, path: str, base: dict[str, Any], key: str = "amount") -> list[Any]:
    """The same bad amounts wherever an amount goes."""
    def put(v: Any) -> dict[str, Any]:
        if key == "items":
            return {**base, "items": [{"sku": "A", "quantity": 1, "amount": v}]}
        return {**base, key: v}

    bad: list[tuple[str, Any, str]] = [
        ("negative", "-1", NEG), ("negative-cent", "-0.01", NEG), ("negative-number", -3, QUOTED),
        ("non-numeric", "abc", NUMBER), ("comma-decimal", "12,50", NUMBER), ("empty", "", "empty"),
        ("three-decimals", "1.234", DECIMALS), ("nan", "NaN", FINITE), ("infinity", "Infinity", FINITE),
        ("minus-infinity", "-Infinity", FINITE), ("huge", "9" * 30, LARGE), ("huge-number", 1e30, QUOTED),
        ("boolean", True, "true or false"), ("list", [1], "decimal string"), ("object", {"v": 1}, "decimal string"),
        # DESIGN §6 "Strict inputs": each of these was applied before (issue 10 item 5)
        ("exponent", "1e5", NUMBER), ("underscore", "1_000", NUMBER), ("arabic-indic", "١٢", NUMBER),
        ("plus", "+5", NUMBER), ("leading-point", ".5", NUMBER), ("trailing-point", "12.", NUMBER),
        ("minus-zero", "-0", NEG), ("spaces", " 5 ", NUMBER), ("number", 10, QUOTED),
    ]
    return [case(f"{prefix}-{n}", method, path, put(v), code=INV, word=w) for n, v, w in bad]


CASES: list[Any] = [
    *_generic_cases(),
    # creating campaigns
    case("campaign-currency-format", "POST", "/campaigns", {"name": "N", "currency": "usdx"}, code=VAL,
         word="ISO 4217"),
    case("campaign-currency-unknown", "POST", "/campaigns", {"name": "N", "currency": "XYZ"}, code=VAL,
         word="ISO 4217"),
    case("campaign-currency-number", "POST", "/campaigns", {"name": "N", "currency": 840}, code=VAL,
         word="currency"),
    case("campaign-currency-boolean", "POST", "/campaigns", {"name": "N", "currency": True}, code=VAL,
         word="currency"),
    case("campaign-name-empty", "POST", "/campaigns", {"name": " ", "currency": "USD"}, code=VAL, word="name"),
    case("campaign-name-long", "POST", "/campaigns", {"name": "N" * 300, "currency": "USD"}, code=VAL,
         word="200 characters"),
    case("campaign-ftp-password-short", "POST", "/campaigns", {"name": "N", "currency": "USD", "ftp_password": "x"},
         code=VAL, word="8 characters"),
    case("campaign-lone-surrogate", "POST", "/campaigns", raw=b'{"name": "a\\ud800", "currency": "USD"}', code=VAL,
         word="Unicode"),
    # creating partners
    case("partner-name-empty", "POST", "/partners", {"name": ""}, code=VAL, word="name"),
    case("partner-name-number", "POST", "/partners", {"name": 5}, code=VAL, word="string"),
    case("partner-name-list", "POST", "/partners", {"name": ["a"]}, code=VAL, word="string"),
    case("partner-name-nul", "POST", "/partners", {"name": "a\x00b"}, code=VAL, word="NUL"),
    # creating event types
    case("event-type-unknown-campaign", "POST", "/event-types", {"campaign_id": 999999, "name": "S"}, 404, NF,
         "campaign"),
    case("event-type-other-tenants-campaign", "POST", "/event-types", {"campaign_id": "$other_campaign", "name": "S"},
         404, NF, "campaign"),
    case("event-type-campaign-text", "POST", "/event-types", {"campaign_id": "abc", "name": "S"}, code=VAL,
         word="integer"),
    case("event-type-campaign-boolean", "POST", "/event-types", {"campaign_id": True, "name": "S"}, code=VAL,
         word="whole number"),
    case("event-type-campaign-fraction", "POST", "/event-types", {"campaign_id": 1.5, "name": "S"}, code=VAL,
         word="integer"),
    case("event-type-campaign-huge", "POST", "/event-types", {"campaign_id": 2**70, "name": "S"}, code=VAL,
         word="less than"),
    case("event-type-locking", "POST", "/event-types", {"campaign_id": "$campaign", "name": "S", "locking": "never"},
         code=VAL, word="open_ended"),
    case("event-type-code-predefined", "POST", "/event-types",
         {"campaign_id": "$campaign", "name": "S", "disposition_codes": [{"code": "REJECTED", "operation": "reverse"}]},
         code=VAL, word="predefined"),
    case("event-type-code-operation", "POST", "/event-types",
         {"campaign_id": "$campaign", "name": "S", "disposition_codes": [{"code": "X", "operation": "explode"}]},
         code=VAL, word="approve"),
    case("event-type-code-twice", "POST", "/event-types",
         {"campaign_id": "$campaign", "name": "S", "disposition_codes": [{"code": "X", "operation": "modify"}] * 2},
         code=VAL, word="twice"),
    case("event-type-returns-mode", "POST", "/event-types",
         {"campaign_id": "$campaign", "name": "S", "returns_processing": {"mode": "carrier_pigeon"}}, code=VAL,
         word="mode"),
    case("event-type-returns-not-object", "POST", "/event-types",
         {"campaign_id": "$campaign", "name": "S", "returns_processing": "api"}, code=VAL, word="returns_processing"),
    # changing an event type
    case("patch-unknown-event-type", "PATCH", "/event-types/999999", {"name": "x"}, 404, NF, "event type"),
    case("patch-other-tenants-event-type", "PATCH", "/event-types/$other_sale", {"name": "x"}, 404, NF, "event type"),
    case("patch-id-text", "PATCH", "/event-types/abc", {"name": "x"}, 404, NF, "whole number"),
    case("patch-id-huge", "PATCH", f"/event-types/{2**40}", {"name": "x"}, 404, NF, "event type"),
    case("patch-returns-mode", "PATCH", "/event-types/$sale", {"returns_processing": {"mode": "fax"}}, code=VAL,
         word="mode"),
    case("patch-returns-no-mode", "PATCH", "/event-types/$sale", {"returns_processing": {}}, code=VAL, word="mode"),
    case("patch-locking", "PATCH", "/event-types/$sale", {"locking": "x"}, code=VAL, word="open_ended"),
    case("patch-name-empty", "PATCH", "/event-types/$sale", {"name": ""}, code=VAL, word="name"),
    case("patch-name-number", "PATCH", "/event-types/$sale", {"name": 5}, code=VAL, word="string"),
    case("patch-codes-not-list", "PATCH", "/event-types/$sale", {"disposition_codes": "Wrong_Size"}, code=VAL,
         word="list"),
    # contracts
    *[case(f"contract-percent-{n}", "POST", "/contracts",
           {**CONTRACT, "payout": [{"event_type_id": "$sale", "percent": v}]}, code=INV, word=w)
      for n, v, w in [("negative", "-1", NEG), ("over-100", "101", "between 0 and 100"),
                      ("nan", "NaN", FINITE), ("text", "abc", NUMBER), ("five-decimals", "1.12345", "4 decimals"),
                      ("boolean", True, "true or false"), ("infinity", "Infinity", FINITE),
                      ("exponent", "1e1", NUMBER), ("minus-zero", "-0", NEG), ("trailing-point", "8.", NUMBER),
                      ("number", 8, QUOTED)]],
    *_amount_cases("contract-fixed", "POST", "/contracts", {**CONTRACT, "payout": "$fixed"}, key="fixed-slot"),
    case("contract-fixed-jpy-decimals", "POST", "/contracts",
         {**CONTRACT, "campaign_id": "$jcampaign", "payout": [{"event_type_id": "$jsale", "fixed": "1.5"}]},
         code=INV, word="JPY"),
    case("contract-payout-neither", "POST", "/contracts", {**CONTRACT, "payout": [{"event_type_id": "$sale"}]},
         code=VAL, word="percent or fixed"),
    case("contract-payout-both", "POST", "/contracts",
         {**CONTRACT, "payout": [{"event_type_id": "$sale", "percent": "1", "fixed": "1.00"}]}, code=VAL,
         word="percent or fixed"),
    case("contract-payout-empty", "POST", "/contracts", {**CONTRACT, "payout": []}, code=VAL, word="payout"),
    case("contract-payout-object", "POST", "/contracts", {**CONTRACT, "payout": {"percent": "8"}}, code=VAL,
         word="payout"),
    case("contract-payout-twice", "POST", "/contracts",
         {**CONTRACT, "payout": [{"event_type_id": "$sale", "percent": "1"}, {"event_type_id": "$sale", "fixed": "1"}]},
         code=VAL, word="two payout"),
    case("contract-unknown-event-type", "POST", "/contracts",
         {**CONTRACT, "payout": [{"event_type_id": 999999, "percent": "1"}]}, 404, NF, "event type"),
    case("contract-event-type-of-other-campaign", "POST", "/contracts",
         {**CONTRACT, "payout": [{"event_type_id": "$jsale", "percent": "1"}]}, code=VAL, word="another campaign"),
    case("contract-unknown-partner", "POST", "/contracts", {**CONTRACT, "partner_id": 999999}, 404, NF, "partner"),
    case("contract-other-tenants-partner", "POST", "/contracts", {**CONTRACT, "partner_id": "$other_partner"}, 404,
         NF, "partner"),
    case("contract-unknown-campaign", "POST", "/contracts", {**CONTRACT, "campaign_id": 999999}, 404, NF,
         "campaign"),
    case("contract-starts-on-text", "POST", "/contracts", {**CONTRACT, "starts_on": "soon"}, code=VAL, word="date"),
    case("contract-starts-on-month-13", "POST", "/contracts", {**CONTRACT, "starts_on": "2026-13-01"}, code=VAL,
         word="date like"),
    case("contract-starts-on-number", "POST", "/contracts", {**CONTRACT, "starts_on": 5}, code=VAL, word="date"),
    case("contract-lock-negative", "POST", "/contracts", {**CONTRACT, "lock_after": {"months": -1, "days": 0}},
         code=VAL, word="whole number"),
    case("contract-lock-too-long", "POST", "/contracts", {**CONTRACT, "lock_after": {"months": 0, "days": 99999}},
         code=VAL, word="ten years"),
    case("contract-lock-weeks", "POST", "/contracts", {**CONTRACT, "lock_after": {"weeks": 1}}, code=VAL,
         word="not a field"),
    case("contract-lock-boolean", "POST", "/contracts", {**CONTRACT, "lock_after": {"months": True}}, code=VAL,
         word="whole number"),
    case("contract-pay-text", "POST", "/contracts", {**CONTRACT, "pay_after": {"days": "soon"}}, code=VAL,
         word="integer"),
    case("contract-window-negative", "POST", "/contracts", {**CONTRACT, "referral_window_days": -1}, code=VAL,
         word="0 to 3650"),
    case("contract-window-huge", "POST", "/contracts", {**CONTRACT, "referral_window_days": 10**12}, code=VAL,
         word="0 to 3650"),
    case("contract-window-text", "POST", "/contracts", {**CONTRACT, "referral_window_days": "x"}, code=VAL,
         word="integer"),
    case("contract-window-boolean", "POST", "/contracts", {**CONTRACT, "referral_window_days": False}, code=VAL,
         word="whole number"),
    case("contract-category-over-100", "POST", "/contracts", {**CONTRACT, "category_percent": {"shoes": "200"}},
         code=INV, word="between 0 and 100"),
    case("contract-category-list", "POST", "/contracts", {**CONTRACT, "category_percent": ["shoes"]}, code=VAL,
         word="category_percent"),
    # clicks
    case("click-unknown-campaign", "POST", "/clicks", {**CLICK, "campaign_id": 999999}, 404, NF, "campaign"),
    case("click-unknown-partner", "POST", "/clicks", {**CLICK, "partner_id": 999999}, 404, NF, "partner"),
    case("click-other-tenants-partner", "POST", "/clicks", {**CLICK, "partner_id": "$other_partner"}, 404, NF,
         "partner"),
    case("click-partner-boolean", "POST", "/clicks", {**CLICK, "partner_id": True}, code=VAL, word="whole number"),
    case("click-customer-empty", "POST", "/clicks", {**CLICK, "customer_id": " "}, code=VAL, word="customer_id"),
    case("click-customer-number", "POST", "/clicks", {**CLICK, "customer_id": 5}, code=VAL, word="string"),
    case("click-customer-long", "POST", "/clicks", {**CLICK, "customer_id": "c" * 201}, code=VAL, word="200"),
    case("click-time-text", "POST", "/clicks", {**CLICK, "clicked_at": "noon"}, code=VAL, word="ISO 8601"),
    case("click-time-number", "POST", "/clicks", {**CLICK, "clicked_at": 1700000000}, code=VAL, word="clicked_at"),
    case("click-time-out-of-range", "POST", "/clicks", {**CLICK, "clicked_at": "9999-12-31T23:59:59-05:00"},
         code=VAL, word="out of range"),
    # conversions
    *_amount_cases("conversion-amount", "POST", "/conversions", CONV),
    *_amount_cases("conversion-item-amount", "POST", "/conversions", CONV, key="items"),
    case("conversion-jpy-decimals", "POST", "/conversions", {**CONV, "event_type_id": "$jsale", "amount": "1.5"},
         code=INV, word="JPY"),
    case("conversion-wrong-currency", "POST", "/conversions", {**CONV, "amount": "1.00", "currency": "EUR"},
         code="wrong_currency", word="EUR"),
    case("conversion-amount-and-items", "POST", "/conversions",
         {**CONV, "amount": "1", "items": [{"sku": "A", "amount": "1"}]}, code=VAL, word="either"),
    case("conversion-neither-amount-nor-items", "POST", "/conversions", CONV, code=VAL, word="either"),
    case("conversion-items-empty", "POST", "/conversions", {**CONV, "items": []}, code=VAL, word="non-empty"),
    case("conversion-items-text", "POST", "/conversions", {**CONV, "items": "A"}, code=VAL, word="list"),
    case("conversion-item-no-amount", "POST", "/conversions", {**CONV, "items": [{"sku": "A", "quantity": 1}]},
         code=VAL, word="needs an amount"),
    case("conversion-item-no-sku", "POST", "/conversions", {**CONV, "items": [{"amount": "1"}]}, code=VAL,
         word="sku: is required"),
    case("conversion-item-quantity-negative", "POST", "/conversions",
         {**CONV, "items": [{"sku": "A", "quantity": -1, "amount": "1"}]}, code=VAL, word="greater than or equal"),
    case("conversion-item-quantity-boolean", "POST", "/conversions",
         {**CONV, "items": [{"sku": "A", "quantity": True, "amount": "1"}]}, code=VAL, word="whole number"),
    case("conversion-item-quantity-huge", "POST", "/conversions",
         {**CONV, "items": [{"sku": "A", "quantity": 10**20, "amount": "1"}]}, code=VAL, word="less than"),
    case("conversion-unknown-event-type", "POST", "/conversions", {**CONV, "event_type_id": 999999, "amount": "1"},
         404, NF, "event type"),
    case("conversion-other-tenants-event-type", "POST", "/conversions",
         {**CONV, "event_type_id": "$other_sale", "amount": "1"}, 404, NF, "event type"),
    case("conversion-event-type-boolean", "POST", "/conversions", {**CONV, "event_type_id": True, "amount": "1"},
         code=VAL, word="whole number"),
    case("conversion-event-type-huge", "POST", "/conversions", {**CONV, "event_type_id": 2**63, "amount": "1"},
         code=VAL, word="less than"),
    case("conversion-unknown-partner", "POST", "/conversions", {**CONV, "partner_id": 999999, "amount": "1"}, 404,
         NF, "partner"),
    case("conversion-date-text", "POST", "/conversions", {**CONV, "event_date": "yesterday", "amount": "1"},
         code=VAL, word="ISO 8601"),
    case("conversion-date-future", "POST", "/conversions", {**CONV, "event_date": "2999-01-01", "amount": "1"},
         code=VAL, word="future"),
    case("conversion-order-empty", "POST", "/conversions", {**CONV, "order_id": "", "amount": "1"}, code=VAL,
         word="order_id"),
    case("conversion-order-long", "POST", "/conversions", {**CONV, "order_id": "O" * 201, "amount": "1"}, code=VAL,
         word="200 characters"),
    case("conversion-order-nul", "POST", "/conversions", {**CONV, "order_id": "O\x00", "amount": "1"}, code=VAL,
         word="NUL"),
    case("conversion-no-partner-no-customer", "POST", "/conversions",
         {k: v for k, v in CONV.items() if k != "partner_id"} | {"amount": "1"}, code=VAL, word="customer_id"),
    case("conversion-failed-with-idempotency-key", "POST", "/conversions", {**CONV, "amount": "-1"}, code=INV,
         word=NEG, headers={"Idempotency-Key": "bad-input-1"}),
    case("conversion-idempotency-key-too-long", "POST", "/conversions", {**CONV, "amount": "1"}, code=VAL,
         word="Idempotency-Key", headers={"Idempotency-Key": "k" * 300}),
    # modifying an action
    *_amount_cases("modify-amount", "POST", "/actions/$aid/modify", {}),
    case("modify-jpy-decimals", "POST", "/actions/$jaid/modify", {"amount": "1.5"}, code=INV, word="JPY"),
    case("modify-nothing", "POST", "/actions/$aid/modify", {}, code=VAL, word="amount"),
    case("modify-unknown-reason", "POST", "/actions/$aid/modify", {"amount": "1", "reason": "NOPE"},
         code="unknown_reason", word="NOPE"),
    case("modify-reason-lowercase", "POST", "/actions/$aid/modify", {"amount": "1", "reason": "order_update"},
         code="unknown_reason", word="did you mean ORDER_UPDATE"),
    case("modify-reason-system-only", "POST", "/actions/$aid/modify",
         {"amount": "1", "reason": "SYSTEM_REATTRIBUTED"}, code="unknown_reason", word="system"),
    case("modify-unknown-sku", "POST", "/actions/$iaid/modify", {"items": [{"sku": "GREEN", "quantity": 0}]},
         code="unknown_sku", word="GREEN"),
    case("modify-quantity-negative", "POST", "/actions/$iaid/modify", {"items": [{"sku": "RED", "quantity": -1}]},
         code=VAL, word="greater than or equal to 0"),
    case("modify-quantity-text", "POST", "/actions/$iaid/modify", {"items": [{"sku": "RED", "quantity": "many"}]},
         code=VAL, word="integer"),
    case("modify-quantity-boolean", "POST", "/actions/$iaid/modify", {"items": [{"sku": "RED", "quantity": False}]},
         code=VAL, word="whole number"),
    case("modify-quantity-scales-too-far", "POST", "/actions/$iaid/modify",
         {"items": [{"sku": "BIG", "quantity": 10**9}]}, code=INV, word="too large"),
    case("modify-item-amount-negative", "POST", "/actions/$iaid/modify",
         {"items": [{"sku": "RED", "quantity": 1, "amount": "-5"}]}, code=INV, word=NEG),
    case("modify-item-amount-decimals", "POST", "/actions/$iaid/modify",
         {"items": [{"sku": "RED", "quantity": 1, "amount": "1.001"}]}, code=INV, word=DECIMALS),
    case("modify-items-text", "POST", "/actions/$iaid/modify", {"items": "RED"}, code=VAL, word="list"),
    case("modify-note-too-long", "POST", "/actions/$aid/modify", {"amount": "1", "note": "n" * 2001}, code=VAL,
         word="2,000"),
    case("modify-unknown-action", "POST", "/actions/999999999/modify", {"amount": "1"}, 404, NF, "999999999"),
    case("modify-other-tenants-action", "POST", "/actions/$other_aid/modify", {"amount": "1"}, 404, NF, "action"),
    case("modify-action-id-text", "POST", "/actions/abc/modify", {"amount": "1"}, 404, NF, "whole number"),
    case("modify-action-id-huge", "POST", f"/actions/{10**20}/modify", {"amount": "1"}, 404, NF, "whole number"),
    # reversing, approving and resetting an action
    case("reverse-unknown-reason", "POST", "/actions/$aid/reverse", {"reason": "NOPE"}, code="unknown_reason",
         word="NOPE"),
    case("reverse-empty-reason", "POST", "/actions/$aid/reverse", {"reason": " "}, code="unknown_reason",
         word="empty"),
    case("reverse-reason-number", "POST", "/actions/$aid/reverse", {"reason": 5}, code=VAL, word="string"),
    case("reverse-unknown-action", "POST", "/actions/999999999/reverse", {}, 404, NF, "999999999"),
    case("reverse-other-tenants-action", "POST", "/actions/$other_aid/reverse", {}, 404, NF, "action"),
    case("approve-unknown-action", "POST", "/actions/999999999/approve", None, 404, NF, "999999999"),
    case("approve-other-tenants-action", "POST", "/actions/$other_aid/approve", None, 404, NF, "action"),
    case("approve-action-id-huge", "POST", f"/actions/{10**20}/approve", None, 404, NF, "whole number"),
    case("approve-note-number", "POST", "/actions/$aid/approve", {"note": 5}, code=VAL, word="string"),
    case("reset-unknown-action", "POST", "/actions/999999999/reset", None, 404, NF, "999999999"),
    case("reset-other-tenants-action", "POST", "/actions/$other_aid/reset", None, 404, NF, "action"),
    case("reset-note-list", "POST", "/actions/$aid/reset", {"note": ["x"]}, code=VAL, word="string"),
    # a lock run
    case("lock-as-of-text", "POST", "/locking/run", {"as_of": "tomorrow"}, code=VAL, word="date like"),
    case("lock-as-of-number", "POST", "/locking/run", {"as_of": 5}, code=VAL, word="date like"),
    case("lock-as-of-feb-30", "POST", "/locking/run", {"as_of": "2026-02-30"}, code=VAL, word="date like"),
    # the list of actions
    *[case(f"list-{n}", "GET", "/actions", params=p, code=VAL, word=w) for n, p, w in [
        ("limit-zero", {"limit": 0}, "between 1 and 500"), ("limit-negative", {"limit": -5}, "between 1 and 500"),
        ("limit-too-big", {"limit": 501}, "between 1 and 500"), ("limit-text", {"limit": "ten"}, "between 1 and 500"),
        ("limit-float", {"limit": "1e3"}, "between 1 and 500"),
        ("cursor-text", {"cursor": "abc"}, "next_cursor"), ("cursor-negative", {"cursor": "-1"}, "next_cursor"),
        ("cursor-huge", {"cursor": "9" * 30}, "next_cursor"), ("cursor-unicode-digit", {"cursor": "²"}, "next_cursor"),
        ("state-unknown", {"state": "LOST"}, "PENDING"), ("state-lowercase", {"state": "pending"}, "PENDING"),
        ("campaign-text", {"campaign_id": "abc"}, "campaign_id: an id"),
        ("campaign-huge", {"campaign_id": 2**63}, "campaign_id: an id"),
        ("partner-fraction", {"partner_id": "1.5"}, "partner_id: an id"),
        ("event-type-boolean", {"event_type_id": "true"}, "event_type_id: an id"),
        ("action-text", {"action_id": "x"}, "action_id: an id"), ("action-huge", {"action_id": 2**64}, "an id"),
        ("event-date-from-text", {"event_date_from": "yesterday"}, "ISO 8601"),
        ("event-date-to-feb-30", {"event_date_to": "2026-02-30"}, "date like"),
        ("event-date-from-hour-25", {"event_date_from": "2026-01-01T25:00:00Z"}, "ISO 8601"),
        ("locking-date-from-text", {"locking_date_from": "x"}, "date like"),
        ("locking-date-to-month-13", {"locking_date_to": "2026-13-01"}, "date like"),
        ("order-id-nul", {"order_id": "O\x00"}, "NUL"),
    ]],
    # the export
    *[case(f"export-{n}", "GET", "/actions/export", params=p, code=VAL, word=w) for n, p, w in [
        ("state-unknown", {"state": "LOST"}, "PENDING"), ("campaign-text", {"campaign_id": "abc"}, "an id"),
        ("partner-fraction", {"partner_id": "1.5"}, "an id"),
        ("event-date-from-text", {"event_date_from": "yesterday"}, "ISO 8601"),
        ("locking-date-to-text", {"locking_date_to": "x"}, "date like"),
        ("action-huge", {"action_id": 2**64}, "an id"),
    ]],
    # one action, and the reasons
    case("get-unknown-action", "GET", "/actions/999999999", status=404, code=NF, word="999999999"),
    case("get-other-tenants-action", "GET", "/actions/$other_aid", status=404, code=NF, word="action"),
    case("get-action-id-text", "GET", "/actions/abc", status=404, code=NF, word="whole number"),
    case("reasons-event-type-text", "GET", "/reasons", params={"event_type_id": "abc"}, code=VAL, word="an id"),
    case("reasons-unknown-event-type", "GET", "/reasons", params={"event_type_id": 999999}, status=404, code=NF,
         word="event type"),
    case("reasons-other-tenants-event-type", "GET", "/reasons", params={"event_type_id": "$other_sale"}, status=404,
         code=NF, word="event type"),
]


def _fixed_slot(body: Any) -> Any:
    """The contract amount cases put the bad amount as the fixed payout."""
    if isinstance(body, dict) and "fixed-slot" in body:
        body = dict(body)
        body["payout"] = [{"event_type_id": "$sale", "fixed": body.pop("fixed-slot")}]
    return body


@pytest.mark.parametrize(("method", "path", "body", "status", "code", "word", "raw", "params", "headers"), CASES)
def test_bad_input_is_refused_and_changes_nothing(
    scene: Scene, engine: Engine, method: str, path: str, body: Any, status: int, code: str | None,
    word: str | None, raw: bytes | None, params: dict[str, Any] | None, headers: dict[str, str] | None,
) -> None:
    headers = {**scene.world.auth, **(headers or {})}
    kw: dict[str, Any] = {"params": fill(params, scene.ctx)} if params else {}
    if raw is not None:
        kw["content"] = raw
        headers["Content-Type"] = "application/json"
    elif body is not _NOT_GIVEN:
        kw["json"] = fill(_fixed_slot(body), scene.ctx)
    before = db_snapshot(engine)
    r = scene.api.request(method, "/api/v1" + fill(path, scene.ctx), headers=headers, **kw)
    assert_problem(r, status, code, word)
    assert db_snapshot(engine) == before, "a refused request changed the database"


def test_the_valid_bodies_work(scene: Scene) -> None:
    """The bodies the cases spoil are themselves fine, so each case fails for the one thing it breaks."""
    for name, method, path, body, _required in ENDPOINTS:
        ctx = {**scene.ctx, "aid": conversion(scene.world, f"OK-{name}")}  # a fresh action each
        r = scene.api.request(method, "/api/v1" + fill(path, ctx), headers=scene.world.auth, json=fill(body, ctx))
        assert r.status_code in (200, 201), (name, r.text)
    # the failed request with an Idempotency-Key kept nothing: the key is free for a good request
    r = scene.api.post("/api/v1/conversions", json={**fill(CONV, scene.ctx), "amount": "1.00"},
                       headers={**scene.world.auth, "Idempotency-Key": "bad-input-1"})
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers


def test_unknown_content_type_and_empty_body(scene: Scene, engine: Engine) -> None:
    before = db_snapshot(engine)
    for content, ctype in [(b"name=x", "application/x-www-form-urlencoded"), (b"", "application/json"),
                           (b"", "text/plain")]:
        r = scene.api.post("/api/v1/partners", content=content,
                           headers={**scene.world.auth, "Content-Type": ctype})
        assert_problem(r, 422, VAL)
    assert db_snapshot(engine) == before


def test_the_snapshot_notices_a_change(scene: Scene, engine: Engine) -> None:
    """The guard of the cases above is not blind: a real change shows in it."""
    before = db_snapshot(engine)
    r = scene.api.post(f"/api/v1/actions/{scene.ctx['iaid']}/modify", headers=scene.world.auth,
                       json={"items": [{"sku": "RED", "quantity": 1}]})
    assert r.status_code == 200, r.text
    after = db_snapshot(engine)
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"actions", "action_items", "action_updates"}
    assert after["action_updates"][0] == before["action_updates"][0] + 1
    assert after["actions"][0] == before["actions"][0]  # same rows, different content
