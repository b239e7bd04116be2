"""Runs of the intake channels and their failures (DESIGN §3; issue "Intake channels").

Every pull, poll, mail received and FTP upload is an ``intake_runs`` row: what came in, the submissions
it made, and for a failure why (a refused login, a missing folder, a mail without a returns file). A
failure opens a *failure spell* for its source (``event_type:12``, ``campaign:3:email`` ...); the first
failure of a spell is mailed to the account's alert address once (when a relay is configured), later
failures of the same spell only extend it, and the next success closes it. So a nightly pull that
fails every night is mailed once, not every night, and never fails silently: the event type shows it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from payoutdesk.intake import mail
from payoutdesk.intake import repository as repo
from payoutdesk.intake.common import IntakeContext
from payoutdesk.kit import db, logs
from payoutdesk.kit.time import iso, utcnow

log = logging.getLogger("payoutdesk.intake")

OUTCOMES = ("running", "ok", "failed")


@dataclass
class RunCounts:
    """What a run did, filled in as it goes."""

    files_taken: int = 0
    duplicates: int = 0
    skipped: int = 0
    submissions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def start(ctx: IntakeContext, *, account_id: int, campaign_id: int, event_type_id: int | None, channel: str,
          trigger: str) -> int:
    with db.write(ctx.engine) as conn:
        return repo.insert_run(conn, {
            "account_id": account_id, "campaign_id": campaign_id, "event_type_id": event_type_id,
            "channel": channel, "trigger": trigger, "started_at": utcnow(), "outcome": "running",
        })


def finish(ctx: IntakeContext, run_id: int, *, account_id: int, source: str, counts: RunCounts,
           error: str | None = None, what: str = "") -> None:
    """End a run: ``ok`` without ``error``, else ``failed`` (which opens or extends the source's failure
    spell and, once per spell, mails the account's alert address); a success closes the spell."""
    detail = error if error is not None else ("; ".join(counts.notes) or None)
    with db.write(ctx.engine) as conn:
        repo.finish_run(conn, run_id, {
            "finished_at": utcnow(), "outcome": "failed" if error is not None else "ok",
            "files_taken": counts.files_taken, "duplicates": counts.duplicates, "skipped": counts.skipped,
            "submissions": repo.submissions_json(counts.submissions), "detail": detail,
        })
    if error is not None:
        failed(ctx, account_id, source, error, what=what)
    else:
        succeeded(ctx, account_id, source)


def record(ctx: IntakeContext, *, account_id: int, campaign_id: int, event_type_id: int | None, channel: str,
           trigger: str, counts: RunCounts, source: str, error: str | None = None, what: str = "") -> int:
    """A run that is over as soon as it starts (a mail, an upload, an outbound message): one row."""
    run_id = start(ctx, account_id=account_id, campaign_id=campaign_id, event_type_id=event_type_id,
                   channel=channel, trigger=trigger)
    finish(ctx, run_id, account_id=account_id, source=source, counts=counts, error=error, what=what)
    return run_id


def failed(ctx: IntakeContext, account_id: int, source: str, error: str, *, what: str = "") -> None:
    """Note a failure of ``source``; alert once per failure spell."""
    now = utcnow()
    with db.write(ctx.engine) as conn:
        if repo.spell(conn, account_id, source) is None:
            repo.open_spell(conn, account_id, source, now, error[:2000])
        else:
            repo.extend_spell(conn, account_id, source, now, error[:2000])
    logs.event(log, f"intake failure of {source}: {error}", level=logging.WARNING, event="intake_failed",
               source=source, account=account_id)
    alert(ctx, account_id, source, what or source)


def succeeded(ctx: IntakeContext, account_id: int, source: str) -> None:
    with db.write(ctx.engine) as conn:
        closed = repo.close_spell(conn, account_id, source)
    if closed:
        logs.event(log, f"intake of {source} works again", event="intake_recovered", source=source,
                   account=account_id)


def alert(ctx: IntakeContext, account_id: int, source: str, what: str) -> bool:
    """Mail the first failure of a spell to the account's alert address (once, whichever process gets
    there first); whether a mail went out. Without an alert address or a relay nothing is sent, and the
    spell stays unalerted so that a relay configured later still tells."""
    if mail.relay_address(ctx.settings) is None:
        return False
    with db.read(ctx.engine) as conn:
        account = repo.account(conn, account_id)
        spell = repo.spell(conn, account_id, source)
    if account is None or not account.alert_email or spell is None or spell.alerted_at is not None:
        return False
    with db.write(ctx.engine) as conn:
        if not repo.mark_alerted(conn, account_id, source, utcnow()):
            return False
    body = (f"payoutdesk could not take returns for {account.name}: {what}.\n\n"
            f"Failing since {iso(spell.failing_since)}.\nError: {spell.last_error}\n\n"
            "Nothing was lost: files not taken stay where they are and are taken by the next run that works.\n"
            "You get this mail once per failure spell; the event type shows the latest runs.\n")
    try:
        mail.send(ctx.settings, mail.message(ctx.settings, account.alert_email,
                                             f"payoutdesk: returns intake failing ({what})", body))
    except Exception as exc:  # noqa: BLE001 - the relay failed: let a later failure try again
        with db.write(ctx.engine) as conn:
            repo.unmark_alerted(conn, account_id, source)
        logs.event(log, f"alert for {source} not sent: {exc}", level=logging.WARNING, event="alert_failed",
                   source=source)
        return False
    logs.event(log, f"alert for {source} sent to the account's alert address", event="alert_sent", source=source,
               account=account_id)
    return True


def run_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id, "campaign_id": row.campaign_id, "event_type_id": row.event_type_id, "channel": row.channel,
        "trigger": row.trigger, "started_at": iso(row.started_at), "finished_at": iso(row.finished_at),
        "outcome": row.outcome, "files_taken": row.files_taken, "duplicates": row.duplicates,
        "skipped": row.skipped, "submissions": json.loads(row.submissions or "[]"), "detail": row.detail,
    }


