"""The request plumbing every HTTP adapter shares (the native API, the impact.com-compatible API, the pages).

Sign-in (HTTP Basic with Account SID and auth token, then the account's rate limit), the read and
write transactions of a request (with Idempotency-Key), problem+json answers, the text and id checks
of inputs. Adapters import this module; it imports no adapter.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import itertools
import tempfile
import threading
import time
from collections.abc import Callable, Generator
from typing import Annotated, Any, BinaryIO

from fastapi import Depends, Header, Path, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BeforeValidator
from sqlalchemy import Connection, Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException

from payoutdesk.accounts.service import AccountRef, authenticate_token, hash_token
from payoutdesk.api import idempotency
from payoutdesk.api.ratelimit import TokenBuckets, Verdict
from payoutdesk.context import Actor
from payoutdesk.errors import MalformedMultipart, RateLimited, Unauthorized, ValidationFailed, shorten
from payoutdesk.kit import db
from payoutdesk.kit.ids import MAX_ID, parse_id
from payoutdesk.ledger import workflow as wf

# --- problem+json ------------------------------------------------------------------------------


def problem(status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None,
            **extra: Any) -> JSONResponse:
    body = {"type": f"/problems/{code}", "title": title, "status": status, "detail": detail, "code": code, **extra}
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


PageRefusal = Callable[[Request, int, str, "dict[str, str] | None"], "Response | None"]


def as_page(request: Request, status: int, detail: str, headers: dict[str, str] | None = None) -> Response | None:
    """An expected refusal as the pages show it, when the pages are installed and this request is a page's
    (``web.app.install`` puts the renderer on ``app.state.page_refusal``); None: answer problem+json."""
    app = request.scope.get("app")
    render: PageRefusal | None = getattr(app.state, "page_refusal", None) if app is not None else None
    return render(request, status, detail, headers) if render is not None else None


def rate_headers(v: Verdict) -> dict[str, str]:
    if v.limit <= 0:
        return {}
    return {
        "X-RateLimit-Limit": str(v.limit),
        "X-RateLimit-Remaining": str(v.remaining),
        "X-RateLimit-Reset": str(v.reset_seconds),
    }


def request_rate_headers(request: Request) -> dict[str, str]:
    """The X-RateLimit-* headers that sign-in put on this request (none before sign-in)."""
    return dict(getattr(request.state, "rate_headers", {}))


_NOT_AN_OBJECT = ("missing", "model_attributes_type", "dict_type", "model_type")


def human_validation(exc: RequestValidationError) -> tuple[int, str, str]:
    """FastAPI's validation errors as (status, code, one sentence a person reads)."""
    parts: list[str] = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx") or {}
            return 400, "malformed_json", f"The request body is not valid JSON ({ctx.get('error', 'parse error')})."
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        where = shorten(".".join(loc), 100) or "request"
        msg = str(err.get("msg", "is invalid"))
        kind = str(err.get("type", ""))
        if not loc and kind in _NOT_AN_OBJECT:
            parts.append("The request body must be a JSON object with the fields of this request.")
            continue
        if not loc and kind == "value_error":  # a check of the whole body names its field itself
            parts.append(msg.removeprefix("Value error, ") + ".")
            continue
        if kind == "missing":
            msg = "is required"
        elif kind == "extra_forbidden":
            msg = "is not a field of this request"
        elif kind.startswith("date_"):
            msg = "must be a date like 2026-01-15"
        elif kind == "value_error":
            msg = msg.removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return 422, "validation_error", "; ".join(dict.fromkeys(parts)) or "The request is invalid."


# --- sign-in -----------------------------------------------------------------------------------


class SignIns:
    """Accounts that signed in lately, by SID: (account, hash of the token that worked, until when).

    A request whose token hashes to the remembered hash is signed in without reading the
    database; anything else (an unknown SID, another token, an expired entry) is checked against
    the database as before, and only a successful check is remembered. The hash is compared on
    every request; an entry lives ``ttl`` seconds, so a changed token or a removed account is
    noticed within that time.
    """

    def __init__(self, ttl: float = 10.0, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[AccountRef, str, float]] = {}
        self._lock = threading.Lock()

    def check(self, sid: str, token_hash: str) -> AccountRef | None:
        entry = self._entries.get(sid)
        if entry is None:
            return None
        account, known_hash, until = entry
        if time.monotonic() >= until or not hmac.compare_digest(known_hash, token_hash):
            return None
        return account

    def remember(self, sid: str, account: AccountRef, token_hash: str) -> None:
        with self._lock:
            if len(self._entries) >= self.max_entries and sid not in self._entries:
                self._entries.clear()  # bounded memory
            self._entries[sid] = (account, token_hash, time.monotonic() + self.ttl)


def sign_in(engine: Engine, sid: str, token: str) -> AccountRef:
    with db.read(engine) as conn:
        return authenticate_token(conn, sid, token)


