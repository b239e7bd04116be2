"""The batch engine: a claimed submission's rows, applied set-based in bounded chunks.

Each chunk is one transaction that resolves its rows to actions, asks the pure rules what each
row does (rows touching one action apply in file order), writes the actions, items, history and
row results in bulk, and records the submission's progress. Progress is recorded only if this
worker still owns the submission at the row where the chunk began, so a chunk applies exactly
once even when a worker dies or loses its lease; a restarted worker resumes at the first row
not yet recorded.

Speed (DESIGN §6): the file is read lazily, a chunk at a time, so memory stays bounded; rows
become plain tuples (``quick_plan``, falling back to ``rows.interpret``); actions are loaded and
written as tuples through the driver (``repository.Bulk``: executemany on SQLite, binary COPY
into staging tables and ``UPDATE … FROM`` on PostgreSQL); and the common modification of a
plain pending action takes a lane that computes what ``workflow.decide`` would (inline for the
order-level change of a one-item action, else ``workflow.quick_modify``) without building
domain objects. Everything else goes through ``command_for`` and ``decide`` as before.
tests/test_engine_lanes.py and tests/test_submission_equivalence.py hold the lanes to that.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from itertools import islice
from typing import Any

from sqlalchemy import Connection, Engine, Row

from payoutdesk.catalog import repository as catalog_repo
from payoutdesk.catalog.service import terms_in_force, terms_of
from payoutdesk.contracts.terms import Terms, one_item_payout
from payoutdesk.errors import FileRejected, NoContract, PayoutdeskError, quote
from payoutdesk.kit import db, logs
from payoutdesk.kit.money import MAX_MINOR, exponent
from payoutdesk.kit.time import utcnow
from payoutdesk.ledger import history
from payoutdesk.ledger import workflow as wf
from payoutdesk.ledger.repository import items_json
from payoutdesk.models import contracts, submission_results
from payoutdesk.submissions import files
from payoutdesk.submissions import repository as repo
from payoutdesk.submissions.jsonrows import iter_canonical_rows, stored_rows
from payoutdesk.submissions.rows import ITEM_RE, MAX_NOTE, MAX_QUANTITY, Intent, RowError, command_for, interpret

log = logging.getLogger("payoutdesk.engine")
# A chunk (rows per transaction) and a batch (rows applied at once) are two sizes.
# The chunk is bounded in time (DESIGN §6, "No stalls"): it ends after the batch that finishes CHUNK_SECONDS
# (1 s) after it began, and after any batch once another writer waits for what it holds (a thread of this
# process queued on SQLite's write lock, kit.db.FairLock; a PostgreSQL session waiting for one of its row
# locks). So on SQLite a submission holds the write lock about a second at a time, and a single-action
# change made meanwhile waits about a batch; its counts are committed every second or so. After a long
# transaction on SQLite the worker pauses a tenth of the time it held the lock (at most PAUSE_MAX): writers
# of other processes, which wait in SQLite's busy handler polling every 100 ms, get their turn then.
# The batch is sized from the rows/s measured so far to take about BATCH_SECONDS (so the time bound is
# checked often), from FIRST_BATCH rows, never below MIN_BATCH (unless BATCH is smaller), never above
# BATCH, which bounds the worker's memory (50,000 rows keep its peak under 300 MB).
# On PostgreSQL a transaction is one batch of about half of CHUNK_SECONDS (unless a chunk size is set):
# the first try of a batch reads its actions without locking them and takes their row locks only with
# its writes at the end, so the locks are held only from those writes to the commit; and the staging
# tables of the writes are emptied by DELETE, whose dead rows a long transaction of many batches would
# pile up and scan again at each batch.
# CHUNK_SQLITE and CHUNK_POSTGRESQL bound a chunk's rows: bigger transactions share page writes between
# more rows (docs/PERFORMANCE.md), which the time bound now limits anyway.
# PAYOUTDESK_SUBMISSION_CHUNK sets the chunk on both backends, PAYOUTDESK_SUBMISSION_BATCH the largest
# batch, PAYOUTDESK_SUBMISSION_CHUNK_SECONDS the time bound.
_CHUNK_ENV = os.environ.get("PAYOUTDESK_SUBMISSION_CHUNK")
CHUNK = int(_CHUNK_ENV) if _CHUNK_ENV else None  # None: the backend's default below
CHUNK_SQLITE = 250_000
CHUNK_POSTGRESQL = 50_000
BATCH = int(os.environ.get("PAYOUTDESK_SUBMISSION_BATCH", "50000"))
CHUNK_SECONDS = float(os.environ.get("PAYOUTDESK_SUBMISSION_CHUNK_SECONDS", "1"))
BATCH_SECONDS = 0.1
FIRST_BATCH = 1_000
MIN_BATCH = 200
PAUSE_RATIO = 0.1
PAUSE_MAX = 0.12
YIELD_TO_WAITERS = True  # end a chunk early when another writer waits (False only to measure the old way)
# The worker's lease: renewed every third of it while it works (engine._Heartbeat); after a SIGKILL the
# next worker takes the submission over once it runs out. PAYOUTDESK_WORKER_LEASE_SECONDS sets it.
LEASE_SECONDS = 30


def default_lease() -> timedelta:
    raw = os.environ.get("PAYOUTDESK_WORKER_LEASE_SECONDS", "")
    return timedelta(seconds=float(raw) if raw.strip() else LEASE_SECONDS)


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
    """An action to put back (undo)."""

    row: int
    undo_action: int


# A valid row: the fields of rows.Intent (row, action id, event type id, order id, reason, amount, items,
# note) as a plain tuple, cheaper by far than the dataclass.
Plan = tuple[int, int | None, int | None, str | None, str, int | None, tuple[wf.ItemChange, ...], str | None]
Work = Plan | RowError | Unit

# Reasons that, with an amount or item columns and no custom code of the same name, modify (command_for).
_NOT_MODIFY = frozenset({"APPROVED", "RESET"})  # whatever a custom code says
_PLAIN_MODIFY = frozenset(wf.PREDEFINED_REASONS) - wf.SYSTEM_ONLY_REASONS - _NOT_MODIFY


# --- rows into plans --------------------------------------------------------------------------

_PLAIN_KEYS = frozenset({"ActionId", "ActionTrackerId", "Oid", "Amount", "Reason", "Note", "CurrencyCode",
                         "CustomerStatus"})
_ITEM_KEYS = {f"{kind}{n}": (kind, n) for kind in ("Sku", "Quantity", "Amount", "Category") for n in range(1, 1001)}


def _digits(text: str) -> bool:
    return text.isdigit() and text.isascii() and len(text) <= 18


def _quick_amount(text: str, exp: int) -> int | None:
    """``parse_file_amount(text, currency)`` for plain decimals (``80``, ``80.5``, ``80.00``); None for anything else
    (``interpret`` then says what is wrong; ``"12."`` and ``".5"`` are not plain: a point has digits on each side)."""
    whole, point, frac = text.partition(".")
    if not (whole.isdigit() and whole.isascii()) or len(whole) > 16 or (point and not frac):
        return None
    minor = int(whole) * 10**exp
    if frac:
        if len(frac) > exp or not (frac.isdigit() and frac.isascii()):
            return None
        minor += int(frac) * 10 ** (exp - len(frac))
    return minor if minor <= MAX_MINOR else None


def quick_plan(number: int, fields: Mapping[str, str], currency: str, exp: int) -> Plan | None:
    """``interpret`` for the common, valid rows, as a tuple; None sends the row to ``interpret``.

    It answers only when every value is plain (ASCII digits, plain decimals, canonical column names), so that
    what it gives is what ``interpret`` gives; every doubt and every error goes to ``interpret``.
    """
    slots: dict[int, dict[str, str]] | None = None
    # an order-level row (no item column: the usual case) skips the loop
    for name, value in (() if fields.keys() <= _PLAIN_KEYS else fields.items()):
        if name in _PLAIN_KEYS:
            continue
        key = _ITEM_KEYS.get(name)
        if key is None:
            if ITEM_RE.match(name):
                return None
            continue
        if value:
            if slots is None:
                slots = {}
            slots.setdefault(key[1], {})[key[0]] = value
    action_id = event_type_id = None
    order_id = None
    text = fields.get("ActionId")
    if text:
        if not _digits(text):
            return None
        action_id = int(text)
    else:
        et, oid = fields.get("ActionTrackerId"), fields.get("Oid")
        if not et or not oid or not _digits(et):
            return None
        event_type_id = int(et)
        order_id = oid
    reason = (fields.get("Reason") or "").strip()
    if not reason:
        return None
    code = fields.get("CurrencyCode")
    if code and code.strip().upper() != currency:
        return None
    amount = None
    text = fields.get("Amount")
    if text:
        amount = _quick_amount(text, exp)
        if amount is None:
            return None
    items: tuple[wf.ItemChange, ...] = ()
    if slots is not None:
        changes = []
        for n in sorted(slots):
            slot = slots[n]
            sku, qty = slot.get("Sku"), slot.get("Quantity")
            if not sku or qty is None or not _digits(qty) or int(qty) > MAX_QUANTITY:
                return None
            item_amount = None
            text = slot.get("Amount")
            if text:
                item_amount = _quick_amount(text, exp)
                if item_amount is None:
                    return None
            changes.append(wf.ItemChange(sku, int(qty), item_amount))
        items = tuple(changes)
    note = fields.get("Note") or None
    if note is not None and len(note) > MAX_NOTE:
        return None
    return (number, action_id, event_type_id, order_id, reason, amount, items, note)


def plan_of(number: int, fields: Mapping[str, str], currency: str) -> Plan | RowError:
    """What ``interpret`` says of a row, as a Plan tuple or its RowError."""
    quick = quick_plan(number, fields, currency, exponent(currency))
    if quick is not None:
        return quick
    i = interpret(number, fields, currency)
    if isinstance(i, RowError):
        return i
    return (i.row, i.action_id, i.event_type_id, i.order_id, i.reason, i.amount, i.items, i.note)


# --- one chunk --------------------------------------------------------------------------------


class _Cur:
    """An action of the chunk as it is now: loaded, then changed row after row."""

    __slots__ = ("action", "contract_id", "event_type_id", "full", "id", "items", "items0", "lock_due", "locked_at",
                 "n", "partner_id", "reason", "restore", "state", "update_count", "version")

    def __init__(self, a: repo.ActionTuple, items: list[repo.ItemTuple]) -> None:
        (self.id, self.event_type_id, self.partner_id, self.contract_id, self.version, self.state, self.reason,
         self.locked_at, self.update_count, raw_restore, lock_due) = a
        # a date on PostgreSQL, ISO text from SQLite's driver
        self.lock_due: date = date.fromisoformat(lock_due) if isinstance(lock_due, str) else lock_due
        # as ledger.repository.to_domain reads it
        self.restore = tuple((int(q), int(m)) for q, m in json.loads(raw_restore)) if raw_restore else None
        self.items = self.items0 = items
        self.n = 0  # changes in this chunk
        self.full = False  # state, reason, locked_at or restore may have changed
        self.action: wf.Action | None = None

    def domain(self) -> wf.Action:
        if self.action is None:
            self.action = wf.Action(self.id, wf.State(self.state), tuple(wf.Item(*i) for i in self.items),
                                    self.locked_at, self.reason, self.update_count, self.restore, self.lock_due)
        return self.action

    def become(self, after: wf.Action) -> None:
        self.action = after
        self.state = after.state.value
        self.reason = after.reason
        self.locked_at = after.locked_at
        self.update_count = after.update_count
        self.restore = after.restore
        self.items = [(i.sku, i.name, i.category, i.quantity, i.amount, i.payout, i.intended_quantity,
                       i.intended_amount, i.intended_payout) for i in after.items]
        self.n += 1
        self.full = True


def _terms(conn: Connection, caches: Caches, campaign_id: int, cur: _Cur, today: date) -> Terms:
    key = (campaign_id, cur.partner_id, cur.event_type_id, cur.contract_id, today)
    found = caches.terms.get(key)
    if found is None:
        try:
            found = terms_in_force(conn, campaign_id, cur.partner_id, cur.event_type_id, today)
        except NoContract:
            contract = conn.execute(contracts.select().where(contracts.c.id == cur.contract_id)).one()
            recorded = terms_of(conn, contract, cur.event_type_id)
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


def _error(sid: int, e: RowError, action_id: int | None = None) -> tuple[Any, ...]:
    return (sid, e.row, "error", action_id, None, None, None, None, None, e.column, e.type, e.code, e.message)


def apply_chunk(
    conn: Connection,
    sub: Row[Any],
    units: Sequence[Work],
    caches: Caches,
    counts: Counts,
    now: datetime,
    overlay: dict[int, Any] | None = None,
    *,
    lock: bool = False,
) -> None:
    """Process one chunk inside the caller's transaction (writes nothing but results in a dry run).

    ``overlay`` (dry runs) keeps the actions as the rows so far left them, from chunk to chunk. ``lock``
    reads the actions ``FOR UPDATE`` on PostgreSQL; without it a change made meanwhile by anyone else
    fails the version-checked write (``StaleVersion``), and the caller tries again with ``lock``.
    """
    dry = bool(sub.dry_run)
    sid = int(sub.id)
    account_id, campaign_id = int(sub.account_id), int(sub.campaign_id)
    bulk = repo.Bulk(conn)
    ids: set[int] = set()
    pairs: set[tuple[int, str]] = set()
    for u in units:
        if type(u) is tuple:
            if u[1] is not None:
                ids.add(u[1])
            else:
                pairs.add((u[2], u[3]))  # type: ignore[arg-type]
        elif isinstance(u, Unit):
            ids.add(u.undo_action)
    by_order = bulk.newest_by_orders(account_id, campaign_id, pairs) if pairs else {}
    ids.update(by_order.values())
    current: dict[int, _Cur] = overlay if overlay is not None else {}
    for aid, (a, items) in bulk.load(account_id, campaign_id, sorted(i for i in ids if i not in current),
                                     for_update=lock and not dry).items():
        current[aid] = _Cur(a, items)
    undo_history = (
        repo.history(conn, [u.undo_action for u in units if isinstance(u, Unit)])
        if sub.undo_of is not None else {}
    )
    results: list[tuple[Any, ...]] = []
    updates: list[tuple[Any, ...]] = []
    channel = sub.channel
    actor = sub.actor or sub.channel
    at = bulk.bind_time(now)
    today = now.date()
    undo_source = note_undo = None
    if sub.undo_of is not None:
        original = repo.get(conn, int(sub.undo_of))
        assert original is not None
        undo_source = f"{original.kind}-{original.id}"
        note_undo = f"undo of {undo_source}"
    sku_json: dict[str, str] = {}
    max_updates = wf.MAX_UPDATES

    for u in units:
        if type(u) is tuple:
            row_no = u[0]
            target = u[1] if u[1] is not None else by_order.get((u[2], u[3]))  # type: ignore[arg-type]
            cur = current.get(target) if target is not None else None
            if cur is None:
                what = (f"action {u[1]}" if u[1] is not None
                        else f"action of event type {u[2]} with order id {quote(u[3])}")
                results.append(_error(sid, RowError(
                    row_no, "ActionId" if u[1] is not None else "Oid", "VALIDATION", "unknown_action",
                    f"There is no {what} in campaign {campaign_id}.")))
                counts.errors += 1
                continue
            aid = cur.id
            amount, reason, changes = u[5], u[4], u[6]
            codes = caches.codes.get(cur.event_type_id)
            if codes is None:
                codes = _codes(conn, caches, cur.event_type_id)
            if (cur.state == "PENDING" and cur.locked_at is None and cur.lock_due > today
                    and cur.update_count < max_updates
                    and cur.restore is None and (amount is not None or changes)
                    and (codes.get(reason) == "modify" if reason in codes else reason in _PLAIN_MODIFY)
                    and reason not in _NOT_MODIFY):
                # command_for gives Modify(amount, changes, reason); the lane answers what decide would
                items = cur.items
                new_items: list[wf.ItemRow] | str | None
                if amount is not None and not changes and len(items) == 1 and amount > 0 and items[0][4] >= 0:
                    # the plain order-level change of a one-item action, inline
                    it = items[0]
                    if amount == it[4]:
                        new_items = None
                    else:
                        p1 = one_item_payout(_terms(conn, caches, campaign_id, cur, today), amount, it[2])
                        new_items = [(it[0], it[1], it[2], it[3], amount, p1, it[6], it[7], it[8])]
                else:
                    new_items = wf.quick_modify(items, amount, changes,
                                                _terms(conn, caches, campaign_id, cur, today))
                if new_items != wf.SLOW:
                    a0 = p0 = 0
                    for it in items:
                        a0 += it[4]
                        p0 += it[5]
                    if new_items is None:
                        counts.unchanged += 1
                        results.append((sid, row_no, "unchanged", aid, a0, a0, p0, p0, "PENDING",
                                        None, None, None, None))
                        continue
                    assert isinstance(new_items, list)
                    a1 = p1 = 0
                    parts = []
                    for b, it in zip(items, new_items, strict=True):
                        a1 += it[4]
                        p1 += it[5]
                        if it != b:
                            sj = sku_json.get(it[0])
                            if sj is None:
                                sj = sku_json[it[0]] = json.dumps(it[0])
                            parts.append(f'{{"sku":{sj},"quantity":{it[3]},"amount":{it[4]},"payout":{it[5]}}}')
                    cur.items = new_items
                    cur.update_count += 1
                    cur.n += 1
                    cur.action = None
                    da, dp = a1 - a0, p1 - p0
                    counts.applied += 1
                    counts.amount_delta += da
                    counts.payout_delta += dp
                    results.append((sid, row_no, "applied", aid, a0, a1, p0, p1, "PENDING", None, None, None, None))
                    updates.append((aid, at, "MODIFIED", "PENDING", reason, u[7], da, dp,
                                    f"[{','.join(parts)}]" if parts else None, channel, sid, actor))
                    continue
            try:
                cmd = command_for(Intent(*u), codes)
                if isinstance(cmd, RowError):
                    results.append(_error(sid, cmd, aid))
                    counts.errors += 1
                    continue
                action = cur.domain()
                outcome = wf.decide(action, cmd, _terms(conn, caches, campaign_id, cur, today), now)
            except PayoutdeskError as exc:
                results.append(_error(sid, RowError(row_no, _column_of(exc), exc.kind, exc.code, exc.detail), aid))
                counts.errors += 1
                continue
            note = u[7]
        elif isinstance(u, RowError):
            results.append(_error(sid, u))
            counts.errors += 1
            continue
        else:
            assert isinstance(u, Unit)
            row_no, aid = u.row, u.undo_action
            cur = current.get(aid)
            if cur is None:
                results.append(_error(sid, RowError(row_no, "Oid", "VALIDATION", "unknown_action",
                                                    f"There is no such action in campaign {campaign_id}.")))
                counts.errors += 1
                continue
            action = cur.domain()
            try:
                outcome = _undo_outcome(action, undo_history.get(aid, []), int(sub.undo_of), str(undo_source),
                                         today)
            except PayoutdeskError as exc:
                results.append(_error(sid, RowError(row_no, _column_of(exc), exc.kind, exc.code, exc.detail), aid))
                counts.errors += 1
                continue
            note = note_undo
        if isinstance(outcome, wf.Unchanged):
            counts.unchanged += 1
            results.append((sid, row_no, "unchanged", aid, action.amount, action.amount, action.payout,
                            action.payout, action.state.value, None, None, None, None))
            continue
        change = outcome
        after = change.after
        da, dp = change.delta_amount, change.delta_payout
        counts.applied += 1
        counts.amount_delta += da
        counts.payout_delta += dp
        results.append((sid, row_no, "applied", aid, action.amount, after.amount, action.payout, after.payout,
                        after.state.value, None, None, None, None))
        changed = change.changed_items()
        updates.append((aid, at, change.kind.value, after.state.value, change.reason, note, da, dp,
                        items_json(changed) if changed else None, channel, sid, actor))
        cur.become(after)

    if not dry:
        rows: list[tuple[Any, ...]] = []
        item_rows: list[tuple[Any, ...]] = []
        for cur in current.values():
            if not cur.n:
                continue
            items = cur.items
            rows.append((cur.id, cur.version, cur.version + cur.n, cur.full, cur.state, cur.reason,
                         sum(i[4] for i in items), sum(i[5] for i in items), cur.locked_at,
                         json.dumps(cur.restore) if cur.restore is not None else None, cur.update_count))
            for pos, (b, a) in enumerate(zip(cur.items0, items, strict=True)):
                if a != b:
                    item_rows.append((cur.id, pos, a[3], a[4], a[5]))
        bulk.write_actions(rows, item_rows)
        bulk.insert_updates(updates)
    bulk.insert_results(results)


def _column_of(exc: PayoutdeskError) -> str | None:
    return {"unknown_sku": "Sku1", "invalid_amount": "Amount", "unknown_reason": "Reason"}.get(exc.code)


def _undo_outcome(action: wf.Action, updates: Sequence[Any], undo_of: int, label: str, today: date
                  ) -> wf.Outcome:
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
    wf.check_not_final(action, today)
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


Source = Callable[[int], Iterator[Work]]  # the units from a row offset on


def source_of(conn: Connection, sub: Row[Any], currency: str) -> tuple[str, int, Source]:
    """The stored file (or the undone submission's actions) as a format, a row count and a lazy source of
    units, so that a big file is never held as objects all at once, nor its bytes: the file is read back
    chunk by chunk into a temporary file (files.spool) that the readers read from. Raises FileRejected."""
    if sub.undo_of is not None:
        ids = repo.updates_of_submission(conn, int(sub.undo_of))
        return "undo", len(ids), lambda start: (Unit(n, aid) for n, aid in enumerate(ids[start:], start + 1))
    stored = files.stored(conn, int(sub.file_id)) if sub.file_id is not None else None
    if stored is None:
        raise FileRejected("The original file is no longer stored; submit it again.")
    blob = files.spool(conn, stored)
    exp = exponent(currency)

    def plans(raw: Iterator[Any]) -> Iterator[Work]:
        for r in raw:
            number, fields = r.number, r.fields
            quick = quick_plan(number, fields, currency, exp)
            yield quick if quick is not None else plan_of(number, fields, currency)

    if sub.content_type == "application/json":
        try:
            count = sum(1 for _ in stored_rows(blob.open()))
        except ValueError as exc:  # ijson's errors are ValueErrors: a stored batch is valid JSON, unless damaged
            raise FileRejected(f"The stored rows cannot be read ({str(exc)[:100]}).") from None
        return "json", count, lambda start: plans(islice(iter_canonical_rows(stored_rows(blob.open())), start, None))
    from payoutdesk.submissions.formats import parse

    parsed = parse(blob, sub.file_name)
    rows = parsed.rows
    total = parsed.total
    if total is None:
        rows = list(rows)
        total = len(rows)
    return parsed.format, total, lambda start: plans(islice(iter(rows), start, None))


def process(engine: Engine, submission_id: int, worker: str, *, chunk: int | None = None,
            progress: Progress | None = None, lease: timedelta | None = None, batch: int | None = None,
            chunk_seconds: float | None = None, stop: threading.Event | None = None) -> Row[Any]:
    """Run a claimed submission to COMPLETE (or FAILED when its file is unusable), or until ``stop`` is
    set: then the chunk in hand ends at its current batch and commits, and the submission goes back to
    the queue (``repo.release``) for the next worker to resume at once.

    A transaction (chunk) takes at most ``chunk`` rows (default ``CHUNK``, else the backend's) and ends
    after the batch that finishes ``chunk_seconds`` after it began (default ``CHUNK_SECONDS``), or after
    any batch when another writer waits for it; batches are sized from the measured rows/s to take about
    ``BATCH_SECONDS``, at most ``batch`` rows (default ``BATCH``). See the sizes at the top of this module.
    A heartbeat renews the worker's lease (``lease``, default ``default_lease()``) all along, file reading included.
    """
    seconds = CHUNK_SECONDS if chunk_seconds is None else chunk_seconds
    lease = lease or default_lease()
    sqlite = db.is_sqlite(engine)
    # PostgreSQL: one batch a transaction, of about half the time bound (its commit and the record of its
    # progress come on top), unless a chunk size is asked for
    one_batch = not sqlite and chunk is None and CHUNK is None
    if chunk is None:
        chunk = CHUNK or (CHUNK_SQLITE if sqlite else CHUNK_POSTGRESQL)
    sizes = _BatchSizes(min(batch or BATCH, chunk), seconds / 2 if one_batch else BATCH_SECONDS)
    with _Heartbeat(engine, submission_id, worker, lease) as beat:
        with db.read(engine) as conn:
            claimed = repo.get(conn, submission_id)
        if claimed is not None and claimed.kind == "R":  # a re-processing job (R13), in chunks under this lease
            from payoutdesk.ledger import reprocess

            return reprocess.run_submission(engine, submission_id, worker, lease, progress, stop, beat.lost)
        return _process(engine, submission_id, worker, chunk, sizes, seconds, lease, progress, stop, beat,
                        one_batch)


def _process(engine: Engine, submission_id: int, worker: str, chunk: int, sizes: _BatchSizes, seconds: float,
             lease: timedelta, progress: Progress | None, stop: threading.Event | None, beat: _Heartbeat,
             one_batch: bool) -> Row[Any]:
    began = time.monotonic()
    with db.read(engine) as conn:
        sub = repo.get(conn, submission_id)
        assert sub is not None
        label = f"{sub.kind}-{submission_id}"
        currency = _currency(conn, sub.campaign_id)
        source: Source | None
        try:
            fmt, total, source = source_of(conn, sub, currency)
        except PayoutdeskError as exc:  # the reader refused the file as a whole
            fmt, total, source = None, 0, None
            failure = exc.detail
    if source is None:
        with db.write(engine) as conn:
            repo.set_status(conn, submission_id, status="FAILED", failure=failure, finished_at=utcnow(),
                            total_records=0, lease_until=None)
            row = _reload(conn, submission_id)
        logs.event(log, f"submission {label} failed: {failure}", event="submission_failed", submission=label,
                   worker=worker, failure=failure)
        return row
    counts = Counts(sub.applied, sub.unchanged, sub.errors, sub.amount_delta, sub.payout_delta)
    caches = Caches()
    overlay: dict[int, Any] | None = {} if sub.dry_run else None
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
    reader = _Reader(source, done)
    pause_after = PAUSE_RATIO if db.is_sqlite(engine) else 0.0
    while done < total:
        if stop is not None and stop.is_set():
            return _release(engine, submission_id, worker, label, done, total)
        snapshot = Counts(**vars(counts))
        tries = [0]

        def unit(conn: Connection, start: int = done, tries: list[int] = tries) -> int:
            # Optimistic first: a chunk's first try reads its actions without locking them, since the
            # version-checked writes refuse it whole if anyone changed one of them meanwhile (R14); on
            # PostgreSQL that saves a row lock (a WAL record) per action. A retry locks them, so that a
            # chunk that keeps meeting changes (a busy API) is applied at its second try, never starved.
            lock = tries[0] > 0
            tries[0] += 1
            units = reader.at(start)  # a retry reads its rows again
            now = utcnow()
            sub_now = repo.get(conn, submission_id)
            assert sub_now is not None
            taken = 0
            until = time.monotonic() + seconds
            while taken < chunk:
                t0 = time.monotonic()
                part = list(islice(units, min(sizes.next, chunk - taken)))
                if not part:
                    break
                # each batch's writes are in this transaction: the next batch loads its actions as they left them
                apply_chunk(conn, sub_now, part, caches, counts, now, overlay, lock=lock)
                taken += len(part)
                t1 = time.monotonic()
                sizes.measured(len(part), t1 - t0)
                if beat.lost.is_set():
                    raise repo.LostClaim(f"submission {submission_id} is no longer this worker's")
                if (one_batch or t1 >= until or (stop is not None and stop.is_set())
                        or (YIELD_TO_WAITERS and taken < chunk and db.others_waiting(conn))):
                    break  # let the waiting writers in (DESIGN §6, "No stalls"), or stop
                if progress and taken < chunk:
                    progress(start + taken, total)  # not yet committed: the bar moves, the stored counts follow
            if taken:
                repo.advance(conn, submission_id, worker, start, {
                    "processed_records": start + taken, "applied": counts.applied, "unchanged": counts.unchanged,
                    "errors": counts.errors, "amount_delta": counts.amount_delta, "payout_delta": counts.payout_delta,
                    "lease_until": now + lease,
                })
            return taken

        held = time.monotonic()
        try:
            with _no_gc():
                taken = db.transaction(engine, _restoring(unit, counts, snapshot))
        except repo.LostClaim:
            logs.event(log, f"submission {label}: taken over by another worker; {worker} stops", level=logging.WARNING,
                       event="submission_lost", submission=label, worker=worker)
            with db.read(engine) as conn:
                return _reload(conn, submission_id)
        held = time.monotonic() - held
        if not taken:  # the source ended before its row count: never mark such a submission COMPLETE
            raise RuntimeError(f"submission {submission_id}: no row after {done} of {total}")
        done += taken
        if progress:
            progress(done, total)
        if pause_after and done < total:
            # Writers of other processes wait for SQLite's write lock in its busy handler, which tries again
            # every 100 ms at most: a pause after each long transaction gives them their turn. It is spent
            # reading the next rows, which needs no lock.
            pause = min(PAUSE_MAX, held * pause_after)
            until_pause = time.monotonic() + pause
            reader.ahead(done, sizes.next)
            rest = until_pause - time.monotonic()
            if rest > 0:
                time.sleep(rest)
    with db.write(engine) as conn:
        repo.set_status(conn, submission_id, status="COMPLETE", finished_at=utcnow(), lease_until=None)
        if sub.undo_of is not None:
            repo.set_status(conn, int(sub.undo_of), undone_by=submission_id)
        row = _reload(conn, submission_id)
    logs.event(log, f"submission {label} complete: {row.total_records} rows, {row.applied} applied, "
               f"{row.unchanged} unchanged, {row.errors} errors ({time.monotonic() - began:.1f} s in {worker})",
               event="submission_complete", submission=label, worker=worker, total=row.total_records,
               applied=row.applied, unchanged=row.unchanged, errors=row.errors, dry_run=bool(row.dry_run))
    return row


def _release(engine: Engine, submission_id: int, worker: str, label: str, done: int, total: int) -> Row[Any]:
    with db.write(engine) as conn:
        released = repo.release(conn, submission_id, worker)
        row = _reload(conn, submission_id)
    if released:
        logs.event(log, f"submission {label} released at row {done} of {total}: {worker} is stopping",
                   event="submission_released", submission=label, worker=worker, processed=done, total=total)
    return row


class _BatchSizes:
    """Rows per batch, from the rows/s measured so far, so that a batch takes about ``target`` seconds
    (a chunk's time bound is checked between batches), within 1 … ``largest``."""

    def __init__(self, largest: int, target: float) -> None:
        self.largest = max(1, largest)
        self.target = target
        self.next = min(FIRST_BATCH, self.largest)

    def measured(self, rows: int, seconds: float) -> None:
        if seconds <= 0:
            return
        wanted = int(rows / seconds * self.target)
        # grow at most fourfold a step: one quick batch (cached terms, a warm page cache) says little
        upper = min(self.largest, self.next * 4)
        self.next = max(1, min(upper, max(MIN_BATCH, wanted)))


class _Heartbeat:
    """Renews the worker's lease every third of it while ``process`` runs, reading of the file included,
    so that a lease of seconds never runs out under a live worker; ``lost`` is set when the
    submission is found no longer this worker's."""

    def __init__(self, engine: Engine, submission_id: int, worker: str, lease: timedelta) -> None:
        self.engine, self.submission_id, self.worker, self.lease = engine, submission_id, worker, lease
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"payoutdesk-lease-{submission_id}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        every = max(0.05, self.lease.total_seconds() / 3)
        while not self._done.wait(every):
            try:
                with db.write(self.engine) as conn:
                    if not repo.renew(conn, self.submission_id, self.worker, utcnow() + self.lease):
                        self.lost.set()
                        return
            except Exception:  # a missed beat is tried again at the next; the lease has room for two
                log.warning("could not renew the lease of submission %s", self.submission_id, exc_info=True)


class _Reader:
    """The source's units, read on from where the last transaction stopped; a transaction that is tried
    again (it lost a race) reads its rows again from a fresh source. The position counts the units handed
    out, so a try that failed in its first batch, before any of its rows counted, starts over too.
    ``ahead`` reads some units before they are asked for (outside any transaction)."""

    def __init__(self, source: Source, start: int) -> None:
        self._source = source
        self._restart(start)

    def _restart(self, start: int) -> None:
        self._raw = self._source(start)
        self._buffer: deque[Work] = deque()
        self._pos = start

    def __iter__(self) -> Iterator[Work]:
        return self

    def __next__(self) -> Work:
        u = self._buffer.popleft() if self._buffer else next(self._raw)
        self._pos += 1
        return u

    def at(self, start: int) -> Iterator[Work]:
        if self._pos != start:
            self._restart(start)
        return self

    def ahead(self, start: int, n: int) -> None:
        self.at(start)
        self._buffer.extend(islice(self._raw, max(0, n - len(self._buffer))))


@contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic collector off while a chunk is built and applied: its hundreds of thousands of new tuples
    (no cycles among them) would otherwise set off collections that scan them again and again."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _restoring(fn: Callable[[Connection], int], counts: Counts, snapshot: Counts) -> Callable[[Connection], int]:
    """Retries must start from the counts as they were before the failed attempt."""

    def run(conn: Connection) -> int:
        for k, v in vars(snapshot).items():
            setattr(counts, k, v)
        return fn(conn)

    return run


def _currency(conn: Connection, campaign_id: int) -> str:
    from payoutdesk.models import campaigns

    return str(conn.execute(campaigns.select().where(campaigns.c.id == campaign_id)).one().currency)


def _reload(conn: Connection, submission_id: int) -> Row[Any]:
    row = repo.get(conn, submission_id)
    assert row is not None
    return row
