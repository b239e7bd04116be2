"""``payoutdesk serve`` runs every part in one process (HTTP, FTP, SMTP, a worker, the scheduler) or ``--only``
some: each server logs once it has bound its port, a file sent by FTP, by mail and by a Salesforce Outbound
Message is applied by the same process's worker, SIGTERM stops them all, and a busy port of any server stops
the start with nothing left running."""

from __future__ import annotations

import ftplib
import io
import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
import urllib.request
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from payoutdesk.catalog import service as catalog
from payoutdesk.kit import db
from payoutdesk.kit.crypto import SecretBox
from payoutdesk.models import actions, campaigns, event_types
from payoutdesk.server import parse_parts
from tests.helpers import conversion, free_port, make_world
from tests.test_salesforce import SETTINGS, envelope, opp


def _serve(url: str, tmp: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    full = {**os.environ, "PAYOUTDESK_DATABASE_URL": url, "PAYOUTDESK_DATA_DIR": str(tmp),
            "PAYOUTDESK_SECRET_KEY": "test-secret", "PAYOUTDESK_LOG_FORMAT": "json",
            "PAYOUTDESK_MAIL_DOMAIN": "mail.test", "PAYOUTDESK_API_RATE_LIMIT": "0", **env}
    return subprocess.Popen([sys.executable, "-m", "payoutdesk.cli", "serve", "--bind", "127.0.0.1", *args],
                            env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _lines_until(proc: subprocess.Popen[bytes], done: Any, seconds: float = 60) -> list[dict[str, Any]]:
    assert proc.stderr is not None
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        raw = proc.stderr.readline().decode()
        if not raw:
            break
        if raw.startswith("{"):
            seen.append(json.loads(raw))
            if done(seen):
                return seen
    pytest.fail(f"not seen in time: {seen}")


def _amount(engine: Engine, action_id: int) -> int:
    with db.read(engine) as conn:
        return int(conn.execute(select(actions.c.amount).where(actions.c.id == action_id)).scalar_one())


def _wait_for_amount(engine: Engine, action_id: int, amount: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _amount(engine, action_id) == amount:
            return
        time.sleep(0.1)
    pytest.fail(f"action {action_id} is at {_amount(engine, action_id)}, not {amount}")


def test_every_part_in_one_process(fresh_url: str, fresh_engine: Engine, tmp_path: Path) -> None:
    w = make_world(fresh_engine)  # a database of its own: the server's worker runs on it
    by_ftp, by_mail, by_salesforce = conversion(w, "O-FTP"), conversion(w, "O-MAIL"), conversion(w, "O-SF")
    with db.write(fresh_engine) as conn:
        catalog.set_ftp_password(conn, w.actor, w.campaign_id, "ftp-secret-1")
        catalog.patch_event_type(conn, w.actor, w.sale, {"returns_processing": {**SETTINGS}}, SecretBox("test-secret"))
        camp = conn.execute(select(campaigns).where(campaigns.c.id == w.campaign_id)).one()
        token = conn.execute(select(event_types.c.outbound_token).where(event_types.c.id == w.sale)).scalar_one()
    http, ftp, smtp = free_port(), free_port(), free_port()
    proc = _serve(fresh_url, tmp_path, "--port", str(http), "--ftp-port", str(ftp), "--smtp-port", str(smtp))
    try:
        seen = _lines_until(proc, lambda s: {x.get("server") for x in s if x.get("event") == "bound"}
                            >= {"http", "ftp", "smtp"})
        bound = {x["server"]: x["port"] for x in seen if x.get("event") == "bound"}
        assert bound == {"http": http, "ftp": ftp, "smtp": smtp}
        # FTP
        with ftplib.FTP() as client:
            client.connect("127.0.0.1", ftp, timeout=10)
            client.login(camp.ftp_username, "ftp-secret-1")
            client.storbinary("STOR returns.csv", io.BytesIO(f"ActionId,Amount,Reason\n{by_ftp},70.00,"
                                                             "ITEM_RETURNED\n".encode()))
        # e-mail
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "returns@brand.example", f"returns-{camp.returns_token}@mail.test", "r"
        msg.set_content("returns attached")
        msg.add_attachment(f"ActionId,Amount,Reason\n{by_mail},80.00,ITEM_RETURNED\n".encode(), maintype="text",
                           subtype="csv", filename="mail.csv")
        with smtplib.SMTP("127.0.0.1", smtp, timeout=10) as client:
            client.send_message(msg)
        # a Salesforce Outbound Message: the opportunity of order O-SF was lost
        request = urllib.request.Request(f"http://127.0.0.1:{http}/salesforce/outbound/{token}", method="POST",
                                         data=envelope(("04l000000000001AAA", opp("O-SF", "Closed Lost"))),
                                         headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert b"<Ack>true</Ack>" in answer.read()
        _wait_for_amount(fresh_engine, by_ftp, 7000)
        _wait_for_amount(fresh_engine, by_mail, 8000)
        _wait_for_amount(fresh_engine, by_salesforce, 0)
    finally:
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, rest = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest.decode()[-2000:]
    assert time.monotonic() - started < 10
    lines = [json.loads(x) for x in rest.decode().splitlines() if x.startswith("{")]
    assert any(x.get("event") == "stopped" for x in lines)
    taken = [x for x in seen + lines if x.get("event") == "file_taken"]
    assert {x["channel"] for x in taken} >= {"ftp", "email"}


def test_only_some_parts(db_url: str, tmp_path: Path) -> None:
    http, smtp = free_port(), free_port()
    proc = _serve(db_url, tmp_path, "--port", str(http), "--smtp-port", str(smtp), "--only", "smtp,worker")
    try:
        seen = _lines_until(proc, lambda s: any(x.get("event") == "running" for x in s))
        assert [x["server"] for x in seen if x.get("event") == "bound"] == ["smtp"]
        with smtplib.SMTP("127.0.0.1", smtp, timeout=10) as client:
            assert client.noop()[0] == 250
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", http), timeout=2):
            pass  # no web server in this process
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_a_busy_port_of_any_server_stops_the_start(db_url: str, tmp_path: Path) -> None:
    http = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        ftp = busy.getsockname()[1]
        proc = _serve(db_url, tmp_path, "--port", str(http), "--ftp-port", str(ftp))
        out, err = proc.communicate(timeout=60)
    text = out.decode() + err.decode()
    assert proc.returncode == 2, text
    assert f"cannot listen on 127.0.0.1:{ftp}: the port is in use by another process" in text
    assert '"bound"' not in text


def test_the_parts_are_checked() -> None:
    assert parse_parts("http, FTP") == frozenset({"http", "ftp"})
    with pytest.raises(ValueError, match="mail: the parts are http, ftp, smtp, worker, scheduler"):
        parse_parts("http,mail")
    p = subprocess.run([sys.executable, "-m", "payoutdesk.cli", "serve", "--only", "mail"], capture_output=True,
                       text=True, timeout=60, check=False)
    assert p.returncode == 2 and "error: --only mail: the parts are" in p.stderr
