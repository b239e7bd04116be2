"""The ASGI application: error mapping, authentication, rate limits, routers."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import threading
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from payoutdesk import __version__
from payoutdesk.accounts.service import AccountRef, authenticate_token, hash_token
from payoutdesk.api.ratelimit import TokenBuckets, Verdict
from payoutdesk.config import Settings
from payoutdesk.errors import PayoutdeskError, RateLimited, Unauthorized
from payoutdesk.kit import db
from payoutdesk.kit.crypto import SecretBox, load_secret_key

log = logging.getLogger("payoutdesk.api")


def problem(status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None,
            **extra: Any) -> JSONResponse:
    body = {"type": f"/problems/{code}", "title": title, "status": status, "detail": detail, "code": code, **extra}
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


def rate_headers(v: Verdict) -> dict[str, str]:
    if v.limit <= 0:
        return {}
    return {
        "X-RateLimit-Limit": str(v.limit),
        "X-RateLimit-Remaining": str(v.remaining),
        "X-RateLimit-Reset": str(v.reset_seconds),
    }


_NOT_AN_OBJECT = ("missing", "model_attributes_type", "dict_type", "model_type")


def _human_validation(exc: RequestValidationError) -> tuple[int, str, str]:
    parts: list[str] = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx") or {}
            return 400, "malformed_json", f"The request body is not valid JSON ({ctx.get('error', 'parse error')})."
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        where = ".".join(loc) or "request"
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


def _sign_in(engine: Engine, sid: str, token: str) -> AccountRef:
    with db.read(engine) as conn:
        return authenticate_token(conn, sid, token)


def create_app(settings: Settings, engine: Engine | None = None) -> FastAPI:
    app = FastAPI(
        title="payoutdesk",
        version=__version__,
        description="Control partner payouts before they lock. Native API; see docs/API.md.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine or db.make_engine(settings.database_url)
    app.state.box = SecretBox(load_secret_key(settings.secret_key, settings.data_dir))
    app.state.api_buckets = TokenBuckets(settings.api_rate_limit)
    app.state.login_buckets = TokenBuckets(settings.login_rate_limit, per=60.0)
    app.state.sign_ins = SignIns()

    @app.exception_handler(PayoutdeskError)
    def _domain_error(request: Request, exc: PayoutdeskError) -> JSONResponse:
        headers = dict(getattr(request.state, "rate_headers", {}))
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(exc.retry_after)
            headers.setdefault("X-RateLimit-Limit", str(exc.limit))
            headers["X-RateLimit-Remaining"] = "0"
            headers.setdefault("X-RateLimit-Reset", str(exc.retry_after))
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = 'Basic realm="payoutdesk"'
        return problem(exc.status, exc.code, exc.title, exc.detail, headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, code, detail = _human_validation(exc)
        return problem(status, code, "Invalid request", detail, dict(getattr(request.state, "rate_headers", {})))

    @app.exception_handler(StarletteHTTPException)
    def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            # FastAPI's answer to a body that is not even text (not UTF-8)
            return problem(400, "malformed_json", "Invalid request",
                           "The request body is not valid JSON (it must be UTF-8 text).")
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        detail = str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":  # no route matched
            detail = f"There is no {request.url.path} here; the API lives under /api/v1 (see /docs)."
        elif exc.status_code == 405 and detail == "Method Not Allowed":
            detail = f"{request.method} is not allowed on {request.url.path}."
        return problem(exc.status_code, code, str(exc.detail), detail, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem(500, "internal_error", "Internal error", "Something went wrong on our side; it is logged.")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> Response:
        return Response("ok", media_type="text/plain")

    from payoutdesk.api import compat, native, submissions

    app.include_router(native.router, prefix="/api/v1")
    # single-action changes served without FastAPI's dispatch when their input is plainly valid
    app.state.fast_changes = True
    app.state.fast_changes_served = 0
    app.add_middleware(native.ChangeFastPath)
    app.include_router(submissions.router, prefix="/api/v1")
    app.include_router(compat.router)  # impact.com paths
    return app


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
            account = await run_in_threadpool(_sign_in, app.state.engine, sid, token)
        except Unauthorized:
            logins.take(client)
            raise
        sign_ins.remember(sid, account, token_hash)
    verdict = app.state.api_buckets.take(f"api:{account.id}")
    request.state.rate_headers = rate_headers(verdict)
    if not verdict.allowed:
        raise RateLimited(
            f"More than {verdict.limit} requests per second for this account; slow down.",
            retry_after=verdict.retry_after, limit=verdict.limit,
        )
    return account
