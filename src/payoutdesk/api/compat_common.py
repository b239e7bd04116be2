"""What the impact.com-compatible routes share (api/compat.py, compat_submissions.py and compat_reads.py): impact.com's
refusals (problem+json with ``Status``/``Message``), the signed-in owner of the path's AccountSID, the
query parameters each route takes (any other is refused, DESIGN §6), the parsers of impact.com's query
values, and the paged list envelope (``@page``, ``@nextpageuri`` …)."""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from sqlalchemy import Connection

from payoutdesk.accounts.service import AccountRef
from payoutdesk.api import plumbing
from payoutdesk.api.compat_format import SUFFIX_KEY
from payoutdesk.api.plumbing import authenticate, problem
from payoutdesk.catalog.service import get_owned, parse_time
from payoutdesk.errors import NotFound, PayoutdeskError, ValidationFailed, quote, shorten
from payoutdesk.kit.ids import MAX_ID, MAX_ID32, parse_id
from payoutdesk.kit.time import iso
from payoutdesk.models import campaigns

# --- errors: problem+json, plus impact.com's Status/Message ------------------------------------


class Refused(Exception):
    """A request refused with a code of the submission engine (a row error met up front)."""

    def __init__(self, status: int, code: str, detail: str, column: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.column = status, code, detail, column


class CompatRoute(APIRoute):
    """Every refusal of these routes keeps problem+json and adds impact.com's `Status`/`Message`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        inner = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await inner(request)
            except PayoutdeskError as exc:
                exc.extra.setdefault("Status", "ERROR")
                exc.extra.setdefault("Message", exc.detail)
                raise
            except Refused as exc:
                extra: dict[str, Any] = {"Status": "ERROR", "Message": exc.detail}
                if exc.column:
                    extra["column"] = exc.column
                return problem(exc.status, exc.code, "Invalid request", exc.detail,
                               plumbing.request_rate_headers(request), **extra)

        return handler




# The query parameters of each route (docs/COMPAT.md), matched case-insensitively; any other is refused
# (a misspelt filter must never widen a list, DESIGN §6). PUT and DELETE take every parameter of
# ``_NAMES`` in the query string too (``_row`` refuses the others). Add a route's new parameters here.
QUERY_PARAMETERS: dict[tuple[str, str], tuple[str, ...]] = {
    ("GET", "/Actions"): ("CampaignId", "State", "StartDate", "EndDate", "ActionDateStart", "ActionDateEnd",
                          "LockingDateStart", "LockingDateEnd", "ActionTrackerId", "EventTypeId", "MediaPartnerId",
                          "Oid", "OrderId", "Page", "PageSize", "PageKey"),
    ("GET", "/Actions/{ActionId}"): (),
    ("GET", "/Actions/{ActionId}/Items"): (),
    ("GET", "/APISubmissions/{BatchId}"): (),
    ("GET", "/FTPFileSubmissions"): ("SubmissionDateStart", "SubmissionDateEnd", "CompletedDateStart",
                                     "CompletedDateEnd", "CampaignId", "Page", "PageSize"),
    ("GET", "/FTPFileSubmissions/{BatchId}"): (),
    ("GET", "/FTPFileSubmissions/{BatchId}/ErrorDetails"): ("Page", "PageSize"),
}


def known_query(request: Request) -> None:
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    names = QUERY_PARAMETERS.get((request.method, route.path.removeprefix(BASE)))
    if names is None:
        return
    known = {n.lower() for n in names}
    unknown = [k for k in request.query_params if k.lower() not in known]
    plumbing.refuse_unknown(unknown, frozenset(names))


def owner(request: Request, AccountSID: str,  # noqa: N803
           account: Annotated[AccountRef, Depends(authenticate)]) -> AccountRef:
    """The AccountSID of the path must be the signed-in account's; any other answers 404. Then the query
    string may hold only the route's parameters."""
    if AccountSID != account.sid:
        raise NotFound("No account with this AccountSID for these credentials; the path names the Account SID "
                       "you sign in with.")
    known_query(request)
    return account


Owner = Annotated[AccountRef, Depends(owner)]
BASE = "/Advertisers/{AccountSID}"


# --- small parsers -----------------------------------------------------------------------------


def query_of(request: Request) -> dict[str, str]:
    """Query parameters by lower-case name (impact.com's names are matched case-insensitively)."""
    out: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        k = key.lower()
        if k in out and out[k] != value:
            raise ValidationFailed(f"{shorten(key, 60)} is given twice with different values.")
        text_ok(value, key)
        out[k] = value
    return out


def text_ok(value: Any, name: str) -> None:
    try:
        plumbing.check_text(value, name)
    except ValueError as exc:
        raise ValidationFailed(str(exc) + ".") from None


def whole(q: Mapping[str, str], name: str) -> int | None:
    """A whole number 0 … 2^31-1 (Page, PageSize)."""
    raw = q.get(name.lower())
    if raw is None or not raw.strip():
        return None
    number = digits(raw, MAX_ID32)
    if number is None:
        raise ValidationFailed(f"{name} must be a whole number, not {quote(raw)}.")
    return number


def query_id(q: Mapping[str, str], name: str) -> int | None:
    """An id of the query: 1 … 2^63-1 (validation_error otherwise, DESIGN §6)."""
    raw = q.get(name.lower())
    if raw is None or not raw.strip():
        return None
    number = parse_id(raw.strip())
    if number is None:
        raise ValidationFailed(f"{name} must be an id, a whole number from 1 to {MAX_ID}, not {quote(raw)}.")
    return number


def digits(raw: str, maximum: int) -> int | None:
    """A whole number 0..maximum written in ASCII digits, else None (never a huge int parse)."""
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > maximum:
        return None
    return int(text)


def page_of(q: Mapping[str, str], sizes: tuple[int, int]) -> tuple[int, int]:
    default, largest = sizes
    page = whole(q, "Page")
    page = 1 if page is None else page
    size = whole(q, "PageSize")
    if page < 1 or page > 10**9:
        raise ValidationFailed("Page must be 1 or more.")
    if size is None:
        size = default
    if not 1 <= size <= largest:
        raise ValidationFailed(f"PageSize must be between 1 and {largest:,}.")
    return page, size


def page_key(q: Mapping[str, str]) -> tuple[int, int] | None:
    """``PageKey``, the keyset position that ``@nextpageuri`` carries: ``<last id shown>-<total>`` (the
    total counted on the walk's first page, so that following pages need not count again)."""
    raw = (q.get("pagekey") or "").strip()
    if not raw:
        return None
    last, _, total = raw.partition("-")
    last_id, count = parse_id(last), digits(total, 2**62)
    if last_id is None or count is None:
        raise ValidationFailed(f"PageKey {quote(raw)} is not one that @nextpageuri gives; follow @nextpageuri as "
                               "it is, or ask for Page alone.")
    return last_id, count


def time_of(q: Mapping[str, str], name: str) -> tuple[datetime, bool] | None:
    """An ISO 8601 time, or a date (whole day): (value, was_a_date)."""
    raw = q.get(name.lower())
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if len(text) == 10:
        try:
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC), True
        except ValueError:
            pass
    try:
        return parse_time(text, name), False
    except ValidationFailed:
        raise ValidationFailed(f"{name} must be a time like 2026-01-15T10:00:00Z or a date like 2026-01-15, "
                               f"not {quote(raw)}.") from None


