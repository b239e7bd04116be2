"""The OpenAPI document at /api/v1/openapi.json and the offline /docs (DESIGN §6, "A usable contract").

The routes send their answers as ``Response`` objects, so FastAPI alone knows neither their
shapes nor their errors. ``document`` starts from FastAPI's document (paths, path parameters,
request bodies of the native routes) and completes it, operation by operation, from the table
``OPERATIONS`` below: the success answer's schema (``api.schemas``), every error status the route
can give with the problem+json shape, the rate-limit headers, the HTTP Basic security scheme, and
the parameters that the impact.com-compatible routes read by hand (query parameters, the
form-encoded, multipart or JSON body of PUT/DELETE ``/Actions``). An operation missing from the
table keeps an empty success schema and is listed by ``undescribed``; a test fails on it.

``install`` also serves Swagger UI at /docs from files vendored in ``api/static/swagger-ui``
(npm's ``swagger-ui-dist``; its version is in ``VERSION`` there), so that /docs works with no
network.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from payoutdesk.api import clicks as clicks_routes
from payoutdesk.api import compat, compat_common, compat_reads, compat_submissions
from payoutdesk.api import forecast as forecast_routes
from payoutdesk.api import intake as intake_routes
from payoutdesk.api import payments as payments_routes
from payoutdesk.api import reprocess as reprocess_routes
from payoutdesk.api import schemas as s
from payoutdesk.kit.money import ISO_4217
from payoutdesk.ledger.service import MAX_PAGE

SECURITY_SCHEME = "basicAuth"
STATIC_DIR = Path(__file__).resolve().parent / "static" / "swagger-ui"
DOCS_ASSETS = "/docs/assets"
PROBLEM_JSON = "application/problem+json"

_ERROR_TEXT = {
    400: "The body is not valid JSON (`malformed_json`), or a multipart upload cannot be parsed "
         "(`malformed_multipart`).",
    401: "Missing or wrong credentials (`unauthorized`); the answer has `WWW-Authenticate: Basic`.",
    404: "No such object in your account (`not_found`): another account's objects answer 404 too.",
    409: "The object's state refuses the request (`action_locked`, `invalid_state`, `too_many_updates`, "
         "`stale_version`, `duplicate_file`, `conflict`).",
    410: "The original file was deleted after PAYOUTDESK_FILE_RETENTION_DAYS (`file_deleted`); the counts and "
         "errors stay.",
    413: "The body is larger than the route takes (`body_too_large`, `file_too_large`).",
    422: "The request is not valid (`validation_error`, `invalid_amount`, `unknown_reason`, …; "
         "an unknown query parameter is refused too).",
    429: "Too many requests for this account, or too many failed sign-ins from this address (`rate_limited`).",
}

_RATE_HEADERS = {
    "X-RateLimit-Limit": "Requests per second allowed for the account (absent when the limit is off).",
    "X-RateLimit-Remaining": "Requests left in the current second.",
    "X-RateLimit-Reset": "Seconds until the bucket is full again.",
}


@dataclass(frozen=True)
class Op:
    """What the document says of one operation beyond what FastAPI knows."""

    status: int
    answer: type[BaseModel] | None
    errors: tuple[int, ...]
    content: dict[str, Any] | None = None  # a success answer that is not JSON
    query: tuple[dict[str, Any], ...] = ()  # parameters the route reads by hand
    body: dict[str, Any] | None = None  # a request body the route reads by hand
    body_required: bool = False  # the route refuses a request without a body
    auth: bool = True
    also: tuple[tuple[int, type[BaseModel]], ...] = ()  # another success answer (POST /reprocess: 202)


# --- parameters the compatible routes read by hand -----------------------------------------------

def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


# impact.com's query parameters are matched case-insensitively; an empty value counts as not given
_BLANK: dict[str, Any] = {"type": "string", "maxLength": 0}
_INT_ID: dict[str, Any] = {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 2**63 - 1}, _BLANK]}
_WHEN: dict[str, Any] = {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"},
                                   _BLANK]}


def _pages(sizes: tuple[int, int]) -> tuple[dict[str, Any], ...]:
    """Page and PageSize of a compat list whose (default, largest) PageSize is ``sizes``."""
    default, largest = sizes
    return (
        _q("Page", {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 10**9}, _BLANK]}, "Page number, from 1."),
        _q("PageSize", {"anyOf": [{"type": "integer", "minimum": 1, "maximum": largest}, _BLANK]},
           f"Items per page (default {default:,})."),
    )


# the keyset position of @nextpageuri (Actions, ActionUpdates): <last id shown>-<total>
_PAGE_KEY = _q("PageKey", {"anyOf": [{"type": "string", "pattern": r"^[1-9][0-9]{0,17}-[0-9]{1,18}$"}, _BLANK]},
               "The keyset position that @nextpageuri carries (give it back as it is, with its Page).")

COMPAT_ACTIONS_QUERY = (
    _q("CampaignId", _INT_ID, "The campaign; another account's or an unknown one answers 404."),
    _q("State", {"anyOf": [{"type": "string", "enum": ["PENDING", "APPROVED", "REVERSED"]}, _BLANK]},
       "The action's state (any case)."),
    _q("StartDate", _WHEN, "Last update (UpdateDate) from (inclusive; a date alone is the whole day)."),
    _q("EndDate", _WHEN, "Last update (UpdateDate) to (inclusive)."),
    _q("ActionDateStart", _WHEN, "Event date from (inclusive; a date alone is the whole day)."),
    _q("ActionDateEnd", _WHEN, "Event date to (inclusive)."),
    _q("LockingDateStart", _WHEN, "Locking date from (inclusive)."),
    _q("LockingDateEnd", _WHEN, "Locking date to (inclusive)."),
    _q("ActionTrackerId", _INT_ID, "The event type."),
    _q("EventTypeId", _INT_ID, "The event type (the same as ActionTrackerId)."),
    _q("MediaPartnerId", _INT_ID, "The partner."),
    _q("Oid", {"type": "string"}, "The order id."),
    _q("OrderId", {"type": "string"}, "The order id (the same as Oid)."),
    *_pages(compat.ACTIONS_PAGE),
    _PAGE_KEY,
)
COMPAT_FILES_QUERY = (
    _q("CampaignId", _INT_ID, "The campaign; another account's or an unknown one answers 404."),
    _q("SubmissionDateStart", _WHEN, "Submitted from (inclusive)."),
    _q("SubmissionDateEnd", _WHEN, "Submitted until (inclusive)."),
    _q("CompletedDateStart", _WHEN, "Completed from (inclusive)."),
    _q("CompletedDateEnd", _WHEN, "Completed until (inclusive)."),
    *_pages(compat_submissions.SUBMISSIONS_PAGE),
)
COMPAT_ERRORS_QUERY = _pages(compat_submissions.ERRORS_PAGE)

_TEXT: dict[str, Any] = {"type": "string"}
_CHANGE_FIELDS: dict[str, Any] = {
    "ActionId": {"type": "string", "description": "payoutdesk's action id."},
    "ActionTrackerId": {"type": "string", "description": "With OrderId, names the newest action of the event "
                                                         "type with that order id (when ActionId is not given)."},
    "EventTypeId": {"type": "string", "description": "The same as ActionTrackerId."},
    "OrderId": {"type": "string", "description": "The order id (with ActionTrackerId)."},
    "Oid": {"type": "string", "description": "The same as OrderId."},
    "Amount": {"type": "string", "description": "Without Sku: the new order total (0 reverses); with Sku: the "
                                                "item's new amount. A decimal string like \"80.00\"."},
    "Sku": {"type": "string", "description": "An item to change (also Sku1 … Sku1000)."},
    "Quantity": {"type": "string", "description": "The item's new quantity (also Quantity1 …)."},
    "Category": {"type": "string", "description": "The item's category (also Category1 …)."},
    "Reason": {"type": "string", "description": "A predefined reason, a custom disposition code, APPROVED "
                                                "or RESET."},
    "DispositionCode": {"type": "string", "description": "The same as Reason."},
    "Note": {"type": "string", "description": "Stored in the action's history."},
    "CurrencyCode": {"type": "string", "description": "Must be the campaign's currency."},
    "CustomerStatus": {"type": "string", "description": "Accepted and ignored."},
}


def _change_body(method: str) -> dict[str, Any]:
    what = ("Modify (Amount), change items (Sku/Quantity/Amount), approve or reset (Reason APPROVED/RESET)"
            if method == "PUT" else "Reverse (DispositionCode or Reason, default REJECTED)")
    schema: dict[str, Any] = {
        "type": "object",
        "description": f"{what}. impact.com's parameter names, matched case-insensitively; numbered item "
                       "parameters (Sku2, Quantity2, Amount2, Category2, …) are accepted too. They may also come "
                       "in the query string. See docs/COMPAT.md.",
        "properties": _CHANGE_FIELDS,
        "patternProperties": {"^(Sku|Quantity|Amount|Category)[0-9]{1,4}$": _TEXT},
        "additionalProperties": False,
    }
    json_schema = copy.deepcopy(schema)
    json_schema["properties"] = {k: {**v, "type": ["string", "number", "null"]} for k, v in _CHANGE_FIELDS.items()}
    json_schema["patternProperties"] = {k: {"type": ["string", "number", "null"]}
                                        for k in schema["patternProperties"]}
    return {
        "required": False,
        "content": {
            "application/x-www-form-urlencoded": {"schema": schema},
            "multipart/form-data": {"schema": schema},
            "application/json": {"schema": json_schema},
        },
    }


# --- the table ---------------------------------------------------------------------------------

_READ = (401, 422, 429)  # every signed-in route: credentials, unknown query parameters, the rate limit
_ONE = (401, 404, 422, 429)  # a route with an id in its path
_BODY = (400, 413)  # a JSON body: malformed, too large
_CSV = {"text/csv": {"schema": {"type": "string"}, "example": "action_id,campaign_id,…\r\n1042,1,…\r\n"}}
_FILE = {"*/*": {"schema": {"format": "binary", "description": "The file as it was sent, with its content type."}}}
V1 = "/api/v1"
COMPAT = compat_common.BASE

OPERATIONS: dict[tuple[str, str], Op] = {
    ("get", f"{V1}/account"): Op(200, s.AccountInfo, _READ),
    ("patch", f"{V1}/account"): Op(200, s.AccountInfo, (*_BODY, *_READ)),
    ("post", f"{V1}/campaigns"): Op(201, s.CampaignCreated, (*_BODY, *_READ)),
    ("get", f"{V1}/campaigns"): Op(200, s.CampaignList, _READ),
    ("get", f"{V1}/campaigns/{{campaign_id}}"): Op(200, s.Campaign, _ONE),
    ("patch", f"{V1}/campaigns/{{campaign_id}}"): Op(200, s.Campaign, (*_BODY, *_ONE)),
    ("post", f"{V1}/partners"): Op(201, s.Partner, (*_BODY, *_READ)),
    ("get", f"{V1}/partners"): Op(200, s.PartnerList, _READ),
    ("get", f"{V1}/partners/{{partner_id}}"): Op(200, s.Partner, _ONE),
    ("post", f"{V1}/event-types"): Op(201, s.EventType, (*_BODY, *_ONE)),
    ("get", f"{V1}/event-types"): Op(200, s.EventTypeList, _ONE),
    ("get", f"{V1}/event-types/{{event_type_id}}"): Op(200, s.EventType, _ONE),
    ("patch", f"{V1}/event-types/{{event_type_id}}"): Op(200, s.EventType, (*_BODY, *_ONE)),
    ("post", f"{V1}/event-types/{{event_type_id}}/returns-processing/run"): Op(200, intake_routes.IntakeRunNow,
                                                                              (*_ONE, 409)),
    ("get", f"{V1}/event-types/{{event_type_id}}/returns-processing/runs"): Op(200, intake_routes.IntakeRunList,
                                                                               _ONE),
    ("post", f"{V1}/contracts"): Op(201, s.Contract, (*_BODY, *_ONE)),
    ("get", f"{V1}/contracts"): Op(200, s.ContractList, _ONE),
    ("get", f"{V1}/contracts/{{contract_id}}"): Op(200, s.Contract, _ONE),
    ("post", f"{V1}/clicks"): Op(201, s.Click, (*_BODY, *_ONE)),
    ("post", f"{V1}/conversions"): Op(201, s.Action, (*_BODY, *_ONE)),
    ("get", f"{V1}/actions"): Op(200, s.ActionList, _ONE),
    ("get", f"{V1}/actions/export"): Op(200, None, _ONE, content=_CSV),
    ("get", f"{V1}/actions/{{action_id}}"): Op(200, s.Action, _ONE),
    ("post", f"{V1}/actions/{{action_id}}/approve"): Op(200, s.ChangedAction, (*_BODY, *_ONE, 409)),
    ("post", f"{V1}/actions/{{action_id}}/reverse"): Op(200, s.ChangedAction, (*_BODY, *_ONE, 409)),
    ("post", f"{V1}/actions/{{action_id}}/reset"): Op(200, s.ChangedAction, (*_BODY, *_ONE, 409)),
    ("post", f"{V1}/actions/{{action_id}}/modify"): Op(200, s.ChangedAction, (*_BODY, *_ONE, 409)),
    ("post", f"{V1}/locking/run"): Op(200, s.LockRun, (*_BODY, *_READ)),
    ("get", f"{V1}/reasons"): Op(200, s.ReasonList, _ONE),
    ("post", f"{V1}/submissions"): Op(202, s.Submission, (*_BODY, *_ONE, 409), body_required=True),
    ("get", f"{V1}/submissions"): Op(200, s.SubmissionList, _ONE),
    ("get", f"{V1}/submissions/{{submission_id}}"): Op(200, s.Submission, _ONE),
    ("get", f"{V1}/submissions/{{submission_id}}/errors"): Op(200, s.RowErrorList, _ONE),
    ("get", f"{V1}/submissions/{{submission_id}}/results"): Op(200, s.RowResultList, _ONE),
    ("get", f"{V1}/submissions/{{submission_id}}/file"): Op(200, None, (*_ONE, 410), content=_FILE),
    ("post", f"{V1}/submissions/{{submission_id}}/undo"): Op(202, s.Submission, (*_ONE, 409)),
    ("get", f"{COMPAT}/Actions"): Op(200, s.CompatActionList, _ONE, query=COMPAT_ACTIONS_QUERY),
    ("put", f"{COMPAT}/Actions"): Op(200, s.CompatQueued, (413, *_ONE), body=_change_body("PUT")),
    ("delete", f"{COMPAT}/Actions"): Op(200, s.CompatQueued, (413, *_ONE), body=_change_body("DELETE")),
    ("get", f"{COMPAT}/Actions/{{ActionId}}"): Op(200, s.CompatActionWithItems, _ONE),
    ("get", f"{COMPAT}/Actions/{{ActionId}}/Items"): Op(200, s.CompatActionItems, _ONE),
    ("get", f"{COMPAT}/APISubmissions/{{BatchId}}"): Op(200, s.CompatAPISubmission, _ONE),
    ("get", f"{COMPAT}/FTPFileSubmissions"): Op(200, s.CompatFileSubmissionList, _ONE, query=COMPAT_FILES_QUERY),
    ("get", f"{COMPAT}/FTPFileSubmissions/{{BatchId}}"): Op(200, s.CompatFileSubmission, _ONE),
    ("get", f"{COMPAT}/FTPFileSubmissions/{{BatchId}}/ErrorDetails"): Op(200, s.CompatErrorDetails, _ONE,
                                                                         query=COMPAT_ERRORS_QUERY),
}

# api/compat_reads.py: impact.com's company, campaigns, partners, change log and list of API submissions
_COMPAT_CATALOG_QUERY = _pages(compat_reads.CATALOG_PAGE)
COMPAT_ACTION_UPDATES_QUERY = (
    _q("CampaignId", _INT_ID, "The campaign; another account's or an unknown one answers 404."),
    _q("ActionId", _INT_ID, "The action; another account's or an unknown one answers 404."),
    _q("State", {"anyOf": [{"type": "string", "enum": ["PENDING", "APPROVED", "REVERSED"]}, _BLANK]},
       "The action's state after the update (any case)."),
    _q("StartDate", _WHEN, "Updated from (inclusive; a date alone is its midnight)."),
    _q("EndDate", _WHEN, "Updated before (exclusive; a date alone is its midnight)."),
    *_pages(compat_reads.ACTION_UPDATES_PAGE),
    _PAGE_KEY,
)
COMPAT_API_SUBMISSIONS_QUERY = (*COMPAT_FILES_QUERY[:5], *_pages(compat_reads.API_SUBMISSIONS_PAGE))
OPERATIONS.update({
    ("get", f"{COMPAT}/CompanyInformation"): Op(200, s.CompatCompanyInformation, _ONE, query=_COMPAT_CATALOG_QUERY),
    ("get", f"{COMPAT}/Campaigns"): Op(200, s.CompatCampaignList, _ONE, query=_COMPAT_CATALOG_QUERY),
    ("get", f"{COMPAT}/Campaigns/{{Id}}"): Op(200, s.CompatCampaign, _ONE),
    ("get", f"{COMPAT}/MediaPartners"): Op(200, s.CompatMediaPartnerList, _ONE, query=_COMPAT_CATALOG_QUERY),
    ("get", f"{COMPAT}/MediaPartners/{{Id}}"): Op(200, s.CompatMediaPartner, _ONE),
    ("get", f"{COMPAT}/ActionUpdates"): Op(200, s.CompatActionUpdateList, _ONE, query=COMPAT_ACTION_UPDATES_QUERY),
    ("get", f"{COMPAT}/ActionUpdates/{{Id}}"): Op(200, s.CompatActionUpdate, _ONE),
    ("get", f"{COMPAT}/APISubmissions"): Op(200, s.CompatAPISubmissionList, _ONE, query=COMPAT_API_SUBMISSIONS_QUERY),
})
OPERATIONS.update({  # issue 13: clicks at volume, the lock forecast
    ("post", f"{V1}/clicks/bulk"): Op(200, clicks_routes.ClickBatchReport, (*_BODY, *_READ), body_required=True),
    ("get", f"{V1}/locking/forecast"): Op(200, forecast_routes.LockForecast, _READ),
    ("get", f"{V1}/payments"): Op(200, payments_routes.PaymentReport, _READ),
    ("get", f"{V1}/payments.csv"): Op(200, None, _READ, content={"text/csv": {"schema": {"type": "string"}}}),
    ("post", f"{V1}/payments"): Op(201, payments_routes.Payment, (*_BODY, *_ONE)),
    ("post", f"{V1}/reprocess"): Op(200, reprocess_routes.ReprocessCounts, (*_BODY, *_ONE, 409), body_required=True,
                                    also=((202, s.Submission),)),
})


# --- building the document ---------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _add_model(components: dict[str, Any], model: type[BaseModel]) -> dict[str, str]:
    schema = s.schema_of(model)
    for name, sub in schema.pop("$defs", {}).items():
        components.setdefault(name, sub)
    components.setdefault(model.__name__, schema)
    return _ref(model.__name__)


def _header(description: str, *, required: bool = False) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": {"type": "integer"}}


_ERROR_NAMES = {400: "MalformedRequest", 401: "Unauthorized", 404: "NotFound", 409: "Conflict", 410: "Gone",
                413: "TooLarge", 422: "Invalid", 429: "RateLimited"}


def _answer_headers(auth: bool) -> dict[str, Any]:
    """The rate-limit headers (``components/headers``) of a signed-in route's answers."""
    return {name: {"$ref": f"#/components/headers/{name}"} for name in _RATE_HEADERS} if auth else {}


