"""Body limits are enforced while the body is read, and no request raises the server's memory by more than
100 MB (DESIGN §6, "Bounded memory"; issue 10 item 1).

A real ``payoutdesk serve`` (web server, worker and scheduler) runs in a child process on its own database
of each backend; request bodies are streamed from generators (never built in memory) over a raw socket,
and the answer is read as soon as the server sends it, so a refusal that waited for the whole body would
show as the whole body sent. The server's peak resident memory is read from /proc (VmHWM, reset before
each case). The margins are wide: the server before this change grew by about the size of the body (a 1 GiB
upload: +1,025 MB); the figures are measured precisely by bench/memory.py (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench import memory as wire
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from payoutdesk.kit.db import make_engine, migrate
from tests.conftest import new_pg_database
from tests.helpers import World, client_for, make_world

MiB = 1024 * 1024
LIMIT = 200 * MiB  # PAYOUTDESK_MAX_FILE_MB's default
GROWTH_MB = 100


@pytest.fixture(scope="module")
def served(db_url: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[wire.Setup]:
    tmp = tmp_path_factory.mktemp("served")
    if db_url.startswith("sqlite"):
        url = f"sqlite:///{tmp / ('pd-' + uuid.uuid4().hex[:8] + '.db')}"
    else:
        url = new_pg_database(request.getfixturevalue("pg_server_url"))
    migrate(url)
    engine = make_engine(url)
    w = make_world(engine)
    engine.dispose()
    env = wire.server_env(url, tmp, wire.free_port())
    server = wire.start_server(env, tmp / "server.log")
    try:
        s = wire.Setup(server, w.auth["Authorization"], w.campaign_id, 1)
        ctype, parts = wire.multipart({"campaign_id": str(w.campaign_id), "dry_run": "true"}, "warm.csv",
                                      [b"ActionId,Reason\n1,APPROVED\n"])
        warm = wire.send_streamed(server.port, "POST", "/api/v1/submissions",
                                  {"Authorization": s.auth, "Content-Type": ctype}, parts)
        assert warm.status == 202, warm
        wire.wait_idle(s)
        yield s
    finally:
        server.stop()


def test_a_declared_oversized_upload_is_refused_before_its_body(served: wire.Setup) -> None:
    ctype, parts = wire.multipart({"campaign_id": str(served.campaign_id)}, "huge.csv", wire.repeat(1024 * MiB))
    length = wire.multipart_size({"campaign_id": str(served.campaign_id)}, "huge.csv", 1024 * MiB)
    a = wire.send_streamed(served.server.port, "POST", "/api/v1/submissions",
                           {"Authorization": served.auth, "Content-Type": ctype, "Content-Length": str(length)},
                           parts, chunked=False)
    assert (a.status, a.body.get("code")) == (413, "file_too_large"), a
    assert a.sent < 64 * MiB  # what the sockets' buffers took before the answer, not the gigabyte
    assert "PAYOUTDESK_MAX_FILE_MB" in a.body["detail"]


def test_a_1_gib_upload_is_refused_once_past_the_limit_in_bounded_memory(served: wire.Setup) -> None:
    a, m = wire.case_multipart(served, 1024 * MiB)  # chunked: no Content-Length to judge up front
    assert (a.status, a.body.get("code")) == (413, "file_too_large"), a
    assert LIMIT < a.sent < LIMIT + 64 * MiB, a.sent  # refused as the limit passed, not after the gigabyte
    assert m.growth < GROWTH_MB, (m.before, m.peak)


def test_a_300_mib_json_body_of_a_single_action_route_is_refused_at_once(served: wire.Setup) -> None:
    a, m = wire.case_action(served, 300 * MiB)
    assert (a.status, a.body.get("code")) == (413, "body_too_large"), a
    assert a.sent < 64 * MiB, a.sent
    assert m.growth < GROWTH_MB, (m.before, m.peak)


def test_a_huge_json_batch_is_refused_at_its_byte_bound(served: wire.Setup) -> None:
    a, m = wire.case_rows(served, 300 * MiB)
    assert (a.status, a.body.get("code")) == (413, "body_too_large"), a
    assert a.sent < 32 * MiB + 64 * MiB, a.sent
    assert m.growth < GROWTH_MB, (m.before, m.peak)


def test_three_concurrent_uploads_at_the_limit_stay_in_bounded_memory(served: wire.Setup) -> None:
    """Three files just under 200 MB at once, accepted, stored and run by the worker (each refused as an
    image once read back): the server's peak and what it keeps afterwards stay within 100 MB of before."""
    answers, m, kept = wire.case_three(served, LIMIT - 256 * 1024, settle=lambda: wire.wait_idle(served))
    assert [(a.status, a.body.get("status")) for a in answers] == [(202, "QUEUED")] * 3, answers
    assert m.growth < GROWTH_MB, (m.before, m.peak)
    assert kept - m.before < GROWTH_MB, (m.before, kept)


# --- the limits of every route, through the application -------------------------------------------


def test_each_route_has_its_limit(engine: Engine, world: World, tmp_path: Path) -> None:
    api: TestClient = client_for(engine, tmp_path, PAYOUTDESK_MAX_FILE_MB="2")
    big = b"x" * (MiB + 1)
    # single-action changes and other JSON bodies: 1 MiB
    for path in ("/api/v1/actions/1/modify", "/api/v1/partners", "/api/v1/conversions"):
        r = api.post(path, headers={**world.auth, "Content-Type": "application/json"}, content=big)
        assert (r.status_code, r.json()["code"]) == (413, "body_too_large"), (path, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    # the impact.com-compatible PUT and DELETE, form-encoded
    for method in ("PUT", "DELETE"):
        r = api.request(method, f"/Advertisers/{world.sid}/Actions",
                        headers={**world.auth, "Content-Type": "application/x-www-form-urlencoded"},
                        content=b"ActionId=1&Note=" + big)
        assert (r.status_code, r.json()["code"]) == (413, "body_too_large"), (method, r.text)
    # a file: PAYOUTDESK_MAX_FILE_MB (2 here), plus room for the multipart framing
    ok = api.post("/api/v1/submissions", headers=world.auth, data={"campaign_id": str(world.campaign_id)},
                  files={"file": ("ok.csv", b"ActionId,Reason\n1,APPROVED," + b"p" * (2 * MiB - 100), "text/csv")})
    assert ok.status_code == 202, ok.text
    r = api.post("/api/v1/submissions", headers=world.auth, data={"campaign_id": str(world.campaign_id)},
                 files={"file": ("big.csv", b"p" * (2 * MiB + 100 * 1024), "text/csv")})
    assert (r.status_code, r.json()["code"]) == (413, "file_too_large"), r.text
    # a file a few bytes over the limit but within the framing allowance: refused by its counted size
    r = api.post("/api/v1/submissions", headers=world.auth, data={"campaign_id": str(world.campaign_id)},
                 files={"file": ("over.csv", b"q" * (2 * MiB + 10), "text/csv")})
    assert (r.status_code, r.json()["code"]) == (413, "file_too_large"), r.text
    # JSON rows: 32 MiB at most, or the file limit when lower
    r = api.post("/api/v1/submissions", headers={**world.auth, "Content-Type": "application/json"},
                 content=b'{"campaign_id": 1, "rows": [' + b'{"Note": "n"},' * 200_000 + b"{}]}")
    assert (r.status_code, r.json()["code"]) == (413, "body_too_large"), r.text
