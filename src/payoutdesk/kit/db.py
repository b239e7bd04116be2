"""Engines, transactions and migrations, the same for SQLite and PostgreSQL."""

from __future__ import annotations

import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool, QueuePool

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

# On a SQLite file, the write transactions of one process queue on a lock of the engine before
# BEGIN IMMEDIATE. Without it, a writer that finds the database locked polls in SQLite's busy
# handler, sleeping 1, 2, 5, 10 ... 100 ms between tries: under a few concurrent writers most of
# the time goes to those sleeps and the write lock sits free. Writers of other processes still
# meet the busy timeout. Reentrant, so a nested write behaves as it did without the lock.
_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()
WRITE_LOCK_WAIT = 60.0  # then BEGIN IMMEDIATE and the busy timeout decide, as without the lock


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the right settings for the backend.

    SQLite: WAL, a busy timeout, foreign keys, and ``BEGIN IMMEDIATE`` for write
    transactions so that writers queue instead of failing to upgrade their lock.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        on_disk = bool(path) and path != ":memory:" and "mode=memory" not in path
        if on_disk:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            # Connections are kept open between transactions: opening one costs the pragmas, and
            # closing the last one checkpoints and deletes the WAL, together about 1 ms per
            # transaction. Overflow is unbounded, so a checkout never waits for a free connection.
            kwargs.setdefault("poolclass", QueuePool)
            kwargs.setdefault("pool_size", 8)
            kwargs.setdefault("max_overflow", -1)
        else:
            kwargs.setdefault("poolclass", NullPool)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60}, **kwargs)
        if on_disk:
            _WRITE_LOCKS[engine] = threading.RLock()

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA cache_size=-65536")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = "IMMEDIATE" if conn.get_execution_options().get("payoutdesk_write") else "DEFERRED"
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, pool_pre_ping=True, **kwargs)


def is_sqlite(conn: Connection | Engine) -> bool:
    return conn.dialect.name == "sqlite"


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """One write transaction: committed on success, rolled back on any exception."""
    lock = _WRITE_LOCKS.get(engine)
    locked = lock is not None and lock.acquire(timeout=WRITE_LOCK_WAIT)
    try:
        with engine.connect() as raw:
            conn = raw.execution_options(payoutdesk_write=True)
            with conn.begin():
                yield conn
    finally:
        if locked:
            assert lock is not None
            lock.release()


@contextmanager
def read(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn, conn.begin():
        yield conn


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str) -> None:
    """Create or upgrade the schema to the newest migration."""
    from alembic import command

    command.upgrade(alembic_config(url), "head")


def transaction(engine: Engine, fn: Callable[[Connection], T], attempts: int = 8) -> T:
    """Run ``fn`` in one write transaction, again from the start when it lost a race (R14).

    A change refused for a stale version, a PostgreSQL serialization failure or deadlock is
    retried; after ``attempts`` the error reaches the caller, never silently dropped.
    """
    from payoutdesk.errors import StaleVersion

    for attempt in range(attempts):
        try:
            with write(engine) as conn:
                return fn(conn)
        except StaleVersion:
            if attempt == attempts - 1:
                raise
        except DBAPIError as exc:
            code = getattr(exc.orig, "sqlstate", None)
            if code not in ("40001", "40P01") or attempt == attempts - 1:
                raise
        time.sleep(min(0.2, 0.005 * 2**attempt) * random.random())
    raise AssertionError("unreachable")
