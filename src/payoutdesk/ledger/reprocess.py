"""R13 re-processing: attribution runs again over chosen unlocked PENDING actions.

For each chosen action (by campaign, event-date range and/or order ids, within one account):

- locked (or at its locking date, R1), or APPROVED: ``skipped_locked``; REVERSED: ``skipped_reversed``;
- attribution runs again (``catalog.service.attribute_click`` with the action's customer id and event
  date); when it credits another partner, the old action is reversed with ``SYSTEM_REATTRIBUTED`` (by the
  system) and a new PENDING action with the same order id, event type, event date and the order's items
  as they stand now is credited to the new partner under its contract in force on the event date; the
  two histories name each other (``reattributed``);
- otherwise (same partner, no customer id, or no click qualifies: then also counted ``not_attributable``)
  the payout is recomputed under the terms in force now (R8, ``wf.Recalculate``): ``recalculated``, or
  ``unchanged`` when it comes out the same.

Running it twice changes nothing more: a moved action is REVERSED, a recalculated one unchanged.

Up to ``SYNC_LIMIT`` chosen actions run in the caller's transaction (``run``); more are a job
(``queue``): a submission of kind ``R`` on the ``system`` channel whose stored file holds the criteria
and the highest action id at the time it was queued (actions it creates are above it, so a job never
visits its own), which the worker runs in chunks (``run_submission``), each chunk a transaction that
records its progress only if the worker still holds the submission where it left it: a kill -9 loses
the chunk in hand, never doubles it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, func, insert, select

from payoutdesk.catalog.service import attribute_click, get_owned, terms_in_force
from payoutdesk.context import Actor
from payoutdesk.contracts.terms import locking_date, open_ended_lock_date
from payoutdesk.errors import NotAttributable, ValidationFailed
from payoutdesk.kit import db, logs
from payoutdesk.kit.time import utcnow
from payoutdesk.ledger import repository as repo
from payoutdesk.ledger import service
from payoutdesk.ledger import workflow as wf
from payoutdesk.models import actions, campaigns, event_types
from payoutdesk.models.submissions import submission_results

log = logging.getLogger("payoutdesk.reprocess")

SYNC_LIMIT = 1000
JOB_KIND = "R"
JOB_CHUNK = 500
MAX_ORDER_IDS = 1000
REATTRIBUTED = "SYSTEM_REATTRIBUTED"
OUTCOMES = ("reattributed", "recalculated", "unchanged", "skipped_locked", "skipped_reversed")
COUNT_NAMES = (*OUTCOMES, "not_attributable")


@dataclass(frozen=True)
class Criteria:
    """Which actions a run chooses: event dates from ``since`` (inclusive) to ``until`` (exclusive), a
    campaign, order ids. ``max_action_id`` bounds a job."""

    campaign_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    order_ids: tuple[str, ...] = ()
    max_action_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "campaign_id": self.campaign_id,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "order_ids": list(self.order_ids),
            "max_action_id": self.max_action_id,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Criteria:
        return cls(
            data.get("campaign_id"),
            datetime.fromisoformat(data["since"]) if data.get("since") else None,
            datetime.fromisoformat(data["until"]) if data.get("until") else None,
            tuple(data.get("order_ids") or ()),
            data.get("max_action_id"),
        )


def criteria(campaign_id: int | None = None, event_date_from: date | str | None = None,
             event_date_to: date | str | None = None, order_ids: Sequence[str] | None = None) -> Criteria:
    """The checked criteria of a run: at least one; event dates as dates (whole days, ``event_date_to``
    inclusive) or times (a range the wrong way round chooses nothing); order ids non-empty texts."""
    ids = tuple(dict.fromkeys(o.strip() for o in order_ids or ()))
    if order_ids is not None and (not ids or any(not o for o in ids)):
        raise ValidationFailed("order_ids must be a non-empty list of non-empty order ids.")
    if len(ids) > MAX_ORDER_IDS:
        raise ValidationFailed(f"order_ids has at most {MAX_ORDER_IDS:,} order ids a run.")
    if campaign_id is None and event_date_from is None and event_date_to is None and not ids:
        raise ValidationFailed("Give at least one of campaign_id, event_date_from, event_date_to, order_ids.")

    def text(value: date | str | None) -> str | None:
        return value.isoformat() if isinstance(value, date) else value

    since = service.day_bound(text(event_date_from), "event_date_from", end=False)
    until = service.day_bound(text(event_date_to), "event_date_to", end=True)
    return Criteria(campaign_id, since, until, ids)


@dataclass
class Counts:
    reattributed: int = 0
    recalculated: int = 0
    unchanged: int = 0
    skipped_locked: int = 0
    skipped_reversed: int = 0
    not_attributable: int = 0
    moved: list[tuple[int, int]] = field(default_factory=list)  # (old action, new action), a sync run's

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNT_NAMES}


# --- choosing ------------------------------------------------------------------------------------


def _chosen(account_id: int, c: Criteria) -> Any:
    stmt = select(actions.c.id).where(actions.c.account_id == account_id)
    if c.campaign_id is not None:
        stmt = stmt.where(actions.c.campaign_id == c.campaign_id)
    if c.since is not None:
        stmt = stmt.where(actions.c.event_date >= c.since)
    if c.until is not None:
        stmt = stmt.where(actions.c.event_date < c.until)
    if c.order_ids:
        stmt = stmt.where(actions.c.order_id.in_(c.order_ids))
    if c.max_action_id is not None:
        stmt = stmt.where(actions.c.id <= c.max_action_id)
    return stmt


def chosen_ids(conn: Connection, account_id: int, c: Criteria, limit: int | None = None) -> list[int]:
    """The ids of the actions the criteria choose (every state), in id order."""
    stmt = _chosen(account_id, c).order_by(actions.c.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [int(r[0]) for r in conn.execute(stmt)]


def _check_owned(conn: Connection, account_id: int, c: Criteria) -> None:
    if c.campaign_id is not None:
        get_owned(conn, campaigns, account_id, c.campaign_id, "campaign")


# --- one action ----------------------------------------------------------------------------------


def reprocess_one(conn: Connection, actor: Actor, action_id: int, now: datetime, counts: Counts,
                  submission_id: int | None = None) -> str:
    """R13 for one action in the caller's transaction: its outcome (one of ``OUTCOMES``), counted in ``counts``;
    a job's history entries name its submission."""
    row = repo.load(conn, actor.account_id, action_id, for_update=True)
    if row is None:  # chosen in this account a moment ago; actions are never deleted
        raise ValidationFailed(f"Action {action_id} disappeared during re-processing.")
    today = now.date()
    if row.locked_at is not None or row.state == wf.State.APPROVED.value or (
            row.lock_due is not None and row.lock_due <= today):
        return _count(counts, "skipped_locked")
    if row.state == wf.State.REVERSED.value:
        return _count(counts, "skipped_reversed")
    decision = None
    if row.customer_id is not None:
        try:
            decision = attribute_click(conn, row.campaign_id, row.event_type_id, row.customer_id, row.event_date)
        except NotAttributable:
            counts.not_attributable += 1
    else:
        counts.not_attributable += 1
    if decision is not None and decision.partner_id != row.partner_id:
        new_id = _move(conn, actor, row, decision.partner_id, decision.note, now, submission_id)
        counts.moved.append((action_id, new_id))
        return _count(counts, "reattributed")
    applied = service.apply(conn, actor, action_id, wf.Recalculate(),
                            note="recalculated by re-processing under the terms in force now (R13)",
                            submission_id=submission_id, now=now)
    return _count(counts, "unchanged" if applied.unchanged else "recalculated")


