"""The file store: the original files of submissions, in the database, in chunks of at most 1 MiB.

DESIGN §6, "Stored files": no process ever holds a whole file. A file is streamed in by
:func:`store_stream` (each chunk in a short write transaction of its own, so that on SQLite an upload
never holds the write lock for long), and only then does one short transaction create the submission
that uses it (``service.create``). Every channel does the same: the web upload and the CLI now, the FTP
and SMTP servers and the pulls later::

    stored = files.store_stream(engine, parts)          # any iterable of bytes, of any sizes
    with db.write(engine) as conn:
        service.create(conn, actor, campaign_id, stored, file_name=..., content_type=...)

A file that ends up used by no submission (the duplicate guard refused it, the process died between
the two steps) is deleted by :func:`discard` at once, or by the retention job (:func:`purge`) a day
later. The worker reads a file back chunk by chunk into a temporary file (:func:`spool`), and the
download streams it (:func:`read_chunks`).

Retention (DESIGN §6, "Files"): :func:`purge` deletes the original files of submissions older than
``PAYOUTDESK_FILE_RETENTION_DAYS`` (failed and rejected ones too); the submission keeps its counts,
results and errors, and records when its file went (``file_deleted_at``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine

from payoutdesk.errors import FileRejected, FileTooLarge
from payoutdesk.kit import db
from payoutdesk.kit.chunks import in_pieces
from payoutdesk.kit.time import utcnow
from payoutdesk.submissions import repository as repo
from payoutdesk.submissions.formats.blob import Blob
from payoutdesk.submissions.formats.blob import spool as spool_parts

log = logging.getLogger("payoutdesk.files")

CHUNK_BYTES = 1024 * 1024  # DESIGN §6: chunks of at most 1 MiB
DELETE_BATCH = 16  # chunks deleted per transaction (16 MiB at most)
UNUSED_GRACE = timedelta(days=1)  # a file no submission uses is kept this long (an upload may still be attaching it)


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A complete file in the store."""

    id: int
    size: int
    sha256: str
    chunks: int


