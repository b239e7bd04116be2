"""Pull from the brand's server (intake/pull.py, remote.py, api/intake.py; DESIGN §3): real servers on
127.0.0.1 started here (pyftpdlib for FTP and FTPS, an asyncssh SFTP server, OpenSSH's sshd), both databases.

Each file is taken once (across runs, restarts and two runs at once), kept, deleted or moved as set;
receipt_ and result_ files are ignored and written back; a duplicate content is recorded, not applied; a
server that is down, a refused login or a missing folder fail the run with a sentence for people, lose
nothing, and show in the API's runs; run-now through the API; passwords never shown."""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import json
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
from pyftpdlib.servers import FTPServer
from sqlalchemy import Engine, func, select

from payoutdesk.catalog import service as catalog
from payoutdesk.config import Settings
from payoutdesk.intake import deliveries, pull, pull_repository, remote
from payoutdesk.intake.common import IntakeContext
from payoutdesk.kit import db
from payoutdesk.kit.crypto import SecretBox
from payoutdesk.models import actions, event_types, remote_files, result_deliveries, submissions
from payoutdesk.submissions import service as submissions_service
from payoutdesk.worker import scheduler
from tests.helpers import World, client_for, conversion, drain, free_port, make_world, self_signed

USER = "brand"
PASSWORD = "pw-Secret-4711"
logging.getLogger("pyftpdlib").setLevel(logging.WARNING)
logging.getLogger("asyncssh").setLevel(logging.WARNING)
logging.getLogger("paramiko").setLevel(logging.WARNING)


@pytest.fixture(autouse=True)
def _quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote, "CONNECT_DELAYS", (0.01, 0.02))
    monkeypatch.setattr(remote, "TIMEOUT_SECONDS", 5.0)


# --- the brand's servers ---------------------------------------------------------------------------


@contextmanager
def ftp_server(root: Path, tls: bool, mlsd: bool = True) -> Iterator[int]:
    authorizer = DummyAuthorizer()
    authorizer.add_user(USER, PASSWORD, str(root), perm="elradfmwMT")
    base: Any = TLS_FTPHandler if tls else FTPHandler
    handler: Any = type("BrandFTP", (base,), {"authorizer": authorizer, "timeout": 30, "auth_failed_timeout": 0.1})
    if not mlsd:  # an older server: NLST, SIZE and MDTM only
        handler.proto_cmds = {k: v for k, v in base.proto_cmds.items() if k not in ("MLSD", "MLST")}
    if tls:
        handler.certfile = str(self_signed(root.parent / "tls").combined)
    server = FTPServer(("127.0.0.1", 0), handler)
    port = int(server.address[1])
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            server.serve_forever(timeout=0.05, blocking=False, handle_exit=False)
        server.close_all()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(10)


@contextmanager
def sftp_server(root: Path, authorized_key: str | None = None) -> Iterator[int]:
    """asyncssh's SFTP server, chrooted to ``root``: the password, or ``authorized_key`` (OpenSSH text)."""
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    loop = asyncio.new_event_loop()
    port = free_port()

    class Server(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return True

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, password: str) -> bool:
            return username == USER and password == PASSWORD

    options: dict[str, Any] = {}
    if authorized_key is not None:
        options["authorized_client_keys"] = asyncssh.import_authorized_keys(authorized_key)
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def start() -> None:
        holder["server"] = await asyncssh.create_server(
            Server, "127.0.0.1", port, server_host_keys=[host_key],
            sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=str(root).encode()), **options)
        started.set()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()
        holder["server"].close()
        loop.run_until_complete(holder["server"].wait_closed())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10), "the SFTP server did not start"
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def _openssh_keys() -> tuple[str, str]:
    """(private key in OpenSSH text, public key line) of a new Ed25519 key."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return private, public


def _rsa_pem_keys() -> tuple[str, str]:
    """(private key in PEM text, public key line) of a new RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return private, public


@contextmanager
def openssh_server(tmp: Path, public_key: str) -> Iterator[int]:
    """OpenSSH's sshd -D on a high port: its own host key, ``public_key`` authorized, internal-sftp."""
    os.makedirs("/run/sshd", exist_ok=True)
    host = ed25519.Ed25519PrivateKey.generate()
    host_key = tmp / "ssh_host_ed25519_key"
    host_key.write_bytes(host.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                            serialization.NoEncryption()))
    host_key.chmod(0o600)
    authorized = tmp / "authorized_keys"
    authorized.write_text(public_key + "\n")
    port = free_port()
    config = tmp / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {tmp / 'sshd.pid'}
AuthorizedKeysFile {authorized}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
""")
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "sshd stopped"
            assert time.monotonic() < deadline, "sshd did not start"
            time.sleep(0.05)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@dataclass
class Brand:
    """A brand's server as a test sees it: the folder it serves and the settings that reach it."""

    root: Path  # what the server serves
    folder: str  # the folder to pull, as the server names it
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def inbox(self) -> Path:
        return self.root / self.folder.strip("/")

    def put(self, name: str, data: bytes | str) -> Path:
        path = self.inbox / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def names(self, sub: str = "") -> set[str]:
        where = self.inbox / sub if sub else self.inbox
        return {p.name for p in where.iterdir()} if where.exists() else set()


