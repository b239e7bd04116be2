"""Signing in and out of the pages, and ``/``.

The sign-in form is protected like every other form: before anyone is signed in, its token is a random
value that the page sets in a cookie and in the form (a site elsewhere can read neither). Failed sign-ins
from one address are rate-limited with the API's sign-in buckets (``PAYOUTDESK_LOGIN_RATE_LIMIT`` per
minute): past the limit the page answers 429 with Retry-After.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from payoutdesk.accounts.sessions import LIFETIME, Opened, close_session, open_session, same_token
from payoutdesk.api.plumbing import engine_of
from payoutdesk.errors import Forbidden, Unauthorized
from payoutdesk.kit import db
from payoutdesk.web import render
from payoutdesk.web.session import COOKIE, Viewer, posted, same_site, viewer

router = APIRouter(include_in_schema=False)
LOGIN_COOKIE = "pd_login"
HOME = "/pending-payouts/actions"


def _local(next_url: str | None) -> str:
    """Where to go after signing in: a path of ours, never another site."""
    if next_url and next_url.startswith("/") and not next_url.startswith(("//", "/\\")) and "\n" not in next_url:
        return next_url
    return HOME


@router.get("/")
async def home(request: Request) -> Response:
    try:
        await viewer(request)
    except Exception:  # noqa: BLE001 - not signed in, whatever the reason
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse(HOME, status_code=303)


def _form(request: Request, next_url: str, error: str = "", email: str = "", status: int = 200) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = render.page(request, "login.html", title="Sign in", user=None, login_token=token,
                           next_url=next_url, error=error, email=email, status=status)
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", path="/login",
                        secure=request.url.scheme == "https")
    return response


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    return _form(request, _local(next))


def _open(request: Request, email: str, password: str) -> Opened:
    with db.write(engine_of(request)) as conn:
        return open_session(conn, email, password)


@router.post("/login")
async def login(request: Request, email: Annotated[str, Form()] = "", password: Annotated[str, Form()] = "",
                login_token: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/") -> Response:
    next_url = _local(next)
    if not same_token(request.cookies.get(LOGIN_COOKIE, ""), login_token) or not login_token or not same_site(request):
        raise Forbidden("This sign-in form has expired or did not come from payoutdesk's own pages; reload the page "
                        "and try again.")
    client = request.client.host if request.client else "unknown"
    buckets = request.app.state.login_buckets
    blocked = buckets.peek_blocked(client)
    if blocked is not None:
        response = _form(request, next_url, f"Too many failed sign-ins from your address; try again in "
                         f"{blocked.retry_after} seconds.", email, status=429)
        response.headers["Retry-After"] = str(blocked.retry_after)
        return response
    try:
        opened = await run_in_threadpool(_open, request, email[:320], password[:1000])
    except Unauthorized as exc:
        buckets.take(client)
        return _form(request, next_url, exc.detail, email[:320], status=401)
    done = RedirectResponse(next_url, status_code=303)
    done.set_cookie(COOKIE, opened.token, max_age=int(LIFETIME.total_seconds()), httponly=True, samesite="lax",
                        path="/", secure=request.url.scheme == "https")
    done.delete_cookie(LOGIN_COOKIE, path="/login")
    return done


@router.post("/logout")
async def logout(request: Request, user: Viewer) -> Response:
    await posted(request, user)
    token = request.cookies.get(COOKIE, "")
    with db.write(engine_of(request)) as conn:
        close_session(conn, token)
    response = render.redirect("/login", "You are signed out.")
    response.delete_cookie(COOKIE, path="/")
    return response
