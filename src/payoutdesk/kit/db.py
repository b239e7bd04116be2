"""Engines, transactions and migrations, the same for SQLite and PostgreSQL."""

from __future__ import annotations

import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import NullPool, QueuePool

from payoutdesk.kit.files import prepare_sqlite_file

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class FairLock:
    """A reentrant lock handed to its waiters in the order they came (``threading.RLock`` is not fair:
    a thread that releases it and at once asks again, as a submission's worker does between two
    chunks, mostly gets it back before a waiting thread wakes up). ``waiting()`` tells a long holder
    that someone waits, so that it can end its transaction early and let them in."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._owner: int | None = None
        self._count = 0
        self._queue: deque[tuple[int, threading.Lock]] = deque()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        me = threading.get_ident()
        with self._mutex:
            if self._owner == me:
                self._count += 1
                return True
            if self._owner is None and not self._queue:
                self._owner, self._count = me, 1
                return True
            if not blocking:
                return False
            gate = threading.Lock()
            gate.acquire()
            entry = (me, gate)
            self._queue.append(entry)
        if gate.acquire(timeout=timeout if timeout >= 0 else -1):
            return True  # ``release`` made this thread the owner
        with self._mutex:
            if self._owner == me:  # handed over just as the wait ran out
                return True
            self._queue.remove(entry)
            return False

    def release(self) -> None:
        with self._mutex:
            if self._owner != threading.get_ident():
                raise RuntimeError("release of a FairLock this thread does not hold")
            self._count -= 1
            if self._count:
                return
            if self._queue:
                self._owner, gate = self._queue.popleft()
                self._count = 1
                gate.release()
            else:
                self._owner = None

    def waiting(self) -> int:
        return len(self._queue)


# On a SQLite file, the write transactions of one process queue on a lock of the engine before
# BEGIN IMMEDIATE. Without it, a writer that finds the database locked polls in SQLite's busy
# handler, sleeping 1, 2, 5, 10 ... 100 ms between tries: under a few concurrent writers most of
# the time goes to those sleeps and the write lock sits free. Writers of other processes still
# meet the busy timeout. Reentrant, so a nested write behaves as it did without the lock; fair
# (first come, first served), so that a submission's worker, which asks again right after each
# chunk, lets the writers that waited meanwhile go first (DESIGN §6, "No stalls").
_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, Any] = weakref.WeakKeyDictionary()
WRITE_LOCK: Callable[[], Any] = FairLock  # bench/stall.py measures threading.RLock (the old lock) too
# SQLite copies the WAL back into the database file (a checkpoint) inside the COMMIT that passes 1,000
# pages of WAL, so by default the committing writer would still hold the write lock of this process
# while it writes those pages back: after a submission's chunk, hundreds of milliseconds that a waiting
# change would wait on top. Instead the connections never checkpoint on their own, and ``write`` runs a
# PASSIVE checkpoint (which neither waits for nor blocks writers) in a thread of its own after it released
# the lock, once this engine's transactions changed CHECKPOINT_CHANGES rows since the last one.
CHECKPOINT_AFTER_RELEASE = True
CHECKPOINT_CHANGES = 2_000
_CHANGES_SINCE_CHECKPOINT: weakref.WeakKeyDictionary[Engine, int] = weakref.WeakKeyDictionary()
WRITE_LOCK_WAIT = 60.0  # then BEGIN IMMEDIATE and the busy timeout decide, as without the lock

# A write that must not wait (``wait=False``, run on the web server's event loop) gets the
# PostgreSQL connection from a small engine of its own whose sessions give up on a lock after
# this long (``lock_timeout``) instead of queueing behind, say, a lock run's chunk.
NOWAIT_LOCK_TIMEOUT_MS = 20
_NOWAIT_ENGINES: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()
_NOWAIT_ENGINES_LOCK = threading.Lock()


class WouldWait(Exception):
    """A write asked not to wait found the database busy (a lock held by another writer) and did
    nothing: run it again where waiting is fine (``wait=True``, in a worker thread)."""


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the right settings for the backend.

    SQLite: WAL, a busy timeout, foreign keys, and ``BEGIN IMMEDIATE`` for write
    transactions so that writers queue instead of failing to upgrade their lock.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        on_disk = bool(path) and path != ":memory:" and "mode=memory" not in path
        if on_disk:
            prepare_sqlite_file(url)  # the file 0600 before SQLite opens it (its -wal/-shm follow)
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
            _WRITE_LOCKS[engine] = WRITE_LOCK()

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA cache_size=-65536")
            if on_disk and CHECKPOINT_AFTER_RELEASE:
                cur.execute("PRAGMA wal_autocheckpoint=0")  # write() checkpoints, outside the write lock
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            options = conn.get_execution_options()
            mode = "IMMEDIATE" if options.get("payoutdesk_write") else "DEFERRED"
            if not options.get("payoutdesk_nowait"):
                conn.exec_driver_sql(f"BEGIN {mode}")
                return
            # no busy handler for this BEGIN: a write lock held by another process fails it at once
            dbapi_conn = conn.connection.driver_connection
            assert dbapi_conn is not None
            dbapi_conn.execute("PRAGMA busy_timeout=0")
            try:
                conn.exec_driver_sql(f"BEGIN {mode}")
            finally:
                dbapi_conn.execute("PRAGMA busy_timeout=60000")

        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, pool_pre_ping=True, **kwargs)


def is_sqlite(conn: Connection | Engine) -> bool:
    return conn.dialect.name == "sqlite"


# Is a PostgreSQL session waiting for a lock that this session holds?
_BLOCKING_OTHERS = ("SELECT EXISTS (SELECT 1 FROM pg_locks AS l WHERE NOT l.granted "
                    "AND pg_backend_pid() = ANY(pg_blocking_pids(l.pid)))")


def others_waiting(conn: Connection) -> bool:
    """Does another writer wait for what this write transaction holds? On SQLite: a thread of this
    process queued on the engine's write lock (writers of other processes cannot be seen; they get
    their turn in the pauses between a long job's transactions). On PostgreSQL: a session waiting
    for one of this transaction's locks (its row locks, say)."""
    if is_sqlite(conn):
        waiting = getattr(_WRITE_LOCKS.get(conn.engine), "waiting", None)
        return waiting is not None and waiting() > 0
    return bool(conn.exec_driver_sql(_BLOCKING_OTHERS).scalar())


