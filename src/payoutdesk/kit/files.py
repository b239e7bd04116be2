"""Files readable by their owner only: the data folder, the SQLite database, the key (DESIGN §6).

A folder payoutdesk makes is 0700 and a file it makes 0600, whatever the umask. An existing one
is tightened to that mode when it is the current user's and grants anything to group or others;
a shared folder (sticky, as /tmp is) or one owned by someone else is left as it is.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy.engine import make_url

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
DATA_FILES = ("secret.key", "demo.json")  # beside the SQLite database and its companions
# SQLite creates these beside a database with the database file's own mode
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def _tighten(path: Path, mode: int) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    if st.st_uid != os.getuid() or st.st_mode & stat.S_ISVTX:
        return
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, stat.S_IMODE(st.st_mode) & mode)


def private_dir(path: Path) -> Path:
    """Make ``path`` (and any missing parent, with the usual mode) a folder only its owner can open."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=PRIVATE_DIR)
        os.chmod(path, PRIVATE_DIR)  # mkdir's mode is filtered by the umask; say it exactly
    except FileExistsError:
        _tighten(path, PRIVATE_DIR)
    return path


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists and is readable and writable by its owner only (0600)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        _tighten(path, PRIVATE_FILE)
    else:
        os.close(fd)
    return path


def private_data_dir(path: Path) -> None:
    """Tighten an existing data folder and the files payoutdesk keeps there (the key, demo.json)."""
    if path.is_dir():
        private_dir(path)
        for name in DATA_FILES:
            _tighten(path / name, PRIVATE_FILE)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, which is 0600 before the first byte lands in it."""
    private_file(path)
    path.write_text(text, encoding="utf-8")


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL; None for PostgreSQL and for in-memory databases."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if not database or database == ":memory:" or parsed.query.get("mode") == "memory":
        return None
    if database.startswith("file:"):
        database = database.removeprefix("file:").split("?", 1)[0]
        if not database or database == ":memory:":
            return None
    return Path(database)


def prepare_sqlite_file(url: str) -> None:
    """Before SQLite opens the database of ``url``: create the file 0600 if it does not exist yet
    (in a folder made 0700 if that is missing), else tighten it and its -wal/-shm files to 0600.
    SQLite gives the -wal and -shm files it creates the database file's mode."""
    path = sqlite_path(url)
    if path is None:
        return
    if not path.parent.exists():
        private_dir(path.parent)
    private_file(path)
    for suffix in SQLITE_COMPANIONS:
        _tighten(path.with_name(path.name + suffix), PRIVATE_FILE)
