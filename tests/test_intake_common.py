"""What every intake channel shares (intake/common.py, runs.py, deliveries.py, submissions/result_file.py):
a file taken once, duplicates and over-size files refused with nothing kept, one alert per failure spell,
result deliveries retried with back-off, the result CSV, the account's alert address."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine, func, select

from payoutdesk.config import Settings
from payoutdesk.intake import deliveries, runs
from payoutdesk.intake import repository as intake_repo
from payoutdesk.intake.common import IntakeContext, take_file
from payoutdesk.intake.runs import RunCounts
from payoutdesk.kit import db
from payoutdesk.kit.time import utcnow
from payoutdesk.ledger.workflow import Channel
from payoutdesk.models import actions, result_deliveries, stored_files
from payoutdesk.submissions import result_file
from payoutdesk.submissions import service as subs
from tests.helpers import World, client_for, conversion, drain, free_port, make_world


class Relay:
    """A local SMTP server standing in for the brand's relay: keeps what it receives."""

    def __init__(self) -> None:
        self.received: list[Any] = []
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.received.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def relay() -> Iterator[Relay]:
    r = Relay()
    r.controller.start()
    try:
        yield r
    finally:
        r.controller.stop()


def _ctx(engine: Engine, tmp_path: Path, **env: str) -> IntakeContext:
    settings = Settings.from_env({"PAYOUTDESK_DATA_DIR": str(tmp_path), "PAYOUTDESK_SECRET_KEY": "test-secret",
                                  **env})
    return IntakeContext.build(settings, engine)


def _file(w: World, action_id: int, amount: str = "60.00") -> bytes:
    return f"ActionId,Amount,Reason\n{action_id},{amount},ORDER_UPDATE\n".encode()


def _take(ctx: IntakeContext, w: World, data: bytes, name: str = "returns.csv", **kw: Any) -> Any:
    return take_file(ctx, account_id=w.account_id, campaign_id=w.campaign_id, channel=Channel.FTP,
                     actor_name="ftp-test", parts=[data[:5], data[5:]], file_name=name, **kw)


