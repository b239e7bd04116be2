"""Request body limits, enforced while the body is read (DESIGN §6, "Bounded memory").

An ASGI middleware, outside every other layer of the application that reads a body (the change fast
path of api/native.py included). It refuses with 413 problem+json:

- at once, before reading anything, a request whose ``Content-Length`` is above its route's limit;
- otherwise as soon as the bytes received pass the limit (a chunked body, or a client that sent more
  than it announced): the read that passes it fails, whatever the application answers then is
  replaced by the 413, and the server closes the connection without reading the rest.

The limits (docs/SUBMISSIONS.md, "Size limits"):

- ``POST /api/v1/submissions`` as multipart (a returns file): ``PAYOUTDESK_MAX_FILE_MB`` MiB plus
  64 KiB for the multipart framing and the small fields, code ``file_too_large``;
- ``POST /api/v1/submissions`` as JSON rows: 32 MiB (``jsonrows.MAX_BODY_BYTES``), or the file limit if
  lower, code ``body_too_large``;
- ``POST /api/v1/clicks/bulk`` (JSON, CSV or multipart): 32 MiB plus 64 KiB, or the file limit if lower,
  code ``body_too_large``;
- every other body (single-action changes, the other JSON bodies, the impact.com-compatible form and
  JSON bodies): 1 MiB, code ``body_too_large``.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payoutdesk.api.plumbing import as_page, problem
from payoutdesk.errors import BodyTooLarge, FileTooLarge, PayoutdeskError
from payoutdesk.submissions.jsonrows import MAX_BODY_BYTES as ROWS_BODY_BYTES

MiB = 1024 * 1024
BODY_BYTES = 1 * MiB
MULTIPART_ALLOWANCE = 64 * 1024
SUBMISSIONS_PATH = "/api/v1/submissions"
CLICKS_BULK_PATH = "/api/v1/clicks/bulk"  # up to 100,000 clicks (api/clicks.py)
WEB_UPLOAD_PATH = "/settings/file-submissions"  # the pages' upload of a returns file (web/files.py)


@dataclass(frozen=True, slots=True)
class Limit:
    bytes: int
    error: type[PayoutdeskError]
    what: str  # for the message: "A returns file", "A JSON batch", "A request body"


def _size(n: int) -> str:
    return f"{n / MiB:g} MB" if n % (MiB // 16) == 0 else f"{n:,} bytes"


def limit_for(method: str, path: str, content_type: str, max_file_bytes: int) -> Limit:
    """The body limit of a request."""
    if method == "POST" and path.rstrip("/") == WEB_UPLOAD_PATH and content_type.startswith("multipart/"):
        return Limit(max_file_bytes + MULTIPART_ALLOWANCE, FileTooLarge, "A returns file")
    if method == "POST" and path.rstrip("/") == CLICKS_BULK_PATH:
        return Limit(min(ROWS_BODY_BYTES, max_file_bytes) + MULTIPART_ALLOWANCE, BodyTooLarge, "A batch of clicks")
    if method == "POST" and path.rstrip("/") == SUBMISSIONS_PATH:
        if content_type.startswith("multipart/"):
            return Limit(max_file_bytes + MULTIPART_ALLOWANCE, FileTooLarge, "A returns file")
        if content_type.startswith("application/json"):
            return Limit(min(ROWS_BODY_BYTES, max_file_bytes), BodyTooLarge, "A JSON batch of rows")
    return Limit(BODY_BYTES, BodyTooLarge, "A request body")


def _message(limit: Limit, max_file_bytes: int) -> str:
    if limit.error is FileTooLarge:
        return (f"{limit.what} is at most {_size(max_file_bytes)} (PAYOUTDESK_MAX_FILE_MB); split the file into "
                "smaller ones.")
    if limit.what.startswith("A JSON batch"):
        return f"{limit.what} is at most {_size(limit.bytes)}; upload a file for more."
    return f"{limit.what} is at most {_size(limit.bytes)} here."


class _Exceeded(Exception):
    """The body passed its limit while the application read it."""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _send_problem(scope: Scope, receive: Receive, send: Send, limit: Limit, max_file_bytes: int) -> None:
    from starlette.requests import Request

    page = as_page(Request(scope), 413, _message(limit, max_file_bytes), {"connection": "close"})
    if page is not None:  # a page's upload: the refusal as a page
        await page(scope, receive, send)
        return
    answer = problem(413, limit.error.code, limit.error.title, _message(limit, max_file_bytes), {"connection": "close"},
                     limit_bytes=limit.bytes)
    await answer(scope, receive, send)


class BodyLimits:
    """The middleware; ``max_file_bytes`` is ``PAYOUTDESK_MAX_FILE_MB`` in bytes."""

    def __init__(self, app: ASGIApp, max_file_bytes: int) -> None:
        self.app = app
        self.max_file_bytes = max_file_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = limit_for(scope["method"], scope["path"], (_header(scope, b"content-type") or "").lower(),
                          self.max_file_bytes)
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit.bytes:
            await _send_problem(scope, receive, send, limit, self.max_file_bytes)
            return
        received = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise _Exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit.bytes:
                    exceeded = True
                    raise _Exceeded
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the application's answer to a failed read: the 413 goes instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await _send_problem(scope, receive, send, limit, self.max_file_bytes)
