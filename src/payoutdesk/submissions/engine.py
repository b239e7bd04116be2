"""The batch engine: a claimed submission's rows, applied set-based in bounded chunks.

Each chunk is one transaction that resolves its rows to actions, asks the pure rules what each
row does (rows touching one action apply in file order), writes the actions, items, history and
row results in bulk, and records the submission's progress. Progress is recorded only if this
worker still owns the submission at the row where the chunk began, so a chunk applies exactly
once even when a worker dies or loses its lease; a restarted worker resumes at the first row
not yet recorded.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row

from payoutdesk.catalog import repository as catalog_repo
from payoutdesk.catalog.service import terms_in_force, terms_of
from payoutdesk.contracts.terms import Terms
from payoutdesk.errors import NoContract, PayoutdeskError
from payoutdesk.kit import db
from payoutdesk.kit.time import utcnow
from payoutdesk.ledger import history
from payoutdesk.ledger import repository as ledger_repo
from payoutdesk.ledger import workflow as wf
from payoutdesk.models import contracts, submission_results
from payoutdesk.submissions import repository as repo
from payoutdesk.submissions.jsonrows import canonical_rows
from payoutdesk.submissions.rows import Intent, RowError, command_for, interpret

log = logging.getLogger("payoutdesk.engine")
CHUNK = int(os.environ.get("PAYOUTDESK_SUBMISSION_CHUNK", "5000"))
LEASE = timedelta(seconds=120)

Progress = Callable[[int, int], None]  # processed, total


@dataclass
class Counts:
    applied: int = 0
    unchanged: int = 0
    errors: int = 0
    amount_delta: int = 0
    payout_delta: int = 0


@dataclass
class Caches:
    """Per-submission lookups that do not change while it runs."""

    terms: dict[tuple[int, int, int, int, date], Terms] = field(default_factory=dict)
    codes: dict[int, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Unit:
    """One row to process: an intent from a file row, or an action to put back (undo)."""

    row: int
    intent: Intent | RowError | None = None
    undo_action: int | None = None


def _terms(conn: Connection, caches: Caches, row: Row[Any], today: date) -> Terms:
    key = (row.campaign_id, row.partner_id, row.event_type_id, row.contract_id, today)
    found = caches.terms.get(key)
    if found is None:
        try:
            found = terms_in_force(conn, row.campaign_id, row.partner_id, row.event_type_id, today)
        except NoContract:
            contract = conn.execute(contracts.select().where(contracts.c.id == row.contract_id)).one()
            recorded = terms_of(conn, contract, row.event_type_id)
            assert recorded is not None
            found = recorded
        caches.terms[key] = found
    return found


def _codes(conn: Connection, caches: Caches, event_type_id: int) -> dict[str, str]:
    found = caches.codes.get(event_type_id)
    if found is None:
        found = {c.code: c.operation for c in catalog_repo.codes_of(conn, event_type_id)}
        caches.codes[event_type_id] = found
    return found


def _error_result(sid: int, e: RowError, action_id: int | None = None) -> dict[str, Any]:
    return {"submission_id": sid, "row_no": e.row, "outcome": "error", "action_id": action_id,
            "amount_before": None, "amount_after": None, "payout_before": None, "payout_after": None,
            "state_after": None, "column_name": e.column, "error_type": e.type, "code": e.code,
            "message": e.message}


def apply_chunk(
    conn: Connection,
    sub: Row[Any],
    units: Sequence[Unit],
    caches: Caches,
    counts: Counts,
    now: datetime,
    overlay: dict[int, tuple[Row[Any], wf.Action]] | None = None,
) -> None:
    """Process one chunk inside the caller's transaction (writes nothing when the submission is a dry run)."""
    dry = bool(sub.dry_run)
    sid = int(sub.id)
    intents = [u.intent for u in units if isinstance(u.intent, Intent)]
    by_id = repo.existing_ids(conn, sub.account_id, sub.campaign_id,
                              [i.action_id for i in intents if i.action_id is not None])
    by_order = repo.newest_by_orders(
        conn, sub.account_id, sub.campaign_id,
        [(i.event_type_id, i.order_id) for i in intents if i.event_type_id is not None and i.order_id is not None],
    )

    def target(u: Unit) -> int | None:
        if u.undo_action is not None:
            return u.undo_action
        i = u.intent
        if not isinstance(i, Intent):
            return None
        if i.action_id is not None:
            return i.action_id if i.action_id in by_id else None
        return by_order.get((i.event_type_id, i.order_id))  # type: ignore[arg-type]

    targets = [target(u) for u in units]
    wanted = sorted({t for t in targets if t is not None and (overlay is None or t not in overlay)})
    rows = repo.load_actions(conn, wanted, for_update=not dry)
    items = repo.load_items(conn, wanted)
    current: dict[int, tuple[Row[Any], wf.Action]] = overlay if overlay is not None else {}
    for aid in wanted:
        current[aid] = (rows[aid], ledger_repo.to_domain(rows[aid], items[aid]))
    undo_history = (
        repo.history(conn, [u.undo_action for u in units if u.undo_action is not None])
        if sub.undo_of is not None else {}
    )
    first: dict[int, tuple[int, wf.Action]] = {}  # action -> (version as loaded, state as loaded)
    finals: dict[int, wf.Action] = {}
    n_changes: dict[int, int] = {}
    update_rows: list[dict[str, Any]] = []
    result_rows: list[dict[str, Any]] = []
    actor = sub.actor or sub.channel
    today = now.date()
    undo_source = note_undo = None
    if sub.undo_of is not None:
        original = repo.get(conn, int(sub.undo_of))
        assert original is not None
        undo_source = f"{original.kind}-{original.id}"
        note_undo = f"undo of {undo_source}"

    for u, target_id in zip(units, targets, strict=True):
        if isinstance(u.intent, RowError):
            result_rows.append(_error_result(sid, u.intent))
            counts.errors += 1
            continue
        if target_id is None or target_id not in current:
            i = u.intent
            what = (f"action {i.action_id}" if i is not None and i.action_id is not None
                    else f"an action of event type {i.event_type_id} with order id '{i.order_id}'"
                    if i is not None else "the action")
            column = "ActionId" if i is not None and i.action_id is not None else "Oid"
            result_rows.append(_error_result(sid, RowError(
                u.row, column, "VALIDATION", "unknown_action", f"There is no {what} in campaign {sub.campaign_id}.")))
            counts.errors += 1
            continue
        aid = target_id
        row, action = current[aid]
        try:
            if u.undo_action is not None:
                outcome = _undo_outcome(action, undo_history.get(aid, []), int(sub.undo_of), str(undo_source))
                note = note_undo
            else:
                assert isinstance(u.intent, Intent)
                cmd = command_for(u.intent, _codes(conn, caches, row.event_type_id))
                if isinstance(cmd, RowError):
                    result_rows.append(_error_result(sid, cmd, aid))
                    counts.errors += 1
                    continue
                outcome = wf.decide(action, cmd, _terms(conn, caches, row, today), now)
                note = u.intent.note
        except PayoutdeskError as exc:
            result_rows.append(_error_result(sid, RowError(u.row, _column_of(exc), exc.kind, exc.code, exc.detail),
                                             aid))
            counts.errors += 1
            continue
        res = {"submission_id": sid, "row_no": u.row, "action_id": aid, "amount_before": action.amount,
               "payout_before": action.payout, "column_name": None, "error_type": None, "code": None,
               "message": None}
        if isinstance(outcome, wf.Unchanged):
            counts.unchanged += 1
            result_rows.append({**res, "outcome": "unchanged", "amount_after": action.amount,
                                "payout_after": action.payout, "state_after": action.state.value})
            continue
        change = outcome
        counts.applied += 1
        counts.amount_delta += change.delta_amount
        counts.payout_delta += change.delta_payout
        result_rows.append({**res, "outcome": "applied", "amount_after": change.after.amount,
                            "payout_after": change.after.payout, "state_after": change.after.state.value})
        first.setdefault(aid, (row.version, action))
        n_changes[aid] = n_changes.get(aid, 0) + 1
        finals[aid] = change.after
        current[aid] = (row, change.after)
        update_rows.append(repo.update_row(change, {
            "at": now, "note": note, "channel": sub.channel, "submission_id": sid, "actor": actor}))

    if not dry:
        repo.write_actions(conn, {
            aid: (first[aid][0], n_changes[aid], first[aid][1], after) for aid, after in finals.items()
        })
        repo.insert_updates(conn, update_rows)
        # the rows of a chunk are all written by now: later chunks must reload them
        for aid in finals:
            del current[aid]
    repo.insert_results(conn, result_rows)


