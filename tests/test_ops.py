"""Operating payoutdesk (docs/OPERATIONS.md): the version, files readable by their owner only, the
SQLite backup while the database is in use (and PostgreSQL's clear refusal), auth token rotation, and
a repository that stands alone (its README true to the command line, no test on files outside it)."""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import os
import re
import sqlite3
import stat
import subprocess
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

import payoutdesk
from payoutdesk.cli import build_parser
from payoutdesk.kit.backup import BackupRefused, backup_sqlite
from payoutdesk.kit.files import sqlite_path
from tests.conftest import ROOT, only_on
from tests.helpers import COMMAND, World, cli_runner, client_for, conversion, free_port, make_world

Run = Callable[..., subprocess.CompletedProcess[str]]


def _env(data_dir: Path, url: str | None, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUTDESK_")}
    env["PAYOUTDESK_DATA_DIR"] = str(data_dir)
    env["PAYOUTDESK_CLOCK_OFFSET_SECONDS"] = os.environ["PAYOUTDESK_CLOCK_OFFSET_SECONDS"]
    if url is not None:
        env["PAYOUTDESK_DATABASE_URL"] = url
    return env | more


def _runner(env: dict[str, str]) -> Run:
    """The command line under umask 022, the usual one, where files come out world-readable unless made otherwise."""
    return cli_runner(env, timeout=180, umask=0o022)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _basic(sid: str, token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{sid}:{token}".encode()).decode()}


# --- the version ------------------------------------------------------------------------------


def test_version_is_printed_and_matches_the_package() -> None:
    p = subprocess.run([*COMMAND, "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"payoutdesk {payoutdesk.__version__}"
    with (ROOT / "pyproject.toml").open("rb") as f:
        assert tomllib.load(f)["project"]["version"] == payoutdesk.__version__  # one version, said twice


# --- files readable by their owner only -------------------------------------------------------


@pytest.fixture
def backend_url(db_url: str, request: pytest.FixtureRequest) -> str | None:
    """None on SQLite (the default: payoutdesk.db in the data folder), a new database on PostgreSQL."""
    return None if db_url.startswith("sqlite") else str(request.getfixturevalue("fresh_url"))


@pytest.fixture
def serving(tmp_path: Path, backend_url: str | None) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """``payoutdesk init``, ``demo`` and ``serve`` run on a new data folder under umask 022."""
    data = tmp_path / "data"
    port = free_port()
    env = _env(data, backend_url, PAYOUTDESK_HTTP_PORT=str(port), PAYOUTDESK_BIND="127.0.0.1",
               PAYOUTDESK_FTP_PORT="0", PAYOUTDESK_SMTP_PORT="0", PAYOUTDESK_API_RATE_LIMIT="0")
    run = _runner(env)
    run("init")
    info = json.loads(run("demo", "--actions", "20", "--json").stdout)
    server = subprocess.Popen([*COMMAND, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              umask=0o022)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "serve did not answer"
            time.sleep(0.1)
        yield data, port, info
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)


def test_data_folder_database_and_key_are_the_owners_alone(serving: tuple[Path, int, dict[str, Any]],
                                                           backend_url: str | None) -> None:
    data, port, info = serving
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {**_basic(info["account_sid"], info["auth_token"]), "Content-Type": "application/json"}
    conn.request("POST", "/api/v1/partners", body=json.dumps({"name": "Written by serve"}), headers=headers)
    answer = conn.getresponse()
    assert answer.status == 201, answer.read()
    expected = {data: 0o700, data / "secret.key": 0o600, data / "demo.json": 0o600}
    if backend_url is None:  # SQLite: the database and the files SQLite keeps beside it while in use
        db = data / "payoutdesk.db"
        expected |= {db: 0o600, db.with_name("payoutdesk.db-wal"): 0o600, db.with_name("payoutdesk.db-shm"): 0o600}
    assert {path.name: oct(_mode(path)) for path in expected} == {path.name: oct(m) for path, m in expected.items()}


def test_files_made_readable_by_others_are_tightened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    db = data / "payoutdesk.db"
    sqlite3.connect(db).close()
    key = data / "secret.key"
    key.write_text("an-old-key")
    for path in (db, key):
        os.chmod(path, 0o644)
    run = _runner(_env(data, None))
    run("init")
    run("account", "create", "Brand")
    assert (oct(_mode(data)), oct(_mode(db)), oct(_mode(key))) == ("0o700", "0o600", "0o600")
    assert key.read_text() == "an-old-key"
    # a folder shared by others (sticky, as /tmp is) is never tightened, only what payoutdesk keeps in it
    assert stat.S_IMODE(Path("/tmp").stat().st_mode) & 0o777 == 0o777
    assert sqlite_path("sqlite:////tmp/x.db") == Path("/tmp/x.db")
    assert sqlite_path("sqlite://") is None and sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("postgresql+psycopg://u@h/d") is None


# --- backup -----------------------------------------------------------------------------------


class Writer:
    """Records a conversion after another (order ids W-1, W-2, ... after ``prefix``) in a thread until
    stopped, as a busy server would; ``committed`` is the number of the last one committed."""

    def __init__(self, world: World, prefix: str = "W-") -> None:
        self.world = world
        self.prefix = prefix
        self.committed = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                conversion(self.world, f"{self.prefix}{self.committed + 1}", "10.00")
                self.committed += 1
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> Writer:
        self.thread.start()
        while self.committed < 5:
            assert self.error is None, self.error
            time.sleep(0.01)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(60)
        assert self.error is None, self.error


def _check_copy(copy: Path, writer: Writer, before: int) -> int:
    """The copy is a sound database that holds every conversion committed before the backup began,
    and is a snapshot of one moment: the writer's conversions W-1 ... W-n without a gap."""
    account, prefix = writer.world.account_id, writer.prefix
    assert _mode(copy) == 0o600
    with sqlite3.connect(copy) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        numbers = sorted(int(order.removeprefix(prefix)) for (order,) in conn.execute(
            "SELECT order_id FROM actions WHERE account_id = ? AND order_id LIKE ?", (account, prefix + "%")))
        history = conn.execute(
            "SELECT count(*) FROM action_updates JOIN actions ON actions.id = action_updates.action_id "
            "WHERE actions.account_id = ? AND actions.order_id LIKE ?", (account, prefix + "%")).fetchone()[0]
    conn.close()
    assert len(numbers) >= before and numbers == list(range(1, len(numbers) + 1))
    assert history == len(numbers)  # each action with its CREATED entry: no half-copied transaction
    return len(numbers)


@only_on("sqlite")
def test_backup_while_another_process_writes(engine: Engine, db_url: str, tmp_path: Path) -> None:
    """``payoutdesk backup`` in its own process while this one keeps writing through the engine."""
    world = make_world(engine)
    target = tmp_path / "copy.db"
    run = _runner(_env(tmp_path / "data", db_url))
    with Writer(world) as writer:
        before = writer.committed
        p = run("backup", str(target))
        assert writer.committed > before  # writes went on while the backup process ran
    assert re.search(rf"Backed up .+ to {re.escape(str(target))}: [\d.,]+ MiB \([\d,]+ pages\)", p.stdout), p.stdout
    assert "secret.key" in p.stdout  # no PAYOUTDESK_SECRET_KEY: say that the key needs a copy too
    copied = _check_copy(target, writer, before)
    assert copied <= writer.committed


@only_on("sqlite")
def test_backup_in_small_steps_while_writes_come_in(engine: Engine, db_url: str, tmp_path: Path) -> None:
    """A step of one page at a time: writes between steps make SQLite start again; after a few
    restarts the rest is copied at once; the copy is consistent either way."""
    world = make_world(engine)
    source = sqlite_path(db_url)
    assert source is not None
    for k, max_restarts in enumerate((3, 0)):
        with Writer(world, prefix=f"W{k}-") as writer:
            before = writer.committed
            done = backup_sqlite(source, tmp_path / f"steps-{k}.db", step_pages=1, max_restarts=max_restarts)
        assert done.restarts <= max_restarts and done.pages > 0 and done.size == done.pages * done.page_size
        _check_copy(done.target, writer, before)


@only_on("sqlite")
def test_backup_refuses_to_overwrite_unless_forced(engine: Engine, db_url: str, tmp_path: Path) -> None:
    world = make_world(engine)
    conversion(world, "KEPT-1", "10.00")
    run = _runner(_env(tmp_path / "data", db_url, PAYOUTDESK_SECRET_KEY="configured"))
    target = tmp_path / "copy.db"
    target.write_text("an older copy")
    refused = run("backup", str(target), ok=False)
    assert refused.returncode == 2 and "exists already" in refused.stderr and "--force" in refused.stderr
    assert target.read_text() == "an older copy"
    os.chmod(target, 0o644)
    forced = run("backup", str(target), "--force")
    assert "secret.key" not in forced.stdout  # the key is configured, not kept in the data folder
    assert _mode(target) == 0o600
    with sqlite3.connect(target) as conn:
        assert conn.execute("SELECT count(*) FROM actions WHERE order_id = 'KEPT-1'").fetchone() == (1,)
    conn.close()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]  # nothing left behind
    for args, words in [
        ((str(tmp_path / "no-such-folder" / "x.db"),), "no folder"),
        ((str(tmp_path),), "exists already"),
        ((str(sqlite_path(db_url)), "--force"), "cannot replace the database itself"),
    ]:
        p = run("backup", *args, ok=False)
        assert words in p.stderr, (args, p.stderr)
    with pytest.raises(BackupRefused, match="no database file"):
        backup_sqlite(tmp_path / "missing.db", tmp_path / "other.db")
    assert not (tmp_path / "missing.db").exists()  # and none was created


@only_on("postgresql")
def test_backup_on_postgresql_names_pg_dump(fresh_url: str, tmp_path: Path) -> None:
    p = _runner(_env(tmp_path / "data", fresh_url))("backup", str(tmp_path / "copy.db"), ok=False)
    assert p.returncode == 2 and "pg_dump" in p.stderr and "docs/OPERATIONS.md" in p.stderr
    assert "SQLite" in p.stderr and not (tmp_path / "copy.db").exists()
    password = re.search(r"://[^:/@]+:([^@]+)@", fresh_url)
    assert password is None or password.group(1) not in p.stderr


# --- auth token rotation ----------------------------------------------------------------------


def test_rotate_token_through_the_api(engine: Engine, db_url: str, tmp_path: Path) -> None:
    """The new token works at once; the old one answers 401 at once where it was not signed in lately,
    and within the sign-in memory of 10 s where it was (docs/OPERATIONS.md)."""
    world = make_world(engine)
    old = world.token
    run = _runner(_env(tmp_path / "data", db_url))
    with client_for(engine, tmp_path) as busy, client_for(engine, tmp_path) as fresh, \
            client_for(engine, tmp_path) as other:
        assert busy.get("/api/v1/campaigns", headers=_basic(world.sid, old)).status_code == 200
        assert other.get("/api/v1/campaigns", headers=_basic(world.sid, old)).status_code == 200
        rotated = json.loads(run("account", "rotate-token", world.sid, "--json").stdout)
        assert set(rotated) == {"account_sid", "auth_token"} and rotated["account_sid"] == world.sid
        new = rotated["auth_token"]
        assert new != old and len(new) >= 40
        # a server that had not signed the old token in: refused at once; the new one works
        r = fresh.get("/api/v1/campaigns", headers=_basic(world.sid, old))
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"
        assert fresh.get("/api/v1/campaigns", headers=_basic(world.sid, new)).status_code == 200
        # a server where the new token was used: the old one is refused at once
        assert other.get("/api/v1/campaigns", headers=_basic(world.sid, new)).status_code == 200
        assert other.get("/api/v1/campaigns", headers=_basic(world.sid, old)).status_code == 401
        # a server that signed the old token in a moment ago: refused within the 10 s it remembers that
        # (a memory of the web process, the same whatever the database: waited out on one of them)
        if db_url.startswith("sqlite"):
            rotated_at = time.monotonic()
            while busy.get("/api/v1/campaigns", headers=_basic(world.sid, old)).status_code == 200:
                assert time.monotonic() - rotated_at < 12, "the old token still works"
                time.sleep(0.25)
            assert busy.get("/api/v1/campaigns", headers=_basic(world.sid, old)).status_code == 401
        assert busy.get("/api/v1/campaigns", headers=_basic(world.sid, new)).status_code == 200
    human = run("account", "rotate-token", world.sid).stdout
    assert world.sid in human and "shown once" in human
    newest = re.search(r"Auth token:\s+(\S+)", human)
    assert newest and newest.group(1) != new
    missing = run("account", "rotate-token", "IRNOSUCHSID", ok=False)
    assert missing.returncode == 2 and "No account with SID 'IRNOSUCHSID'" in missing.stderr


# --- the repository stands alone --------------------------------------------------------------


def test_the_readme_lists_the_commands_of_the_cli_and_points_inside_the_repository() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "../shared" not in readme and "DESIGN.md" not in readme
    listed = re.search(r"Command line: .*?\((.*?)\)", readme, re.S)
    assert listed, "the README lists the commands"
    named = set(re.findall(r"`([a-z][a-z -]*)`", listed.group(1)))
    assert named == _commands()
    for link in re.findall(r"\]\(([^)#]+)\)", readme):  # every relative link leads to a file here
        if "://" not in link:
            assert (ROOT / link).exists(), link


def test_no_test_reads_files_from_outside_the_repository() -> None:
    samples = ROOT / "tests" / "samples"
    listed = re.findall(r"^\| (\w+\.\w+) \|", (samples / "README.md").read_text(encoding="utf-8"), re.M)
    assert sorted(listed) == sorted(p.name for p in samples.iterdir() if p.name != "README.md")
    for source in sorted((ROOT / "tests").glob("*.py")):
        if source.name == Path(__file__).name:
            continue  # this one names what it looks for
        text = source.read_text(encoding="utf-8")
        assert not re.search(r"\.\./shared|parents\[2\]|ROOT\.parent|\"shared\"", text), source.name


def _usage_choices(*args: str) -> list[str]:
    """The sub-commands that ``payoutdesk ARGS --help`` offers (its ``{a,b,...}``), none if it offers none."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args([*args, "--help"])
    found = re.search(r"\{([\w,-]+)\}\s+\.\.\.", out.getvalue().split("\n\n")[0])
    return found.group(1).split(",") if found else []


def _commands() -> set[str]:
    """Every command of the command line: ``init``, ..., ``account create``, ``account rotate-token`` ..."""
    commands: set[str] = set()
    for name in _usage_choices():
        nested = _usage_choices(name)
        commands |= {f"{name} {n}" for n in nested} if nested else {name}
    return commands