def _error_ref(status: int, auth: bool) -> dict[str, Any]:
    """A signed-in route's error answer, shared under ``components/responses``."""
    if not auth or status not in _ERROR_NAMES:
        return _error(status, auth)
    return {"$ref": f"#/components/responses/{_ERROR_NAMES[status]}"}


def _error(status: int, auth: bool) -> dict[str, Any]:
    headers = _answer_headers(auth)
    if status == 429:
        headers["Retry-After"] = _header("Seconds to wait before trying again.", required=True)
    if status == 401:
        headers["WWW-Authenticate"] = {"description": 'Basic realm="payoutdesk"', "required": True,
                                       "schema": {"type": "string"}}
    answer: dict[str, Any] = {"description": _ERROR_TEXT.get(status, "An error."),
                              "content": {PROBLEM_JSON: {"schema": _ref("Problem")}}}
    if headers:
        answer["headers"] = headers
    return answer


def _complete(operation: dict[str, Any], op: Op, components: dict[str, Any]) -> None:
    responses: dict[str, Any] = {}
    success: dict[str, Any] = {"description": "OK" if op.status == 200 else
                               "Created" if op.status == 201 else "Accepted"}
    if op.answer is not None:
        success["content"] = {"application/json": {"schema": _add_model(components, op.answer)}}
    else:
        success["content"] = copy.deepcopy(op.content or {})
    headers = _answer_headers(op.auth)
    if op.auth and operation.get("parameters") and any(
            p.get("name") == "Idempotency-Key" for p in operation["parameters"]):
        headers["Idempotent-Replayed"] = {"description": "`true` when this is the stored answer of an earlier "
                                                         "request with the same Idempotency-Key.",
                                          "required": False, "schema": {"type": "string", "enum": ["true"]}}
    if headers:
        success["headers"] = headers
    responses[str(op.status)] = success
    for status, model in op.also:
        responses[str(status)] = {**copy.deepcopy(success), "description": "Accepted" if status == 202 else "OK",
                                  "content": {"application/json": {"schema": _add_model(components, model)}}}
    for status in sorted(set(op.errors)):
        responses[str(status)] = _error_ref(status, op.auth)
    operation["responses"] = responses
    if op.auth:
        operation["security"] = [{SECURITY_SCHEME: []}]
    if op.query:
        known = {p["name"] for p in operation.get("parameters", [])}
        operation.setdefault("parameters", []).extend(copy.deepcopy(p) for p in op.query if p["name"] not in known)
    if op.body is not None:
        operation["requestBody"] = copy.deepcopy(op.body)
    elif op.body_required and "requestBody" in operation:
        operation["requestBody"]["required"] = True


