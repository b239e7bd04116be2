"""The home folder of a campaign's FTP login (DESIGN §3, "Upload to our FTP server"): a virtual
filesystem that exists only as the database shows it, so that any number of FTP processes over one
PostgreSQL serve the same folders and nothing on the machine's disk can be reached.

``/`` holds one folder, ``results/``, and takes uploads: a file stored (STOR) into ``/`` is written to
a private spool file (``<data dir>/ftp-spool``, mode 0600 in a 0700 folder) while it arrives and handed
to ``intake.common.take_file`` once complete (``ftp_server``). ``results/`` lists
``result_<file name>.csv`` for the campaign's latest finished FTP submissions, rendered from the database
(``submissions.result_file``) when downloaded. Nothing else exists: folders cannot be made or removed,
files cannot be deleted, renamed, appended to or have their mode changed.

Paths are resolved here, never by the operating system: ``..`` above ``/`` is refused (not clamped),
absolute paths name places inside the virtual root only (``/etc/passwd`` does not exist), and there
are no links to follow.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from pyftpdlib.exceptions import FilesystemError
from pyftpdlib.filesystems import AbstractedFS

from payoutdesk.intake import spool
from payoutdesk.kit import db
from payoutdesk.kit.time import as_utc, utcnow
from payoutdesk.submissions import repository as sub_repo
from payoutdesk.submissions.result_file import csv_chunks, result_name
from payoutdesk.submissions.service import label

ROOT = "/"
RESULTS = "/results"
FOLDERS = (ROOT, RESULTS)
OUTSIDE = "\x00outside:"  # marks a path that tried to leave the root: ``validpath`` refuses it
RESULTS_LISTED = 100  # the latest FTP submissions of the campaign looked at for results/
DONE = ("COMPLETE", "FAILED")
READ_PIECE = 1024 * 1024  # an upload is handed to take_file in pieces of 1 MiB
MAX_NAME = 255
SPOOL_FOLDER = "ftp-spool"
SIZES_KEPT = 1000
LISTING_KEPT_SECONDS = 1.0


def normalise(cwd: str, path: str) -> str | None:
    """The absolute virtual path of ``path`` seen from ``cwd``, or None when it would leave the root
    (``..`` above ``/``) or holds a NUL. Backslashes separate too (Windows clients)."""
    if "\x00" in path:
        return None
    joined = path if path.startswith(("/", "\\")) else f"{cwd}/{path}"
    parts: list[str] = []
    for part in joined.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    return "/" + "/".join(parts)


def spool_dir(data_dir: Path) -> Path:
    """The private folder of uploads in flight and downloads being rendered (mode 0700)."""
    return spool.spool_dir(data_dir, SPOOL_FOLDER)


def clean_spool(data_dir: Path, older_than_seconds: float = 86_400) -> int:
    """Delete spool files left by a process that died; how many (intake/spool.py)."""
    return spool.clean_spool(data_dir, SPOOL_FOLDER, older_than_seconds)


class Upload:
    """A file arriving by STOR: written to a private spool file as it comes, at most ``limit`` bytes
    (beyond that nothing more is written and ``too_large`` is set: the transfer is stopped)."""

    def __init__(self, folder: Path, file_name: str, limit: int) -> None:
        fd, path = tempfile.mkstemp(prefix="upload-", dir=folder)  # mode 0600
        self._file: IO[bytes] = os.fdopen(fd, "wb")
        self.path = Path(path)
        self.file_name = file_name
        self.name = f"/{file_name}"  # what pyftpdlib logs
        self.limit = limit
        self.size = 0
        self.too_large = False

    def write(self, data: bytes) -> int:
        if self.too_large or self.size + len(data) > self.limit:
            self.too_large = True
            return len(data)
        self._file.write(data)
        self.size += len(data)
        return len(data)

    @property
    def closed(self) -> bool:
        return self._file.closed

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def parts(self) -> Iterator[bytes]:
        """The spooled bytes in pieces of 1 MiB."""
        with self.path.open("rb") as f:
            while piece := f.read(READ_PIECE):
                yield piece

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class ResultEntry:
    submission_id: int
    finished_at: datetime


def result_files(session: Any) -> dict[str, ResultEntry]:
    """``results/`` of the session's campaign: file name → submission, the newest first. The newest
    submission of a file name gets ``result_<file name>.csv``; older ones of the same name get the
    submission's label in front (``result_F-12_returns.csv``)."""
    login = session.login
    with db.read(session.ctx.engine) as conn:
        rows = sub_repo.latest(conn, login.account_id, RESULTS_LISTED, None, login.campaign_id, kind="F",
                               channels=["ftp"])
    out: dict[str, ResultEntry] = {}
    for row in rows:
        if row.status not in DONE or row.finished_at is None:
            continue
        name = result_name(row.file_name, label(row))
        if name in out:
            name = result_name(f"{label(row)}_{row.file_name or ''}", label(row))
        if name not in out:
            out[name] = ResultEntry(int(row.id), as_utc(row.finished_at))
    return out


