"""Our SMTP server (DESIGN §3, "E-mail to our SMTP server"): real servers and real clients (smtplib, swaks)
over 127.0.0.1, on both databases."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import logging
import os
import smtplib
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import Engine, func, select

from payoutdesk.catalog import service as catalog
from payoutdesk.config import Settings
from payoutdesk.intake import deliveries, mail_intake, runs, smtp_server
from payoutdesk.intake import repository as repo
from payoutdesk.intake.common import IntakeContext
from payoutdesk.kit import db, net
from payoutdesk.ledger import service as ledger
from payoutdesk.models import submissions
from tests.helpers import World, conversion, drain, free_port, make_world

DOMAIN = "mail.test"
Serve = Callable[..., tuple[IntakeContext, smtp_server.SmtpServer]]


@pytest.fixture
def serve(engine: Engine, tmp_path: Path) -> Iterator[Serve]:
    """Start our SMTP server on a free port with the given PAYOUTDESK_* settings; stopped at the end."""
    started: list[smtp_server.SmtpServer] = []

    def start(**env: str) -> tuple[IntakeContext, smtp_server.SmtpServer]:
        settings = Settings.from_env({"PAYOUTDESK_DATA_DIR": str(tmp_path), "PAYOUTDESK_SECRET_KEY": "test-secret",
                                      "PAYOUTDESK_MAIL_DOMAIN": DOMAIN, **env})
        ctx = IntakeContext.build(settings, engine)
        server = smtp_server.start(ctx, "127.0.0.1", 0)
        started.append(server)
        return ctx, server

    yield start
    for s in started:
        s.stop()


class Relay:
    """A stand-in for the relay: an aiosmtpd server keeping what it receives."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], EmailMessage]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        msg = BytesParser(policy=policy.default).parsebytes(envelope.original_content or b"")
        assert isinstance(msg, EmailMessage)
        self.received.append((str(envelope.mail_from), list(envelope.rcpt_tos), msg))
        return "250 OK"


@pytest.fixture
def relay() -> Iterator[tuple[Relay, int]]:
    keeper = Relay()
    port = free_port()
    controller = Controller(keeper, hostname="127.0.0.1", port=port)
    controller.start()
    yield keeper, port
    controller.stop()


def address(w: World, upper: bool = False) -> str:
    with db.read(w.engine) as conn:
        campaign = repo.campaign(conn, w.campaign_id)
    assert campaign is not None
    out = f"returns-{campaign.returns_token}@{DOMAIN}"
    return out.upper() if upper else out


def returns_csv(*rows: tuple[int, str, str]) -> bytes:
    return ("ActionId,Amount,Reason\r\n" + "".join(f"{a},{amount},{reason}\r\n" for a, amount, reason in rows)).encode()


def mail(sender: str, to: str | list[str], files: Sequence[tuple[str, bytes]] = (), *, subject: str = "Returns",
         headers: dict[str, str] | None = None, body: str = "Our returns.") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join([to] if isinstance(to, str) else to)
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{time.monotonic_ns()}@brand.test>"
    for k, v in (headers or {}).items():
        msg[k] = v
    msg.set_content(body)
    for name, data in files:
        maintype, subtype = ("image", "png") if name.endswith(".png") else ("text", "csv")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg


def send(port: int, msg: EmailMessage, sender: str, to: list[str] | None = None) -> dict[str, Any]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        return smtp.send_message(msg, from_addr=sender, to_addrs=to)  # None: the To header's addresses


def amount(w: World, action_id: int) -> str:
    with db.read(w.engine) as conn:
        return str(ledger.get_action(conn, w.account_id, action_id)["amount"])


def latest_runs(w: World) -> list[dict[str, Any]]:
    with db.read(w.engine) as conn:
        return runs.recent(conn, w.account_id, campaign_id=w.campaign_id, channel="email")


def submission_count(w: World) -> int:
    with db.read(w.engine) as conn:
        return int(conn.execute(select(func.count()).select_from(submissions)
                                .where(submissions.c.campaign_id == w.campaign_id)).scalar_one())


