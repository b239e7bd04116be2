"""Pull from the brand's server (DESIGN §3, "Pull from your FTP server").

An event type in mode ``ftp_pull`` names a server (FTP, FTPS or SFTP, with a password or a private key,
both sealed in its settings), a folder and a file pattern (``*`` and ``?``), and a schedule (``daily_at``
UTC or ``every_hours``). A run logs in, lists the folder and takes each new file once: a file whose name,
size and modification time are in ``remote_files`` for the event type was taken before and is skipped.
Names beginning with ``receipt_`` or ``result_`` (what payoutdesk writes back) and folders are ignored.

A file is streamed into the file store (``take_file``, never whole in memory) and queued as a submission;
its ``remote_files`` row is written in the transaction that queues it, so a crash cannot take it twice, and
two runs at once cannot either (the second insert breaks ``uq_remote_files_seen``, its transaction rolls
back: skipped). A file with the content of one already submitted for the campaign is recorded as a
duplicate and not applied. Then, as set, the file is kept, deleted or moved to ``move_to``; with
``write_receipts`` a ``receipt_<name>`` is written beside it, and with ``write_results`` the submission's
``result_<name>.csv`` is written to that folder once it is done (a result delivery, ``deliver_result``).

Every run is an ``intake_runs`` row (``intake.runs``): the counts, the submissions, and for a failure (a
server that is down, a refused login, a missing folder) a sentence for the brand's partnership manager.
A failure loses nothing: what was not taken stays on the server for the next run. ``files_taken`` counts the
files queued, ``duplicates`` those whose content was already submitted, ``skipped`` the other files of the
pattern (taken by an earlier run, still being written, over the size limit, taken by another run at the
same moment); the notes of the run's ``detail`` say why for all but the first kind.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy import Connection, Row
from sqlalchemy.exc import IntegrityError

from payoutdesk.errors import Conflict, NotFound
from payoutdesk.intake import deliveries, remote, runs
from payoutdesk.intake import pull_repository as repo
from payoutdesk.intake import repository as intake_repo
from payoutdesk.intake.common import IntakeContext, Taken, take_file
from payoutdesk.intake.runs import RunCounts
from payoutdesk.kit import db, logs
from payoutdesk.kit.time import iso, utcnow
from payoutdesk.ledger.workflow import Channel
from payoutdesk.submissions.result_file import csv_chunks, result_name
from payoutdesk.submissions.service import label

log = logging.getLogger("payoutdesk.intake")

CHANNEL = "ftp_pull"
IGNORED_PREFIXES = ("receipt_", "result_")
MAX_NAME = 500  # remote_files.name
MAX_NOTES = 20  # notes kept in a run's detail (the counts say the rest)


class SettingsBroken(Exception):
    """The stored settings cannot be used (a secret that the key cannot open); the text is for people."""


class SizeChanged(Exception):
    """The file did not have the size listed: it is still being written."""


@dataclass(frozen=True)
class PullSettings:
    endpoint: remote.Endpoint
    folder: str
    pattern: str
    after: str  # keep, delete, move
    move_to: str | None
    write_receipts: bool
    write_results: bool
    schedule: dict[str, Any]


def settings_of(ctx: IntakeContext, event_type: Row[Any]) -> PullSettings:
    """The pull settings of ``event_type`` with its secrets opened."""
    s = json.loads(event_type.returns_settings or "{}")
    secrets: dict[str, str | None] = {}
    for key in ("password", "private_key"):
        sealed = s.get(key)
        if not sealed:
            secrets[key] = None
            continue
        try:
            secrets[key] = ctx.box.open(str(sealed))
        except ValueError:
            raise SettingsBroken(f"The stored {key.replace('_', ' ')} cannot be decrypted (was "
                                 "PAYOUTDESK_SECRET_KEY changed?): enter it again in the event type's "
                                 "Returns Processing settings.") from None
    protocol = str(s.get("protocol", "sftp"))
    endpoint = remote.Endpoint(protocol=protocol, host=str(s.get("host", "")),
                               port=int(s.get("port") or (22 if protocol == "sftp" else 21)),
                               username=str(s.get("username", "")), password=secrets["password"],
                               private_key=secrets["private_key"])
    folder = str(s.get("folder") or "/")
    move_to = s.get("move_to")
    if move_to:
        move_to = posixpath.normpath(posixpath.join(folder, str(move_to)))  # relative to the folder
    return PullSettings(endpoint=endpoint, folder=folder, pattern=str(s.get("pattern") or "*"),
                        after=str(s.get("after", "keep")), move_to=move_to or None,
                        write_receipts=bool(s.get("write_receipts", False)),
                        write_results=bool(s.get("write_results", False)),
                        schedule=dict(s.get("schedule") or {"daily_at": "02:00"}))


def matches(name: str, pattern: str) -> bool:
    """``*`` and ``?`` only, case-sensitive (``[`` is an ordinary character)."""
    return fnmatchcase(name, pattern.replace("[", "[[]"))


def wanted(entry: remote.RemoteEntry, pattern: str) -> bool:
    """A file (not a folder) matching ``pattern`` that payoutdesk did not write itself."""
    return (entry.is_file and not entry.name.lower().startswith(IGNORED_PREFIXES)
            and matches(entry.name, pattern))


# --- a run -----------------------------------------------------------------------------------------


def run(ctx: IntakeContext, event_type_id: int, trigger: str) -> dict[str, Any]:
    """Pull now: the finished run as ``runs.run_dict`` shows it. NotFound for no such event type, Conflict
    for one that is not in mode ftp_pull. Never raises for the server's failures: the run records them."""
    with db.read(ctx.engine) as conn:
        et = repo.event_type(conn, event_type_id)
    if et is None:
        raise NotFound(f"No event type with id {event_type_id}.")
    if et.returns_mode != CHANNEL:
        raise Conflict(f"Event type {event_type_id} does not pull returns files from a server (its returns "
                       f"processing is {et.returns_mode}).")
    run_id = runs.start(ctx, account_id=et.account_id, campaign_id=et.campaign_id, event_type_id=et.id,
                        channel=CHANNEL, trigger=trigger)
    counts = RunCounts()
    error: str | None = None
    where = "the brand's server"
    try:
        cfg = settings_of(ctx, et)
        where = f"{cfg.endpoint.protocol.upper()} server {cfg.endpoint.host}"
        _pull(ctx, et, cfg, run_id, counts)
    except (remote.RemoteError, SettingsBroken) as exc:
        error = str(exc)
    except Exception as exc:  # recorded on the run, which must end either way
        log.exception("pull of event type %s failed", et.id)
        error = (f"The pull stopped on an unexpected error ({type(exc).__name__}: {str(exc)[:300]}); it is logged. "
                 "Files not taken stay on the server for the next run.")
    if error is not None and (counts.files_taken or counts.duplicates):
        error += f" Before that, {counts.files_taken} file(s) were taken and {counts.duplicates} duplicate(s) seen."
    if len(counts.notes) > MAX_NOTES:
        counts.notes[MAX_NOTES:] = [f"… and {len(counts.notes) - MAX_NOTES} more"]
    runs.finish(ctx, run_id, account_id=et.account_id, source=f"event_type:{et.id}", counts=counts, error=error,
                what=f"the pull of event type {et.name!r} from the {where}")
    logs.event(log, f"pull of event type {et.id} ({trigger}): {'failed: ' + error if error else 'ok'}; taken "
               f"{counts.files_taken}, duplicates {counts.duplicates}, skipped {counts.skipped}",
               event="pull_run", event_type=et.id, run=run_id, outcome="failed" if error else "ok",
               files_taken=counts.files_taken, duplicates=counts.duplicates, skipped=counts.skipped)
    with db.read(ctx.engine) as conn:
        row = repo.run(conn, run_id)
    assert row is not None
    return runs.run_dict(row)


def _pull(ctx: IntakeContext, et: Row[Any], cfg: PullSettings, run_id: int, counts: RunCounts) -> None:
    with remote.connect(cfg.endpoint) as server:
        entries = [e for e in server.list_folder(cfg.folder) if wanted(e, cfg.pattern)]
        entries.sort(key=lambda e: (e.mtime, e.name))  # oldest first: returns apply in the order they were made
        for entry in entries:
            _one(ctx, et, cfg, run_id, counts, server, entry)


def _one(ctx: IntakeContext, et: Row[Any], cfg: PullSettings, run_id: int, counts: RunCounts,
         server: remote.Remote, entry: remote.RemoteEntry) -> None:
    if len(entry.name) > MAX_NAME:
        counts.skipped += 1
        counts.notes.append(f"{entry.name[:60]}… skipped: a file name has at most {MAX_NAME} characters")
        return
    with db.read(ctx.engine) as conn:
        before = repo.seen(conn, et.id, entry.name, entry.size, entry.mtime)
    if before is not None:
        counts.skipped += 1
        if before.after_done is None and before.outcome in ("queued", "duplicate") and cfg.after != "keep":
            _after(ctx, cfg, counts, server, entry, int(before.id))  # a run that stopped before it could
        return
    if entry.size == 0:
        counts.skipped += 1
        counts.notes.append(f"{entry.name} is empty: left for the next run")
        return
    if entry.size > ctx.settings.max_file_bytes:
        _record_alone(ctx, et, run_id, entry, None, "refused")
        counts.skipped += 1
        counts.notes.append(f"{entry.name} refused: {entry.size:,} bytes, at most {ctx.settings.max_file_bytes:,} "
                            "are accepted (PAYOUTDESK_MAX_FILE_MB); it stays on the server")
        return
    path = posixpath.join(cfg.folder, entry.name)
    recorded: list[int] = []

    def after_queued(conn: Connection, sub: dict[str, Any]) -> None:
        sub_id = int(str(sub["id"]).split("-", 1)[-1])
        recorded.append(repo.record(conn, event_type_id=et.id, name=entry.name, size=entry.size,
                                    mtime=entry.mtime, sha256=sub.get("sha256"), submission_id=sub_id,
                                    outcome="queued", taken_at=utcnow(), run_id=run_id))
        if cfg.write_results:
            deliveries.register(conn, sub_id, CHANNEL, {"event_type_id": et.id, "folder": cfg.folder,
                                                        "name": entry.name})

    try:
        taken = take_file(ctx, account_id=et.account_id, campaign_id=et.campaign_id, channel=Channel.FTP_PULL,
                          actor_name=f"{cfg.endpoint.protocol}://{cfg.endpoint.username}@{cfg.endpoint.host}",
                          parts=_sized(server.read(path), entry.size), file_name=entry.name,
                          after_queued=after_queued)
    except IntegrityError:
        counts.skipped += 1  # another run took it at the same moment
        return
    except SizeChanged:
        counts.skipped += 1
        counts.notes.append(f"{entry.name} is still being written: left for the next run")
        return
    except remote.FileGone:
        counts.skipped += 1
        counts.notes.append(f"{entry.name} went away before it could be read")
        return
    if taken.outcome == "queued":
        counts.files_taken += 1
        counts.submissions.append(str(taken.label))
        _receipt(cfg, counts, server, entry, taken)
        _after(ctx, cfg, counts, server, entry, recorded[0])
    elif taken.outcome == "duplicate":
        remote_id = _record_alone(ctx, et, run_id, entry, taken.sha256, "duplicate")
        if remote_id is None:
            counts.skipped += 1  # another run recorded it first
            return
        counts.duplicates += 1
        counts.notes.append(f"{entry.name} has the content of {taken.first_submission or 'a file already taken'}: "
                            "not applied again")
        _receipt(cfg, counts, server, entry, taken)
        _after(ctx, cfg, counts, server, entry, remote_id)
    else:  # refused (too large, empty): noted once, left on the server
        _record_alone(ctx, et, run_id, entry, taken.sha256, "refused")
        counts.skipped += 1
        counts.notes.append(f"{entry.name} refused: {taken.message}")


def _sized(parts: Iterator[bytes], expected: int) -> Iterator[bytes]:
    """``parts``, checked to add up to the listed size (else the file is still being written)."""
    got = 0
    try:
        for part in parts:
            got += len(part)
            if got > expected:
                raise SizeChanged
            yield part
    finally:
        close = getattr(parts, "close", None)
        if close is not None:
            close()
    if got != expected:
        raise SizeChanged


def _record_alone(ctx: IntakeContext, et: Row[Any], run_id: int, entry: remote.RemoteEntry, sha256: str | None,
                  outcome: str) -> int | None:
    """Note a file that queued nothing (a duplicate, a refused file); None when another run noted it first."""
    try:
        with db.write(ctx.engine) as conn:
            return repo.record(conn, event_type_id=et.id, name=entry.name, size=entry.size, mtime=entry.mtime,
                               sha256=sha256, submission_id=None, outcome=outcome, taken_at=utcnow(), run_id=run_id)
    except IntegrityError:
        return None


def _receipt(cfg: PullSettings, counts: RunCounts, server: remote.Remote, entry: remote.RemoteEntry,
             taken: Taken) -> None:
    if not cfg.write_receipts:
        return
    if taken.outcome == "queued":
        what = f"submission: {taken.label}\noutcome: queued\n"
    else:
        what = f"submission: none\noutcome: duplicate of {taken.first_submission or 'a file already taken'}, " \
               "not applied again\n"
    text = (f"payoutdesk took this file\nfile: {entry.name}\ntaken_at: {iso(utcnow())}\n{what}"
            f"size: {taken.size}\nsha256: {taken.sha256 or ''}\n")
    try:
        server.write(posixpath.join(cfg.folder, f"receipt_{entry.name}"), [text.encode()])
    except remote.RemoteError as exc:
        counts.notes.append(f"the receipt of {entry.name} was not written: {exc}")


def _after(ctx: IntakeContext, cfg: PullSettings, counts: RunCounts, server: remote.Remote,
           entry: remote.RemoteEntry, remote_id: int) -> None:
    """Keep, delete or move the file taken, and note which."""
    path = posixpath.join(cfg.folder, entry.name)
    try:
        if cfg.after == "delete":
            server.delete(path)
            done = "deleted"
        elif cfg.after == "move" and cfg.move_to:
            target = posixpath.join(cfg.move_to, entry.name)
            try:
                server.rename(path, target)
            except remote.TransferFailed:
                with contextlib.suppress(remote.TransferFailed):
                    server.make_folder(cfg.move_to)  # a folder that does not exist yet
                server.rename(path, target)
            done = "moved"
        else:
            done = "kept"
    except remote.RemoteError as exc:
        counts.notes.append(f"{entry.name} was taken but not {'deleted' if cfg.after == 'delete' else 'moved'}: "
                            f"{exc}")
        return
    with db.write(ctx.engine) as conn:
        repo.set_after_done(conn, remote_id, done)


# --- results written back --------------------------------------------------------------------------


@deliveries.handler(CHANNEL)
def deliver_result(ctx: IntakeContext, sub: Any, target: dict[str, Any]) -> None:
    """Write ``result_<name>.csv`` of a submission that is done to the folder its file was pulled from."""
    with db.read(ctx.engine) as conn:
        et = repo.event_type(conn, int(target["event_type_id"]))
    if et is None or et.returns_mode != CHANNEL:
        raise LookupError(f"event type {target['event_type_id']} no longer pulls from a server: the results of "
                          f"{label(sub)} have nowhere to go")
    cfg = settings_of(ctx, et)
    name = result_name(sub.file_name or target.get("name"), label(sub))
    with remote.connect(cfg.endpoint) as server:
        server.write(posixpath.join(str(target["folder"]), name), csv_chunks(ctx.engine, int(sub.id)))


# --- the schedule ----------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def slot_of(schedule: dict[str, Any], now: datetime) -> str | None:
    """The occurrence of ``schedule`` due at ``now`` (None before the day's time of ``daily_at``): the date
    for ``daily_at``; for ``every_hours`` N the start of the N-hour period (periods counted from midnight
    UTC of 1970-01-01, so for an N that divides 24 they start at midnight every day)."""
    now = now.astimezone(UTC)
    if "every_hours" in schedule:
        every = max(1, int(schedule["every_hours"]))
        hours = int((now - _EPOCH).total_seconds() // 3600)
        start = _EPOCH + timedelta(hours=hours // every * every)
        return f"{start:%Y-%m-%dT%H}"
    at = str(schedule.get("daily_at") or "02:00")
    hour, minute = (int(x) for x in at.split(":", 1))
    if (now.hour, now.minute) < (hour, minute):
        return None
    return f"{now:%Y-%m-%d}"


def scheduled(ctx: IntakeContext, now: datetime) -> list[tuple[str, str, Callable[[], str]]]:
    """(job name, slot, run) of every pull with an occurrence due at ``now``, for ``scheduler.run_if_due``,
    which runs each slot once across processes."""
    with db.read(ctx.engine) as conn:
        rows = intake_repo.event_types_in_mode(conn, CHANNEL)
    out: list[tuple[str, str, Callable[[], str]]] = []
    for et in rows:
        try:
            schedule = dict(json.loads(et.returns_settings or "{}").get("schedule") or {"daily_at": "02:00"})
            slot = slot_of(schedule, now)
        except (ValueError, TypeError, AttributeError):
            log.warning("event type %s has a pull schedule that cannot be read", et.id)
            continue
        if slot is not None:
            out.append((f"pull:{et.id}", slot, functools.partial(_scheduled_run, ctx, int(et.id))))
    return out


def _scheduled_run(ctx: IntakeContext, event_type_id: int) -> str:
    try:
        done = run(ctx, event_type_id, "schedule")
    except (NotFound, Conflict) as exc:  # its mode changed since
        return f"not run: {exc.detail}"
    return summary(done)


def summary(done: dict[str, Any]) -> str:
    line = (f"run {done['id']} {done['outcome']}: taken {done['files_taken']}, duplicates {done['duplicates']}, "
            f"skipped {done['skipped']}")
    if done["outcome"] == "failed" and done.get("detail"):
        line += f": {str(done['detail'])[:300]}"
    return line
