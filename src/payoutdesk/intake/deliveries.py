"""Results sent back by the channel a file came in by, once its submission is done: a reply mail to the
sender, ``result_<name>.csv`` on the brand's server. (Our FTP server needs none: its ``results/`` folder
is read from the database.)

A channel registers the delivery in the transaction that queues the submission (``register``) and a
function that performs it (``handler``); the scheduler's ``deliver_due`` runs every minute and delivers
those whose submission is COMPLETE or FAILED, retrying a failed attempt with back-off (1, 2, 4 … minutes,
at most 6 hours apart) and giving up after ``MAX_ATTEMPTS``, which it records and logs. Each attempt is
taken by one process only (``postpone_delivery`` moves its next attempt on before it starts).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from payoutdesk.intake import repository as repo
from payoutdesk.intake.common import IntakeContext
from payoutdesk.kit import db, logs
from payoutdesk.kit.time import utcnow
from payoutdesk.submissions import repository as sub_repo
from payoutdesk.submissions.service import label

log = logging.getLogger("payoutdesk.intake")

MAX_ATTEMPTS = 12
BATCH = 50
DONE = ("COMPLETE", "FAILED")
Handler = Callable[[IntakeContext, Any, dict[str, Any]], None]  # (ctx, submission row, target)
_HANDLERS: dict[str, Handler] = {}


def handler(channel: str) -> Callable[[Handler], Handler]:
    """Register the function that delivers the results of ``channel``."""

    def register_handler(fn: Handler) -> Handler:
        _HANDLERS[channel] = fn
        return fn

    return register_handler


def _no_handler(_ctx: IntakeContext, sub: Any, _target: dict[str, Any]) -> None:
    raise LookupError(f"no delivery for the channel of {label(sub)}")


def register(conn: Connection, submission_id: int, channel: str, target: dict[str, Any]) -> None:
    repo.insert_delivery(conn, submission_id, channel, target, utcnow())


def backoff(attempts: int) -> timedelta:
    return timedelta(minutes=min(2 ** max(attempts - 1, 0), 360))


def deliver_due(ctx: IntakeContext, now: datetime | None = None, *, account_id: int | None = None,
                budget_seconds: float = 20.0) -> str:
    """Deliver what is due (of one account only, when given), a batch after another until none is left or
    ``budget_seconds`` have passed (the rest is due at the next tick); a line for the scheduler's log.
    Every delivery taken is delivered or has its next attempt moved on, so the batches always end."""
    now = now or utcnow()
    sent = failed = waiting = 0
    began = time.monotonic()
    while time.monotonic() - began < budget_seconds:
        with db.read(ctx.engine) as conn:
            due = repo.due_deliveries(conn, now, BATCH, account_id)
        s, f, w = _deliver(ctx, due, now)
        sent, failed, waiting = sent + s, failed + f, waiting + w
        if len(due) < BATCH:
            break
    return f"delivered {sent}, failed {failed}, waiting {waiting}"


def _deliver(ctx: IntakeContext, due: list[Any], now: datetime) -> tuple[int, int, int]:
    sent = failed = waiting = 0
    for d in due:
        with db.read(ctx.engine) as conn:
            sub = sub_repo.get(conn, int(d.submission_id))
        if sub is None:
            with db.write(ctx.engine) as conn:
                repo.update_delivery(conn, int(d.submission_id), gave_up_at=now, last_error="submission gone")
            continue
        if sub.status not in DONE:
            waiting += 1
            with db.write(ctx.engine) as conn:
                repo.postpone_delivery(conn, int(d.submission_id), int(d.attempts), now + timedelta(seconds=30))
            continue
        attempts = int(d.attempts) + 1
        with db.write(ctx.engine) as conn:
            if not repo.postpone_delivery(conn, int(d.submission_id), int(d.attempts), now + backoff(attempts)):
                continue  # another process took this attempt
        fn = _HANDLERS.get(str(d.channel), _no_handler)
        try:
            fn(ctx, sub, json.loads(d.target))
        except Exception as exc:  # noqa: BLE001 - recorded, retried with back-off
            failed += 1
            give_up = attempts >= MAX_ATTEMPTS
            with db.write(ctx.engine) as conn:
                repo.update_delivery(conn, int(d.submission_id), attempts=attempts, last_error=str(exc)[:2000],
                                     gave_up_at=now if give_up else None)
            logs.event(log, f"results of {label(sub)} not delivered by {d.channel} (attempt {attempts}"
                       f"{', giving up' if give_up else ''}): {exc}", level=logging.WARNING,
                       event="delivery_failed", submission=label(sub), channel=d.channel, attempts=attempts)
            continue
        sent += 1
        with db.write(ctx.engine) as conn:
            repo.update_delivery(conn, int(d.submission_id), attempts=attempts, delivered_at=utcnow(), last_error=None)
        logs.event(log, f"results of {label(sub)} delivered by {d.channel}", event="delivered",
                   submission=label(sub), channel=d.channel)
    return sent, failed, waiting