class _Sizes:
    """Sizes of result files already rendered, in this process (a finished submission's results do not
    change): SIZE, which clients such as curl ask before RETR, renders a file once per process."""

    def __init__(self) -> None:
        self._known: OrderedDict[int, int] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, submission_id: int) -> int | None:
        with self._lock:
            return self._known.get(submission_id)

    def put(self, submission_id: int, size: int) -> None:
        with self._lock:
            self._known[submission_id] = size
            while len(self._known) > SIZES_KEPT:
                self._known.popitem(last=False)


SIZES = _Sizes()


def _refused(message: str) -> FilesystemError:
    return FilesystemError(message)


def _missing() -> OSError:
    return OSError(errno.ENOENT, os.strerror(errno.ENOENT))


def _stat(mode: int, size: int, mtime: float) -> os.stat_result:
    return os.stat_result((mode, 0, 0, 1, 0, 0, size, int(mtime), int(mtime), int(mtime)))


class CampaignFS(AbstractedFS):  # type: ignore[misc]  # pyftpdlib is untyped
    """The virtual home folder of the campaign logged in on ``cmd_channel`` (its ``login`` and ``ctx``).
    "Real" paths here are the normalised virtual ones; ``OUTSIDE`` marks one that tried to leave."""

    def __init__(self, root: str, cmd_channel: Any) -> None:
        super().__init__(ROOT, cmd_channel)
        self._listed: tuple[float, dict[str, ResultEntry]] | None = None

    # --- paths

    def ftp2fs(self, ftppath: str) -> str:
        path = normalise(self.cwd, ftppath)
        return OUTSIDE + ftppath if path is None else path

    def fs2ftp(self, fspath: str) -> str:
        return fspath[len(OUTSIDE):] if fspath.startswith(OUTSIDE) else fspath

    def validpath(self, path: str) -> bool:
        return not path.startswith(OUTSIDE)

    def realpath(self, path: str) -> str:
        return path

    # --- what exists

    def _results(self) -> dict[str, ResultEntry]:
        # read once for the commands of a moment (a listing stats every name), never kept longer
        now = time.monotonic()
        if self._listed is None or now - self._listed[0] > LISTING_KEPT_SECONDS:
            self._listed = (now, result_files(self.cmd_channel))
        return self._listed[1]

    def _entry(self, path: str) -> ResultEntry | None:
        folder, _, name = path.rpartition("/")
        if folder != RESULTS or not name:
            return None
        return self._results().get(name)

    def isdir(self, path: str) -> bool:
        return path in FOLDERS

    def isfile(self, path: str) -> bool:
        return self._entry(path) is not None

    def islink(self, path: str) -> bool:
        return False

    def lexists(self, path: str) -> bool:
        return self.isdir(path) or self.isfile(path)

    def chdir(self, path: str) -> None:
        if path not in FOLDERS:
            raise _refused("No such folder: there are / and /results")
        self.cwd = path

    def listdir(self, path: str) -> list[str]:
        if path == ROOT:
            return ["results"]
        if path == RESULTS:
            return list(self._results())
        raise _missing()

    def listdirinfo(self, path: str) -> list[str]:
        return self.listdir(path)

    def stat(self, path: str) -> os.stat_result:
        if path in FOLDERS:
            return _stat(stat.S_IFDIR | 0o755, 0, time.time())
        entry = self._entry(path)
        if entry is None:
            raise _missing()
        # the size of a result file is known once it was rendered (SIZE, RETR); until then listings show 0
        size = SIZES.get(entry.submission_id) or 0
        return _stat(stat.S_IFREG | 0o444, size, entry.finished_at.timestamp())

    lstat = stat

    def getsize(self, path: str) -> int:
        entry = self._entry(path)
        if entry is None:
            raise _missing()
        size = SIZES.get(entry.submission_id)
        if size is None:
            size = sum(len(chunk) for chunk in csv_chunks(self.cmd_channel.ctx.engine, entry.submission_id))
            SIZES.put(entry.submission_id, size)
        return size

    def getmtime(self, path: str) -> float:
        return float(self.stat(path).st_mtime)

    def readlink(self, path: str) -> str:
        raise _refused("There are no links here")

    # --- opening files

    def open(self, filename: str, mode: str) -> Any:
        if "r" in mode and "+" not in mode:
            return self._download(filename)
        if "a" in mode or "+" in mode:
            raise _refused("Appending to or resuming a file is refused: upload the whole file with STOR")
        folder, _, name = filename.rpartition("/")
        if (folder or ROOT) != ROOT:
            raise _refused("Upload returns files to the home folder /; results/ holds the results only")
        if not name or filename in FOLDERS:
            raise _refused("A folder cannot be overwritten")
        if len(name) > MAX_NAME:
            raise _refused(f"The file name is longer than {MAX_NAME} characters")
        ctx = self.cmd_channel.ctx
        return Upload(spool_dir(ctx.settings.data_dir), name, ctx.settings.max_file_bytes)

    def _download(self, path: str) -> IO[bytes]:
        entry = self._entry(path)
        if entry is None:
            raise _missing()
        ctx = self.cmd_channel.ctx
        out = tempfile.TemporaryFile(dir=spool_dir(ctx.settings.data_dir))  # noqa: SIM115 - pyftpdlib closes it
        try:
            for chunk in csv_chunks(ctx.engine, entry.submission_id):
                out.write(chunk)
            SIZES.put(entry.submission_id, out.tell())
            out.seek(0)
        except Exception as exc:
            out.close()
            raise _refused("The result file could not be read; try again") from exc
        return out

    # --- what is refused

    def mkstemp(self, suffix: str = "", prefix: str = "", dir: str | None = None, mode: str = "wb") -> Any:
        raise _refused("Uploads need a file name (STOU is refused): use STOR")

    def mkdir(self, path: str) -> None:
        raise _refused("Folders cannot be made here: upload files to /")

    def rmdir(self, path: str) -> None:
        raise _refused("Folders cannot be removed here")

    def remove(self, path: str) -> None:
        raise _refused("Files cannot be deleted here: uploads are taken at once, results stay")

    def rename(self, src: str, dst: str) -> None:
        raise _refused("Files cannot be renamed here: upload under the final name")

    def chmod(self, path: str, mode: int) -> None:
        raise _refused("Modes cannot be changed here")

    def utime(self, path: str, timeval: float) -> None:
        raise _refused("Times cannot be changed here")

    # --- listings (no user or group names, no disk)

    def format_list(self, basedir: str, listing: list[str], ignore_err: bool = True) -> Iterator[bytes]:
        now = utcnow().timestamp()
        for name in listing:
            path = normalise(basedir, name) or ""
            try:
                st = self.lstat(path)
            except (OSError, FilesystemError):
                if ignore_err:
                    continue
                raise
            when = time.gmtime(st.st_mtime)
            shown = time.strftime("%b %d %H:%M" if now - st.st_mtime < 180 * 86_400 else "%b %d  %Y", when)
            line = f"{stat.filemode(st.st_mode)}    1 payoutdesk payoutdesk {st.st_size:>8} {shown} {name}\r\n"
            yield line.encode(self.cmd_channel.encoding, self.cmd_channel.unicode_errors)

    def format_mlsx(self, basedir: str, listing: list[str], perms: str, facts: list[str],
                    ignore_err: bool = True) -> Iterator[bytes]:
        for name in listing:
            path = normalise(basedir, name) if name else basedir
            try:
                st = self.lstat(path or "")
            except (OSError, FilesystemError):
                if ignore_err:
                    continue
                raise
            is_dir = stat.S_ISDIR(st.st_mode)
            found = {
                "type": "dir" if is_dir else "file",
                "perm": ("elc" if path == ROOT else "el") if is_dir else "r",
                "modify": time.strftime("%Y%m%d%H%M%S", time.gmtime(st.st_mtime)),
            }
            line = "".join(f"{k}={v};" for k, v in found.items() if k in facts)
            yield f"{line} {name}\r\n".encode(self.cmd_channel.encoding, self.cmd_channel.unicode_errors)
