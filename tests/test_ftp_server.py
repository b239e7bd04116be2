"""Our FTP server (intake.ftp_server): real servers and clients over 127.0.0.1 (ftplib, curl), on both
databases: uploads become submissions, results come back in results/, nothing leaves the home folder,
one campaign's login touches nothing of another account, FTPS, the refusals and the login throttle."""

from __future__ import annotations

import dataclasses
import ftplib
import io
import logging
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from payoutdesk.catalog import service as catalog
from payoutdesk.config import Settings
from payoutdesk.intake import runs
from payoutdesk.intake.common import IntakeContext
from payoutdesk.intake.ftp_fs import normalise
from payoutdesk.intake.ftp_server import FtpServer, LoginThrottle, start
from payoutdesk.kit import db
from payoutdesk.kit.net import BindFailed
from payoutdesk.models import stored_files, submissions
from payoutdesk.submissions.result_file import csv_chunks
from tests.helpers import World, client_for, conversion, drain, make_world, self_signed

PASSWORD = "s3cret-ftp-password"
CURL = "/usr/bin/curl"


@dataclasses.dataclass
class Site:
    world: World
    user: str
    password: str
    port: int
    ctx: IntakeContext
    server: FtpServer
    data_dir: Path

    def login(self, user: str | None = None, password: str | None = None) -> ftplib.FTP:
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", self.port, timeout=10)
        ftp.login(user or self.user, password or self.password)
        return ftp

    @property
    def spool(self) -> Path:
        return self.data_dir / "ftp-spool"


def settings_for(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"PAYOUTDESK_DATA_DIR": str(tmp_path), "PAYOUTDESK_SECRET_KEY": "test-secret", **env})


def ftp_login_of(w: World, password: str = PASSWORD) -> str:
    with db.write(w.engine) as conn:
        return catalog.set_ftp_password(conn, w.actor, w.campaign_id, password)


@pytest.fixture
def throttle() -> LoginThrottle:
    return LoginThrottle(max_failures=4, delay_step=0.01, max_delay=0.05, block=60)


def serve(engine: Engine, tmp_path: Path, throttle: LoginThrottle, w: World | None = None, **env: str) -> Site:
    w = w or make_world(engine)
    user = ftp_login_of(w)
    ctx = IntakeContext.build(settings_for(tmp_path, **env), engine)
    server = start(ctx, "127.0.0.1", 0, throttle=throttle)
    return Site(w, user, PASSWORD, server.port, ctx, server, tmp_path)


@pytest.fixture
def site(engine: Engine, tmp_path: Path, throttle: LoginThrottle) -> Iterator[Site]:
    s = serve(engine, tmp_path, throttle)
    try:
        yield s
    finally:
        s.server.stop()


def returns_csv(*rows: tuple[int, str, str]) -> bytes:
    return ("ActionId,Amount,Reason\r\n" + "".join(f"{a},{amount},{reason}\r\n" for a, amount, reason in rows)).encode()


def store(ftp: ftplib.FTP, name: str, data: bytes) -> str:
    return ftp.storbinary(f"STOR {name}", io.BytesIO(data))


def fetch(ftp: ftplib.FTP, path: str) -> bytes:
    out = io.BytesIO()
    ftp.retrbinary(f"RETR {path}", out.write)
    return out.getvalue()


def amount_of(engine: Engine, tmp_path: Path, w: World, action_id: int) -> str:
    r = client_for(engine, tmp_path).get(f"/api/v1/actions/{action_id}", headers=w.auth)
    assert r.status_code == 200, r.text
    return str(r.json()["amount"])


def ftp_runs(site: Site) -> list[dict[str, Any]]:
    with db.read(site.ctx.engine) as conn:
        return runs.recent(conn, site.world.account_id, campaign_id=site.world.campaign_id, channel="ftp")


def subs_of(engine: Engine, w: World) -> list[Any]:
    with db.read(engine) as conn:
        return list(conn.execute(select(submissions).where(submissions.c.account_id == w.account_id)
                                 .order_by(submissions.c.id)))


def stored_count(engine: Engine) -> int:
    with db.read(engine) as conn:
        return int(conn.execute(select(func.count()).select_from(stored_files)).scalar_one())


def expected_result(engine: Engine, label: str) -> bytes:
    return b"".join(csv_chunks(engine, int(label.split("-")[1])))


# --- uploads and results ----------------------------------------------------------------------------


