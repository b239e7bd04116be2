"""Who is signed in to the pages, what they may do, and the form token of every post.

A page route declares what it needs as a parameter: ``user: Viewer`` (anyone signed in),
``user: Manager`` (may change actions and submissions), ``user: Admin`` (may change settings). A post
reads its form with ``await posted(request, user)``, which refuses a form without the session's token
(and a request from another site); a script's post sends the token as ``X-CSRF-Token`` and calls
``check_token``. Writes go through ``write(request, user, fn)``: one transaction, the user as actor on
the ``web`` channel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from payoutdesk.accounts.sessions import SignedIn, same_token, session_user
from payoutdesk.api.plumbing import engine_of
from payoutdesk.context import Actor
from payoutdesk.errors import Forbidden
from payoutdesk.kit import db
from payoutdesk.ledger.workflow import Channel

COOKIE = "pd_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
T = TypeVar("T")


class LoginNeeded(Exception):
    """No one is signed in: the page answers with a redirect to the sign-in page, then back to ``next_url``."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url

    @property
    def location(self) -> str:
        return "/login?next=" + quote(self.next_url, safe="/")


def _load(request: Request, token: str) -> SignedIn | None:
    with db.read(engine_of(request)) as conn:
        return session_user(conn, token)


async def viewer(request: Request) -> SignedIn:
    """Anyone signed in (viewer, manager, admin); else the sign-in page."""
    token = request.cookies.get(COOKIE, "")
    user = await run_in_threadpool(_load, request, token) if token else None
    if user is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginNeeded(target if request.method == "GET" else "/")
    request.state.account_sid = user.account.sid  # for the access log
    request.state.user = user
    return user


async def manager(request: Request, user: Annotated[SignedIn, Depends(viewer)]) -> SignedIn:
    if not user.can_change:
        raise Forbidden("Your role is viewer: you can see everything here but change nothing. "
                        "Ask an admin of your account for the manager role.")
    return user


async def admin(request: Request, user: Annotated[SignedIn, Depends(viewer)]) -> SignedIn:
    if not user.is_admin:
        raise Forbidden("Only an admin of your account changes the settings.")
    return user


Viewer = Annotated[SignedIn, Depends(viewer)]
Manager = Annotated[SignedIn, Depends(manager)]
Admin = Annotated[SignedIn, Depends(admin)]


def same_site(request: Request) -> bool:
    """The request comes from our own pages: its Origin (or else Referer), when the browser sends one,
    names this host."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return source is None
    parts = urlsplit(source)
    return parts.netloc == request.headers.get("host", "") and parts.scheme in ("http", "https")


def check_token(request: Request, user: SignedIn, given: str | None = None) -> None:
    """``Forbidden`` unless the request carries ``user``'s form token (``given``, else the header) and
    comes from our own pages."""
    token = given if given is not None else request.headers.get(CSRF_HEADER)
    if not same_token(user.csrf_token, token) or not same_site(request):
        raise Forbidden("This form has expired or did not come from payoutdesk's own pages; reload the page "
                        "and try again.")


async def posted(request: Request, user: SignedIn) -> FormData:
    """The posted form, once its token is checked (``Forbidden`` otherwise)."""
    form = await request.form()
    value = form.get(CSRF_FIELD)
    check_token(request, user, value if isinstance(value, str) else "")
    return form


def actor(user: SignedIn) -> Actor:
    """``user`` acting through the pages: the history shows ``user:<e-mail>`` on the ``web`` channel."""
    return Actor(user.account.id, f"user:{user.email}", Channel.WEB)


def write(request: Request, user: SignedIn, fn: Callable[[Connection, Actor], T]) -> T:
    """``fn`` in one write transaction, as ``user``."""
    with db.write(engine_of(request)) as conn:
        return fn(conn, actor(user))


def read(request: Request, fn: Callable[[Connection], T]) -> T:
    """``fn`` in one read transaction."""
    with db.read(engine_of(request)) as conn:
        return fn(conn)