@contextmanager
def write(engine: Engine, *, wait: bool = True) -> Iterator[Connection]:
    """One write transaction: committed on success, rolled back on any exception.

    ``wait=False``: raise ``WouldWait`` (having done nothing) instead of waiting for a writer that
    holds a lock: on SQLite the write lock of this process or of the database, on PostgreSQL any
    lock held for longer than ``NOWAIT_LOCK_TIMEOUT_MS`` (the whole transaction is then rolled back).
    """
    lock = _WRITE_LOCKS.get(engine)
    if lock is None:
        locked = False
    elif wait:
        locked = lock.acquire(timeout=WRITE_LOCK_WAIT)
    elif lock.acquire(blocking=False):
        locked = True
    else:
        raise WouldWait("another write of this process is in progress")
    changed = 0
    try:
        target = engine if wait or is_sqlite(engine) else _nowait_engine(engine)
        try:
            raw = target.connect()
        except PoolTimeout:
            if wait:
                raise
            raise WouldWait("no connection free at once") from None
        with raw:
            conn = raw.execution_options(payoutdesk_write=True, payoutdesk_nowait=not wait)
            driver = raw.connection.driver_connection if lock is not None else None
            before = int(getattr(driver, "total_changes", 0))
            try:
                transaction = conn.begin()
            except OperationalError as exc:
                if wait or "locked" not in str(exc.orig):
                    raise
                raise WouldWait("another process holds the write lock") from None
            with transaction:
                try:
                    yield conn
                except DBAPIError as exc:
                    # the connection was found dead before anything was committed (the engine of
                    # ``wait=False`` does not ping a connection before it hands it out)
                    if not wait and exc.connection_invalidated:
                        raise WouldWait("the connection was lost") from None
                    raise
            changed = int(getattr(driver, "total_changes", 0)) - before  # committed
    except DBAPIError as exc:
        if not wait and getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available
            raise WouldWait("a lock is held by another transaction") from None
        raise
    finally:
        if locked:
            assert lock is not None
            lock.release()
    if changed > 0 and CHECKPOINT_AFTER_RELEASE:
        _count_and_checkpoint(engine, changed)