_MONEY_IN: dict[str, Any] = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$", "examples": ["12.50"],
                             "description": "A plain decimal string: ASCII digits with an optional point, no more "
                                            "decimals than the currency has (DESIGN §6)."}
_TEXT_IN: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"\S"}
_DAY_OR_TIME: dict[str, Any] = {"anyOf": [{"type": "string", "format": "date"},
                                           {"type": "string", "format": "date-time"}]}
_TIME_IN: dict[str, Any] = {"type": "string", "format": "date-time"}
_TIME_OR_NOW: dict[str, Any] = {"anyOf": [_TIME_IN, {"type": "string", "maxLength": 0}],
                                "description": "ISO 8601; left out, null or empty: now."}
# request fields whose rules FastAPI's schema does not show (they are checked by the services)
_FIELD_RULES: dict[str, dict[str, Any]] = {
    "name": _TEXT_IN,
    "customer_id": _TEXT_IN,
    "order_id": _TEXT_IN,
    "sku": _TEXT_IN,
    "currency": {"type": "string", "enum": sorted(ISO_4217)},
    "ftp_password": {"type": "string", "minLength": 8},
    "event_date": _TIME_IN,
    "clicked_at": _TIME_OR_NOW,
    "code": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"\S"},
    "months": {"type": "integer", "minimum": 0, "maximum": 120, "default": 0},
    "days": {"type": "integer", "minimum": 0, "maximum": 3650, "default": 0},
    "referral_window_days": {"type": "integer", "minimum": 0, "maximum": 3650, "default": 30},
}
# query parameters, by operation: (name, schema)
_QUERY_RULES: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("get", f"{V1}/actions"): {
        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50},
        "cursor": {"type": "string", "maxLength": 200, "pattern": "^[A-Za-z0-9_-]*$",
                   "description": "The `next_cursor` of the previous page, with the same sort (an opaque token)."},
    },
    ("get", f"{V1}/submissions"): {
        "limit": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
        "cursor": {"type": "string", "pattern": "^([1-9][0-9]{0,17})?$",
                   "description": "The `next_cursor` of the previous page."},
    },
}
_QUERY_RULES[("get", f"{V1}/event-types/{{event_type_id}}/returns-processing/runs")] = {
    "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
    "cursor": {"type": "string", "pattern": "^([1-9][0-9]{0,17})?$",
               "description": "The `next_cursor` of the previous page."},
}
for _route in ("errors", "results"):
    _QUERY_RULES[("get", f"{V1}/submissions/{{submission_id}}/{_route}")] = {
        "limit": {"type": "integer", "minimum": 1, "maximum": 1_000_000, "default": 1000,
                  "description": "Rows per page; at most 10,000 are given."},
        "cursor": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1, "default": 0,
                   "description": "The `next_cursor` of the previous page (a row number)."},
    }


