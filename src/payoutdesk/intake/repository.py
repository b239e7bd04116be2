"""SQL of the intake channels shared by all of them: campaigns by their FTP login or returns address,
intake runs, failure spells, result deliveries."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, delete, insert, select, update

from payoutdesk.models import (
    accounts,
    alert_spells,
    campaigns,
    event_types,
    intake_runs,
    result_deliveries,
    submissions,
)


def campaign_by_ftp_username(conn: Connection, username: str) -> Row[Any] | None:
    return conn.execute(select(campaigns).where(campaigns.c.ftp_username == username)).first()


def campaign_by_returns_token(conn: Connection, token: str) -> Row[Any] | None:
    return conn.execute(select(campaigns).where(campaigns.c.returns_token == token)).first()


def campaign(conn: Connection, campaign_id: int) -> Row[Any] | None:
    return conn.execute(select(campaigns).where(campaigns.c.id == campaign_id)).first()


def event_type(conn: Connection, event_type_id: int) -> Row[Any] | None:
    return conn.execute(select(event_types).where(event_types.c.id == event_type_id)).first()


def event_types_in_mode(conn: Connection, mode: str, campaign_id: int | None = None) -> list[Row[Any]]:
    q = select(event_types).where(event_types.c.returns_mode == mode)
    if campaign_id is not None:
        q = q.where(event_types.c.campaign_id == campaign_id)
    return list(conn.execute(q.order_by(event_types.c.id)).all())


def event_type_by_outbound_token(conn: Connection, token: str) -> Row[Any] | None:
    return conn.execute(select(event_types).where(event_types.c.outbound_token == token)).first()


def account(conn: Connection, account_id: int) -> Row[Any] | None:
    return conn.execute(select(accounts).where(accounts.c.id == account_id)).first()


def set_alert_email(conn: Connection, account_id: int, email: str | None) -> None:
    conn.execute(update(accounts).where(accounts.c.id == account_id).values(alert_email=email))


# --- runs ------------------------------------------------------------------------------------------


def insert_run(conn: Connection, values: dict[str, Any]) -> int:
    return int(conn.execute(insert(intake_runs).values(**values).returning(intake_runs.c.id)).scalar_one())


def finish_run(conn: Connection, run_id: int, values: dict[str, Any]) -> None:
    conn.execute(update(intake_runs).where(intake_runs.c.id == run_id).values(**values))


def runs(conn: Connection, account_id: int, *, event_type_id: int | None = None, campaign_id: int | None = None,
         channel: str | None = None, limit: int = 20, before: int | None = None) -> list[Row[Any]]:
    q = select(intake_runs).where(intake_runs.c.account_id == account_id)
    if event_type_id is not None:
        q = q.where(intake_runs.c.event_type_id == event_type_id)
    if campaign_id is not None:
        q = q.where(intake_runs.c.campaign_id == campaign_id)
    if channel is not None:
        q = q.where(intake_runs.c.channel == channel)
    if before is not None:
        q = q.where(intake_runs.c.id < before)
    return list(conn.execute(q.order_by(intake_runs.c.id.desc()).limit(limit)).all())


def submissions_json(labels: Sequence[str]) -> str:
    return json.dumps(list(labels))


# --- failure spells --------------------------------------------------------------------------------


def spell(conn: Connection, account_id: int, source: str) -> Row[Any] | None:
    return conn.execute(select(alert_spells).where(
        alert_spells.c.account_id == account_id, alert_spells.c.source == source)).first()


def spells(conn: Connection, account_id: int, sources: Sequence[str]) -> list[Row[Any]]:
    if not sources:
        return []
    return list(conn.execute(select(alert_spells).where(
        alert_spells.c.account_id == account_id, alert_spells.c.source.in_(list(sources)))).all())


def open_spell(conn: Connection, account_id: int, source: str, now: datetime, error: str) -> None:
    conn.execute(insert(alert_spells).values(account_id=account_id, source=source, failing_since=now,
                                             last_failure_at=now, failures=1, last_error=error))


def extend_spell(conn: Connection, account_id: int, source: str, now: datetime, error: str) -> None:
    conn.execute(update(alert_spells).where(alert_spells.c.account_id == account_id,
                                            alert_spells.c.source == source)
                 .values(last_failure_at=now, failures=alert_spells.c.failures + 1, last_error=error))


def mark_alerted(conn: Connection, account_id: int, source: str, now: datetime) -> bool:
    """Claim the spell's one alert: whether this caller won it (no other process did first)."""
    done = conn.execute(update(alert_spells).where(
        alert_spells.c.account_id == account_id, alert_spells.c.source == source,
        alert_spells.c.alerted_at.is_(None)).values(alerted_at=now))
    return bool(done.rowcount)


def unmark_alerted(conn: Connection, account_id: int, source: str) -> None:
    conn.execute(update(alert_spells).where(alert_spells.c.account_id == account_id,
                                            alert_spells.c.source == source).values(alerted_at=None))


def close_spell(conn: Connection, account_id: int, source: str) -> bool:
    done = conn.execute(delete(alert_spells).where(alert_spells.c.account_id == account_id,
                                                   alert_spells.c.source == source))
    return bool(done.rowcount)


# --- result deliveries -----------------------------------------------------------------------------


def insert_delivery(conn: Connection, submission_id: int, channel: str, target: dict[str, Any],
                    now: datetime) -> None:
    conn.execute(insert(result_deliveries).values(submission_id=submission_id, channel=channel,
                                                  target=json.dumps(target, sort_keys=True), created_at=now,
                                                  next_attempt_at=now, attempts=0))


def due_deliveries(conn: Connection, now: datetime, limit: int = 50, account_id: int | None = None) -> list[Row[Any]]:
    q = select(result_deliveries).where(
        result_deliveries.c.delivered_at.is_(None), result_deliveries.c.gave_up_at.is_(None),
        result_deliveries.c.next_attempt_at <= now)
    if account_id is not None:
        q = q.where(result_deliveries.c.submission_id.in_(
            select(submissions.c.id).where(submissions.c.account_id == account_id)))
    return list(conn.execute(q.order_by(result_deliveries.c.next_attempt_at).limit(limit)).all())


def delivery(conn: Connection, submission_id: int) -> Row[Any] | None:
    return conn.execute(select(result_deliveries).where(result_deliveries.c.submission_id == submission_id)).first()


def postpone_delivery(conn: Connection, submission_id: int, attempts_before: int, next_at: datetime) -> bool:
    """Take a due delivery for this attempt (its next attempt moved on): whether this caller won it."""
    done = conn.execute(update(result_deliveries).where(
        and_(result_deliveries.c.submission_id == submission_id,
             result_deliveries.c.attempts == attempts_before,
             result_deliveries.c.delivered_at.is_(None))).values(next_attempt_at=next_at))
    return bool(done.rowcount)


def update_delivery(conn: Connection, submission_id: int, **values: Any) -> None:
    conn.execute(update(result_deliveries).where(result_deliveries.c.submission_id == submission_id).values(**values))
