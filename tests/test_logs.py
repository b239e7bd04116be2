"""Logs (DESIGN §6): a line per HTTP request (with the fast path's), per submission state change and per lock
run, never a token or password; a line when the server has bound its port and only then; a busy port fails
clearly; ``PAYOUTDESK_LOG_FORMAT=json`` gives JSON lines."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from payoutdesk.kit import db, logs
from payoutdesk.ledger.service import lock_run
from payoutdesk.submissions import service as subs
from tests.helpers import World, client_for, conversion, drain, free_port, make_world


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The payoutdesk loggers writing text lines into a buffer (as ``serve`` configures them), then as before."""
    root = logging.getLogger(logs.ROOT)
    before = (list(root.handlers), root.level, root.propagate)
    out = io.StringIO()
    logs.configure("text", out)
    yield out
    root.handlers[:] = before[0]
    root.setLevel(before[1])
    root.propagate = before[2]


def test_a_line_per_request_with_status_duration_and_sid_never_the_token(
        engine: Engine, world: World, tmp_path: Path, captured: io.StringIO) -> None:
    api = client_for(engine, tmp_path)
    aid = conversion(world, "LOG-1")
    # an unknown parameter is refused (422), and logged with its value hidden
    assert api.get("/api/v1/actions?limit=1&token=s3cr3t-in-query", headers=world.auth).status_code == 422
    r = api.post(f"/api/v1/actions/{aid}/modify", headers=world.auth, json={"amount": "90.00"})
    assert r.status_code == 200, r.text
    assert api.get("/api/v1/actions", auth=(world.sid, "wrong-password")).status_code == 401
    text = captured.getvalue()
    lines = [line for line in text.splitlines() if " payoutdesk.http " in line]
    assert len(lines) == 3, text
    listed, changed, refused = lines
    assert " GET /api/v1/actions?limit=1&token=*** 422 " in listed and f"account={world.sid}" in listed
    assert f" POST /api/v1/actions/{aid}/modify 200 " in changed and f"account={world.sid}" in changed
    assert api.app.state.fast_changes_served >= 1  # the change went by native.ChangeFastPath, and is logged
    assert " GET /api/v1/actions 401 " in refused and "account=-" in refused
    for line in lines:
        assert " ms " in line
    basic = base64.b64encode(f"{world.sid}:{world.token}".encode()).decode()
    for secret in (world.token, "s3cr3t-in-query", "wrong-password", basic):
        assert secret not in text


def test_submission_and_lock_run_lines(engine: Engine, world: World, captured: io.StringIO) -> None:
    aid = conversion(world, "LOG-2")
    with db.write(engine) as conn:
        sid = subs.create_from_rows(conn, world.actor, world.campaign_id,
                                    [{"ActionId": aid, "Amount": "70.00", "Reason": "ORDER_UPDATE"}])["id"]
    drain(engine)
    lock_run(engine, account_id=world.account_id)
    text = captured.getvalue()
    assert f"payoutdesk.submissions submission {sid} queued: rows" in text, text
    assert f"submission {sid} claimed by test-worker" in text, text
    assert f"submission {sid} complete: 1 rows, 1 applied, 0 unchanged, 0 errors" in text, text
    assert "payoutdesk.lock lock run: 0 actions locked, due by " in text and f"account {world.account_id}" in text


def _serve(url: str, tmp: Path, port: int, **env: str) -> subprocess.Popen[bytes]:
    full = {**os.environ, "PAYOUTDESK_DATABASE_URL": url, "PAYOUTDESK_DATA_DIR": str(tmp),
            "PAYOUTDESK_SECRET_KEY": "test-secret", "PAYOUTDESK_HTTP_PORT": "1", **env}
    return subprocess.Popen([sys.executable, "-m", "payoutdesk.cli", "serve", "--bind", "127.0.0.1", "--port",
                             str(port)], env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _read_until(proc: subprocess.Popen[bytes], needle: str, seconds: float = 60) -> str:
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = proc.stderr.readline().decode()
        if not line:
            break
        seen += line
        if needle in line:
            return seen
    pytest.fail(f"no '{needle}' in: {seen}")


def test_the_serving_line_comes_once_the_port_is_bound_and_json_lines_parse(
        fresh_url: str, fresh_engine: Engine, tmp_path: Path) -> None:
    world = make_world(fresh_engine)  # a database of its own: the server's worker and scheduler run on it
    port = free_port()
    proc = _serve(fresh_url, tmp_path, port, PAYOUTDESK_LOG_FORMAT="json")
    try:
        seen = _read_until(proc, '"event": "bound"')
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the port is listening by the time the line is out (the options won over the variable)
        bound = json.loads(seen.splitlines()[-1])
        assert bound["port"] == port and bound["level"] == "INFO" and "serving on" in bound["message"]
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/v1/actions?limit=2&password=hunter2", headers=world.auth)
        assert conn.getresponse().status == 422  # an unknown parameter
        conn.close()
        seen += _read_until(proc, '"event": "request"')
    finally:
        proc.terminate()
        _, rest = proc.communicate(timeout=30)
    assert proc.returncode == 0
    lines = [json.loads(line) for line in (seen + rest.decode()).splitlines() if line.strip()]
    request = next(x for x in lines if x.get("event") == "request")
    assert request["method"] == "GET" and request["status"] == 422 and request["account_sid"] == world.sid
    assert request["path"] == "/api/v1/actions?limit=2&password=***" and request["duration_ms"] >= 0
    assert "hunter2" not in seen + rest.decode() and world.token not in seen + rest.decode()
    assert any(x.get("event") == "stopped" for x in lines)


def test_a_busy_port_fails_clearly_without_the_serving_line(db_url: str, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = _serve(db_url, tmp_path, port)
        out, err = proc.communicate(timeout=60)
    text = out.decode() + err.decode()
    assert proc.returncode == 2, text
    assert f"error: cannot listen on 127.0.0.1:{port}: the port is in use by another process" in text
    assert "serving on" not in text


def test_the_outbound_message_token_is_never_logged(engine: Engine, world: World, tmp_path: Path,
                                                    captured: io.StringIO) -> None:
    """The token of a Salesforce Outbound Message address is its credential: logged as ***."""
    api = client_for(engine, tmp_path)
    token = "0123456789abcdef0123456789abcdef"
    assert api.post(f"/salesforce/outbound/{token}", content=b"<x/>",
                    headers={"Content-Type": "text/xml"}).status_code == 404
    text = captured.getvalue()
    assert " POST /salesforce/outbound/*** 404 " in text, text
    assert token not in text