def _nullable(schema: dict[str, Any]) -> bool:
    return any(branch.get("type") == "null" for branch in schema.get("anyOf", ()))


_NAMED = ("CampaignIn", "PartnerIn", "EventTypeIn", "EventTypePatch")  # objects whose name is checked


def _rule(name: str, schema: dict[str, Any], model: str | None) -> dict[str, Any] | None:
    """The stricter schema of a request field (of ``model``) or query parameter (``model`` None), or
    None to keep it."""
    if model is not None and name in _FIELD_RULES and (name != "name" or model in _NAMED):
        return copy.deepcopy(_FIELD_RULES[name])
    if "date_from" in name or "date_to" in name:
        return copy.deepcopy(_DAY_OR_TIME) if not name.startswith(("locking", "clearing")) else None
    if schema.get("description", "").startswith("A decimal string") or name in ("amount", "fixed", "percent"):
        return copy.deepcopy(_MONEY_IN)
    return None


def _ids(schema: dict[str, Any], name: str) -> None:
    """pydantic writes a bound given through ``Annotated`` as ``le``/``ge``, which JSON Schema does not
    know; an id is at least 1."""
    for branch in (schema, *schema.get("anyOf", ())):
        if "le" in branch:
            branch["maximum"] = branch.pop("le")
        if "ge" in branch:
            branch["minimum"] = branch.pop("ge")
        if branch.get("type") == "integer" and (name == "id" or name.endswith("_id")):
            branch.setdefault("minimum", 1)


