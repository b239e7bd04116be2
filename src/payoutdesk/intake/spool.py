"""Private spool folders of the intake servers in the data folder (``ftp-spool``, ``smtp-spool``): a file is
written there while it arrives (owner-only: folder 0700, files 0600 from ``tempfile.mkstemp``), then
stored in the database and deleted. Files left by a process that died are deleted at the next start."""

from __future__ import annotations

import time
from pathlib import Path


def spool_dir(data_dir: Path, name: str) -> Path:
    """The spool folder ``name`` of the data folder, made private (0700) when needed."""
    folder = data_dir / name
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    return folder


def clean_spool(data_dir: Path, name: str, older_than_seconds: float = 86_400) -> int:
    """Delete the files of spool folder ``name`` older than a day (younger ones may be in flight in another
    process sharing the data folder); how many."""
    cutoff = time.time() - older_than_seconds
    gone = 0
    for entry in spool_dir(data_dir, name).iterdir():
        try:
            if entry.is_file() and entry.stat().st_mtime < cutoff:
                entry.unlink()
                gone += 1
        except OSError:
            continue
    return gone
