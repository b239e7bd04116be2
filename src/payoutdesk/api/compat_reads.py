"""The impact.com-compatible reads that impact.com's own clients need beyond actions and submissions
(issue 14): ``CompanyInformation``, ``Campaigns``, ``MediaPartners``, ``ActionUpdates`` (the history as
impact.com's change log) and the list of ``APISubmissions``, on impact.com's paths, with its PascalCase
field names and its paging (``Page``, ``PageSize`` and the ``@page`` … ``@nextpageuri`` envelope).

The reference for names and types is the Singer tap ``tap-impact`` 2.1.1 (its JSON schemas: the types are
written down in tests/test_compat_reads.py, and tests/test_tap_impact.py checks every answer against the
schemas of the tap installed from PyPI): the tap turns each key into snake_case
(``ActionTrackerId`` → ``action_tracker_id``) and loads the value with its schema's type, so every field
here has that type: integers for ids typed integer (``CampaignId``), strings for ids typed string
(``Id`` and ``ActionId`` of an update), ISO 8601 UTC with ``Z`` for date-times (``""`` when there is
none, which the tap loads as null), ``null`` for a number, boolean or object payoutdesk does not hold.

Money: the tap types ``DeltaAmount`` and ``DeltaPayout`` of an action update as numbers (not strings),
so they are JSON numbers here, written exactly from the integer minor units (``-12.50``, ``1250`` for
JPY: the currency's decimals, never through a float), by ``dumps`` below. Everywhere else money stays
the decimal string of the other compatible routes.

Fields impact.com has and payoutdesk does not hold are left out or empty, as the docstring of each
shape says; a few payoutdesk fields are added (the tap drops keys its schema does not know).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any, cast

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import Connection, Row

from payoutdesk.accounts.service import AccountRef
from payoutdesk.api import plumbing
from payoutdesk.api.compat_common import (
    BASE,
    CompatRoute,
    Owner,
    day_time,
    digits,
    envelope,
    page_key,
    page_of,
    query_id,
    query_of,
    time_of,
    when,
)
from payoutdesk.api.compat_submissions import api_submissions, submissions_list
from payoutdesk.catalog import repository as catalog_repo
from payoutdesk.catalog.service import get_owned
from payoutdesk.errors import NotFound, ValidationFailed, quote
from payoutdesk.intake import repository as intake_repo
from payoutdesk.kit import db
from payoutdesk.kit.ids import MAX_ID32, parse_id
from payoutdesk.kit.money import format_amount
from payoutdesk.ledger import repository as ledger_repo
from payoutdesk.ledger import workflow as wf
from payoutdesk.models import campaigns, event_types, partners

CATALOG_PAGE = (1000, 20_000)  # default and largest PageSize of Campaigns and MediaPartners
ACTION_UPDATES_PAGE = (2000, 20_000)
API_SUBMISSIONS_PAGE = (100, 20_000)
_STATES = ("PENDING", "APPROVED", "REVERSED")

router = APIRouter(route_class=CompatRoute, tags=["impact.com-compatible"])


# --- exact numbers in JSON ---------------------------------------------------------------------

# A Decimal is written as a marked string first (a NUL character, which no stored text can hold, is
# written by json as \u0000), then the marks and quotes are taken away: the number's digits as they are.
_MARKED = re.compile(r'"\\u0000(-?[0-9]+(?:\.[0-9]+)?)\\u0000"')


def _mark(value: object) -> str:
    if isinstance(value, Decimal) and value.is_finite():
        return f"\x00{value:f}\x00"
    raise TypeError(f"{type(value).__name__} is not JSON")


def dumps(payload: Any) -> bytes:
    """``payload`` as compact JSON, its Decimals as exact JSON numbers."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=_mark)
    return _MARKED.sub(r"\1", text).encode()


def money_number(minor: int, currency: str) -> Decimal:
    """Minor units as the exact decimal number of the currency (1250 USD -> 12.50)."""
    return Decimal(format_amount(minor, currency))


def _read(request: Request, fn: Callable[[Connection], Any]) -> Response:
    """``plumbing.read`` with ``dumps``: ``fn`` in one read transaction, its result as the JSON answer."""
    with db.read(plumbing.engine_of(request)) as conn:
        return plumbing.respond(request, 200, dumps(fn(conn)))


def _path_id32(raw: str, what: str) -> int:
    """The id of a 32-bit table in a path; anything else names nothing (404)."""
    number = digits(raw, MAX_ID32)
    if number is None or number < 1:
        raise NotFound(f"No {what} with id {quote(raw)}.")
    return number


# --- CompanyInformation ------------------------------------------------------------------------

_ADDRESS = ("AddressLine1", "AddressLine2", "City", "State", "PostalCode", "Country")


