"""Drawing a page: the Jinja2 templates of this package (autoescaped), the layout's context, redirects
with a one-time message.

``page(request, "actions.html", title=..., section=..., **context)`` answers the template with the
signed-in user, the form token and the message of the previous redirect (``redirect(url, message)``).
Templates never mark text safe: what a brand or a partner typed (an order id, a note) is always shown as
text.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from payoutdesk import __version__
from payoutdesk.accounts.sessions import SignedIn

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
FLASH_COOKIE = "pd_flash"

env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(value: Any) -> str:
    """A time as people read it in a table: 2026-11-20 10:00 UTC; a date as 2026-11-20; nothing as an empty cell."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        if len(value) >= 16 and value[10] == "T":
            return f"{value[:10]} {value[11:16]} UTC"
        return value
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _label(value: Any) -> str:
    """A code as a label: ITEM_RETURNED -> Item returned."""
    text = str(value or "")
    return text.replace("_", " ").capitalize() if text.isupper() or "_" in text else text


env.filters["when"] = _when
env.filters["label"] = _label
env.globals["version"] = __version__


def page(request: Request, template: str, *, title: str, user: SignedIn | None, section: str = "",
         status: int = 200, **context: Any) -> HTMLResponse:
    """``template`` drawn in the layout. ``section`` marks the navigation entry of the page
    ("actions", "event-types", "file-submissions", "contracts", ...)."""
    message = unquote(request.cookies.get(FLASH_COOKIE, ""))[:500]
    html = env.get_template(template).render(
        request=request, title=title, user=user, section=section, message=message,
        csrf=user.csrf_token if user is not None else "", **context,
    )
    response = HTMLResponse(html, status_code=status)
    if message:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def redirect(url: str, message: str = "") -> RedirectResponse:
    """303 to ``url`` (a path of ours), with ``message`` shown once on the page it leads to."""
    response = RedirectResponse(url if url.startswith("/") and not url.startswith("//") else "/", status_code=303)
    if message:
        response.set_cookie(FLASH_COOKIE, quote(message[:500]), httponly=True, samesite="strict", path="/")
    return response


def fragment(template: str, **context: Any) -> HTMLResponse:
    """A piece of a page (an expanded row), for the page's script to put in place."""
    return HTMLResponse(env.get_template(template).render(**context))