async def authenticate(request: Request) -> AccountRef:
    """HTTP Basic with Account SID and auth token, then the account's API rate limit.

    Asynchronous, so that FastAPI runs it on the event loop rather than handing it to a worker
    thread: a recent sign-in of the same SID and token (``SignIns``) needs no database; otherwise
    the database check runs in a worker thread.
    """
    app = request.app
    client = request.client.host if request.client else "unknown"
    logins: TokenBuckets = app.state.login_buckets
    blocked = logins.peek_blocked(client)
    if blocked is not None:
        raise RateLimited(
            "Too many failed sign-ins from this address; wait before trying again.",
            retry_after=blocked.retry_after, limit=blocked.limit,
        )
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise Unauthorized("Sign in with HTTP Basic: your Account SID as user name and auth token as password.")
    try:
        sid, _, token = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("The Authorization header is not valid HTTP Basic.") from None
    if "\x00" in sid or "\x00" in token:
        raise Unauthorized("The Authorization header is not valid HTTP Basic.")
    sign_ins: SignIns = app.state.sign_ins
    token_hash = hash_token(token)
    account = sign_ins.check(sid, token_hash)
    if account is None:
        try:
            account = await run_in_threadpool(sign_in, app.state.engine, sid, token)
        except Unauthorized:
            logins.take(client)
            raise
        sign_ins.remember(sid, account, token_hash)
    request.state.account_sid = account.sid  # for the access log (api.access_log)
    verdict = app.state.api_buckets.take(f"api:{account.id}")
    request.state.rate_headers = rate_headers(verdict)
    if not verdict.allowed:
        raise RateLimited(
            f"More than {verdict.limit} requests per second for this account; slow down.",
            retry_after=verdict.retry_after, limit=verdict.limit,
        )
    return account


# --- query parameters: the declared ones only ----------------------------------------------------

# kept on the route object itself (a route is unhashable, and an id() could be given to a new route once
# the routes of a dropped application, as the tests make many, are collected)
_DECLARED_ATTR = "payoutdesk_declared_query"


def _query_names(dependant: Dependant) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def declared_query(route: APIRoute) -> frozenset[str]:
    """The query parameters ``route`` declares (its own and its dependencies'), by their names in the URL."""
    names: frozenset[str] | None = getattr(route, _DECLARED_ATTR, None)
    if names is None:
        names = frozenset(_query_names(route.dependant))
        setattr(route, _DECLARED_ATTR, names)
    return names


def refuse_unknown(given: list[str], known: frozenset[str] | set[str]) -> None:
    """``validation_error`` naming the parameters of ``given`` that are not in ``known`` (a misspelt filter
    must never widen a list, DESIGN §6)."""
    unknown = sorted({name for name in given if name not in known})
    if unknown:
        names = ", ".join(shorten(n, 60) for n in unknown[:10]) + (f" and {len(unknown) - 10} more"
                                                                   if len(unknown) > 10 else "")
        what = "is not a query parameter" if len(unknown) == 1 else "are not query parameters"
        expected = ", ".join(sorted(known, key=str.lower)) or "none"
        raise ValidationFailed(f"{names} {what} of this request (it takes: {expected}).")


async def signed_in(request: Request, account: Annotated[AccountRef, Depends(authenticate)]) -> AccountRef:
    """``authenticate``, then the query string holds only parameters the route declares."""
    route = request.scope.get("route")
    if isinstance(route, APIRoute) and request.query_params:
        refuse_unknown(list(request.query_params.keys()), declared_query(route))
    return account


Account = Annotated[AccountRef, Depends(signed_in)]
IdemKey = Annotated[str | None, Header(alias="Idempotency-Key")]


# --- ids ---------------------------------------------------------------------------------------

ID_RULE = f"an id is a whole number from 1 to {MAX_ID}"


def _strict_id(value: object) -> int:
    number = parse_id(value)
    if number is None:
        raise ValueError(ID_RULE)
    return number


def _strict_whole(value: object) -> int:
    """A whole number in ASCII digits, 0 … 2^63-1 (cursors, limits)."""
    if isinstance(value, bool):
        raise ValueError("must be a whole number, not true or false")  # noqa: TRY004 - pydantic wants ValueError
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit()) or len(value) > 19 or int(value) > MAX_ID:
            raise ValueError(f"must be a whole number from 0 to {MAX_ID}")
        return int(value)
    return value  # type: ignore[return-value]  # pydantic checks the rest


def whole_between(low: int, high: int) -> BeforeValidator:
    """A whole number ``low`` … ``high`` in ASCII digits (a page size), as one message either way."""
    def check(value: object) -> int:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
            number = int(value)
        if number is None or not low <= number <= high:
            raise ValueError(f"must be a whole number between {low} and {high}")
        return number

    return BeforeValidator(check)


