"""One log line per HTTP request (DESIGN §6, "Logs"): time, method, path with query, status, duration and
the signed-in account's SID.

An ASGI middleware outside every other layer of the application (``create_app`` adds it last), so that it
sees every request: those FastAPI routes, those ``native.ChangeFastPath`` serves itself, and those that
fail. It never logs a header (the HTTP Basic credentials are one) nor a body; the values of query
parameters whose names look like secrets (token, password, key ...) are replaced by ``***``. The SID is
the one ``authenticate`` signed in (``request.state.account_sid``), so a refused sign-in logs ``-``.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payoutdesk.kit import logs

log = logging.getLogger("payoutdesk.http")

_SECRET_NAME = re.compile(r"token|passw|pwd|secret|key|auth|sign|credential|session|cookie", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x20\x7f]")  # one request, one line: never a raw newline in the log
MAX_LOGGED = 2000  # characters of a path with its query


def redacted_query(query: str) -> str:
    """The query string with the values of secret-looking parameters replaced by ``***``."""
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(_SECRET_NAME.search(name) for name, _ in pairs):
        return query
    return urlencode([(name, "***" if _SECRET_NAME.search(name) else value) for name, value in pairs], safe="*")


# a path segment that is a credential: the token of a Salesforce Outbound Message address
_SECRET_PATH = re.compile(r"^(/salesforce/outbound/)[^/]+")


def logged_target(scope: Scope) -> str:
    path = _SECRET_PATH.sub(r"\1***", str(scope.get("path", "")))
    path = quote(path, safe="/:@!$&'()*+,;=-._~%")
    raw = scope.get("query_string", b"")
    query = redacted_query(raw.decode("latin-1") if isinstance(raw, bytes) else str(raw))
    target = _CONTROL.sub(lambda m: f"%{ord(m.group()):02X}", f"{path}?{query}" if query else path)
    return target if len(target) <= MAX_LOGGED else target[:MAX_LOGGED] + "…"


class AccessLog:
    """ASGI middleware: a ``payoutdesk.http`` line when each HTTP request ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = [0]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:  # an exception that escaped before any answer is logged as 500
            self._line(scope, status[0] or 500, time.perf_counter() - began)

    @staticmethod
    def _line(scope: Scope, status: int, seconds: float) -> None:
        state: Any = scope.get("state") or {}
        sid = state.get("account_sid") if isinstance(state, dict) else None
        method = str(scope.get("method", ""))
        target = logged_target(scope)
        ms = round(seconds * 1000, 1)
        client = scope.get("client")
        logs.event(log, f"{method} {target} {status} {ms} ms account={sid or '-'}", event="request",
                   method=method, path=target, status=status, duration_ms=ms, account_sid=sid,
                   client=client[0] if client else None)