def test_ftplib_upload_is_queued_applied_and_its_result_downloaded(site: Site, engine: Engine, tmp_path: Path) -> None:
    w = site.world
    a = conversion(w, "O-1", "100.00")
    b = conversion(w, "O-2", "50.00")
    with site.login() as ftp:
        assert ftp.pwd() == "/"
        assert ftp.nlst() == ["results"]
        reply = store(ftp, "returns.csv", returns_csv((a, "80.00", "ORDER_UPDATE"), (b, "0", "CONS_FRAUD")))
        assert reply.startswith("226") and "queued as F-" in reply, reply
        label = reply.rsplit(" ", 1)[1].rstrip(".")
        assert ftp.nlst("results") == []  # not done yet: no result to show
    (sub,) = subs_of(engine, w)
    assert (sub.channel, sub.file_name, sub.actor, f"F-{sub.id}") == ("ftp", "returns.csv", site.user, label)
    drain(engine)
    assert amount_of(engine, tmp_path, w, a) == "80.00"
    assert amount_of(engine, tmp_path, w, b) == "0.00"
    with site.login() as ftp:
        ftp.cwd("results")
        assert ftp.pwd() == "/results"
        assert ftp.nlst() == ["result_returns.csv"]
        listing: list[str] = []
        ftp.retrlines("LIST", listing.append)
        assert len(listing) == 1 and listing[0].startswith("-r--r--r--") and listing[0].endswith(" result_returns.csv")
        facts = dict(ftp.mlsd())
        assert facts["result_returns.csv"]["type"] == "file"
        got = fetch(ftp, "result_returns.csv")
        assert got == fetch(ftp, "/results/result_returns.csv")
    assert got == expected_result(engine, label)
    lines = got.decode("utf-8-sig").splitlines()
    assert lines[0].startswith("Row,Outcome,ActionId") and len(lines) == 3
    assert lines[1].startswith(f"1,applied,{a},100.00,80.00")
    (run,) = ftp_runs(site)
    assert (run["channel"], run["trigger"], run["outcome"], run["files_taken"], run["submissions"]) == (
        "ftp", "upload", "ok", 1, [label])
    assert list(site.spool.iterdir()) == []  # the spool file went once the upload was taken