def recent(conn: Connection, account_id: int, *, event_type_id: int | None = None, campaign_id: int | None = None,
           channel: str | None = None, limit: int = 20, before: int | None = None) -> list[dict[str, Any]]:
    return [run_dict(r) for r in repo.runs(conn, account_id, event_type_id=event_type_id, campaign_id=campaign_id,
                                           channel=channel, limit=limit, before=before)]


def spell_dict(row: Any) -> dict[str, Any]:
    return {"source": row.source, "failing_since": iso(row.failing_since), "last_failure_at": iso(row.last_failure_at),
            "failures": row.failures, "last_error": row.last_error, "alerted_at": iso(row.alerted_at)}


@dataclass(frozen=True)
class Scope:
    """Where the runs of an event type's returns processing are: a pull or poll of its own, or the
    campaign's FTP login or e-mail address that it shares with the campaign's other event types."""

    source: str
    event_type_id: int | None = None
    campaign_id: int | None = None
    channel: str | None = None


def scope_of(event_type: Any) -> Scope:
    mode = str(event_type.returns_mode)
    if mode in ("ftp_upload", "email"):
        channel = "ftp" if mode == "ftp_upload" else "email"
        return Scope(f"campaign:{event_type.campaign_id}:{channel}", campaign_id=int(event_type.campaign_id),
                     channel=channel)
    return Scope(f"event_type:{event_type.id}", event_type_id=int(event_type.id))


def runs_of(conn: Connection, account_id: int, event_type: Any, *, limit: int = 20,
            before: int | None = None) -> list[dict[str, Any]]:
    scope = scope_of(event_type)
    return recent(conn, account_id, event_type_id=scope.event_type_id, campaign_id=scope.campaign_id,
                  channel=scope.channel, limit=limit, before=before)


def failing(conn: Connection, account_id: int, event_type: Any) -> dict[str, Any] | None:
    spell = repo.spell(conn, account_id, scope_of(event_type).source)
    return spell_dict(spell) if spell is not None else None


def status_of(conn: Connection, account_id: int, event_type: Any) -> dict[str, Any]:
    """What the event type shows of its channel: the last run and, while runs fail, the failure spell."""
    last = runs_of(conn, account_id, event_type, limit=1)
    return {"last_run": last[0] if last else None, "failing": failing(conn, account_id, event_type)}