def _count(counts: Counts, outcome: str) -> str:
    setattr(counts, outcome, getattr(counts, outcome) + 1)
    return outcome


def _move(conn: Connection, actor: Actor, row: Row[Any], partner_id: int, decided: str, now: datetime,
          submission_id: int | None) -> int:
    """Credit the order to ``partner_id``: a new PENDING action with the old one's items as they stand now,
    under the new partner's contract in force on the event date; the old one reversed; both histories linked."""
    event_at = row.event_date
    terms = terms_in_force(conn, row.campaign_id, partner_id, row.event_type_id, event_at.date())
    items = repo.items_of(conn, int(row.id))
    kept = [i for i in items if i.quantity > 0] or list(items)
    action = wf.new_action(tuple((i.sku, i.name, i.category, int(i.quantity), int(i.amount)) for i in kept), terms)
    locking = conn.execute(select(event_types.c.locking).where(event_types.c.id == row.event_type_id)).scalar_one()
    event_day = event_at.date()
    if locking == "open_ended":
        lock_date, due = None, open_ended_lock_date(event_day)
    else:
        lock_date = locking_date(event_day, terms.lock_after)
        due = lock_date
    new_id = repo.insert_action(conn, {
        "account_id": row.account_id, "campaign_id": row.campaign_id, "event_type_id": row.event_type_id,
        "partner_id": partner_id, "contract_id": terms.contract_id, "order_id": row.order_id,
        "customer_id": row.customer_id, "promo_code": row.promo_code, "event_date": event_at,
        "currency": row.currency, "locking_date": lock_date, "lock_due": due, "created_at": now,
    }, action, {"at": now, "channel": actor.channel.value, "actor": actor.name, "reason": None,
                "submission_id": submission_id,
                "note": f"re-attributed from action {row.id} (partner {row.partner_id}); {decided}"})
    service.apply(conn, actor, int(row.id), wf.Reverse(REATTRIBUTED),
                  note=f"re-attributed to action {new_id} (partner {partner_id})", submission_id=submission_id,
                  now=now)
    return new_id