def test_a_file_is_taken_once_and_applied_with_its_channel(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    aid = conversion(w)
    ctx = _ctx(engine, tmp_path)
    first = _take(ctx, w, _file(w, aid))
    assert first.outcome == "queued" and first.label and first.label.startswith("F-")
    assert first.submission["channel"] == "ftp"
    again = _take(ctx, w, _file(w, aid), name="other-name.csv")
    assert again.outcome == "duplicate" and again.first_submission == first.label
    assert first.label in again.message
    drain(engine)
    with db.read(engine) as conn:
        assert conn.execute(select(actions.c.amount).where(actions.c.id == aid)).scalar_one() == 6000
        sub = subs.get(conn, w.account_id, first.label)
    assert sub["applied"] == 1 and sub["actor"] == "ftp-test"


def test_refusals_keep_nothing(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    ctx = dataclasses.replace(_ctx(engine, tmp_path), settings=dataclasses.replace(
        _ctx(engine, tmp_path).settings, max_file_mb=1))
    with db.read(engine) as conn:
        files_before = conn.execute(select(func.count()).select_from(stored_files)).scalar_one()
    big = _take(ctx, w, b"ActionId,Amount,Reason\n" + b"1,1.00,ORDER_UPDATE\n" * 60_000)
    assert big.outcome == "refused" and "1 MB" in big.message
    empty = take_file(ctx, account_id=w.account_id, campaign_id=w.campaign_id, channel=Channel.EMAIL,
                      actor_name="x@y.example", parts=[], file_name="empty.csv")
    assert empty.outcome == "refused" and "empty" in empty.message
    with db.read(engine) as conn:
        assert conn.execute(select(func.count()).select_from(stored_files)).scalar_one() == files_before


def test_the_queuing_transaction_runs_the_callback_or_nothing(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    aid = conversion(w)
    ctx = _ctx(engine, tmp_path)

    def boom(_conn: Any, _sub: dict[str, Any]) -> None:
        raise RuntimeError("after_queued failed")

    with pytest.raises(RuntimeError):
        _take(ctx, w, _file(w, aid), after_queued=boom)
    # nothing was queued, so the same content is not a duplicate now
    taken = _take(ctx, w, _file(w, aid))
    assert taken.outcome == "queued"


def test_one_alert_per_failure_spell(engine: Engine, tmp_path: Path, relay: Relay) -> None:
    w = make_world(engine)
    ctx = _ctx(engine, tmp_path, PAYOUTDESK_SMTP_RELAY=f"127.0.0.1:{relay.port}")
    source = f"event_type:{w.sale}"
    # no alert address: nothing sent, the spell stays open and unalerted
    runs.record(ctx, account_id=w.account_id, campaign_id=w.campaign_id, event_type_id=w.sale, channel="ftp_pull",
                trigger="schedule", counts=RunCounts(), source=source, error="login refused", what="the pull")
    assert relay.received == []
    with db.write(engine) as conn:
        intake_repo.set_alert_email(conn, w.account_id, "ops@brand.example")
    for night in range(3):
        runs.record(ctx, account_id=w.account_id, campaign_id=w.campaign_id, event_type_id=w.sale,
                    channel="ftp_pull", trigger="schedule", counts=RunCounts(), source=source,
                    error=f"login refused (night {night})", what="the nightly pull")
    assert len(relay.received) == 1, "one mail for the whole spell"
    to, msg = relay.received[0]
    assert to == ["ops@brand.example"] and "nightly pull" in msg["Subject"]
    with db.read(engine) as conn:
        spell = intake_repo.spell(conn, w.account_id, source)
    assert spell is not None and spell.failures == 4 and spell.alerted_at is not None
    # a success closes the spell; the next failure is a new spell, mailed again
    runs.record(ctx, account_id=w.account_id, campaign_id=w.campaign_id, event_type_id=w.sale, channel="ftp_pull",
                trigger="schedule", counts=RunCounts(files_taken=1), source=source)
    with db.read(engine) as conn:
        assert intake_repo.spell(conn, w.account_id, source) is None
        latest = runs.recent(conn, w.account_id, event_type_id=w.sale, limit=1)[0]
    assert latest["outcome"] == "ok" and latest["files_taken"] == 1
    runs.record(ctx, account_id=w.account_id, campaign_id=w.campaign_id, event_type_id=w.sale, channel="ftp_pull",
                trigger="schedule", counts=RunCounts(), source=source, error="folder missing")
    assert len(relay.received) == 2


def test_an_alert_the_relay_refused_is_tried_again(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    ctx = _ctx(engine, tmp_path, PAYOUTDESK_SMTP_RELAY=f"127.0.0.1:{free_port()}")  # nobody listens
    with db.write(engine) as conn:
        intake_repo.set_alert_email(conn, w.account_id, "ops@brand.example")
    runs.record(ctx, account_id=w.account_id, campaign_id=w.campaign_id, event_type_id=None, channel="email",
                trigger="mail", counts=RunCounts(), source=f"campaign:{w.campaign_id}:email", error="no file")
    with db.read(engine) as conn:
        spell = intake_repo.spell(conn, w.account_id, f"campaign:{w.campaign_id}:email")
    assert spell is not None and spell.alerted_at is None  # not sent: the next failure tries again


def _done_submission(engine: Engine, w: World, tmp_path: Path, rows: str) -> int:
    ctx = _ctx(engine, tmp_path)
    taken = _take(ctx, w, rows.encode())
    assert taken.outcome == "queued"
    drain(engine)
    assert taken.submission_id is not None
    return taken.submission_id


def test_the_result_file(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    aid = conversion(w)
    sid = _done_submission(engine, w, tmp_path,
                           f"ActionId,Amount,Reason\n{aid},60.00,ORDER_UPDATE\n999999999,1.00,=HYPERLINK(1)\n")
    text = b"".join(result_file.csv_chunks(engine, sid)).decode("utf-8-sig")
    lines = text.splitlines()
    assert lines[0] == ",".join(result_file.HEADER)
    assert lines[1].startswith(f"1,applied,{aid},100.00,60.00,10.00,6.00,PENDING")
    assert lines[2].startswith("2,error,")
    assert not any(cell.startswith("=") for line in lines for cell in line.split(","))
    assert result_file.result_name("returns.csv", "F-1") == "result_returns.csv"
    assert result_file.result_name("returns.xlsx", "F-1") == "result_returns.xlsx.csv"
    assert result_file.result_name(None, "F-9") == "result_F-9.csv"


def test_the_result_file_of_a_file_that_failed_whole(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    sid = _done_submission(engine, w, tmp_path, "Nothing,Useful\n1,2\n")
    lines = b"".join(result_file.csv_chunks(engine, sid)).decode("utf-8-sig").splitlines()
    assert len(lines) == 2 and ",failed," in lines[1]


def test_deliveries_wait_retry_with_backoff_and_give_up(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    aid = conversion(w)
    ctx = _ctx(engine, tmp_path)
    calls: list[tuple[str, dict[str, Any]]] = []
    fail = threading.Event()
    fail.set()

    @deliveries.handler("test_channel")
    def deliver(_ctx: IntakeContext, sub: Any, target: dict[str, Any]) -> None:
        calls.append((subs.label(sub), target))
        if fail.is_set():
            raise OSError("the brand's server is down")

    taken = _take(ctx, w, _file(w, aid), after_queued=lambda conn, sub: deliveries.register(
        conn, subs.parse_id(sub["id"]), "test_channel", {"to": "there"}))
    sid = taken.submission_id
    now = utcnow()
    assert "waiting 1" in deliveries.deliver_due(ctx, now, account_id=w.account_id)  # not done yet: nothing sent
    assert calls == []
    drain(engine)
    assert "failed 1" in deliveries.deliver_due(ctx, now + timedelta(minutes=1), account_id=w.account_id)
    assert calls == [(taken.label, {"to": "there"})]
    nothing = "delivered 0, failed 0, waiting 0"
    assert deliveries.deliver_due(ctx, now + timedelta(minutes=1, seconds=30), account_id=w.account_id) == nothing
    fail.clear()
    assert "delivered 1" in deliveries.deliver_due(ctx, now + timedelta(minutes=3), account_id=w.account_id)
    with db.read(engine) as conn:
        row = conn.execute(select(result_deliveries).where(result_deliveries.c.submission_id == sid)).one()
    assert row.delivered_at is not None and row.attempts == 2
    assert deliveries.deliver_due(ctx, now + timedelta(hours=7), account_id=w.account_id) == nothing
    assert deliveries.backoff(1) == timedelta(minutes=1) and deliveries.backoff(20) == timedelta(hours=6)


def test_the_alert_address_through_the_api(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    api = client_for(engine, tmp_path)
    got = api.get("/api/v1/account", headers=w.auth)
    assert got.status_code == 200 and got.json() == {"sid": w.sid, "name": "Test brand", "alert_email": None}
    set_ = api.patch("/api/v1/account", json={"alert_email": "ops@brand.example"}, headers=w.auth)
    assert set_.status_code == 200 and set_.json()["alert_email"] == "ops@brand.example"
    bad = api.patch("/api/v1/account", json={"alert_email": "not an address"}, headers=w.auth)
    assert bad.status_code == 422 and bad.json()["code"] == "validation_error"
    assert api.patch("/api/v1/account", json={"other": 1}, headers=w.auth).status_code == 422
    cleared = api.patch("/api/v1/account", json={"alert_email": None}, headers=w.auth)
    assert cleared.json()["alert_email"] is None