def _count_and_checkpoint(engine: Engine, changed: int) -> None:
    total = _CHANGES_SINCE_CHECKPOINT.get(engine, 0) + changed
    _CHANGES_SINCE_CHECKPOINT[engine] = 0 if total >= CHECKPOINT_CHANGES else total
    if total >= CHECKPOINT_CHANGES:
        # in a thread of its own: neither the event loop nor a submission's worker waits for the pages
        threading.Thread(target=_checkpoint, args=(engine,), name="payoutdesk-checkpoint", daemon=True).start()


def _checkpoint(engine: Engine) -> None:
    try:
        pooled = engine.raw_connection()
        try:
            driver = pooled.driver_connection
            assert driver is not None
            # PASSIVE: busy (another checkpoint runs) or a reader in the way only leaves pages for the next one
            driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            pooled.close()
    except Exception:  # noqa: BLE001 - the next checkpoint, or SQLite when the last connection closes, copies the rest
        return


def _nowait_engine(engine: Engine) -> Engine:
    """The PostgreSQL engine of ``write(engine, wait=False)``: same database, ``lock_timeout`` set."""
    found = _NOWAIT_ENGINES.get(engine)
    if found is not None:
        return found
    with _NOWAIT_ENGINES_LOCK:
        found = _NOWAIT_ENGINES.get(engine)
        if found is None:
            # Used from one thread (the event loop) at a time: a connection or two is enough. No ping
            # before each checkout (a round trip): a dead connection fails the first statement,
            # before anything is committed, and ``write`` then answers WouldWait.
            found = create_engine(
                engine.url, pool_size=1, max_overflow=1, pool_timeout=0.01,
                connect_args={"options": f"-c lock_timeout={NOWAIT_LOCK_TIMEOUT_MS}"},
            )
            nowait = found
            event.listen(engine, "engine_disposed", lambda _engine: nowait.dispose())
            _NOWAIT_ENGINES[engine] = found
    return found


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


def transaction(engine: Engine, fn: Callable[[Connection], T], attempts: int = 8, *, wait: bool = True) -> T:
    """Run ``fn`` in one write transaction, again from the start when it lost a race (R14).

    A change refused for a stale version, a PostgreSQL serialization failure or deadlock is
    retried; after ``attempts`` the error reaches the caller, never silently dropped.
    ``wait=False`` (see ``write``) raises ``WouldWait`` instead of waiting for a lock or for a retry.
    """
    from payoutdesk.errors import StaleVersion

    for attempt in range(attempts):
        try:
            with write(engine, wait=wait) as conn:
                return fn(conn)
        except StaleVersion:
            if not wait:
                raise WouldWait("lost a race; to be retried") from None
            if attempt == attempts - 1:
                raise
        except DBAPIError as exc:
            code = getattr(exc.orig, "sqlstate", None)
            if code not in ("40001", "40P01") or attempt == attempts - 1:
                raise
            if not wait:
                raise WouldWait("lost a race; to be retried") from None
        time.sleep(min(0.2, 0.005 * 2**attempt) * random.random())
    raise AssertionError("unreachable")