def lower_bound(q: Mapping[str, str], *names: str) -> datetime | None:
    """The latest of several inclusive lower bounds."""
    found = [t for t, _ in filter(None, (time_of(q, n) for n in names))]
    return max(found) if found else None


def upper_bound(q: Mapping[str, str], *names: str) -> datetime | None:
    """The earliest of several inclusive upper bounds, as an exclusive bound (a date means its whole day)."""
    found = []
    for n in names:
        got = time_of(q, n)
        if got is not None:
            value, whole_day = got
            try:
                found.append(value + (timedelta(days=1) if whole_day else timedelta(microseconds=1)))
            except OverflowError:
                continue  # the end of time bounds nothing
    return min(found) if found else None


def day_of(q: Mapping[str, str], name: str, *, end: bool) -> date | None:
    got = time_of(q, name)
    if got is None:
        return None
    value, _ = got
    day = value.date()
    if not end and value.timetz().replace(tzinfo=None) != time() and day < date.max:
        day += timedelta(days=1)  # a locking date is midnight: a start later that day excludes it
    return day


def when(value: datetime | None) -> str:
    return iso(value) or ""


def day_time(value: date | None) -> str:
    return "" if value is None else f"{value.isoformat()}T00:00:00Z"


def envelope(request: Request, key: str, items: list[dict[str, Any]], page: int, size: int,
              total: int, *, shown: int | None = None, next_params: list[tuple[str, str]] | None = None
              ) -> dict[str, Any]:
    """impact.com's paged list: "@page", "@numpages", … (as strings, as impact.com sends them).

    The URIs keep the path's ``.json``/``.xml`` suffix (api/compat_format.py). ``shown``: the number of
    records when ``items`` is left empty (filled in by the caller); ``next_params``: added to
    ``@nextpageuri`` only (a keyset position such as ``PageKey``, which the other URIs leave out)."""
    pages = max(1, math.ceil(total / size))
    start = (page - 1) * size
    params = [(k, v) for k, v in request.query_params.multi_items() if k.lower() not in ("page", "pagekey")]
    path = request.url.path + str(request.scope.get(SUFFIX_KEY, ""))

    def uri(n: int, extra: list[tuple[str, str]] | None = None) -> str:
        return f"{path}?{urlencode([*params, ('Page', str(n)), *(extra or [])])}"

    if shown is None:
        shown = len(items)

    return {
        "@page": str(page),
        "@numpages": str(pages),
        "@pagesize": str(size),
        "@total": str(total),
        "@start": str(start),
        "@end": str(start + max(shown, 1) - 1),
        "@uri": uri(page),
        "@firstpageuri": uri(1),
        "@previouspageuri": uri(page - 1) if 1 < page <= pages + 1 else "",
        "@nextpageuri": uri(page + 1, next_params) if page < pages else "",
        "@lastpageuri": uri(pages),
        key: items,
    }


# --- api/compat_reads.py: its routes' query parameters, and compat.py's APISubmission for its list ------

QUERY_PARAMETERS.update({
    # the tap-impact client sends PageSize to every path, CompanyInformation's too (it is not paged)
    ("GET", "/CompanyInformation"): ("Page", "PageSize"),
    ("GET", "/Campaigns"): ("Page", "PageSize"),
    ("GET", "/Campaigns/{Id}"): (),
    ("GET", "/MediaPartners"): ("Page", "PageSize"),
    ("GET", "/MediaPartners/{Id}"): (),
    ("GET", "/ActionUpdates"): ("CampaignId", "ActionId", "State", "StartDate", "EndDate", "Page", "PageSize",
                                "PageKey"),
    ("GET", "/ActionUpdates/{Id}"): (),
    ("GET", "/APISubmissions"): ("SubmissionDateStart", "SubmissionDateEnd", "CompletedDateStart",
                                 "CompletedDateEnd", "CampaignId", "Page", "PageSize"),
})


def campaign_currency(conn: Connection, account: AccountRef, campaign_id: int) -> str:
    """The currency of one of the account's campaigns (NotFound for another account's)."""
    return str(get_owned(conn, campaigns, account.id, campaign_id, "campaign").currency)
