"""Fixtures: every database test runs on a real SQLite file and on a real PostgreSQL.

PostgreSQL is the server named by PAYOUTDESK_TEST_POSTGRES_URL, or a throwaway one this
suite starts (and stops) itself. Each backend gets one database migrated once per session;
tests isolate themselves by creating their own account (tenants never see each other),
and the few that need an empty database ask for ``fresh_engine``.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from payoutdesk.kit import time as clock
from payoutdesk.kit.db import make_engine, migrate
from tests.helpers import World, client_for, free_port, make_world

ROOT = Path(__file__).resolve().parent.parent
# The tests' dates (events in November 2026, locking dates from late December 2026) were written for
# a clock at this moment: the application's clock (kit.time.utcnow) starts there in this process and
# in every process the tests start, whatever day the suite runs.
CLOCK_START = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
os.environ["PAYOUTDESK_CLOCK_OFFSET_SECONDS"] = str(int((CLOCK_START - datetime.now(UTC)).total_seconds()))
clock.OFFSET = clock._offset_from_env()
# `serve` in a child process runs HTTP only unless a test asks for FTP or SMTP on a port of its own (the
# defaults 2121 and 2525 would collide between tests running at once)
os.environ.setdefault("PAYOUTDESK_FTP_PORT", "0")
os.environ.setdefault("PAYOUTDESK_SMTP_PORT", "0")
SAMPLES = ROOT / "tests" / "samples"  # the project's own sample returns files (tests/samples/README.md)
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    url = os.environ.get("PAYOUTDESK_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    tmp = tempfile.mkdtemp(prefix="payoutdesk-pg-")
    script = ROOT / "scripts" / "throwaway-postgres.sh"
    out = subprocess.run(
        ["bash", str(script), "start", tmp, str(free_port())], check=True, capture_output=True, text=True
    )
    try:
        yield out.stdout.strip()
    finally:
        subprocess.run(["bash", str(script), "stop", tmp], check=False)


def new_pg_database(server_url: str) -> str:
    name = "pd_" + uuid.uuid4().hex[:12]
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def _url_for(backend: str, request: pytest.FixtureRequest, tmp_dir: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_dir / ('pd-' + uuid.uuid4().hex[:8] + '.db')}"
    return new_pg_database(request.getfixturevalue("pg_server_url"))


def only_on(backend: str) -> pytest.MarkDecorator:
    """Run a test on one backend only, for a test whose subject is that database's own behaviour
    (PostgreSQL's row locks, say): ``db_url`` and every fixture built on it (``engine``, ``world``,
    ``api``, ``fresh_url`` ...) then take that backend alone, so the test neither runs nor skips on
    the other one. Use it as a decorator: ``@only_on("postgresql")``."""
    assert backend in BACKENDS, backend
    return pytest.mark.parametrize("db_url", [backend], indirect=True)


@pytest.fixture(scope="session", params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    url = _url_for(request.param, request, tmp_path_factory.mktemp("db"))
    migrate(url)
    return url


@pytest.fixture(scope="session")
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path, db_url: str) -> str:
    """A new, migrated, empty database of the same backend as ``db_url``."""
    backend = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    url = _url_for(backend, request, tmp_path)
    migrate(url)
    return url


@pytest.fixture
def fresh_engine(fresh_url: str) -> Iterator[Engine]:
    eng = make_engine(fresh_url)
    yield eng
    eng.dispose()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """No test skips: a test that concerns one backend says so with ``only_on``, and everything a test
    needs (the sample files included) is in the repository. A skip is reported as a failure."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"this test skipped ({reason}); no test may skip: see tests/conftest.py"


@pytest.fixture(autouse=True, scope="session")
def _cheap_password_hashing() -> Iterator[None]:
    """Real argon2, with the cheapest parameters: every tenant a test makes hashes an FTP password."""
    from argon2 import PasswordHasher

    from payoutdesk.accounts import service

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(service, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        yield


# --- the world most tests start from ------------------------------------------------------------


@pytest.fixture
def world(engine: Engine) -> World:
    """A new account (its own tenant) with a campaign, a sale and a lead event type, three partners
    and their contracts (tests.helpers.make_world)."""
    return make_world(engine)


@pytest.fixture
def api(engine: Engine, tmp_path: Path) -> TestClient:
    """An API client on ``engine`` without rate limits (tests.helpers.client_for)."""
    return client_for(engine, tmp_path)


# --- the browser tests (tests/browser.py) --------------------------------------------------------
from tests.browser import browser, site  # noqa: E402, F401 - fixtures of the browser tests
