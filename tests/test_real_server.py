"""The API behind the real HTTP server that ``payoutdesk serve`` runs (uvicorn), over a socket on
127.0.0.1.

The other API tests use FastAPI's TestClient, which calls the application directly; this one checks
that what a client sends over the wire (keep-alive requests, a form of Basic auth, a JSON body, a
malformed one, an unknown route) gets the same answers through the server's own HTTP parser.
"""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from payoutdesk.api.app import create_app
from payoutdesk.config import Settings
from tests.helpers import World, conversion, serving


@pytest.fixture
def server(engine: Engine, tmp_path: Path) -> Iterator[int]:
    settings = Settings.from_env({"PAYOUTDESK_DATA_DIR": str(tmp_path), "PAYOUTDESK_API_RATE_LIMIT": "0",
                                  "PAYOUTDESK_SECRET_KEY": "test-secret"})
    with serving(create_app(settings, engine)) as port:
        yield port


def test_the_real_server_parses_and_answers_like_the_application(server: int, world: World) -> None:
    aid = conversion(world, "WIRE-1", "100.00")
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=10)  # one keep-alive connection throughout
    auth = world.auth

    def call(method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
             ) -> tuple[int, dict[str, str], bytes]:
        conn.request(method, path, body=body, headers={**auth, **(headers or {})})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()

    status, headers, body = call("POST", f"/api/v1/actions/{aid}/modify", json.dumps({"amount": "80.00"}).encode(),
                                 {"Content-Type": "application/json"})
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert (answer["amount"], answer["outcome"]) == ("80.00", "applied")
    assert [u["kind"] for u in answer["updates"]] == ["CREATED", "MODIFIED"]

    # the same request again changes nothing (R11), on the same connection
    status, _, body = call("POST", f"/api/v1/actions/{aid}/modify", b'{"amount": "80.00"}',
                           {"Content-Type": "application/json"})
    assert status == 200 and json.loads(body)["outcome"] == "unchanged"

    # malformed JSON: a problem, and nothing changed
    status, headers, body = call("POST", f"/api/v1/actions/{aid}/modify", b'{"amount": ',
                                 {"Content-Type": "application/json"})
    assert 400 <= status < 500 and headers["content-type"].startswith("application/problem+json"), body
    status, _, body = call("GET", f"/api/v1/actions/{aid}")
    assert status == 200 and json.loads(body)["amount"] == "80.00"
    assert len(json.loads(body)["updates"]) == 2

    # chunked request body (no Content-Length), as some HTTP clients send it
    conn.putrequest("POST", f"/api/v1/actions/{aid}/modify")
    for k, v in {**auth, "Content-Type": "application/json", "Transfer-Encoding": "chunked"}.items():
        conn.putheader(k, v)
    conn.endheaders()
    payload = b'{"amount": "70.00"}'
    conn.send(f"{len(payload):x}\r\n".encode() + payload + b"\r\n0\r\n\r\n")
    r = conn.getresponse()
    assert r.status == 200 and json.loads(r.read())["amount"] == "70.00"

    # wrong credentials, an unknown route
    bad = "Basic " + base64.b64encode(f"{world.sid}:wrong".encode()).decode()
    status, headers, _ = call("GET", "/api/v1/actions", headers={"Authorization": bad})
    assert status == 401 and headers["content-type"].startswith("application/problem+json")
    status, _, _ = call("GET", "/api/v1/no-such-thing")
    assert status == 404
    conn.close()