# --- a run ---------------------------------------------------------------------------------------


def system_actor(account_id: int, asked_by: str | None = None) -> Actor:
    """The re-processing's actor: the system (its reason ``SYSTEM_REATTRIBUTED`` is the system's alone), on
    behalf of whoever asked (``user:…``, ``api:…``, ``cli:…``), so that the history says who it was."""
    name = f"system for {asked_by}" if asked_by else "system"
    return Actor(account_id, name[:320], wf.Channel.SYSTEM, system=True)


def run(conn: Connection, account_id: int, c: Criteria, now: datetime | None = None,
        progress: Callable[[int, int], None] | None = None, asked_by: str | None = None) -> Counts:
    """Re-process every chosen action in the caller's transaction (the sync path and the CLI's)."""
    now = now or utcnow()
    _check_owned(conn, account_id, c)
    actor = system_actor(account_id, asked_by)
    counts = Counts()
    ids = chosen_ids(conn, account_id, c)
    for n, aid in enumerate(ids, 1):
        reprocess_one(conn, actor, aid, now, counts)
        if progress is not None and (n % 100 == 0 or n == len(ids)):
            progress(n, len(ids))
    return counts


def run_in_chunks(engine: Engine, account_id: int, c: Criteria, chunk: int | None = None,
                  progress: Callable[[int, int], None] | None = None, asked_by: str | None = None) -> Counts:
    """Re-process in the foreground (the CLI), ``chunk`` actions a transaction, over the actions chosen when
    it starts (those it creates are not visited). Stopped midway, a second run finishes the work."""
    with db.read(engine) as conn:
        _check_owned(conn, account_id, c)
        ids = chosen_ids(conn, account_id, c)
    actor = system_actor(account_id, asked_by)
    counts = Counts()
    chunk = chunk or JOB_CHUNK
    for start_at in range(0, len(ids), chunk):
        part = ids[start_at:start_at + chunk]

        def unit(conn: Connection, part: list[int] = part) -> Counts:
            now, got = utcnow(), Counts()
            for aid in part:
                reprocess_one(conn, actor, aid, now, got)
            return got

        got = db.transaction(engine, unit)
        for name in COUNT_NAMES:
            setattr(counts, name, getattr(counts, name) + getattr(got, name))
        counts.moved += got.moved
        if progress is not None:
            progress(start_at + len(part), len(ids))
    return counts


def start(conn: Connection, account_id: int, c: Criteria, now: datetime | None = None, asked_by: str | None = None
          ) -> tuple[int, dict[str, Any]]:
    """``POST /reprocess``: up to ``SYNC_LIMIT`` chosen actions now (200 with the counts), more as a job
    (202 with the queued submission). ``asked_by``: the actor who asked (history and job say so)."""
    _check_owned(conn, account_id, c)
    few = chosen_ids(conn, account_id, c, limit=SYNC_LIMIT + 1)
    if len(few) <= SYNC_LIMIT:
        counts = run(conn, account_id, c, now, asked_by=asked_by)
        return 200, {**counts.as_dict(), "chosen": len(few)}
    return 202, queue(conn, account_id, c, asked_by)


def queue(conn: Connection, account_id: int, c: Criteria, asked_by: str | None = None) -> dict[str, Any]:
    """A re-processing job: a submission of kind ``R`` on the ``system`` channel, its criteria stored as
    its file, bounded by the highest action id now."""
    from payoutdesk.submissions import service as submissions

    highest = conn.execute(select(func.max(actions.c.id)).where(actions.c.account_id == account_id)).scalar()
    bounded = Criteria(c.campaign_id, c.since, c.until, c.order_ids, int(highest or 0))
    campaign_id = c.campaign_id
    if campaign_id is None:  # a submission belongs to a campaign: the first chosen action's
        first = chosen_ids(conn, account_id, bounded, limit=1)
        campaign_id = int(conn.execute(select(actions.c.campaign_id).where(actions.c.id == first[0])).scalar_one())
    body = json.dumps(bounded.to_json(), separators=(",", ":")).encode()
    return submissions.create(conn, system_actor(account_id, asked_by), campaign_id, body, file_name="reprocess.json",
                              content_type="application/json", kind=JOB_KIND)