def _tighten(schema: dict[str, Any], name: str, model: str | None = None) -> dict[str, Any]:
    _ids(schema, name)
    for branch in (schema, *schema.get("anyOf", ())):  # category_percent: an object of percentages
        values = branch.get("additionalProperties")
        if isinstance(values, dict) and "type" not in values and "$ref" not in values:
            branch["additionalProperties"] = copy.deepcopy(_MONEY_IN)
    stricter = _rule(name, schema, model)
    if stricter is None:
        return schema
    kept = {k: v for k, v in schema.items() if k in ("title", "default", "description") and k not in stricter}
    if _nullable(schema):
        return {**kept, "anyOf": [stricter, {"type": "null"}]}
    return {**kept, **stricter}


_NOT_NULL = ("EventTypePatch",)  # a PATCH field given as null is refused: leave it out to keep the value
_IDEMPOTENCY_KEY: dict[str, Any] = {
    "type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[!-~]([ -~]*[!-~])?$",
    "description": "The same key with the same request answers the first answer again and changes nothing; "
                   "with another request it is refused (`idempotency_key_reused`).",
}


def _tighten_requests(doc: dict[str, Any], components: dict[str, Any]) -> None:
    """Say in the document what the routes check by hand: money as a plain decimal string (DESIGN §6),
    names of 1 to 200 characters, ids from 1, times, page sizes."""
    for schema in components.values():
        properties = schema.get("properties") or {}
        for name, prop in list(properties.items()):
            if isinstance(prop, dict):
                properties[name] = _tighten(prop, name, str(schema.get("title", "")))
        if any(schema.get("title") == model for model in _NOT_NULL):
            for name, prop in properties.items():
                branches = [b for b in prop.get("anyOf", ()) if b.get("type") != "null"]
                if len(branches) == 1 and "anyOf" in prop:
                    properties[name] = {**{k: v for k, v in prop.items() if k != "anyOf"}, **branches[0]}
    for path, item in doc.get("paths", {}).items():
        for method, operation in item.items():
            rules = _QUERY_RULES.get((method, path), {})
            for param in operation.get("parameters", []):
                if param.get("in") == "header" and param["name"] == "Idempotency-Key":
                    param["schema"] = copy.deepcopy(_IDEMPOTENCY_KEY)
                    param["description"] = _IDEMPOTENCY_KEY["description"]
                if param.get("in") not in ("query", "path"):
                    continue
                if param["name"] in rules:
                    param["schema"] = copy.deepcopy(rules[param["name"]])
                elif param["in"] == "query":
                    param["schema"] = _tighten(param["schema"], param["name"])
                else:
                    _ids(param["schema"], param["name"])