@contextmanager
def brand_server(protocol: str, tmp: Path) -> Iterator[Brand]:
    root = tmp / "brand"
    (root / "in").mkdir(parents=True)
    common = {"mode": "ftp_pull", "protocol": protocol, "host": "127.0.0.1", "username": USER,
              "password": PASSWORD, "folder": "/in", "pattern": "*.csv", "schedule": {"every_hours": 4}}
    if protocol == "sftp":
        with sftp_server(root) as port:
            yield Brand(root, "/in", {**common, "port": port})
    else:
        with ftp_server(root, tls=protocol == "ftps") as port:
            yield Brand(root, "/in", {**common, "port": port})


# --- the payoutdesk side -----------------------------------------------------------------------------


def context(engine: Engine, tmp: Path, **env: str) -> IntakeContext:
    settings = Settings.from_env({"PAYOUTDESK_DATA_DIR": str(tmp), "PAYOUTDESK_SECRET_KEY": "test-secret", **env})
    return IntakeContext(settings, engine, SecretBox("test-secret"))


def configure(w: World, settings: dict[str, Any], event_type: int | None = None) -> int:
    with db.write(w.engine) as conn:
        catalog.patch_event_type(conn, w.actor, event_type or w.sale, {"returns_processing": settings},
                                 SecretBox("test-secret"))
    return event_type or w.sale


def returns(*rows: tuple[int, str]) -> str:
    return "ActionId,Amount,Reason\n" + "".join(f"{a},{amount},ORDER_UPDATE\n" for a, amount in rows)


def amount_of(w: World, action_id: int) -> int:
    with db.read(w.engine) as conn:
        return int(conn.execute(select(actions.c.amount).where(actions.c.id == action_id)).scalar_one())


def submissions_of(w: World) -> int:
    with db.read(w.engine) as conn:
        return int(conn.execute(select(func.count()).select_from(submissions)
                                .where(submissions.c.campaign_id == w.campaign_id)).scalar_one())


def remote_rows(event_type_id: int) -> Any:
    return select(remote_files).where(remote_files.c.event_type_id == event_type_id).order_by(remote_files.c.id)


# --- taken once, receipts and results ----------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["ftp", "ftps", "sftp"])
def test_each_file_is_taken_once_with_receipts_and_results(engine: Engine, tmp_path: Path, protocol: str) -> None:
    w = make_world(engine)
    a, b = conversion(w, "P-1", "100.00"), conversion(w, "P-2", "50.00")
    with brand_server(protocol, tmp_path) as brand:
        et = configure(w, {**brand.settings, "write_receipts": True, "write_results": True})
        brand.put("nov.csv", returns((a, "80.00")))
        brand.put("dec.csv", returns((b, "40.00")))
        brand.put("notes.txt", "not a returns file")  # not the pattern
        brand.put("result_old.csv", returns((a, "1.00")))  # payoutdesk's own names: ignored
        brand.put("receipt_old.csv", returns((a, "1.00")))
        (brand.inbox / "folder.csv").mkdir()  # a folder: ignored
        ctx = context(engine, tmp_path)
        first = pull.run(ctx, et, "run_now")
        assert first["outcome"] == "ok", first
        assert (first["files_taken"], first["duplicates"], first["skipped"]) == (2, 0, 0)
        assert len(first["submissions"]) == 2 and first["channel"] == "ftp_pull" and first["trigger"] == "run_now"
        assert {"receipt_nov.csv", "receipt_dec.csv", "nov.csv", "dec.csv"} <= brand.names()  # kept
        receipt = (brand.inbox / "receipt_nov.csv").read_text()
        sha = hashlib.sha256((brand.inbox / "nov.csv").read_bytes()).hexdigest()
        assert f"sha256: {sha}" in receipt and "submission: F-" in receipt and "taken_at: " in receipt

        # processed, then the results go back to the brand's folder
        drain(engine)
        assert (amount_of(w, a), amount_of(w, b)) == (8000, 4000)
        assert deliveries.deliver_due(ctx, account_id=w.account_id).startswith("delivered")
        result = (brand.inbox / "result_nov.csv").read_text(encoding="utf-8-sig")
        assert result.splitlines()[0].startswith("Row,Outcome,ActionId") and f"1,applied,{a}" in result
        assert "result_dec.csv" in brand.names()
        with db.read(engine) as conn:
            ids = [int(s.split("-")[1]) for s in first["submissions"]]
            done = conn.execute(select(result_deliveries).where(result_deliveries.c.submission_id.in_(ids))).all()
        assert len(done) == 2 and all(d.delivered_at is not None and d.channel == "ftp_pull" for d in done)

        # again, and after a "restart" (a new context): nothing is taken twice, our own files are ignored
        for again in (ctx, context(engine, tmp_path)):
            run = pull.run(again, et, "schedule")
            assert run["outcome"] == "ok" and run["files_taken"] == 0 and run["submissions"] == [], run
            assert run["skipped"] == 2 and run["trigger"] == "schedule"
        assert submissions_of(w) == 2
        with db.read(engine) as conn:
            rows = conn.execute(remote_rows(et)).all()
        assert sorted(r.name for r in rows) == ["dec.csv", "nov.csv"]
        assert all(r.outcome == "queued" and r.after_done == "kept" and r.submission_id for r in rows)

        # a file changed in place (new size and time) is a new file
        brand.put("nov.csv", returns((a, "70.00"), (b, "30.00")))
        os.utime(brand.inbox / "nov.csv", (time.time() + 5, time.time() + 5))
        run = pull.run(ctx, et, "run_now")
        assert run["files_taken"] == 1 and run["skipped"] == 1, run