def _column_of(exc: PayoutdeskError) -> str | None:
    return {"unknown_sku": "Sku1", "invalid_amount": "Amount", "unknown_reason": "Reason"}.get(exc.code)


def _undo_outcome(action: wf.Action, updates: Sequence[Any], undo_of: int, label: str) -> wf.Outcome:
    """Put an action back as it was before the submission ``undo_of`` first changed it."""
    mine = [n for n, u in enumerate(updates) if u.submission_id == undo_of]
    if not mine:
        return wf.Unchanged(action)
    if updates[-1].submission_id != undo_of:
        last = updates[-1]
        raise _ChangedSince(
            f"Action {action.id} was changed after {label} ({last.kind} via {last.channel} at "
            f"{last.at:%Y-%m-%d %H:%M}); undo it by hand."
        )
    if action.locked_at is not None:
        raise wf._locked_error(action)
    target = history.state_after(action.id, updates[: mine[0]])
    items = tuple(
        replace(i, quantity=t.quantity, amount=t.amount, payout=t.payout)
        for i, t in zip(action.items, target.items, strict=True)
    )
    after = replace(action, state=target.state, reason=target.reason, restore=target.restore, items=items,
                    update_count=action.update_count + 1)
    if after == replace(action, update_count=action.update_count + 1):
        return wf.Unchanged(action)
    if target.state is wf.State.REVERSED:
        kind = wf.Kind.REVERSED
    elif action.state is wf.State.REVERSED:
        kind = wf.Kind.RESTORED
    else:
        kind = wf.Kind.MODIFIED
    return wf.Change(action, after, kind, target.reason if target.state is wf.State.REVERSED else None)


