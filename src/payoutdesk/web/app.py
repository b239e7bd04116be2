"""Mounting the pages on the application: their routes, their static files, their security headers, and
their errors as pages (``page_error``) rather than problem+json."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from payoutdesk.web import actions, contracts, files, forecast, login, modify, payments, render, settings, users
from payoutdesk.web.security import SecurityHeaders, is_page_path
from payoutdesk.web.session import LoginNeeded

HEADINGS = {400: "That did not work", 401: "Sign in first", 403: "Not allowed", 404: "Not found",
            405: "Not allowed", 409: "That cannot be done now", 413: "Too large", 422: "That did not work",
            429: "Slow down", 500: "Something went wrong"}


def wants_page(request: Request) -> bool:
    """An error of this request is answered as a page: a path of the pages, asked for by a browser rather
    than by a page's script (which asks for JSON)."""
    return is_page_path(request.url.path) and "application/json" not in request.headers.get("accept", "")


def page_error(request: Request, status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    """An expected refusal as a page: what went wrong in words, and the way back."""
    user = getattr(request.state, "user", None)
    back = request.headers.get("referer", "")
    host = request.headers.get("host", "")
    local_back = back.split(host, 1)[1] if host and f"//{host}/" in back else ""
    response = render.page(
        request, "error.html", title=HEADINGS.get(status, "Error"), user=user, status=status,
        heading=HEADINGS.get(status, "Error"), detail=detail,
        back=local_back or ("/" if user else "/login"), back_label="Go back" if local_back else "Go to the start page",
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def install(app: FastAPI) -> None:
    """The pages' routes and static files, the sign-in redirect and the security headers."""

    @app.exception_handler(LoginNeeded)
    def _login_needed(request: Request, exc: LoginNeeded) -> Response:
        if "application/json" in request.headers.get("accept", ""):
            from payoutdesk.api.plumbing import problem

            return problem(401, "unauthorized", "Unauthorized", "Sign in first: your session has ended.")
        return RedirectResponse(exc.location, status_code=303)

    def refusal(request: Request, status: int, detail: str, headers: dict[str, str] | None) -> Response | None:
        return page_error(request, status, detail, headers) if wants_page(request) else None

    app.state.page_refusal = refusal  # the application's error handlers answer pages' errors as pages
    app.mount("/static", StaticFiles(directory=render.STATIC), name="static")
    for module in (login, actions, modify, settings, files, contracts, users, forecast, payments):
        app.include_router(module.router)
    app.add_middleware(SecurityHeaders)
