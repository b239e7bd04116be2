"""A consistent copy of a SQLite database while other processes use it (SQLite's online backup).

The copy is made through the sqlite3 module's ``Connection.backup`` a step of ``STEP_PAGES``
pages at a time: each step holds a read transaction on the source only while it copies its
pages, and the copy is a snapshot of one moment. A write committed by another connection between
two steps makes SQLite start the copy again; after ``MAX_RESTARTS`` such restarts the rest is
copied in one step, in a single read transaction. In WAL mode (payoutdesk's) a reader blocks no
writer, so even that last step holds nobody up: it only keeps SQLite from recycling the WAL until it
ends.

The copy is written to a temporary file (0600) beside the target and moved into place when it is
complete, so the target never holds half a copy; an existing target is replaced only when asked.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from payoutdesk.kit.files import PRIVATE_FILE

STEP_PAGES = 4096  # 16 MiB of 4 KiB pages per step
MAX_RESTARTS = 3


class BackupRefused(Exception):
    """The backup cannot be made as asked (no database there, the target exists, ...)."""


@dataclass(frozen=True)
class BackupDone:
    source: Path
    target: Path
    pages: int
    page_size: int
    restarts: int
    seconds: float

    @property
    def size(self) -> int:
        return self.pages * self.page_size


class _Restarted(Exception):
    pass


def backup_sqlite(source: Path, target: Path, *, force: bool = False, step_pages: int = STEP_PAGES,
                  max_restarts: int = MAX_RESTARTS) -> BackupDone:
    """Copy the SQLite database ``source`` to ``target`` (see the module's description)."""
    if not source.is_file():
        raise BackupRefused(f"There is no database file at {source}.")
    if target.resolve() == source.resolve():
        raise BackupRefused("The backup cannot replace the database itself: name another file.")
    if target.exists() and not force:
        raise BackupRefused(f"{target} exists already: name a new file, or add --force to replace it.")
    if target.is_dir():
        raise BackupRefused(f"{target} is a folder: name a file.")
    if not target.parent.is_dir():
        raise BackupRefused(f"There is no folder {target.parent} for the backup.")
    started = time.monotonic()
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    temp = Path(temp_name)
    os.chmod(temp, PRIVATE_FILE)  # mkstemp makes it 0600 already; SQLite's journal files follow it
    try:
        src = sqlite3.connect(source.resolve().as_uri() + "?mode=rw", uri=True, timeout=60)
        try:
            restarts = _copy(src, temp, step_pages, max_restarts)
            page_size = int(src.execute("PRAGMA page_size").fetchone()[0])
        finally:
            src.close()
        with sqlite3.connect(temp) as copy:
            pages = int(copy.execute("PRAGMA page_count").fetchone()[0])
        copy.close()
        if force:
            os.replace(temp, target)
        else:
            try:
                os.link(temp, target)  # fails if the target appeared meanwhile: never overwrite it
            except FileExistsError:
                raise BackupRefused(f"{target} exists already: name a new file, or add --force.") from None
            temp.unlink()
    except BaseException:
        for leftover in (temp, *(temp.with_name(temp.name + s) for s in ("-journal", "-wal", "-shm"))):
            leftover.unlink(missing_ok=True)
        raise
    return BackupDone(source, target, pages, page_size, restarts, time.monotonic() - started)


def _copy(src: sqlite3.Connection, temp: Path, step_pages: int, max_restarts: int) -> int:
    """Copy in steps; after ``max_restarts`` restarts, in one step. Returns the restarts seen."""
    restarts = 0
    while True:
        dst = sqlite3.connect(temp)
        try:
            if restarts >= max_restarts:
                src.backup(dst, pages=-1)
                return restarts
            seen: list[int] = []

            def progress(_status: int, remaining: int, _total: int, seen: list[int] = seen) -> None:
                if seen and remaining >= seen[-1]:
                    raise _Restarted  # another connection wrote: SQLite began the copy again
                seen.append(remaining)

            try:
                src.backup(dst, pages=step_pages, progress=progress)
            except _Restarted:
                restarts += 1
                continue
            return restarts
        finally:
            dst.close()
