"""The ASGI application: error mapping, authentication, rate limits, routers."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException

from payoutdesk import __version__
from payoutdesk.api import openapi
from payoutdesk.api.access_log import AccessLog
from payoutdesk.api.plumbing import ID_RULE, SignIns, as_page, human_validation, problem, request_rate_headers
from payoutdesk.api.ratelimit import TokenBuckets
from payoutdesk.config import Settings
from payoutdesk.errors import PayoutdeskError, RateLimited, Unauthorized, quote
from payoutdesk.intake.common import IntakeContext
from payoutdesk.kit import db
from payoutdesk.kit.crypto import SecretBox, load_secret_key

log = logging.getLogger("payoutdesk.api")


def create_app(settings: Settings, engine: Engine | None = None) -> FastAPI:
    app = FastAPI(
        title="payoutdesk",
        version=__version__,
        description="Control partner payouts before they lock. Native API; see docs/API.md.",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # served by api.openapi.install from the package's own files
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine or db.make_engine(settings.database_url)
    app.state.box = SecretBox(load_secret_key(settings.secret_key, settings.data_dir))
    app.state.api_buckets = TokenBuckets(settings.api_rate_limit)
    app.state.login_buckets = TokenBuckets(settings.login_rate_limit, per=60.0)
    app.state.sign_ins = SignIns()
    app.state.intake = IntakeContext(settings, app.state.engine, app.state.box)  # for the channels' routes

    @app.exception_handler(PayoutdeskError)
    def _domain_error(request: Request, exc: PayoutdeskError) -> Response:
        headers = request_rate_headers(request)
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(exc.retry_after)
            headers.setdefault("X-RateLimit-Limit", str(exc.limit))
            headers["X-RateLimit-Remaining"] = "0"
            headers.setdefault("X-RateLimit-Reset", str(exc.retry_after))
        page = as_page(request, exc.status, exc.detail, headers)
        if page is not None:
            return page
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = 'Basic realm="payoutdesk"'
        return problem(exc.status, exc.code, exc.title, exc.detail, headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        in_path = [err for err in exc.errors() if tuple(err.get("loc", ()))[:1] == ("path",)]
        if in_path:  # a path that names nothing that can exist: not found (DESIGN §6)
            name = str(in_path[0]["loc"][-1])
            detail = f"No {name} {quote(in_path[0].get('input'))} here: {ID_RULE}."
            return problem(404, "not_found", "Not found", detail, request_rate_headers(request))
        status, code, detail = human_validation(exc)
        page = as_page(request, status, detail)
        if page is not None:
            return page
        return problem(status, code, "Invalid request", detail, request_rate_headers(request))

    @app.exception_handler(StarletteHTTPException)
    def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
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
        headers = dict(exc.headers or {})
        unrouted = exc.status_code == 404 and str(exc.detail) == "Not Found"
        # an address that names nothing: a page for a browser (which asks for HTML), problem+json for the rest
        if not unrouted or "text/html" in request.headers.get("accept", ""):
            page = as_page(request, exc.status_code,
                           f"There is no page {request.url.path} here." if unrouted else detail, headers)
            if page is not None:
                return page
        allow = openapi.allowed_methods(request) if exc.status_code == 405 else None
        if allow:  # every method of the path, not only those of its first route
            headers["Allow"] = allow
        return problem(exc.status_code, code, str(exc.detail), detail, headers)

    @app.exception_handler(Exception)
    def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        page = as_page(request, 500, "Something went wrong on our side; it is logged. Try again.")
        if page is not None:
            return page
        return problem(500, "internal_error", "Internal error", "Something went wrong on our side; it is logged.")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> Response:
        return Response("ok", media_type="text/plain")

    from payoutdesk.api import (
        account,
        compat,
        compat_reads,
        compat_submissions,
        limits,
        native,
        salesforce,
        submissions,
    )

    app.include_router(native.router, prefix="/api/v1")
    from payoutdesk.api import clicks, forecast, payments, reprocess  # issue 13: clicks, the lock forecast, payments

    app.include_router(clicks.router, prefix="/api/v1")
    app.include_router(forecast.router, prefix="/api/v1")
    app.include_router(payments.router, prefix="/api/v1")
    app.include_router(reprocess.router, prefix="/api/v1")  # R13 re-processing
    app.include_router(account.router, prefix="/api/v1")
    # single-action changes served without FastAPI's dispatch when their input is plainly valid
    app.state.fast_changes = True
    app.state.fast_changes_served = 0
    app.add_middleware(native.ChangeFastPath)
    # body limits counted while the body is read, outside every layer that reads one (api/limits.py)
    app.add_middleware(limits.BodyLimits, max_file_bytes=settings.max_file_mb * limits.MiB)
    from payoutdesk.api.compat_format import CompatFormat

    app.add_middleware(CompatFormat)  # impact.com's .json/.xml paths and XML answers (inside the access log)
    app.add_middleware(AccessLog)  # added last: outermost, it sees every request (the fast path's too)
    app.include_router(submissions.router, prefix="/api/v1")
    from payoutdesk.api import intake as intake_routes  # returns processing: run now, the runs

    app.include_router(intake_routes.router, prefix="/api/v1")
    app.include_router(compat.router)  # impact.com paths: actions
    app.include_router(compat_submissions.router)  # impact.com paths: API and file submissions
    app.include_router(compat_reads.router)  # impact.com paths: company, campaigns, partners, action updates
    app.include_router(salesforce.router)  # Salesforce Outbound Messages: SOAP, outside the OpenAPI document
    openapi.install(app)  # the completed OpenAPI document and the offline /docs
    from payoutdesk.web import app as pages

    pages.install(app)  # the pages (web/): sign-in, Pending Payouts, settings, file submissions
    return app