def test_curl_upload_and_download(site: Site, engine: Engine, tmp_path: Path) -> None:
    w = site.world
    a = conversion(w, "O-1", "100.00")
    path = tmp_path / "daily returns.csv"
    path.write_bytes(returns_csv((a, "70.00", "ORDER_UPDATE"), (999_999_999, "0", "CONS_FRAUD")))
    url = f"ftp://{site.user}:{site.password}@127.0.0.1:{site.port}/"
    done = subprocess.run([CURL, "-sS", "--max-time", "60", "-T", str(path), url], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    (sub,) = subs_of(engine, w)
    assert sub.file_name == "daily returns.csv" and sub.channel == "ftp"
    drain(engine)
    assert amount_of(engine, tmp_path, w, a) == "70.00"
    listed = subprocess.run([CURL, "-sS", "--max-time", "60", "-l", url + "results/"], capture_output=True, check=False)
    assert listed.returncode == 0 and listed.stdout.split() == [b"result_daily", b"returns.csv"], listed
    got = subprocess.run([CURL, "-sS", "--max-time", "60", url + "results/result_daily%20returns.csv"],
                         capture_output=True, check=False)
    assert got.returncode == 0, got.stderr
    assert got.stdout == expected_result(engine, f"F-{sub.id}")
    assert b"\r\n2,error," in got.stdout and b"unknown_action" in got.stdout  # the row naming no action here


def test_duplicate_upload_is_refused_with_the_reason(site: Site, engine: Engine) -> None:
    a = conversion(site.world, "O-1", "100.00")
    data = returns_csv((a, "90.00", "ORDER_UPDATE"))
    with site.login() as ftp:
        first = store(ftp, "r.csv", data)
        assert first.startswith("226")
        with pytest.raises(ftplib.error_perm, match=r"^550 This file was already submitted for campaign") as exc:
            store(ftp, "again.csv", data)
        assert first.rsplit(" ", 1)[1].rstrip(".") in str(exc.value)
        assert ftp.voidcmd("NOOP").startswith("200")  # the session goes on
    assert len(subs_of(engine, site.world)) == 1
    dup, ok = ftp_runs(site)
    assert (dup["outcome"], dup["duplicates"], dup["files_taken"]) == ("ok", 1, 0)
    assert "already submitted" in dup["detail"] and ok["files_taken"] == 1
    assert list(site.spool.iterdir()) == []


def test_empty_upload_is_refused(site: Site, engine: Engine) -> None:
    with site.login() as ftp, pytest.raises(ftplib.error_perm, match=r"^550 The file is empty"):
        store(ftp, "empty.csv", b"")
    assert subs_of(engine, site.world) == []
    (run,) = ftp_runs(site)
    assert run["outcome"] == "failed" and "empty" in run["detail"]


def test_over_size_upload_is_stopped_while_it_arrives(engine: Engine, tmp_path: Path, throttle: LoginThrottle) -> None:
    site = serve(engine, tmp_path, throttle, PAYOUTDESK_MAX_FILE_MB="1")
    try:
        before = stored_count(engine)
        data = b"ActionId,Amount,Reason\r\n" + b"1,1.00,ORDER_UPDATE\r\n" * (2 * 1024 * 1024 // 20)
        assert len(data) > 2 * 1024 * 1024
        with site.login() as ftp:
            with pytest.raises((ftplib.error_perm, OSError)) as exc:
                store(ftp, "big.csv", data)
            if isinstance(exc.value, ftplib.error_perm):
                assert str(exc.value).startswith("552 The file is larger than the limit of 1 MB")
            else:  # the client was still sending when the server closed: the reply waits on the control line
                assert _last_reply(ftp).startswith("552")
        assert subs_of(engine, site.world) == []
        assert stored_count(engine) == before
        (run,) = ftp_runs(site)
        assert run["outcome"] == "failed" and "larger than the limit" in run["detail"]
        assert list(site.spool.iterdir()) == []
    finally:
        site.server.stop()


def test_upload_cut_off_half_way_queues_nothing(site: Site, engine: Engine) -> None:
    before = stored_count(engine)
    ftp = site.login()
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("STOR cut.csv")
    conn.sendall(b"ActionId,Amount,Reason\r\n" + b"1,1.00,ORDER_UPDATE\r\n" * 20_000)
    time.sleep(0.2)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()  # a reset, as when the network or the sender dies: not the clean end of a file
    reply = _last_reply(ftp)
    assert reply.startswith("426"), reply
    assert ftp.voidcmd("NOOP").startswith("200")
    ftp.quit()
    assert subs_of(engine, site.world) == []
    assert stored_count(engine) == before
    (run,) = ftp_runs(site)
    assert run["outcome"] == "failed" and "cut off" in run["detail"]
    assert list(site.spool.iterdir()) == []


def _last_reply(ftp: ftplib.FTP) -> str:
    try:
        return ftp.getresp()
    except ftplib.Error as exc:
        return str(exc)


def test_abort_and_a_lost_control_connection_queue_nothing(site: Site, engine: Engine) -> None:
    ftp = site.login()
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("STOR aborted.csv")
    conn.sendall(b"ActionId,Amount,Reason\r\n1,1.00,ORDER_UPDATE\r\n")
    time.sleep(0.2)
    ftp.sock.sendall(b"ABOR\r\n")
    assert _last_reply(ftp).startswith("426")
    assert _last_reply(ftp).startswith("226")
    conn.close()
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("STOR lost.csv")
    conn.sendall(b"ActionId,Amount,Reason\r\n1,1.00,ORDER_UPDATE\r\n")
    time.sleep(0.2)
    ftp.close()  # the control connection goes first
    time.sleep(0.5)
    conn.close()
    deadline = time.monotonic() + 5
    while len(ftp_runs(site)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert subs_of(engine, site.world) == []
    assert [r["outcome"] for r in ftp_runs(site)] == ["failed", "failed"]
    assert list(site.spool.iterdir()) == []


# --- logins -----------------------------------------------------------------------------------------


def test_wrong_password_then_the_address_is_refused(site: Site) -> None:
    for _ in range(2):
        with pytest.raises(ftplib.error_perm, match=r"^530"):
            site.login(password="wrong-password")
    with pytest.raises(ftplib.error_perm, match=r"^530"):
        site.login(user="ftp-nosuchuser")
    with site.login() as ftp:  # not refused yet: three failures of four
        ftp.voidcmd("NOOP")
    with pytest.raises(ftplib.error_temp, match=r"^421 Too many failed logins"):
        site.login(password="wrong-password")  # the fourth
    with pytest.raises(ftplib.error_temp, match=r"^421 Too many failed logins"):
        site.login()  # the right password does not help for a while
    ftp = ftplib.FTP()
    with pytest.raises(ftplib.error_temp, match=r"^421"):
        ftp.connect("127.0.0.1", site.port, timeout=10)  # refused at the greeting


def test_login_throttle_delays_grow_then_the_address_is_refused_for_a_while() -> None:
    t = LoginThrottle()
    delays = [t.failed("10.0.0.1", now=100.0 + i) for i in range(9)]
    assert [d for d, _ in delays] == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5]
    assert not any(blocked for _, blocked in delays) and t.blocked_for("10.0.0.1", now=110.0) == 0
    assert t.failed("10.0.0.1", now=109.0) == (0.0, True)
    assert t.blocked_for("10.0.0.1", now=110.0) == pytest.approx(899.0)
    assert t.blocked_for("10.0.0.2", now=110.0) == 0  # per address
    assert t.blocked_for("10.0.0.1", now=109.0 + 901) == 0
    old = LoginThrottle()
    for i in range(9):
        old.failed("10.0.0.3", now=float(i))
    assert old.failed("10.0.0.3", now=700.0) == (0.5, False)  # failures older than 10 minutes are forgotten


def test_tls_required_refuses_plain_logins_and_ftps_uploads_work(engine: Engine, tmp_path: Path,
                                                                  throttle: LoginThrottle) -> None:
    cert = self_signed(tmp_path / "tls").combined
    site = serve(engine, tmp_path, throttle, PAYOUTDESK_FTP_TLS_CERT=str(cert), PAYOUTDESK_FTP_TLS_REQUIRED="true")
    try:
        with pytest.raises(ftplib.error_perm, match=r"^530 FTPS is required"):
            site.login()
        a = conversion(site.world, "O-1", "100.00")
        context = ssl.create_default_context(cafile=str(cert))
        with ftplib.FTP_TLS(context=context) as ftps:
            ftps.connect("127.0.0.1", site.port, timeout=10)
            ftps.login(site.user, site.password)  # AUTH TLS first
            with pytest.raises(ftplib.error_perm, match=r"^550 SSL/TLS required on the data channel"):
                ftps.nlst()
            ftps.prot_p()
            reply = ftps.storbinary("STOR tls.csv", io.BytesIO(returns_csv((a, "10.00", "ORDER_UPDATE"))))
            assert reply.startswith("226") and "queued as F-" in reply
            drain(engine)
            assert amount_of(engine, tmp_path, site.world, a) == "10.00"
            out = io.BytesIO()
            ftps.retrbinary("RETR results/result_tls.csv", out.write)
            assert b",applied," in out.getvalue()
    finally:
        site.server.stop()


# --- the home folder --------------------------------------------------------------------------------


def test_nothing_leaves_the_home_folder(site: Site, tmp_path: Path) -> None:
    outside = tmp_path.parent
    before = sorted(p.name for p in outside.iterdir())
    with site.login() as ftp:
        for path in ("..", "../..", "/..", "/etc", "results/../..", "nowhere"):
            with pytest.raises(ftplib.error_perm, match=r"^550"):
                ftp.cwd(path)
        assert ftp.pwd() == "/"
        for name in ("../x.csv", "../../tmp/x.csv", "/tmp/x.csv", "/etc/x.csv", "results/x.csv", "results",
                     "..\\x.csv", "nowhere/x.csv"):
            with pytest.raises(ftplib.error_perm, match=r"^550"):
                store(ftp, name, b"ActionId,Amount,Reason\r\n")
        for path in ("/etc/passwd", "../../../../etc/passwd", "results/../../etc/passwd", str(tmp_path / "x")):
            with pytest.raises(ftplib.error_perm, match=r"^550"):
                fetch(ftp, path)
            with pytest.raises(ftplib.error_perm, match=r"^550"):
                ftp.size(path)
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.nlst("..")
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.retrlines("LIST /etc", lambda _: None)
        refusals = {
            "MKD new": "Folders cannot be made", "RMD results": "Folders cannot be removed",
            "DELE results/x.csv": "cannot be deleted", "RNFR results": "cannot be renamed",
            "RNTO x.csv": "cannot be renamed", "SITE CHMOD 777 results": "Modes cannot be changed",
            "STOU": "STOU is refused", "MFMT 20260101000000 results": "Times cannot be changed",
        }
        for command, why in refusals.items():
            with pytest.raises(ftplib.error_perm, match=rf"^550 .*{why}"):
                ftp.sendcmd(command)
        with pytest.raises(ftplib.error_perm, match=r"^550 Appending"):
            ftp.storbinary("APPE x.csv", io.BytesIO(b"a"))
        ftp.voidcmd("TYPE I")
        ftp.sendcmd("REST 10")
        with pytest.raises(ftplib.error_perm, match=r"^550 Resumed uploads \(REST\) are refused"):
            ftp.storbinary("STOR x.csv", io.BytesIO(b"a"))
    assert sorted(p.name for p in outside.iterdir()) == before
    assert not Path("/x.csv").exists() and not Path("/tmp/x.csv").exists() and not Path("/etc/x.csv").exists()
    assert list(site.spool.iterdir()) == []
    assert ftp_runs(site) == []  # nothing was uploaded


def test_paths_are_normalised_inside_the_virtual_root() -> None:
    assert normalise("/", "a.csv") == "/a.csv"
    assert normalise("/results", "../a.csv") == "/a.csv"
    assert normalise("/results", "/etc/passwd") == "/etc/passwd"  # inside the virtual root, where nothing is
    assert normalise("/", "./results//x/../y") == "/results/y"
    assert normalise("/", "..") is None and normalise("/results", "../..") is None
    assert normalise("/", "a\\..\\..\\b") is None and normalise("/", "a\x00b") is None


def test_another_accounts_login_touches_nothing_of_this_one(site: Site, engine: Engine, tmp_path: Path,
                                                             throttle: LoginThrottle) -> None:
    mine = site.world
    a = conversion(mine, "O-1", "100.00")
    other = make_world(engine)
    other_user = ftp_login_of(other, "another-password")
    with site.login() as ftp:
        assert store(ftp, "mine.csv", returns_csv((a, "90.00", "ORDER_UPDATE"))).startswith("226")
    drain(engine)
    with site.login(other_user, "another-password") as ftp:
        reply = store(ftp, "theirs.csv", returns_csv((a, "0", "CONS_FRAUD"), (a, "1.00", "ORDER_UPDATE")))
        assert reply.startswith("226")
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            fetch(ftp, "results/result_mine.csv")  # this campaign's results are not there
    drain(engine)
    assert amount_of(engine, tmp_path, mine, a) == "90.00"
    (theirs,) = subs_of(engine, other)
    assert (theirs.status, theirs.applied, theirs.errors) == ("COMPLETE", 0, 2)
    with site.login(other_user, "another-password") as ftp:
        assert ftp.nlst("results") == ["result_theirs.csv"]
    with site.login() as ftp:
        assert ftp.nlst("results") == ["result_mine.csv"]


# --- the campaign's FTP password through the API ----------------------------------------------------


def test_patch_campaign_sets_the_ftp_password(site: Site, engine: Engine, tmp_path: Path) -> None:
    api = client_for(engine, tmp_path)
    w = site.world
    url = f"/api/v1/campaigns/{w.campaign_id}"
    r = api.patch(url, headers=w.auth, json={"ftp_password": "a-new-password", "name": "Renamed"})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Renamed" and r.json()["ftp_username"] == site.user and "ftp_password" not in r.json()
    with site.login(password="a-new-password") as ftp:
        ftp.voidcmd("NOOP")
    with pytest.raises(ftplib.error_perm, match=r"^530"):
        site.login()  # the old password stopped working
    r = api.patch(url, headers=w.auth, json={"ftp_password": "short"})
    assert r.status_code == 422 and "at least 8 characters" in r.text
    r = api.patch(url, headers=w.auth, json={"ftp_password": None})
    assert r.status_code == 422
    other = make_world(engine)
    r = api.patch(url, headers=other.auth, json={"ftp_password": "takeover-password"})
    assert r.status_code == 404
    with site.login(password="a-new-password") as ftp:  # unchanged by the other account
        ftp.voidcmd("NOOP")
    assert api.get(url, headers=w.auth).json()["name"] == "Renamed"


# --- the server itself ------------------------------------------------------------------------------


def test_bound_line_busy_port_and_a_quick_stop(engine: Engine, tmp_path: Path, throttle: LoginThrottle) -> None:
    lines: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record)

    logger = logging.getLogger("payoutdesk.intake.ftp")
    keep = Keep()
    logger.addHandler(keep)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        site = serve(engine, tmp_path, throttle)
    finally:
        logger.removeHandler(keep)
        logger.setLevel(old_level)
    try:
        bound = [r for r in lines if getattr(r, "pd_fields", {}).get("event") == "bound"]
        assert len(bound) == 1 and bound[0].pd_fields == {  # type: ignore[attr-defined]
            "event": "bound", "server": "ftp", "address": "127.0.0.1", "port": site.port}
        with pytest.raises(BindFailed, match=r"in use"):
            start(site.ctx, "127.0.0.1", site.port)
        idle = site.login()  # a session in the middle of nothing
        ftp = site.login()
        ftp.voidcmd("TYPE I")
        conn = ftp.transfercmd("STOR stopping.csv")
        conn.sendall(b"ActionId,Amount,Reason\r\n")
    finally:
        began = time.monotonic()
        site.server.stop()
        took = time.monotonic() - began
    assert took < 5
    conn.close()
    idle.close()
    ftp.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", site.port), timeout=2).close()
    assert subs_of(engine, site.world) == []  # the upload cut off by the stop is not queued
    assert list(site.spool.iterdir()) == []


def test_passive_ports_masquerade_address_and_optional_ftps_with_a_separate_key(
        engine: Engine, tmp_path: Path, throttle: LoginThrottle) -> None:
    from tests.helpers import free_port

    first = free_port()
    made = self_signed(tmp_path / "tls")
    cert, key = made.cert, made.key
    site = serve(engine, tmp_path, throttle, PAYOUTDESK_FTP_PASSIVE_PORTS=f"{first}-{first}",
                 PAYOUTDESK_FTP_MASQUERADE_ADDRESS="203.0.113.7", PAYOUTDESK_FTP_TLS_CERT=str(cert),
                 PAYOUTDESK_FTP_TLS_KEY=str(key))
    try:
        with site.login() as ftp:  # TLS is offered, not required: a plain login works
            host, port = ftplib.parse227(ftp.sendcmd("PASV"))
            assert (host, port) == ("203.0.113.7", first)
            ftp.sendcmd("ABOR")
        with ftplib.FTP_TLS(context=ssl.create_default_context(cafile=str(cert))) as ftps:
            ftps.connect("127.0.0.1", site.port, timeout=10)
            ftps.login(site.user, site.password)
            ftps.prot_p()
            assert ftps.nlst() == ["results"]  # ftplib connects to the control address, the port is the range's
    finally:
        site.server.stop()


def test_a_certificate_that_cannot_be_loaded_stops_the_start(engine: Engine, tmp_path: Path) -> None:
    from tests.helpers import free_port

    port = free_port()
    ctx = IntakeContext.build(settings_for(tmp_path, PAYOUTDESK_FTP_TLS_CERT=str(tmp_path / "missing.pem")), engine)
    with pytest.raises(ValueError, match="PAYOUTDESK_FTP_TLS_CERT"):
        start(ctx, "127.0.0.1", port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # the port was let go


def test_an_upload_being_taken_holds_up_no_other_session_and_its_spool_is_private(
        site: Site, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    import stat
    import threading

    from payoutdesk.intake import ftp_server

    taking, go_on = threading.Event(), threading.Event()
    real_take = ftp_server.take_file

    def slow_take(*args: Any, **kwargs: Any) -> Any:
        taking.set()
        assert go_on.wait(10)
        return real_take(*args, **kwargs)

    monkeypatch.setattr(ftp_server, "take_file", slow_take)
    a = conversion(site.world, "O-1", "100.00")
    replies: list[str] = []

    def upload() -> None:
        with site.login() as ftp:
            replies.append(store(ftp, "slow.csv", returns_csv((a, "95.00", "ORDER_UPDATE"))))

    worker = threading.Thread(target=upload)
    worker.start()
    try:
        assert taking.wait(10)
        (spooled,) = site.spool.iterdir()  # the upload waits in a file only its owner can read
        assert stat.S_IMODE(site.spool.stat().st_mode) == 0o700 and stat.S_IMODE(spooled.stat().st_mode) == 0o600
        began = time.monotonic()
        with site.login() as other:  # another session goes on meanwhile
            assert other.nlst() == ["results"]
        assert time.monotonic() - began < 2
    finally:
        go_on.set()
        worker.join(10)
    assert replies and replies[0].startswith("226")
    assert list(site.spool.iterdir()) == []