def test_reading_streams_in_chunks(tmp_path: Path) -> None:
    """A file larger than a chunk comes in pieces and whole, by FTP and SFTP; written back the same way."""
    data = os.urandom(remote.CHUNK_BYTES * 2 + 12345)
    for protocol in ("ftp", "sftp"):
        where = tmp_path / protocol
        with brand_server(protocol, where) as brand:
            brand.put("big.bin", data)
            s = brand.settings
            endpoint = remote.Endpoint(protocol, "127.0.0.1", s["port"], USER, PASSWORD)
            with remote.connect(endpoint) as server:
                listed = {e.name: e for e in server.list_folder("/in")}
                assert listed["big.bin"].size == len(data) and listed["big.bin"].mtime.endswith("Z")
                parts = list(server.read("/in/big.bin"))
                assert len(parts) >= 2 and max(len(p) for p in parts) <= remote.CHUNK_BYTES
                assert b"".join(parts) == data
                # a reader that stops half-way leaves the connection usable
                reader = server.read("/in/big.bin")
                next(reader)
                reader.close()  # type: ignore[attr-defined]
                server.write("/in/copy.bin", iter([data[:1000], data[1000:]]))
                assert (brand.inbox / "copy.bin").read_bytes() == data
                server.rename("/in/copy.bin", "/in/moved.bin")
                server.delete("/in/moved.bin")
                assert brand.names() == {"big.bin"}


def test_a_server_without_mlsd_is_listed_with_nlst(tmp_path: Path) -> None:
    root = tmp_path / "brand"
    (root / "in" / "sub.csv").mkdir(parents=True)
    (root / "in" / "nov.csv").write_bytes(b"ActionId,Amount\n1,2.00\n")
    os.utime(root / "in" / "nov.csv", (1_790_000_000, 1_790_000_000))
    with ftp_server(root, tls=False, mlsd=False) as port, \
            remote.connect(remote.Endpoint("ftp", "127.0.0.1", port, USER, PASSWORD)) as server:
        listed = {e.name: e for e in server.list_folder("/in")}
        assert listed["nov.csv"] == remote.RemoteEntry("nov.csv", 23, "2026-09-21T14:13:20Z", True)
        assert not listed["sub.csv"].is_file
        assert b"".join(server.read("/in/nov.csv")) == b"ActionId,Amount\n1,2.00\n"
        with pytest.raises(remote.FolderMissing, match="'/nowhere' does not exist"):
            server.list_folder("/nowhere")


def test_the_pattern_takes_star_and_question_mark_only() -> None:
    assert pull.matches("returns_2026-11.csv", "returns_*.csv")
    assert pull.matches("r1.csv", "r?.csv") and not pull.matches("r12.csv", "r?.csv")
    assert pull.matches("[a].csv", "[a].csv") and not pull.matches("a.csv", "[a].csv")
    assert not pull.matches("NOV.CSV", "*.csv")
    entry = remote.RemoteEntry("result_x.csv", 1, "", True)
    assert not pull.wanted(entry, "*") and not pull.wanted(remote.RemoteEntry("Receipt_x.csv", 1, "", True), "*")
    assert not pull.wanted(remote.RemoteEntry("x.csv", 0, "", False), "*")


# --- keep, delete, move --------------------------------------------------------------------------------


@pytest.mark.parametrize(("protocol", "after"), [("ftp", "move"), ("ftps", "delete"), ("sftp", "move"),
                                                 ("sftp", "delete")])