def document(app: FastAPI) -> dict[str, Any]:
    """The whole OpenAPI document of ``app``."""
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 shape; ours is Problem
        components.pop(unused, None)
    _tighten_requests(doc, components)  # before the answers' models join the components
    _add_model(components, s.Problem)
    for path, item in doc.get("paths", {}).items():
        for method, operation in item.items():
            op = OPERATIONS.get((method, path))
            if op is not None:
                _complete(operation, op, components)
    doc["components"]["headers"] = {name: _header(text) for name, text in _RATE_HEADERS.items()}
    doc["components"]["responses"] = {name: _error(status, True) for status, name in _ERROR_NAMES.items()}
    doc["components"]["securitySchemes"] = {
        SECURITY_SCHEME: {"type": "http", "scheme": "basic",
                          "description": "Your Account SID as user name and your auth token as password "
                                         "(`payoutdesk account create NAME` prints both)."},
    }
    return doc


def undescribed(doc: dict[str, Any]) -> list[str]:
    """Operations of ``doc`` that the table does not describe (their success answer has no schema)."""
    missing = []
    for path, item in doc.get("paths", {}).items():
        for method in item:
            if (method, path) not in OPERATIONS:
                missing.append(f"{method.upper()} {path}")
    return missing


def allowed_methods(request: Request) -> str | None:
    """The ``Allow`` header of a 405: the methods the document lists for the request's path.

    Starlette's 405 names only the methods of the first route whose path matches (``POST`` where
    ``GET`` and ``POST`` share the path through two routes), so a client told ``Allow: POST`` would
    not know that ``GET`` exists. None for a path the document does not have.
    """
    doc = request.app.openapi()
    for template, item in doc.get("paths", {}).items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            return ", ".join(sorted(method.upper() for method in item))
    return None


# --- installing it -----------------------------------------------------------------------------


def install(app: FastAPI) -> None:
    """Serve ``document`` at the app's openapi_url and Swagger UI at /docs from the package's files.

    ``create_app`` builds the app with ``docs_url=None`` (FastAPI's /docs loads Swagger UI from a CDN).
    """
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    setattr(app, "openapi", openapi)  # noqa: B010 - FastAPI's documented way to replace the document
    app.mount(DOCS_ASSETS, StaticFiles(directory=STATIC_DIR), name="docs-assets")
    openapi_url = app.openapi_url or "/api/v1/openapi.json"

    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from swagger.io
        )

    route: Callable[[], HTMLResponse] = swagger_ui
    app.add_api_route("/docs", route, include_in_schema=False, response_class=HTMLResponse)