# An id in a path: anything else answers 404 (the application's validation handler), in a query 422.
PathId = Annotated[int, BeforeValidator(_strict_id), Path(ge=1, le=MAX_ID)]
QueryId = Annotated[int | None, BeforeValidator(_strict_id), Query(ge=1, le=MAX_ID)]
WholeNumber = BeforeValidator(_strict_whole)


# --- text --------------------------------------------------------------------------------------


def check_text(value: Any, where: str) -> None:
    """Text must be storable by every backend: no NUL character, no lone surrogate (``ValueError``)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{shorten(where, 100) or 'the text'} contains a NUL character (\\u0000), which text "
                             "cannot hold")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{shorten(where, 100) or 'the text'} is not valid Unicode (it has a lone surrogate)"
                             ) from None
    elif isinstance(value, dict):
        for k, v in value.items():
            check_text(k, where or "a field name")
            check_text(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for n, v in enumerate(value):
            check_text(v, f"{where}.{n}" if where else str(n))


# --- a request's transaction -------------------------------------------------------------------


def engine_of(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def respond(request: Request, status: int, body: bytes, replayed: bool = False) -> Response:
    headers = request_rate_headers(request)
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def json_answer(request: Request, payload: Any, status: int = 200) -> Response:
    return respond(request, status, idempotency.dumps(payload))


def read(request: Request, fn: Callable[[Connection], Any]) -> Response:
    """``fn`` in one read transaction; its result as the JSON answer."""
    with db.read(engine_of(request)) as conn:
        return json_answer(request, fn(conn))


def write(
    request: Request, account: AccountRef, key: str | None, body: Any,
    handler: Callable[[Connection, Actor], tuple[int, Any]], *, wait: bool = True,
) -> Response:
    """``handler`` in one write transaction, with the Idempotency-Key ``key`` (None: none)."""
    actor = Actor(account.id, f"api:{account.sid}", wf.Channel.API)
    # the fingerprint is needed only to answer a repeated Idempotency-Key; ``body`` may be a function
    # giving it, so that requests without a key do not build it
    request_hash = ""
    if key is not None:
        request_hash = idempotency.fingerprint(request.method, request.url.path, body() if callable(body) else body)
    status, out, replayed = idempotency.run(
        engine_of(request), account.id, key, request_hash, lambda conn: handler(conn, actor), wait=wait
    )
    return respond(request, status, out, replayed)


async def write_soon(
    request: Request, account: AccountRef, key: str | None, body: Any,
    handler: Callable[[Connection, Actor], tuple[int, Any]],
) -> Response:
    """``write`` right here on the event loop when the database takes it at once, else in a worker thread.

    Handing a request to a worker thread and back costs about as much CPU as a whole single-action
    change (thread wake-ups, the GIL, caches), so a change runs on the event loop, but only when it
    cannot wait for a lock (``db.WouldWait``, nothing done): then it runs again in a thread, where
    waiting does not hold up the other requests.
    """
    try:
        return write(request, account, key, body, handler, wait=False)
    except db.WouldWait:
        return await run_in_threadpool(write, request, account, key, body, handler)


# --- a request's body ----------------------------------------------------------------------------


async def spool_body(request: Request, in_memory: int = 1024 * 1024) -> BinaryIO:
    """The request body in a temporary file (in memory up to ``in_memory`` bytes), read as it arrives;
    api/limits.py bounds its size. The caller closes it."""
    spool = tempfile.SpooledTemporaryFile(max_size=in_memory)  # noqa: SIM115 - the caller closes it
    try:
        async for part in request.stream():
            spool.write(part)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool  # type: ignore[return-value]


async def upload_form(request: Request, max_fields: int = 20) -> FormData:
    """A multipart form holding one file (spooled to disk by the parser) and at most ``max_fields`` small
    fields; ``MalformedMultipart`` (400) for a body the parser refuses. The caller closes it."""
    try:
        return await request.form(max_files=1, max_fields=max_fields, max_part_size=64 * 1024)
    except HTTPException as exc:  # the multipart parser's refusals (a missing boundary, a broken part ...)
        raise MalformedMultipart(f"The multipart body cannot be read: {exc.detail}") from None


def export_stream(request: Request, account_id: int, filters: Any, headers: dict[str, str]) -> StreamingResponse:
    """The actions export (``ledger.export_rows``) as a CSV answer, streamed in its own read transaction.

    The header and the first batch are read before the answer starts: a filter the database refuses is
    then an error answer, never a 200 whose stream breaks (DESIGN §6)."""
    from payoutdesk.ledger import service as ledger

    engine = engine_of(request)

    def body() -> Generator[str, None, None]:
        with db.read(engine) as conn:
            yield from ledger.export_rows(conn, account_id, filters)

    chunks = body()
    try:
        first = [next(chunks), next(chunks, "")]
    except BaseException:
        chunks.close()
        raise
    return StreamingResponse(itertools.chain(first, chunks), media_type="text/csv; charset=utf-8", headers=headers)