def test_the_file_is_deleted_or_moved_after_it_is_taken(engine: Engine, tmp_path: Path, protocol: str,
                                                        after: str) -> None:
    w = make_world(engine)
    a = conversion(w, "M-1", "100.00")
    with brand_server(protocol, tmp_path) as brand:
        extra = {"after": after, **({"move_to": "done"} if after == "move" else {}), "write_results": True}
        et = configure(w, {**brand.settings, **extra})
        brand.put("nov.csv", returns((a, "90.00")))
        ctx = context(engine, tmp_path)
        run = pull.run(ctx, et, "run_now")
        assert run["outcome"] == "ok" and run["files_taken"] == 1, run
        if after == "move":
            assert "nov.csv" not in brand.names() and brand.names("done") == {"nov.csv"}  # done/ made on the way
        else:
            assert brand.names() == set()
        with db.read(engine) as conn:
            (row,) = conn.execute(remote_rows(et)).all()
        assert row.after_done == ("moved" if after == "move" else "deleted")
        drain(engine)
        deliveries.deliver_due(ctx, account_id=w.account_id)
        assert "result_nov.csv" in brand.names()  # the folder of the file, even after a move
        assert amount_of(w, a) == 9000
        # the same name again (new content) is a new file, moved over the old one
        newer = brand.put("nov.csv", returns((a, "85.00")))  # the same size: a later time tells it apart
        os.utime(newer, (time.time() + 10, time.time() + 10))
        assert pull.run(ctx, et, "run_now")["files_taken"] == 1
        if after == "move":
            assert brand.names("done") == {"nov.csv"}