def _too_large(limit: int) -> FileTooLarge:
    mb = limit / CHUNK_BYTES
    shown = f"{mb:g} MB" if limit % (CHUNK_BYTES // 1024) == 0 else f"{limit:,} bytes"
    return FileTooLarge(f"The file is larger than the limit of {shown} (PAYOUTDESK_MAX_FILE_MB); "
                        "split it into smaller files.", limit_bytes=limit)


def _limited(chunks: Iterable[bytes], max_bytes: int | None) -> Iterator[bytes]:
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            raise _too_large(max_bytes)
        yield chunk


def store_stream(engine: Engine, parts: Iterable[bytes], *, max_bytes: int | None = None) -> StoredFile:
    """Store the bytes of ``parts`` as a new file, chunk by chunk, each chunk in its own short transaction;
    the size and SHA-256 are computed on the way. Past ``max_bytes`` (or when ``parts`` raises) the chunks
    written so far are deleted and the error raised: ``FileTooLarge`` for the size."""
    with db.write(engine) as conn:
        file_id = repo.new_stored_file(conn, utcnow())
    digest = hashlib.sha256()
    size = seq = 0
    try:
        for chunk in _limited(in_pieces(parts, CHUNK_BYTES), max_bytes):
            size += len(chunk)
            digest.update(chunk)
            with db.write(engine) as conn, repo.lean_cache(conn):
                repo.insert_chunk(conn, file_id, seq, chunk)
            seq += 1
        sha = digest.hexdigest()
        with db.write(engine) as conn:
            repo.finish_stored_file(conn, file_id, size, seq, sha)
    except BaseException:
        try:
            discard(engine, file_id)
        except Exception:
            log.exception("could not delete the incomplete stored file %s; the retention job will", file_id)
        raise
    return StoredFile(file_id, size, sha, seq)


def store_bytes(conn: Connection, data: bytes) -> StoredFile:
    """Store small bytes (an API batch of a few rows) in the caller's transaction."""
    file_id = repo.new_stored_file(conn, utcnow())
    seq = 0
    for seq, start in enumerate(range(0, len(data), CHUNK_BYTES), 1):
        repo.insert_chunk(conn, file_id, seq - 1, data[start:start + CHUNK_BYTES])
    sha = hashlib.sha256(data).hexdigest()
    repo.finish_stored_file(conn, file_id, len(data), seq, sha)
    return StoredFile(file_id, len(data), sha, seq)


def stored(conn: Connection, file_id: int) -> StoredFile | None:
    """The stored file, or None when it is unknown or incomplete."""
    row = repo.stored_file(conn, file_id)
    if row is None or row.sha256 is None:
        return None
    return StoredFile(int(row.id), int(row.size), str(row.sha256), int(row.chunks))


def chunks_in(conn: Connection, file: StoredFile) -> Iterator[bytes]:
    """The file's chunks in order, each read by its own statement in ``conn``'s transaction."""
    for seq in range(file.chunks):
        with repo.lean_cache(conn):
            data = repo.chunk_of(conn, file.id, seq)
        if data is None:
            raise FileRejected("The stored file is incomplete (a chunk is missing); submit the file again.")
        yield data


def read_chunks(engine: Engine, file: StoredFile) -> Iterator[bytes]:
    """The file's chunks in order, each read in a short read transaction of its own (a download that a
    slow client takes minutes to read keeps no transaction open)."""
    for seq in range(file.chunks):
        with db.read(engine) as conn, repo.lean_cache(conn):
            data = repo.chunk_of(conn, file.id, seq)
        if data is None:
            raise FileRejected("The stored file is incomplete (a chunk is missing).")
        yield data


def spool(conn: Connection, file: StoredFile) -> Blob:
    """The file as a blob for the readers: in memory when it is one chunk, else copied chunk by chunk into
    an anonymous temporary file (DESIGN §6: a reader that seeks, as XLSX and zip do, needs one)."""
    blob = spool_parts(chunks_in(conn, file), in_memory_up_to=CHUNK_BYTES)
    if blob.size != file.size:
        blob.close()
        raise FileRejected("The stored file is incomplete; submit the file again.")
    return blob


def discard(engine: Engine, file_id: int) -> bool:
    """Delete a stored file that no submission uses, a few chunks a transaction; whether it was deleted."""
    with db.read(engine) as conn:
        if repo.file_is_used(conn, file_id):
            return False
        last = repo.last_chunk(conn, file_id)
    if last is not None:
        for below in range(DELETE_BATCH, last + 1 + DELETE_BATCH, DELETE_BATCH):
            with db.write(engine) as conn, repo.lean_cache(conn):
                if repo.file_is_used(conn, file_id):
                    return False
                repo.delete_chunks(conn, file_id, below)
    with db.write(engine) as conn:
        return repo.delete_stored_file(conn, file_id)


@dataclass(frozen=True, slots=True)
class Purged:
    expired: int  # submissions whose original file was deleted for its age
    unused: int  # stored files deleted that no submission used


def purge(engine: Engine, retention_days: int, now: datetime | None = None, batch: int = 100) -> Purged:
    """The retention job: delete the original files of submissions made more than ``retention_days`` ago
    (those still queued or running excepted), and stored files that no submission has used for a day."""
    now = now or utcnow()
    cutoff = now - timedelta(days=retention_days)
    expired = unused = 0
    while True:
        with db.write(engine) as conn:
            rows = repo.expired_files(conn, cutoff, batch)
            for r in rows:
                repo.forget_file(conn, int(r.id), now)
        for r in rows:
            discard(engine, int(r.file_id))
        expired += len(rows)
        if len(rows) < batch:
            break
    done: set[int] = set()
    while True:
        with db.read(engine) as conn:
            ids = [i for i in repo.unused_files(conn, now - UNUSED_GRACE, batch) if i not in done]
        if not ids:
            break
        for file_id in ids:
            done.add(file_id)
            unused += discard(engine, file_id)
    if expired or unused:
        log.info("file retention: deleted the files of %s submissions and %s unused files", expired, unused)
    return Purged(expired, unused)