def _contact(email: str = "") -> dict[str, Any]:
    return {"Name": "", "Email": email, "WorkPhoneNumber": "", "WorkPhoneNumberCountry": "", "CellPhoneNumber": "",
            "CellPhoneNumberCountry": "", "UserId": None}


def _company(conn: Connection, account: AccountRef) -> dict[str, Any]:
    row = intake_repo.account(conn, account.id)
    if row is None:
        raise NotFound("No such account.")
    first = catalog_repo.page_rows(conn, campaigns, account.id, 0, 1)[1]
    return {
        "CompanyName": row.name,
        "Website": "",
        "PrimaryPhoneNumber": "",
        "PrimaryPhoneNumberCountry": "",
        "SecondaryPhoneNumber": "",
        "SecondaryPhoneNumberCountry": "",
        "CorporateAddress": dict.fromkeys(_ADDRESS, ""),
        "BillingAddress": dict.fromkeys(_ADDRESS, ""),
        "Currency": str(first[0].currency) if first else "",
        "Timezone": "UTC",  # payoutdesk keeps and shows every time in UTC
        "OrganizationType": "",
        "EinSsnForeignTaxId": "",
        "RegisteredForIndirectTax": None,
        "IndirectTaxNumber": "",
        "Industry": {"IndustryId": None, "IndustryName": ""},
        "MinimumContactRating": None,
        "CommercialContact": _contact(),
        "FinancialContact": _contact(),
        "TechnicalContact": _contact(row.alert_email or ""),  # where payoutdesk mails the channels' failures
        "Uri": f"/Advertisers/{account.sid}/CompanyInformation",
    }


@router.get(BASE + "/CompanyInformation")
def company_information(request: Request, account: Owner) -> Response:
    """The account as impact.com's company information: its name, the currency of its first campaign,
    the address the channels' failures are mailed to (``TechnicalContact.Email``); the rest empty. Not
    paged; ``Page`` and ``PageSize`` are accepted (the tap sends them) and checked, and change nothing."""
    page_of(query_of(request), CATALOG_PAGE)
    return _read(request, lambda conn: _company(conn, account))


# --- Campaigns ---------------------------------------------------------------------------------


def _campaign(account: AccountRef, r: Row[Any]) -> dict[str, Any]:
    return {
        "Id": r.id,
        "Name": r.name,
        "State": "ACTIVE",
        "Currency": r.currency,
        "ShortDescription": "",
        "LongDescription": "",
        "Rating": None,
        "SiteDefinition": "",
        "SearchKeywords": "",
        "ShippingRegions": "",
        "TrackingDomain": "",
        "ThirdPartyImpressionPixel": "",
        "IdentityCollapsing": "",
        "Categories": {"PrimaryCategory": "", "AdditionalCategory": ""},
        # the same, as impact.com's partner-side Campaign names them
        "AdvertiserId": account.id,
        "AdvertiserName": account.name,
        "AdvertiserUrl": "",
        "CampaignId": r.id,
        "CampaignName": r.name,
        "CampaignUrl": "",
        "CreationDate": when(r.created_at),
        "Uri": f"/Advertisers/{account.sid}/Campaigns/{r.id}",
    }


@router.get(BASE + "/Campaigns")
def list_campaigns(request: Request, account: Owner) -> Response:
    """The account's campaigns (impact.com's programs), by id, paged."""
    page, size = page_of(query_of(request), CATALOG_PAGE)

    def read(conn: Connection) -> dict[str, Any]:
        total, rows = catalog_repo.page_rows(conn, campaigns, account.id, (page - 1) * size, size)
        return envelope(request, "Campaigns", [_campaign(account, r) for r in rows], page, size, total)

    return _read(request, read)


@router.get(BASE + "/Campaigns/{Id}")
def get_campaign(request: Request, Id: str, account: Owner) -> Response:  # noqa: N803 - impact.com's name
    def read(conn: Connection) -> dict[str, Any]:
        row = get_owned(conn, campaigns, account.id, _path_id32(Id, "campaign"), "campaign")
        return _campaign(account, row)

    return _read(request, read)


# --- MediaPartners -----------------------------------------------------------------------------