def test_mail_from_smtplib_and_swaks_changes_actions(serve: Serve, world: World, tmp_path: Path) -> None:
    a = conversion(world, "O-1", "100.00")
    b = conversion(world, "O-2", "50.00")
    _, server = serve()
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("size")
        refused = smtp.sendmail("brand@shop.test", [address(world, upper=True)],  # case does not matter
                                mail("brand@shop.test", address(world), [("nov.csv", returns_csv(
                                    (a, "80.00", "ORDER_UPDATE")))]).as_bytes(policy=policy.SMTP))
    assert refused == {}
    path = tmp_path / "dec.csv"
    path.write_bytes(returns_csv((b, "0", "ITEM_RETURNED")))
    out = subprocess.run(["swaks", "--server", f"127.0.0.1:{server.port}", "--to", address(world), "--from",
                          "ops@shop.test", "--attach", f"@{path}", "--timeout", "30"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "250 2.0.0 Taken: F-" in out.stdout
    drain(world.engine)
    assert amount(world, a) == "80.00"
    assert amount(world, b) == "0.00"
    with db.read(world.engine) as conn:
        updates = ledger.get_action(conn, world.account_id, b)["updates"]
    assert updates[-1]["channel"] == "email" and updates[-1]["actor"] == "ops@shop.test"
    taken = latest_runs(world)
    assert [(r["outcome"], r["files_taken"], r["trigger"]) for r in taken] == [("ok", 1, "mail"), ("ok", 1, "mail")]
    assert "dec.csv: queued as F-" in taken[0]["detail"]


def test_unknown_recipients_are_refused_at_rcpt(serve: Serve, world: World) -> None:
    _, server = serve()
    token = address(world).split("@")[0]
    unknown = ["returns-00000000000000000000aaaa@" + DOMAIN, f"{token}@elsewhere.test", f"postmaster@{DOMAIN}",
               f"returns-@{DOMAIN}"]
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
        smtp.ehlo()
        smtp.mail("brand@shop.test")
        for rcpt in unknown:
            code, text = smtp.rcpt(rcpt)
            assert code == 550 and text.startswith(b"5.1.1"), (rcpt, code, text)
        smtp.rset()
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            smtp.sendmail("brand@shop.test", unknown[:1], b"Subject: x\r\n\r\nx\r\n")
    assert submission_count(world) == 0


def test_allowed_senders_guard_the_address(serve: Serve, world: World) -> None:
    a = conversion(world, "O-1", "100.00")
    ctx, server = serve()
    with db.write(world.engine) as conn:
        catalog.patch_event_type(conn, world.actor, world.sale, {"returns_processing": {
            "mode": "email", "allowed_senders": ["Brand@Shop.test"]}}, ctx.box)
        catalog.patch_event_type(conn, world.actor, world.lead, {"returns_processing": {
            "mode": "email", "allowed_senders": ["ops@shop.test"]}}, ctx.box)
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
        smtp.ehlo()
        smtp.mail("intruder@evil.test")
        code, text = smtp.rcpt(address(world))
        assert code == 550 and text.startswith(b"5.7.1") and b"not an allowed sender" in text
        smtp.rset()
        smtp.mail("<>")  # an empty return path is no allowed sender either
        assert smtp.rcpt(address(world))[0] == 550
    # both lists together guard the address, compared without regard to case
    send(server.port, mail("brand@shop.test", address(world), [("a.csv", returns_csv((a, "90.00", "ORDER_UPDATE")))]),
         "BRAND@shop.test")
    send(server.port, mail("ops@shop.test", address(world), [("b.csv", returns_csv((a, "70.00", "ORDER_UPDATE")))]),
         "ops@shop.test")
    drain(world.engine)
    assert amount(world, a) == "70.00"
    assert submission_count(world) == 2


def test_mail_without_a_returns_file_is_recorded_and_answered_250(serve: Serve, world: World) -> None:
    _, server = serve()
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
        refused = smtp.send_message(mail("brand@shop.test", address(world), subject="Hello"))
        assert refused == {}
        assert smtp.noop()[0] == 250
    send(server.port, mail("brand@shop.test", address(world), [("logo.png", b"\x89PNG...")]), "brand@shop.test")
    assert submission_count(world) == 0
    second, first = latest_runs(world)
    assert first["outcome"] == "failed" and first["channel"] == "email" and first["files_taken"] == 0
    assert "no returns file" in first["detail"].lower() and "no attachment" in first["detail"]
    assert "brand@shop.test" in first["detail"] and "Hello" in first["detail"]
    assert second["outcome"] == "failed" and "logo.png (image/png)" in second["detail"] and second["skipped"] == 1
    with db.read(world.engine) as conn:
        spell = repo.spell(conn, world.account_id, f"campaign:{world.campaign_id}:email")
    assert spell is not None and spell.failures == 2


def test_oversized_mail_is_refused_with_552(serve: Serve, world: World) -> None:
    _, server = serve(PAYOUTDESK_MAX_FILE_MB="1")
    limit = int(1024 * 1024 * 1.4)
    big = mail("brand@shop.test", address(world), [("big.csv", b"ActionId,Amount,Reason\r\n" + b"1,1.00,X\r\n" *
                                                    140_000)])
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
        smtp.ehlo()
        assert smtp.esmtp_features["size"] == str(limit)
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:  # smtplib announces SIZE= in MAIL FROM
            smtp.send_message(big)
        assert refused.value.smtp_code == 552
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:  # a client that does not say the size
        smtp.ehlo()
        assert smtp.mail("brand@shop.test")[0] == 250
        assert smtp.rcpt(address(world))[0] == 250
        code, _ = smtp.data(big.as_bytes(policy=policy.SMTP))
        assert code == 552
        assert smtp.noop()[0] == 250  # the session goes on
    assert submission_count(world) == 0
    assert latest_runs(world) == []


def test_two_attachments_become_two_submissions(serve: Serve, world: World) -> None:
    a = conversion(world, "O-1", "100.00")
    b = conversion(world, "O-2", "50.00")
    _, server = serve()
    send(server.port, mail("brand@shop.test", address(world), [
        ("one.csv", returns_csv((a, "60.00", "ORDER_UPDATE"))),
        ("two.csv", returns_csv((b, "40.00", "ORDER_UPDATE"))),
        ("notes.png", b"\x89PNG"),
    ]), "brand@shop.test")
    (run,) = latest_runs(world)
    assert run["outcome"] == "ok" and run["files_taken"] == 2 and len(run["submissions"]) == 2
    assert run["skipped"] == 1
    drain(world.engine)
    assert (amount(world, a), amount(world, b)) == ("60.00", "40.00")


def test_mail_to_two_campaigns_gives_each_the_files(serve: Serve, world: World, engine: Engine) -> None:
    other = make_world(engine)
    _, server = serve()
    send(server.port, mail("brand@shop.test", [address(world), address(other)], [
        ("r.csv", returns_csv((1, "1.00", "ORDER_UPDATE")))]), "brand@shop.test")
    assert submission_count(world) == 1 and submission_count(other) == 1


def test_duplicate_attachment_is_recorded_not_applied(serve: Serve, world: World) -> None:
    a = conversion(world, "O-1", "100.00")
    _, server = serve()
    data = returns_csv((a, "90.00", "ORDER_UPDATE"))
    send(server.port, mail("brand@shop.test", address(world), [("r.csv", data)]), "brand@shop.test")
    drain(world.engine)
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
        smtp.ehlo()
        smtp.mail("brand@shop.test")
        smtp.rcpt(address(world))
        again = mail("brand@shop.test", address(world), [("again.csv", data)])
        code, text = smtp.data(again.as_bytes(policy=policy.SMTP))
    assert code == 250 and b"no returns file was taken" in text
    second, _ = latest_runs(world)
    assert second["outcome"] == "ok" and second["duplicates"] == 1 and second["files_taken"] == 0
    assert "duplicate of F-" in second["detail"]
    drain(world.engine)
    assert submission_count(world) == 1
    with db.read(world.engine) as conn:
        updates = ledger.get_action(conn, world.account_id, a)["updates"]
    assert [u["kind"] for u in updates] == ["CREATED", "MODIFIED"]


def test_mail_carrying_another_accounts_action_ids_changes_nothing_there(serve: Serve, world: World,
                                                                         engine: Engine) -> None:
    other = make_world(engine)
    theirs = conversion(other, "O-9", "100.00")
    _, server = serve()
    send(server.port, mail("brand@shop.test", address(world), [("r.csv", returns_csv((theirs, "0", "ITEM_RETURNED")))]),
         "brand@shop.test")
    drain(engine)
    assert amount(other, theirs) == "100.00"
    with db.read(engine) as conn:
        sub = conn.execute(select(submissions).where(submissions.c.campaign_id == world.campaign_id)).one()
    assert sub.status == "COMPLETE" and sub.errors == 1 and sub.applied == 0


def test_results_reply_through_the_relay(serve: Serve, world: World, relay: tuple[Relay, int]) -> None:
    keeper, relay_port = relay
    a = conversion(world, "O-1", "100.00")
    ctx, server = serve(PAYOUTDESK_SMTP_RELAY=f"127.0.0.1:{relay_port}")
    original = mail("Brand <brand@shop.test>", address(world), [("nov.csv", returns_csv(
        (a, "80.00", "ORDER_UPDATE"), (999_999_999, "1.00", "ORDER_UPDATE")))], subject="November returns")
    send(server.port, original, "brand@shop.test")
    (run,) = latest_runs(world)
    sid = int(run["submissions"][0].split("-")[1])
    with db.read(world.engine) as conn:
        registered = repo.delivery(conn, sid)
    assert registered is not None and registered.channel == "email"
    assert keeper.received == []
    drain(world.engine)
    deliveries.deliver_due(ctx, account_id=world.account_id)
    (sender, rcpts, reply), = keeper.received
    assert rcpts == ["brand@shop.test"] and sender == ctx.settings.sender
    assert reply["In-Reply-To"] == original["Message-ID"] and reply["Auto-Submitted"] == "auto-replied"
    assert reply["Subject"].startswith("Re: November returns")
    body = reply.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "1 applied, 0 unchanged, 1 errors" in text and "Payout change: -2.00 USD" in text
    (attachment,) = list(reply.iter_attachments())
    assert attachment.get_filename() == "result_nov.csv"
    assert attachment.get_content_type() == "text/csv" and attachment.get_content_charset() == "utf-8"
    payload = attachment.get_payload(decode=True)
    assert isinstance(payload, bytes)
    lines = payload.decode("utf-8-sig").splitlines()
    assert lines[0].startswith("Row,Outcome,ActionId")
    assert lines[1].startswith(f"1,applied,{a},100.00,80.00") and lines[2].startswith("2,error")
    with db.read(world.engine) as conn:
        done = repo.delivery(conn, sid)
        sub_row = conn.execute(select(submissions).where(submissions.c.id == sid)).one()
    assert done is not None and done.delivered_at is not None
    # a large result file is mailed gzip-compressed, a huge one not at all
    target = {"to": "brand@shop.test", "message_id": None, "subject": ""}
    packed_size = len(gzip.compress(payload, mtime=0))
    assert packed_size < len(payload)
    with pytest.MonkeyPatch.context() as mp:  # a limit between the packed and the plain size: packed
        mp.setattr(mail_intake, "MAX_REPLY_ATTACHMENT", (packed_size + len(payload)) // 2)
        (packed,) = list(mail_intake.results_message(ctx, sub_row, target).iter_attachments())
        assert packed.get_filename() == "result_nov.csv.gz"
        gz = packed.get_payload(decode=True)
        assert isinstance(gz, bytes) and gzip.decompress(gz) == payload
        mp.setattr(mail_intake, "MAX_REPLY_ATTACHMENT", 20)
        alone = mail_intake.results_message(ctx, sub_row, target)
        assert list(alone.iter_attachments()) == []
        body = alone.get_body(("plain",))
        assert body is not None and "too large to mail" in body.get_content()

    # a mail without a returns file is answered at once, not through a delivery
    keeper.received.clear()
    send(server.port, mail("brand@shop.test", address(world), [("logo.png", b"\x89PNG")], subject="Hi"),
         "brand@shop.test")
    (_, rcpts, explained), = keeper.received
    assert rcpts == ["brand@shop.test"] and explained["Subject"] == "Re: Hi"
    body = explained.get_body(("plain",))
    assert body is not None and "logo.png" in body.get_content() and "took no returns file" in body.get_content()

    # no reply to an automatic mail or to an empty return path: no mail loops
    keeper.received.clear()
    b = conversion(world, "O-2", "50.00")
    send(server.port, mail("robot@shop.test", address(world), [("auto.csv", returns_csv((b, "40.00", "ORDER_UPDATE")))],
                           headers={"Auto-Submitted": "auto-generated"}), "robot@shop.test")
    send(server.port, mail("bounce@shop.test", address(world), [("x.png", b"\x89PNG")]), "<>")
    send(server.port, mail("robot@shop.test", address(world), [("y.png", b"\x89PNG")],
                           headers={"Auto-Submitted": "auto-replied"}), "robot@shop.test")
    auto_run = latest_runs(world)[2]
    assert auto_run["files_taken"] == 1
    with db.read(world.engine) as conn:
        assert repo.delivery(conn, int(auto_run["submissions"][0].split("-")[1])) is None
    drain(world.engine)
    deliveries.deliver_due(ctx, account_id=world.account_id)
    assert keeper.received == []


def test_bound_log_busy_port_and_quick_stop(serve: Serve, world: World) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger = logging.getLogger("payoutdesk.intake")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        _, server = serve()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    bound = [getattr(r, "pd_fields", {}) for r in records if getattr(r, "pd_fields", {}).get("event") == "bound"]
    assert bound == [{"event": "bound", "server": "smtp", "address": "127.0.0.1", "port": server.port}]
    assert server.name == "smtp" and server.port > 0
    with pytest.raises(net.BindFailed, match="in use"):
        smtp_server.start(IntakeContext.build(server.ctx.settings, world.engine), "127.0.0.1", server.port)
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=5)  # a session in flight
    assert idle.recv(200).startswith(b"220")
    began = time.monotonic()
    server.stop()
    assert time.monotonic() - began < 5
    idle.settimeout(5)
    assert idle.recv(200) == b""  # its session was ended
    idle.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


def test_attachments_are_decoded_in_pieces_of_one_mebibyte() -> None:
    data = bytes(range(256)) * 10_000 + b"tail"  # 2.44 MiB
    msg = mail("brand@shop.test", "returns-x@" + DOMAIN, [("big.csv", data), ("small.txt", b"ActionId\r\n1\r\n")])
    parsed = mail_intake.parse(msg.as_bytes(policy=policy.SMTP))
    assert [a.name for a in parsed.returns_files] == ["big.csv", "small.txt"]
    pieces = list(parsed.returns_files[0].pieces())
    assert [len(p) for p in pieces] == [mail_intake.PIECE, mail_intake.PIECE, len(data) - 2 * mail_intake.PIECE]
    assert b"".join(pieces) == data
    assert b"".join(parsed.returns_files[1].pieces()) == b"ActionId\r\n1\r\n"


def test_an_attachment_that_does_not_decode_is_refused_and_recorded(serve: Serve, world: World) -> None:
    _, server = serve()
    raw = (f"From: brand@shop.test\r\nTo: {address(world)}\r\nSubject: broken\r\nMIME-Version: 1.0\r\n"
           "Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
           "--XX\r\nContent-Type: text/csv\r\nContent-Disposition: attachment; filename=\"r.csv\"\r\n"
           "Content-Transfer-Encoding: base64\r\n\r\nQWN0aW9uSWQ=\r\nQ\r\n--XX--\r\n")
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
        smtp.sendmail("brand@shop.test", [address(world)], raw.encode())
    (run,) = latest_runs(world)
    assert run["outcome"] == "failed" and "r.csv" in run["detail"] and "could not be decoded" in run["detail"]
    assert submission_count(world) == 0


def test_a_slow_mail_does_not_hold_up_other_sessions(serve: Serve, world: World,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _, server = serve()
    entered, release = threading.Event(), threading.Event()
    real = mail_intake.take_mail

    def slow_first(ctx: IntakeContext, sender: str, rcpts: list[str], content: bytes) -> mail_intake.MailOutcome:
        if sender == "slow@shop.test":
            entered.set()
            assert release.wait(20)
        return real(ctx, sender, rcpts, content)

    monkeypatch.setattr(mail_intake, "take_mail", slow_first)
    slow = threading.Thread(target=send, args=(server.port, mail("slow@shop.test", address(world), [
        ("slow.csv", returns_csv((1, "1.00", "ORDER_UPDATE")))]), "slow@shop.test"))
    slow.start()
    try:
        assert entered.wait(10)
        began = time.monotonic()
        send(server.port, mail("fast@shop.test", address(world), [("fast.csv", returns_csv(
            (2, "1.00", "ORDER_UPDATE")))]), "fast@shop.test")
        assert time.monotonic() - began < 5
        assert submission_count(world) == 1
    finally:
        release.set()
        slow.join(20)
    assert submission_count(world) == 2


def test_too_many_mails_at_once_are_asked_to_come_again(serve: Serve, world: World,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _, server = serve()
    monkeypatch.setattr(smtp_server, "MAX_RECEIVING", 1)
    entered, release = threading.Event(), threading.Event()
    real = mail_intake.take_mail

    def slow(ctx: IntakeContext, sender: str, rcpts: list[str], content: bytes) -> mail_intake.MailOutcome:
        entered.set()
        assert release.wait(20)
        return real(ctx, sender, rcpts, content)

    monkeypatch.setattr(mail_intake, "take_mail", slow)
    first = threading.Thread(target=send, args=(server.port, mail("a@shop.test", address(world), [
        ("a.csv", returns_csv((1, "1.00", "ORDER_UPDATE")))]), "a@shop.test"))
    first.start()
    try:
        assert entered.wait(10)
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
            smtp.ehlo()
            assert smtp.mail("b@shop.test")[0] == 250
            assert smtp.rcpt(address(world))[0] == 250  # recipients are still checked
            code, text = smtp.docmd("DATA")
            assert code == 451 and b"try again later" in text
    finally:
        release.set()
        first.join(20)
    assert submission_count(world) == 1


def test_the_idle_timeout_counts_from_the_last_bytes_received(serve: Serve, world: World,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smtp_server, "SESSION_TIMEOUT_SECONDS", 1)
    _, server = serve()
    a = conversion(world, "O-1", "100.00")
    raw = mail("brand@shop.test", address(world), [("slow.csv", returns_csv((a, "10.00", "ORDER_UPDATE")))]
               ).as_bytes(policy=policy.SMTP)
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
        smtp.ehlo()
        smtp.mail("brand@shop.test")
        smtp.rcpt(address(world))
        assert smtp.docmd("DATA")[0] == 354
        lines = raw.split(b"\r\n")
        began = time.monotonic()
        for i, line in enumerate(lines):  # a slow sender: 2.5 s in all, never 1 s without a byte
            smtp.send(line + b"\r\n")
            if i % max(1, len(lines) // 8) == 0:
                time.sleep(0.3)
        assert time.monotonic() - began > 1.5
        smtp.send(b".\r\n")
        code, text = smtp.getreply()
        assert code == 250 and b"Taken: F-" in text
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    assert idle.recv(200).startswith(b"220")
    time.sleep(1.5)
    assert idle.recv(200) == b""  # an idle session still times out: closed
    idle.close()


def spool_files(ctx: IntakeContext) -> list[Path]:
    return sorted(smtp_server.spool_dir(ctx.settings.data_dir).iterdir())


def test_an_oversized_mail_is_refused_at_once_and_the_session_goes_on(serve: Serve, world: World) -> None:
    a = conversion(world, "O-1", "100.00")
    ctx, server = serve(PAYOUTDESK_MAX_FILE_MB="1")
    big = mail("brand@shop.test", address(world), [("big.csv", b"1,1.00,X\r\n" * 300_000)])
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
        smtp.ehlo()
        assert smtp.mail("brand@shop.test")[0] == 250  # no SIZE= said: refused as it arrives
        assert smtp.rcpt(address(world))[0] == 250
        assert smtp.docmd("DATA")[0] == 354
        raw = big.as_bytes(policy=policy.SMTP)
        smtp.send(raw[:2 * 1024 * 1024])  # past the limit of 1.4 MiB: the 552 comes before the end
        assert smtp.sock is not None
        smtp.sock.settimeout(10)
        code, text = smtp.getreply()
        assert code == 552 and b"larger than the limit" in text
        smtp.send(raw[2 * 1024 * 1024:] + b".\r\n")  # the rest is read and dropped up to the end marker
        assert spool_files(ctx) == []
        assert smtp.noop()[0] == 250  # in step: the next reply is the NOOP's
        second = mail("brand@shop.test", address(world), [("r.csv", returns_csv((a, "10.00", "ORDER_UPDATE")))])
        assert smtp.sendmail("brand@shop.test", [address(world)], second.as_bytes(policy=policy.SMTP)) == {}
    (run,) = latest_runs(world)
    assert run["files_taken"] == 1 and run["submissions"]
    assert spool_files(ctx) == []
    mode = smtp_server.spool_dir(ctx.settings.data_dir).stat().st_mode & 0o777
    assert mode == 0o700


def test_data_in_odd_pieces_with_dot_lines_and_a_command_after_the_end(serve: Serve, world: World) -> None:
    ctx, server = serve()
    csv = b"ActionId,Amount,Reason\r\n.1,2.00,X\r\n..\r\n.\r\n1,1.00,ORDER_UPDATE\r\n"  # lines that start with dots
    raw = (f"From: brand@shop.test\r\nTo: {address(world)}\r\nSubject: dots\r\nContent-Type: text/csv\r\n"
           "Content-Disposition: attachment; filename=\"dots.csv\"\r\n\r\n").encode() + csv
    wire = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in raw.split(b"\r\n"))
    wire += b".\r\nNOOP\r\n"  # the end marker and the next command in one packet
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"220")
        s.sendall(b"HELO brand.test\r\n")
        assert f.readline().startswith(b"250")
        s.sendall(f"MAIL FROM:<brand@shop.test>\r\nRCPT TO:<{address(world)}>\r\nDATA\r\n".encode())
        assert f.readline().startswith(b"250")
        assert f.readline().startswith(b"250")
        assert f.readline().startswith(b"354")
        for i in range(0, len(wire), 3):  # three bytes at a time: every marker and dot split
            s.sendall(wire[i:i + 3])
            time.sleep(0.002)
        assert f.readline().startswith(b"250 2.0.0 Taken: F-")
        assert f.readline().startswith(b"250")  # the NOOP, not lost
        s.sendall(b"QUIT\r\n")
        assert f.readline().startswith(b"221")
    with db.read(world.engine) as conn:
        sub = conn.execute(select(submissions).where(submissions.c.campaign_id == world.campaign_id)).one()
    assert sub.sha256 == hashlib.sha256(csv).hexdigest() and sub.file_name == "dots.csv"
    assert spool_files(ctx) == []


def test_a_spool_file_left_by_a_dead_process_is_deleted_at_start(serve: Serve, tmp_path: Path) -> None:
    folder = smtp_server.spool_dir(tmp_path)
    old, recent = folder / "mail-old", folder / "mail-recent"
    old.write_bytes(b"x")
    recent.write_bytes(b"y")
    os.utime(old, (time.time() - 2 * 86_400,) * 2)
    serve()
    assert sorted(folder.iterdir()) == [recent]  # another process's mail in flight stays


def test_a_full_disk_is_answered_452_and_the_session_goes_on(serve: Serve, world: World,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, server = serve()

    class Full(io.FileIO):
        def write(self, data: Any) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    real = smtp_server.open_spool
    monkeypatch.setattr(smtp_server, "open_spool", lambda fd: Full(fd, "wb"))
    raw = mail("brand@shop.test", address(world), [("r.csv", returns_csv((1, "1.00", "ORDER_UPDATE")))]
               ).as_bytes(policy=policy.SMTP)
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
        smtp.ehlo()
        smtp.mail("brand@shop.test")
        smtp.rcpt(address(world))
        code, text = smtp.data(raw)
        assert code == 452 and b"try again later" in text
        assert spool_files(ctx) == []
        monkeypatch.setattr(smtp_server, "open_spool", real)
        assert smtp.noop()[0] == 250
        assert smtp.sendmail("brand@shop.test", [address(world)], raw) == {}
    assert submission_count(world) == 1
