"""Security headers on every page (not on the APIs' JSON, not on /docs, whose Swagger UI runs an inline
script): a content security policy that allows only payoutdesk's own scripts, styles and images and no
framing, no content sniffing, no referrer to other sites."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
          "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
HEADERS = [
    (b"content-security-policy", POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
NOT_PAGES = ("/api/", "/Advertisers/", "/salesforce/", "/docs", "/healthz")


def is_page_path(path: str) -> bool:
    """A path of the pages (everything that is not an API, the Salesforce endpoint or /docs)."""
    return not path.startswith(NOT_PAGES)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_page_path(str(scope.get("path", ""))):
            await self.app(scope, receive, send)
            return

        static = str(scope.get("path", "")).startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
                if not static:  # a page shows an account's data: no copy kept by the browser or a proxy
                    message["headers"].append((b"cache-control", b"no-store"))
                if scope.get("scheme") == "https":
                    message["headers"].append((b"strict-transport-security", b"max-age=31536000"))
            await send(message)

        await self.app(scope, receive, with_headers)