def _partner_dicts(conn: Connection, account: AccountRef, rows: Sequence[Row[Any]]) -> list[dict[str, Any]]:
    """Partners with their campaigns: one entry per campaign they have a contract in (impact.com's
    insertion order is payoutdesk's contract: ``InsertionOrderId`` is the newest contract's id,
    ``JoinDate`` the start of the first)."""
    found = catalog_repo.contracts_of_partners(conn, account.id, {int(r.id) for r in rows})
    names = catalog_repo.names_of(conn, campaigns, {int(c.campaign_id) for c in found})
    joined: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
    for c in found:  # oldest start first
        entry = joined[int(c.partner_id)].setdefault(int(c.campaign_id), {
            "CampaignId": c.campaign_id, "CampaignName": names.get(int(c.campaign_id), ""),
            "InsertionOrderId": c.id, "InsertionOrderName": "", "JoinDate": day_time(c.starts_on)})
        entry["InsertionOrderId"] = c.id
    return [{
        "Id": r.id,
        "Name": r.name,
        "Description": "",
        "State": "ACTIVE",
        "RelationshipState": "ACTIVE",
        "Currency": "",
        "Website": "",
        "PartnerType": "",
        "PrimaryPromotionalMethod": "",
        "PromotionalMethods": "",
        "PromotingCountries": "",
        "Rating": None,
        "Contact": None,
        "AddressLine1": "",
        "AddressLine2": "",
        "City": "",
        "CountryState": "",
        "PostalCode": "",
        "Country": "",
        "PhoneNumber": "",
        "Timezone": "",
        "MpValue1": "",
        "MpValue2": "",
        "MpValue3": "",
        "Campaigns": list(joined[int(r.id)].values()),
        "Groups": [],
        "DateCreated": when(r.created_at),
        "Uri": f"/Advertisers/{account.sid}/MediaPartners/{r.id}",
    } for r in rows]


@router.get(BASE + "/MediaPartners")
def list_media_partners(request: Request, account: Owner) -> Response:
    """The account's partners, by id, paged."""
    page, size = page_of(query_of(request), CATALOG_PAGE)

    def read(conn: Connection) -> dict[str, Any]:
        total, rows = catalog_repo.page_rows(conn, partners, account.id, (page - 1) * size, size)
        return envelope(request, "MediaPartners", _partner_dicts(conn, account, rows), page, size, total)

    return _read(request, read)


@router.get(BASE + "/MediaPartners/{Id}")
def get_media_partner(request: Request, Id: str, account: Owner) -> Response:  # noqa: N803 - impact.com's name
    def read(conn: Connection) -> dict[str, Any]:
        row = get_owned(conn, partners, account.id, _path_id32(Id, "media partner"), "media partner")
        return _partner_dicts(conn, account, [row])[0]

    return _read(request, read)


# --- ActionUpdates -----------------------------------------------------------------------------


def _reason_names(conn: Connection, rows: Sequence[Row[Any]]) -> dict[tuple[int, str], str]:
    """The names of the custom disposition codes of the event types of ``rows``, by (event type, code)."""
    out: dict[tuple[int, str], str] = {}
    for et in {int(r.event_type_id) for r in rows if r.reason and r.reason not in wf.PREDEFINED_REASONS}:
        out.update({(et, c.code): c.name for c in catalog_repo.codes_of(conn, et)})
    return out


def _update_dicts(conn: Connection, sid: str, rows: Sequence[Row[Any]]) -> list[dict[str, Any]]:
    camp = catalog_repo.names_of(conn, campaigns, {int(r.campaign_id) for r in rows})
    ets = catalog_repo.names_of(conn, event_types, {int(r.event_type_id) for r in rows})
    parts = catalog_repo.names_of(conn, partners, {int(r.partner_id) for r in rows})
    labels = ledger_repo.submission_labels(conn, [r.submission_id for r in rows])
    custom = _reason_names(conn, rows)
    # a page repeats times (a lock run's), dates and amounts: each is written once
    times: dict[Any, str] = {}
    days: dict[Any, str] = {}
    money: dict[tuple[int, str], Decimal] = {}

    def t(value: Any) -> str:
        out = times.get(value)
        if out is None:
            out = times[value] = when(value)
        return out

    def m(minor: int, currency: str) -> Decimal:
        out = money.get((minor, currency))
        if out is None:
            out = money[(minor, currency)] = money_number(minor, currency)
        return out

    out = []
    actions_uri, updates_uri = f"/Advertisers/{sid}/Actions/", f"/Advertisers/{sid}/ActionUpdates/"
    for (uid, action_id, at, kind, state, reason, note, delta_amount, delta_payout, channel, submission_id,
         campaign_id, event_type_id, partner_id, order_id, customer_id, promo_code, currency, event_date,
         locking_date, action_reason, *_) in cast(Sequence[tuple[Any, ...]], rows):
        # a reversed state's detail is its reversal reason: the row's own, or (a lock of a reversed action,
        # which writes no reason) the action's, which its lock made final
        detail = (reason or action_reason or "") if state == "REVERSED" else ""
        locking = days.get(locking_date)
        if locking is None:
            locking = days[locking_date] = day_time(locking_date)
        out.append({
            "Id": str(uid),
            "ActionId": str(action_id),
            "CampaignId": campaign_id,
            "CampaignName": camp.get(campaign_id, ""),
            "ActionTrackerId": event_type_id,
            "ActionTrackerName": ets.get(event_type_id, ""),
            "MediaPartnerId": partner_id,
            "MediaPartnerName": parts.get(partner_id, ""),
            "State": state,
            "StateDetail": detail,
            "StateDetailDescription": (wf.PREDEFINED_REASONS.get(detail) or custom.get((event_type_id, detail), ""))
                                      if detail else "",
            "Disposition": reason or "",
            "DeltaAmount": m(delta_amount, currency),
            "DeltaPayout": m(delta_payout, currency),
            "Currency": currency,
            "UpdateDate": t(at),
            "ActionDate": t(event_date),
            "LockingDate": locking,
            "ClearingDate": "",
            "Oid": order_id,
            "CustomerId": customer_id or "",
            "CustomerStatus": "",
            "PromoCode": promo_code or "",
            "ActionUri": f"{actions_uri}{action_id}",
            "Uri": f"{updates_uri}{uid}",
            # payoutdesk's: what the change was, its note, channel and submission
            "Kind": kind,
            "Note": note or "",
            "Channel": channel,
            "SubmissionId": labels.get(submission_id, "") if submission_id is not None else "",
        })
    return out