class _ChangedSince(PayoutdeskError):
    status = 409
    code = "changed_since"
    title = "Changed after the submission"
    kind = "CONTRACT"


# --- running a whole submission --------------------------------------------------------------


def units_of(conn: Connection, sub: Row[Any], currency: str) -> tuple[str, list[Unit]]:
    """Read the stored file (or the undone submission's actions) into units. Raises FileRejected."""
    if sub.undo_of is not None:
        ids = repo.updates_of_submission(conn, int(sub.undo_of))
        return "undo", [Unit(n, undo_action=aid) for n, aid in enumerate(ids, 1)]
    data = repo.file_of(conn, int(sub.id))
    if sub.content_type == "application/json":
        fmt, raw_rows = "json", canonical_rows(json.loads(data))
    else:
        from payoutdesk.submissions.formats import parse

        parsed = parse(data, sub.file_name)
        fmt, raw_rows = parsed.format, parsed.rows
    return fmt, [Unit(r.number, intent=interpret(r.number, r.fields, currency)) for r in raw_rows]


def process(engine: Engine, submission_id: int, worker: str, *, chunk: int = CHUNK,
            progress: Progress | None = None, lease: timedelta = LEASE) -> Row[Any]:
    """Run a claimed submission to COMPLETE (or FAILED when its file is unusable)."""
    with db.read(engine) as conn:
        sub = repo.get(conn, submission_id)
        assert sub is not None
        currency = _currency(conn, sub.campaign_id)
        try:
            fmt, units = units_of(conn, sub, currency)
        except PayoutdeskError as exc:  # the reader refused the file as a whole
            fmt, units = None, None
            failure = exc.detail
    if units is None:
        with db.write(engine) as conn:
            repo.set_status(conn, submission_id, status="FAILED", failure=failure, finished_at=utcnow(),
                            total_records=0, lease_until=None)
            return _reload(conn, submission_id)
    total = len(units)
    counts = Counts(sub.applied, sub.unchanged, sub.errors, sub.amount_delta, sub.payout_delta)
    caches = Caches()
    overlay: dict[int, tuple[Row[Any], wf.Action]] | None = {} if sub.dry_run else None
    done = int(sub.processed_records)
    if done and sub.dry_run:
        # a dry run that was interrupted starts over: its in-memory view of earlier rows is gone
        with db.write(engine) as conn:
            conn.execute(submission_results.delete().where(submission_results.c.submission_id == submission_id))
            repo.advance(conn, submission_id, worker, done, {
                "processed_records": 0, "applied": 0, "unchanged": 0, "errors": 0, "amount_delta": 0,
                "payout_delta": 0})
        done, counts = 0, Counts()
    if sub.total_records is None or sub.format is None:
        with db.write(engine) as conn:
            repo.advance(conn, submission_id, worker, done, {"total_records": total, "format": fmt})
    if progress:
        progress(done, total)
    while done < total:
        part = units[done : done + chunk]
        snapshot = Counts(**vars(counts))

        def unit(conn: Connection, part: Sequence[Unit] = part, start: int = done) -> None:
            now = utcnow()
            sub_now = repo.get(conn, submission_id)
            assert sub_now is not None
            apply_chunk(conn, sub_now, part, caches, counts, now, overlay)
            repo.advance(conn, submission_id, worker, start, {
                "processed_records": start + len(part), "applied": counts.applied, "unchanged": counts.unchanged,
                "errors": counts.errors, "amount_delta": counts.amount_delta, "payout_delta": counts.payout_delta,
                "lease_until": now + lease,
            })

        try:
            db.transaction(engine, _restoring(unit, counts, snapshot))
        except repo.LostClaim:
            log.warning("submission %s was taken over by another worker; stopping", submission_id)
            with db.read(engine) as conn:
                return _reload(conn, submission_id)
        done += len(part)
        if progress:
            progress(done, total)
    with db.write(engine) as conn:
        repo.set_status(conn, submission_id, status="COMPLETE", finished_at=utcnow(), lease_until=None)
        if sub.undo_of is not None:
            repo.set_status(conn, int(sub.undo_of), undone_by=submission_id)
        return _reload(conn, submission_id)


def _restoring(fn: Callable[[Connection], None], counts: Counts, snapshot: Counts) -> Callable[[Connection], None]:
    """Retries must start from the counts as they were before the failed attempt."""

    def run(conn: Connection) -> None:
        for k, v in vars(snapshot).items():
            setattr(counts, k, v)
        fn(conn)

    return run


def _currency(conn: Connection, campaign_id: int) -> str:
    from payoutdesk.models import campaigns

    return str(conn.execute(campaigns.select().where(campaigns.c.id == campaign_id)).one().currency)


def _reload(conn: Connection, submission_id: int) -> Row[Any]:
    row = repo.get(conn, submission_id)
    assert row is not None
    return row