def job_counts(conn: Connection, submission_id: int) -> dict[str, int]:
    """The counts of a re-processing job so far, from its per-action results (``code`` is the outcome;
    ``message`` says ``not_attributable`` when no click qualified)."""
    out = dict.fromkeys(COUNT_NAMES, 0)
    rows = conn.execute(
        select(submission_results.c.code, submission_results.c.message, func.count())
        .where(submission_results.c.submission_id == submission_id)
        .group_by(submission_results.c.code, submission_results.c.message))
    for code, message, n in rows:
        if code in out:
            out[code] += int(n)
        if message and message.startswith("not_attributable"):
            out["not_attributable"] += int(n)
    return out


# --- the worker's side ---------------------------------------------------------------------------


def run_submission(engine: Engine, submission_id: int, worker: str, lease: timedelta,
                   progress: Callable[[int, int], None] | None = None, stop: threading.Event | None = None,
                   lost: threading.Event | None = None, chunk: int = JOB_CHUNK) -> Row[Any]:
    """Run a claimed re-processing submission to COMPLETE, a chunk a transaction (see the module's note)."""
    from payoutdesk.submissions import files
    from payoutdesk.submissions import repository as sub_repo

    began = time.monotonic()
    with db.read(engine) as conn:
        sub = sub_repo.get(conn, submission_id)
        assert sub is not None
        stored = files.stored(conn, int(sub.file_id)) if sub.file_id is not None else None
        raw = b"".join(files.chunks_in(conn, stored)) if stored is not None else b""
        c = Criteria.from_json(json.loads(raw)) if raw else None
        ids = chosen_ids(conn, int(sub.account_id), c) if c is not None else []
    label = f"{sub.kind}-{submission_id}"
    if c is None:  # never "every action": without its criteria the job does nothing
        failure = "The job's criteria are no longer stored; start the re-processing again."
        with db.write(engine) as conn:
            sub_repo.set_status(conn, submission_id, status="FAILED", failure=failure, finished_at=utcnow(),
                                total_records=0, lease_until=None)
            return _reload(conn, submission_id)
    total = len(ids)
    done = int(sub.processed_records)
    with db.write(engine) as conn:
        sub_repo.advance(conn, submission_id, worker, done, {"total_records": total, "format": "reprocess"})
    if progress:
        progress(done, total)
    # the job's own actor (the submission's: "system for <who asked>")
    actor = Actor(int(sub.account_id), str(sub.actor or "system"), wf.Channel.SYSTEM, system=True)
    while done < total:
        if stop is not None and stop.is_set():
            with db.write(engine) as conn:
                sub_repo.release(conn, submission_id, worker)
                return _reload(conn, submission_id)
        part = ids[done:done + chunk]

        def unit(conn: Connection, start: int = done, part: list[int] = part) -> int:
            now = utcnow()
            results = []
            changed = 0
            for n, aid in enumerate(part, start + 1):
                counts = Counts()
                outcome = reprocess_one(conn, actor, aid, now, counts, submission_id)
                moved = f"moved to action {counts.moved[0][1]}" if counts.moved else None
                message = "; ".join(m for m in ("not_attributable" if counts.not_attributable else None, moved) if m)
                changed += outcome in ("reattributed", "recalculated")
                results.append({"submission_id": submission_id, "row_no": n, "action_id": aid, "code": outcome,
                                "outcome": "applied" if outcome in ("reattributed", "recalculated") else "unchanged",
                                "message": message or None})
            conn.execute(insert(submission_results), results)
            cur = sub_repo.get(conn, submission_id)
            assert cur is not None
            if lost is not None and lost.is_set():
                raise sub_repo.LostClaim(f"submission {submission_id} is no longer this worker's")
            sub_repo.advance(conn, submission_id, worker, start, {
                "processed_records": start + len(part), "applied": int(cur.applied) + changed,
                "unchanged": int(cur.unchanged) + len(part) - changed, "lease_until": now + lease})
            return len(part)

        try:
            done += db.transaction(engine, unit)
        except sub_repo.LostClaim:
            logs.event(log, f"submission {label}: taken over by another worker; {worker} stops",
                       level=logging.WARNING, event="submission_lost", submission=label, worker=worker)
            with db.read(engine) as conn:
                return _reload(conn, submission_id)
        if progress:
            progress(done, total)
    with db.write(engine) as conn:
        sub_repo.set_status(conn, submission_id, status="COMPLETE", finished_at=utcnow(), lease_until=None)
        row = _reload(conn, submission_id)
        counts_now = job_counts(conn, submission_id)
    logs.event(log, f"re-processing {label} complete: {total} actions, {counts_now} "
               f"({time.monotonic() - began:.1f} s in {worker})", event="reprocess_complete", submission=label,
               worker=worker, total=total, **counts_now)
    return row


def _reload(conn: Connection, submission_id: int) -> Row[Any]:
    from payoutdesk.submissions import repository as sub_repo

    row = sub_repo.get(conn, submission_id)
    assert row is not None
    return row