def _history_filters(conn: Connection, account: AccountRef, q: dict[str, str]) -> ledger_repo.HistoryFilters:
    campaign_id = query_id(q, "CampaignId")
    if campaign_id is not None:
        get_owned(conn, campaigns, account.id, campaign_id, "campaign")
    action_id = query_id(q, "ActionId")
    if action_id is not None and ledger_repo.load(conn, account.id, action_id, for_update=False) is None:
        raise NotFound(f"No action with id {action_id}.")
    state = (q.get("state") or "").strip().upper() or None
    if state is not None and state not in _STATES:
        raise ValidationFailed(f"State must be PENDING, APPROVED or REVERSED, not {quote(q['state'])}.")
    start, end = time_of(q, "StartDate"), time_of(q, "EndDate")
    return ledger_repo.HistoryFilters(
        campaign_id=campaign_id, action_id=action_id, state=state,
        at_from=start[0] if start else None,
        at_to=end[0] if end else None,  # exclusive: the tap asks up to today 00:00, then from there
    )


@router.get(BASE + "/ActionUpdates")
def list_action_updates(request: Request, account: Owner) -> Response:
    """impact.com's List Action Updates: one record per history entry of the account's actions (the
    tracking, each modification, reversal, restore, reset, approval and lock), oldest first by update
    time, then id. ``StartDate`` (inclusive) and ``EndDate`` (exclusive; a date alone is its midnight)
    bound the update time. ``@nextpageuri`` carries a keyset position (``PageKey``: the last id shown and
    the total), so that following it costs the same on the last page as on the first; ``Page=N`` asked
    alone is an offset."""
    q = query_of(request)
    page, size = page_of(q, ACTION_UPDATES_PAGE)
    key = page_key(q)

    def read(conn: Connection) -> dict[str, Any]:
        f = _history_filters(conn, account, q)
        if key is not None:
            at = ledger_repo.history_at(conn, account.id, key[0])
            if at is None:
                raise ValidationFailed(f"PageKey {quote(q['pagekey'])} is not one that @nextpageuri gives; follow "
                                       "@nextpageuri as it is, or ask for Page alone.")
            total = key[1]
            rows = ledger_repo.history_page(conn, account.id, replace(f, after=(at, key[0])), 0, size)[1]
        else:
            total, rows = ledger_repo.history_page(conn, account.id, f, (page - 1) * size, size)
        after = [("PageKey", f"{rows[-1].id}-{total}")] if rows else []
        return envelope(request, "ActionUpdates", _update_dicts(conn, account.sid, rows), page, size, total,
                        next_params=after)

    return _read(request, read)


@router.get(BASE + "/ActionUpdates/{Id}")
def get_action_update(request: Request, Id: str, account: Owner) -> Response:  # noqa: N803 - impact.com's name
    """One history entry (the ``Uri`` of a record of the list)."""

    def read(conn: Connection) -> dict[str, Any]:
        number = parse_id(Id.strip())
        rows = [] if number is None else ledger_repo.history_page(
            conn, account.id, ledger_repo.HistoryFilters(update_id=number), 0, 1)[1]
        if not rows:
            raise NotFound(f"No action update with id {quote(Id)}.")
        return _update_dicts(conn, account.sid, rows)[0]

    return _read(request, read)


# --- APISubmissions (the list) -----------------------------------------------------------------


@router.get(BASE + "/APISubmissions")
def list_api_submissions(request: Request, account: Owner) -> Response:
    """The account's API submissions (A-…), newest first, each as ``GET /APISubmissions/{BatchId}``
    shows it, under impact.com's key ``APISubmission``."""
    return submissions_list(request, account, "A", "APISubmission", API_SUBMISSIONS_PAGE,
                            lambda conn, rows: api_submissions(conn, account, rows))