def test_a_move_or_delete_left_undone_is_finished_by_the_next_run(engine: Engine, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    w = make_world(engine)
    a = conversion(w, "U-1", "100.00")
    with brand_server("sftp", tmp_path) as brand:
        et = configure(w, {**brand.settings, "after": "delete"})
        brand.put("nov.csv", returns((a, "90.00")))
        ctx = context(engine, tmp_path)

        def refuse(self: Any, path: str) -> None:
            raise remote.TransferFailed(f"Deleting {path!r} failed: permission denied.")

        with monkeypatch.context() as m:
            m.setattr(remote.SftpRemote, "delete", refuse)
            run = pull.run(ctx, et, "run_now")
        assert run["outcome"] == "ok" and run["files_taken"] == 1
        assert "not deleted" in run["detail"] and "permission denied" in run["detail"]
        assert brand.names() == {"nov.csv"}
        run = pull.run(ctx, et, "run_now")
        assert run["files_taken"] == 0 and run["skipped"] == 1 and brand.names() == set()
        assert submissions_of(w) == 1


# --- duplicates, concurrency ----------------------------------------------------------------------------


def test_the_same_content_under_another_name_is_a_duplicate(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    a = conversion(w, "D-1", "100.00")
    with brand_server("ftp", tmp_path) as brand:
        et = configure(w, {**brand.settings, "after": "move", "move_to": "/archive", "write_receipts": True})
        (brand.root / "archive").mkdir()
        content = returns((a, "75.00"))
        brand.put("first.csv", content)
        ctx = context(engine, tmp_path)
        first = pull.run(ctx, et, "run_now")
        assert first["files_taken"] == 1
        drain(engine)
        brand.put("copy.csv", content)
        run = pull.run(ctx, et, "run_now")
        assert run["outcome"] == "ok" and run["files_taken"] == 0 and run["duplicates"] == 1, run
        assert run["submissions"] == [] and first["submissions"][0] in run["detail"]
        assert "not applied" in run["detail"]
        assert submissions_of(w) == 1 and amount_of(w, a) == 7500
        with db.read(engine) as conn:
            rows = conn.execute(remote_rows(et)).all()
        assert [(r.name, r.outcome, r.after_done) for r in rows] == [("first.csv", "queued", "moved"),
                                                                     ("copy.csv", "duplicate", "moved")]
        assert rows[1].submission_id is None and rows[1].sha256 == rows[0].sha256
        assert "duplicate of " + first["submissions"][0] in (brand.inbox / "receipt_copy.csv").read_text()
        assert {p.name for p in (brand.root / "archive").iterdir()} == {"first.csv", "copy.csv"}


def test_a_pulled_file_never_changes_another_accounts_actions(engine: Engine, tmp_path: Path) -> None:
    """A brand's file naming the ActionIds of another account: those actions stay as they were, the rows
    are errors of this account's submission."""
    w, other = make_world(engine), make_world(engine)
    theirs = conversion(other, "THEIRS-1")
    with brand_server("sftp", tmp_path) as brand:
        et = configure(w, brand.settings)
        brand.put("returns.csv", returns((theirs, "1.00")))
        run = pull.run(context(engine, tmp_path), et, "run_now")
        assert run["outcome"] == "ok" and run["files_taken"] == 1
    drain(engine)
    assert amount_of(other, theirs) == 10000
    with db.read(engine) as conn:
        sub = submissions_service.get(conn, w.account_id, run["submissions"][0])
    assert sub["applied"] == 0 and sub["errors"] == 1


def test_two_runs_at_once_take_each_file_once(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    ids = [conversion(w, f"C-{n}", "100.00") for n in range(6)]
    with brand_server("sftp", tmp_path) as brand:
        et = configure(w, brand.settings)
        for n, a in enumerate(ids):
            brand.put(f"r{n}.csv", returns((a, f"{50 + n}.00")))
        ctx = context(engine, tmp_path)
        results: list[dict[str, Any]] = []
        go = threading.Barrier(2)

        def one() -> None:
            go.wait()
            results.append(pull.run(ctx, et, "run_now"))

        threads = [threading.Thread(target=one) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(results) == 2 and all(r["outcome"] == "ok" for r in results), results
        assert sum(r["files_taken"] for r in results) == 6
        assert sum(r["files_taken"] + r["duplicates"] + r["skipped"] for r in results) == 12
        labels = [s for r in results for s in r["submissions"]]
        assert len(labels) == len(set(labels)) == 6 == submissions_of(w)
        with db.read(engine) as conn:
            rows = conn.execute(remote_rows(et)).all()
        assert len(rows) == 6 and all(r.outcome == "queued" for r in rows)


def test_a_file_noted_by_another_run_meanwhile_rolls_the_queuing_back(engine: Engine, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Another run noted the same remote file between this run's check and its queuing: the queuing
    transaction breaks uq_remote_files_seen and rolls back whole (no submission), the file is skipped."""
    w = make_world(engine)
    a = conversion(w, "I-1", "100.00")
    with brand_server("ftp", tmp_path) as brand:
        et = configure(w, brand.settings)
        brand.put("nov.csv", returns((a, "90.00")))
        ctx = context(engine, tmp_path)
        with remote.connect(remote.Endpoint("ftp", "127.0.0.1", brand.settings["port"], USER, PASSWORD)) as s:
            (entry,) = [e for e in s.list_folder("/in") if e.name == "nov.csv"]
        with db.write(engine) as conn:  # what the other run wrote
            pull_repository.record(conn, event_type_id=et, name=entry.name, size=entry.size, mtime=entry.mtime,
                                   sha256="0" * 64, submission_id=None, outcome="queued", taken_at=datetime.now(UTC),
                                   run_id=0, after_done="kept")
        monkeypatch.setattr(pull_repository, "seen", lambda *args: None)  # checked before the other run wrote
        run = pull.run(ctx, et, "run_now")
        assert run["outcome"] == "ok" and run["files_taken"] == 0 and run["skipped"] == 1, run
        assert submissions_of(w) == 0


def test_a_file_over_the_size_limit_stays_on_the_server(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    with brand_server("ftp", tmp_path) as brand:
        et = configure(w, {**brand.settings, "after": "delete"})
        brand.put("huge.csv", b"ActionId,Amount\n" + b"1,1.00\n" * 200_000)  # 1.4 MB
        ctx = context(engine, tmp_path, PAYOUTDESK_MAX_FILE_MB="1")
        run = pull.run(ctx, et, "run_now")
        assert run["outcome"] == "ok" and run["files_taken"] == 0 and run["skipped"] == 1
        assert "huge.csv refused" in run["detail"] and "PAYOUTDESK_MAX_FILE_MB" in run["detail"]
        assert brand.names() == {"huge.csv"} and submissions_of(w) == 0
        assert pull.run(ctx, et, "run_now")["detail"] is None  # noted once


def test_a_file_still_being_written_is_left_for_the_next_run(engine: Engine, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    w = make_world(engine)
    a = conversion(w, "G-1", "100.00")
    with brand_server("sftp", tmp_path) as brand:
        et = configure(w, brand.settings)
        brand.put("nov.csv", returns((a, "90.00")))
        ctx = context(engine, tmp_path)
        listing = remote.SftpRemote.list_folder

        def growing(self: Any, folder: str) -> list[remote.RemoteEntry]:
            entries = listing(self, folder)
            brand.put("nov.csv", returns((a, "90.00"), (a, "91.00")))  # the brand writes on
            return entries

        with monkeypatch.context() as m:
            m.setattr(remote.SftpRemote, "list_folder", growing)
            run = pull.run(ctx, et, "run_now")
        assert run["outcome"] == "ok" and run["files_taken"] == 0 and "still being written" in run["detail"]
        assert submissions_of(w) == 0
        assert pull.run(ctx, et, "run_now")["files_taken"] == 1


# --- failures ------------------------------------------------------------------------------------------


def test_failures_are_recorded_clearly_and_lose_nothing(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    a = conversion(w, "F-1", "100.00")
    api = client_for(engine, tmp_path)
    with brand_server("ftp", tmp_path) as brand:
        brand.put("nov.csv", returns((a, "60.00")))
        ctx = context(engine, tmp_path)

        def run_with(**changes: Any) -> dict[str, Any]:
            settings = {**brand.settings, "after": "delete", **changes}
            r = api.patch(f"/api/v1/event-types/{w.sale}", headers=w.auth, json={"returns_processing": settings})
            assert r.status_code == 200, r.text
            return pull.run(ctx, w.sale, "schedule")

        down = run_with(port=free_port())
        assert down["outcome"] == "failed" and down["files_taken"] == 0
        assert "Could not connect to the server 127.0.0.1" in down["detail"]
        assert "tried 3 times" in down["detail"] and "connection refused" in down["detail"]
        refused = run_with(password="wrong-password")
        assert refused["outcome"] == "failed"
        assert f"refused the login of user '{USER}'" in refused["detail"] and "password" in refused["detail"]
        assert "wrong-password" not in refused["detail"]
        missing = run_with(password=PASSWORD, folder="/nowhere")
        assert missing["outcome"] == "failed" and "The folder '/nowhere' does not exist" in missing["detail"]
        assert brand.names() == {"nov.csv"} and submissions_of(w) == 0  # nothing lost, nothing taken

        r = api.get(f"/api/v1/event-types/{w.sale}/returns-processing/runs", headers=w.auth)
        assert r.status_code == 200, r.text
        body = r.json()
        assert [x["id"] for x in body["items"]] == [missing["id"], refused["id"], down["id"]]
        assert [x["outcome"] for x in body["items"]] == ["failed"] * 3 and body["next_cursor"] is None
        assert body["items"][1]["detail"] == refused["detail"]
        assert body["failing"]["failures"] == 3 and body["failing"]["last_error"] == missing["detail"]

        works = run_with(folder="/in")
        assert works["outcome"] == "ok" and works["files_taken"] == 1 and brand.names() == set()
        drain(engine)
        assert amount_of(w, a) == 6000
        body = api.get(f"/api/v1/event-types/{w.sale}/returns-processing/runs", headers=w.auth).json()
        assert body["items"][0]["id"] == works["id"] and body["failing"] is None
        page = api.get(f"/api/v1/event-types/{w.sale}/returns-processing/runs", headers=w.auth,
                       params={"limit": 2}).json()
        assert len(page["items"]) == 2 and page["next_cursor"] == str(page["items"][1]["id"])
        rest = api.get(f"/api/v1/event-types/{w.sale}/returns-processing/runs", headers=w.auth,
                       params={"limit": 2, "cursor": page["next_cursor"]}).json()
        assert [x["id"] for x in rest["items"]] == [refused["id"], down["id"]] and rest["next_cursor"] is None
        for bad in ({"limit": 0}, {"limit": 101}, {"cursor": "x"}, {"colour": "red"}):
            r = api.get(f"/api/v1/event-types/{w.sale}/returns-processing/runs", headers=w.auth, params=bad)
            assert r.status_code == 422, (bad, r.text)


def test_a_failing_pull_is_mailed_once_per_spell(engine: Engine, tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller

    from payoutdesk.intake import repository as intake_repo

    received: list[bytes] = []

    class Relay:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's
            received.append(envelope.content)
            return "250 OK"

    relay = Controller(Relay(), hostname="127.0.0.1", port=free_port())
    relay.start()
    try:
        w = make_world(engine)
        with db.write(engine) as conn:
            intake_repo.set_alert_email(conn, w.account_id, "ops@brand.example")
        ctx = context(engine, tmp_path, PAYOUTDESK_SMTP_RELAY=f"127.0.0.1:{relay.port}")
        with brand_server("sftp", tmp_path) as brand:
            et = configure(w, {**brand.settings, "password": "not-the-password"})
            for _ in range(3):
                assert pull.run(ctx, et, "schedule")["outcome"] == "failed"
            assert len(received) == 1
            body = message_from_bytes(received[0], policy=policy.default).get_body()
            assert body is not None
            mail = body.get_content()
            assert "refused the login" in mail and "Online Sale" in mail and "not-the-password" not in mail
            configure(w, brand.settings)
            assert pull.run(ctx, et, "schedule")["outcome"] == "ok"
            configure(w, {**brand.settings, "password": "not-the-password"})
            assert pull.run(ctx, et, "schedule")["outcome"] == "failed"
            assert len(received) == 2  # a new spell
    finally:
        relay.stop()


def test_a_server_that_drops_the_connection_mid_file_fails_the_run(engine: Engine, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    w = make_world(engine)
    a = conversion(w, "X-1", "100.00")
    with brand_server("sftp", tmp_path) as brand:
        et = configure(w, {**brand.settings, "after": "delete"})
        brand.put("a.csv", returns((a, "60.00")))
        ctx = context(engine, tmp_path)

        def cut(self: Any, path: str) -> Any:
            yield b"ActionId,"
            raise remote.TransferFailed(f"Reading {path!r} was cut off: connection reset by peer.")

        with monkeypatch.context() as m:
            m.setattr(remote.SftpRemote, "read", cut)
            run = pull.run(ctx, et, "run_now")
        assert run["outcome"] == "failed" and "was cut off" in run["detail"]
        assert brand.names() == {"a.csv"} and submissions_of(w) == 0
        assert pull.run(ctx, et, "run_now")["files_taken"] == 1 and brand.names() == set()


# --- private keys --------------------------------------------------------------------------------------


def test_sftp_login_with_a_private_key(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    a = conversion(w, "K-1", "100.00")
    private, public = _rsa_pem_keys()
    root = tmp_path / "brand"
    (root / "in").mkdir(parents=True)
    (root / "in" / "nov.csv").write_text(returns((a, "55.00")))
    with sftp_server(root, authorized_key=public) as port:
        settings = {"mode": "ftp_pull", "protocol": "sftp", "host": "127.0.0.1", "port": port, "username": USER,
                    "private_key": private, "folder": "/in", "pattern": "*.csv"}
        et = configure(w, settings)
        with db.read(engine) as conn:
            stored = conn.execute(select(event_types.c.returns_settings).where(event_types.c.id == et)).scalar_one()
        assert "PRIVATE KEY" not in stored and "private_key" in json.loads(stored)  # sealed at rest
        run = pull.run(context(engine, tmp_path), et, "run_now")
        assert run["outcome"] == "ok" and run["files_taken"] == 1, run
        # a key the server does not know, and a key that is not a key
        other, _ = _openssh_keys()
        configure(w, {**settings, "private_key": other})
        run = pull.run(context(engine, tmp_path), et, "run_now")
        assert run["outcome"] == "failed" and "refused the login" in run["detail"] and "private key" in run["detail"]
        configure(w, {**settings, "private_key": "-----BEGIN NONSENSE-----"})
        run = pull.run(context(engine, tmp_path), et, "run_now")
        assert run["outcome"] == "failed" and "cannot be read" in run["detail"]


def test_openssh_sshd_with_a_private_key(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    a = conversion(w, "S-1", "100.00")
    private, public = _openssh_keys()
    inbox = tmp_path / "outbox"
    inbox.mkdir()
    (inbox / "nov.csv").write_text(returns((a, "65.00")))
    (inbox / "result_nov.csv").write_text("ignored")
    with openssh_server(tmp_path, public) as port:
        et = configure(w, {"mode": "ftp_pull", "protocol": "sftp", "host": "127.0.0.1", "port": port,
                           "username": getpass.getuser(), "private_key": private, "folder": str(inbox),
                           "pattern": "*.csv", "after": "move", "move_to": "taken", "write_receipts": True})
        run = pull.run(context(engine, tmp_path), et, "run_now")
        assert run["outcome"] == "ok" and run["files_taken"] == 1, run
        assert (inbox / "taken" / "nov.csv").exists() and (inbox / "receipt_nov.csv").exists()
        drain(engine)
        assert amount_of(w, a) == 6500


# --- the schedule --------------------------------------------------------------------------------------


def test_slots_of_the_schedules() -> None:
    at = datetime(2026, 11, 26, 13, 30, tzinfo=UTC)
    assert pull.slot_of({"daily_at": "02:00"}, at) == "2026-11-26"
    assert pull.slot_of({"daily_at": "13:30"}, at) == "2026-11-26"
    assert pull.slot_of({"daily_at": "13:31"}, at) is None
    assert pull.slot_of({"every_hours": 4}, at) == "2026-11-26T12"
    assert pull.slot_of({"every_hours": 4}, at.replace(hour=11, minute=59)) == "2026-11-26T08"
    assert pull.slot_of({"every_hours": 1}, at) == "2026-11-26T13"
    assert pull.slot_of({"every_hours": 24}, at) == "2026-11-26T00"
    assert pull.slot_of({"every_hours": 168}, at) == pull.slot_of({"every_hours": 168}, at + timedelta(hours=1))


def test_scheduled_pulls_run_once_per_slot(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    a = conversion(w, "T-1", "100.00")
    with brand_server("ftp", tmp_path) as brand:
        configure(w, {**brand.settings, "schedule": {"daily_at": "02:00"}})
        configure(w, {**brand.settings, "schedule": {"every_hours": 6}}, event_type=w.lead)
        brand.put("nov.csv", returns((a, "45.00")))
        ctx = context(engine, tmp_path)
        mine = {f"pull:{w.sale}", f"pull:{w.lead}"}
        early = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)
        due = {job: slot for job, slot, _ in pull.scheduled(ctx, early) if job in mine}
        assert due == {f"pull:{w.lead}": "2026-11-27T00"}
        late = datetime(2026, 11, 27, 2, 5, tzinfo=UTC)
        jobs = [(job, slot, fn) for job, slot, fn in pull.scheduled(ctx, late) if job == f"pull:{w.sale}"]
        assert [(job, slot) for job, slot, _ in jobs] == [(f"pull:{w.sale}", "2026-11-27")]
        job, slot, fn = jobs[0]
        assert len(job) <= 40 and len(slot) <= 40
        assert scheduler.run_if_due(engine, job, slot, "w1", fn)
        assert not scheduler.run_if_due(engine, job, slot, "w2", fn)  # another process: not again
        with db.read(engine) as conn:
            taken = conn.execute(remote_rows(w.sale)).all()
        assert len(taken) == 1
        line = fn()
        assert line.startswith("run ") and " ok: taken 0" in line and "\n" not in line
        r = client_for(engine, tmp_path).get(f"/api/v1/event-types/{w.sale}/returns-processing/runs",
                                             headers=w.auth)
        assert [x["trigger"] for x in r.json()["items"]] == ["schedule", "schedule"]
        configure(w, {"mode": "manual"})  # changed before its slot ran: nothing to do
        assert fn().startswith("not run: ") and f"pull:{w.sale}" not in {j for j, _, _ in pull.scheduled(ctx, late)}


# --- the API ---------------------------------------------------------------------------------------------


def test_run_now_through_the_api(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine)
    a = conversion(w, "R-1", "100.00")
    api = client_for(engine, tmp_path)
    with brand_server("sftp", tmp_path) as brand:
        r = api.patch(f"/api/v1/event-types/{w.sale}", headers=w.auth, json={"returns_processing": brand.settings})
        assert r.status_code == 200 and PASSWORD not in r.text, r.text
        assert r.json()["returns_processing"]["password_set"] is True
        brand.put("nov.csv", returns((a, "35.00")))
        r = api.post(f"/api/v1/event-types/{w.sale}/returns-processing/run", headers=w.auth)
        assert r.status_code == 200, r.text
        run = r.json()
        assert run["outcome"] == "ok" and run["files_taken"] == 1 and run["trigger"] == "run_now"
        (sub,) = run["submission_details"]
        assert sub["id"] == run["submissions"][0] and sub["channel"] == "ftp_pull" and sub["file_name"] == "nov.csv"
        drain(engine)
        assert amount_of(w, a) == 3500
        texts = [r.text, api.get(f"/api/v1/event-types/{w.sale}", headers=w.auth).text,
                 api.get("/api/v1/event-types", headers=w.auth).text,
                 api.get(f"/api/v1/event-types/{w.sale}/returns-processing/runs", headers=w.auth).text,
                 api.get(f"/api/v1/submissions/{sub['id']}", headers=w.auth).text]
        assert all(PASSWORD not in t for t in texts)

    # a Salesforce event type is polled (here it fails: no Salesforce to reach), and shows in the runs
    sf = {"mode": "salesforce", "object": "Opportunity", "order_id_field": "Order_Id__c",
          "status_field": "StageName", "status_map": {"Closed Lost": {"operation": "reverse"}},
          "instance_url": f"https://127.0.0.1:{free_port()}", "username": "sf@brand.example",
          "password": PASSWORD, "security_token": "tok"}
    assert api.patch(f"/api/v1/event-types/{w.lead}", headers=w.auth,
                     json={"returns_processing": sf}).status_code == 200
    r = api.post(f"/api/v1/event-types/{w.lead}/returns-processing/run", headers=w.auth)
    assert r.status_code == 200 and PASSWORD not in r.text, r.text
    assert r.json()["channel"] == "salesforce" and r.json()["outcome"] == "failed" and r.json()["detail"]
    runs = api.get(f"/api/v1/event-types/{w.lead}/returns-processing/runs", headers=w.auth).json()
    assert runs["items"][0]["id"] == r.json()["id"] and PASSWORD not in json.dumps(runs)
    assert api.patch(f"/api/v1/event-types/{w.lead}", headers=w.auth,
                     json={"returns_processing": {"mode": "manual"}}).status_code == 200

    # a manual event type cannot be run; another account's is not there; no credentials, no answer
    r = api.post(f"/api/v1/event-types/{w.lead}/returns-processing/run", headers=w.auth)
    assert r.status_code == 409 and r.json()["code"] == "conflict" and "manual" in r.json()["detail"], r.text
    other = make_world(engine)
    for path in (f"/api/v1/event-types/{w.sale}/returns-processing/run",
                 f"/api/v1/event-types/{w.sale}/returns-processing/runs"):
        method = api.post if path.endswith("/run") else api.get
        r = method(path, headers=other.auth)
        assert r.status_code == 404 and r.json()["code"] == "not_found", r.text
        assert method(path).status_code == 401
    assert api.post("/api/v1/event-types/99999999999/returns-processing/run", headers=w.auth).status_code == 404


def test_the_settings_of_a_pull_without_a_server(engine: Engine, tmp_path: Path) -> None:
    """The run of a pull whose stored password cannot be opened (the secret key changed) says so."""
    w = make_world(engine)
    configure(w, {"mode": "ftp_pull", "protocol": "ftp", "host": "127.0.0.1", "port": free_port(),
                  "username": USER, "password": PASSWORD, "folder": "/in"})
    ctx = IntakeContext(context(engine, tmp_path).settings, engine, SecretBox("another-secret"))
    run = pull.run(ctx, w.sale, "run_now")
    assert run["outcome"] == "failed" and "cannot be decrypted" in run["detail"]
    with db.read(engine) as conn:
        assert conn.execute(select(func.count()).select_from(remote_files)
                            .where(remote_files.c.event_type_id == w.sale)).scalar_one() == 0
