"""SQL for actions, items and their history."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Date,
    Row,
    Select,
    String,
    TextClause,
    and_,
    bindparam,
    func,
    insert,
    select,
    text,
    type_coerce,
    union_all,
    update,
)

from payoutdesk.errors import StaleVersion
from payoutdesk.kit.db import is_sqlite
from payoutdesk.kit.time import as_utc
from payoutdesk.ledger import workflow as wf
from payoutdesk.models import action_items, action_updates, actions
from payoutdesk.models.tables import EVENT_DAY_POSTGRESQL, EVENT_DAY_SQLITE
from payoutdesk.models.types import UTCDateTime


@dataclass(frozen=True)
class Filters:
    state: str | None = None
    campaign_id: int | None = None
    partner_id: int | None = None
    event_type_id: int | None = None
    order_id: str | None = None
    action_id: int | None = None
    event_date_from: datetime | None = None
    event_date_to: datetime | None = None  # exclusive
    locking_date_from: date | None = None
    locking_date_to: date | None = None  # inclusive


def filtered(stmt: Select[Any], account_id: int, f: Filters) -> Select[Any]:
    a = actions.c
    conds = [a.account_id == account_id]
    if f.state is not None:
        conds.append(a.state == f.state)
    if f.campaign_id is not None:
        conds.append(a.campaign_id == f.campaign_id)
    if f.partner_id is not None:
        conds.append(a.partner_id == f.partner_id)
    if f.event_type_id is not None:
        conds.append(a.event_type_id == f.event_type_id)
    if f.order_id is not None:
        conds.append(a.order_id == f.order_id)
    if f.action_id is not None:
        conds.append(a.id == f.action_id)
    if f.event_date_from is not None:
        conds.append(a.event_date >= f.event_date_from)
    if f.event_date_to is not None:
        conds.append(a.event_date < f.event_date_to)
    if f.locking_date_from is not None:
        conds.append(a.locking_date >= f.locking_date_from)
    if f.locking_date_to is not None:
        conds.append(a.locking_date <= f.locking_date_to)
    return stmt.where(and_(*conds))


DAY_PLAN_MAX_DAYS = 93


def _day_plan(conn: Connection, f: Filters) -> list[tuple[Any, date, Filters]] | None:
    """Per day of a bounded date range: the day column, the day, and the filters left to apply.

    An index on (account, day, id) holds each day's actions in id order, so the newest matches of
    every day of the range are found without sorting the range, and the page is the newest of
    those. The plain query would either sort every action of the range or walk back through all
    newer actions (ids follow the event dates), which at millions of actions takes seconds.
    """
    plans: list[list[tuple[Any, date, Filters]]] = []
    if f.locking_date_from is not None and f.locking_date_to is not None:
        n = (f.locking_date_to - f.locking_date_from).days + 1
        rest = replace(f, locking_date_from=None, locking_date_to=None)  # implied by each day
        plans.append([(actions.c.locking_date, f.locking_date_from + timedelta(days=k), rest) for k in range(n)])
    if f.event_date_from is not None and f.event_date_to is not None:
        lo = as_utc(f.event_date_from).date()
        hi = (as_utc(f.event_date_to) - timedelta(microseconds=1)).date()  # the bound is exclusive
        n = (hi - lo).days + 1 if f.event_date_to > f.event_date_from else 0
        col = EVENT_DAY_SQLITE if is_sqlite(conn) else EVENT_DAY_POSTGRESQL
        inner = replace(f, event_date_from=None, event_date_to=None)  # a whole day inside the range
        plans.append([(col, lo + timedelta(days=k), f if k in (0, n - 1) else inner) for k in range(n)])
    plans = [p for p in plans if len(p) <= DAY_PLAN_MAX_DAYS]
    return min(plans, key=len) if plans else None


def list_page(conn: Connection, account_id: int, f: Filters, limit: int, after_id: int | None) -> list[Row[Any]]:
    """One page, newest first, keyset-paged on the id."""
    id_ = actions.c.id
    plan = _day_plan(conn, f)
    if plan is None:
        stmt = filtered(select(actions), account_id, f)
        if after_id is not None:
            stmt = stmt.where(id_ < after_id)
        return list(conn.execute(stmt.order_by(id_.desc()).limit(limit)))
    if not plan:
        return []
    if not is_sqlite(conn):
        # planned with the values at hand: a generic plan of this statement (psycopg prepares it once
        # it repeats) may walk another filter's index back through all newer actions instead
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
    per_day = []
    for day_col, day, rest in plan:
        one = filtered(select(id_), account_id, rest).where(day_col == day)
        if after_id is not None:
            one = one.where(id_ < after_id)
        per_day.append(select(one.order_by(id_.desc()).limit(limit).subquery().c.id))
    ids = union_all(*per_day).subquery()
    stmt = select(actions).where(id_.in_(select(ids.c.id))).order_by(id_.desc()).limit(limit)
    return list(conn.execute(stmt))


def items_of_many(conn: Connection, action_ids: Sequence[int]) -> dict[int, list[Row[Any]]]:
    out: dict[int, list[Row[Any]]] = {i: [] for i in action_ids}
    if not action_ids:
        return out
    rows = conn.execute(
        select(action_items)
        .where(action_items.c.action_id.in_(list(action_ids)))
        .order_by(action_items.c.action_id, action_items.c.position)
    )
    for r in rows:
        out[r.action_id].append(r)
    return out


def _iso_time(conn: Connection, col: Any) -> Any:
    """A UTC time as ``kit.time.iso`` writes it (2026-01-15T10:00:00Z), rendered by the database."""
    if is_sqlite(conn):
        return func.strftime("%Y-%m-%dT%H:%M:%SZ", col)  # stored as naive UTC text
    return func.to_char(func.timezone("UTC", col), 'YYYY-MM-DD"T"HH24:MI:SS"Z"')


def _iso_day(conn: Connection, col: Any) -> Any:
    """A date as ``date.isoformat`` writes it, rendered by the database."""
    if is_sqlite(conn):
        return type_coerce(col, String)  # stored as YYYY-MM-DD text
    return func.to_char(col, "YYYY-MM-DD")


def stream(conn: Connection, account_id: int, f: Filters, batch: int = 10_000) -> Iterator[Sequence[Any]]:
    """Every matching action, in id order, in bounded batches (constant memory), for the export.

    Each row is (id, campaign_id, event_type_id, partner_id, order_id, customer_id, promo_code,
    event_date, state, reason, currency, amount, payout, intended_amount, intended_payout,
    locking_date, locked_at) with the times and the date already ISO text (or None): the database
    formats them faster than Python parses and formats them again.
    """
    a = actions.c
    cols = [
        a.id, a.campaign_id, a.event_type_id, a.partner_id, a.order_id, a.customer_id, a.promo_code,
        _iso_time(conn, a.event_date), a.state, a.reason, a.currency, a.amount, a.payout, a.intended_amount,
        a.intended_payout, _iso_day(conn, a.locking_date), _iso_time(conn, a.locked_at),
    ]
    last = 0
    while True:
        stmt = filtered(select(*cols), account_id, f).where(a.id > last)
        rows = conn.execute(stmt.order_by(a.id).limit(batch)).all()
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def load(conn: Connection, account_id: int, action_id: int, *, for_update: bool) -> Row[Any] | None:
    stmt = select(actions).where(actions.c.id == action_id, actions.c.account_id == account_id)
    if for_update and not is_sqlite(conn):
        stmt = stmt.with_for_update()
    return conn.execute(stmt).first()


def items_of(conn: Connection, action_id: int) -> list[Row[Any]]:
    return list(
        conn.execute(
            select(action_items).where(action_items.c.action_id == action_id).order_by(action_items.c.position)
        )
    )


def updates_of(conn: Connection, action_id: int) -> list[Row[Any]]:
    return list(
        conn.execute(
            select(action_updates).where(action_updates.c.action_id == action_id).order_by(action_updates.c.id)
        )
    )


def newest_by_order(conn: Connection, account_id: int, event_type_id: int, order_id: str) -> Row[Any] | None:
    """R12: the newest action of an event type with the order id."""
    return conn.execute(
        select(actions)
        .where(
            actions.c.event_type_id == event_type_id,
            actions.c.order_id == order_id,
            actions.c.account_id == account_id,
        )
        .order_by(actions.c.id.desc())
        .limit(1)
    ).first()


def to_domain(row: Row[Any], items: Sequence[Row[Any]]) -> wf.Action:
    return wf.Action(
        id=row.id,
        state=wf.State(row.state),
        items=tuple(
            wf.Item(
                i.sku, i.name, i.category, i.quantity, i.amount, i.payout,
                i.intended_quantity, i.intended_amount, i.intended_payout,
            )
            for i in items
        ),
        locked_at=row.locked_at,
        reason=row.reason,
        update_count=row.update_count,
        restore=tuple((int(q), int(a)) for q, a in json.loads(row.restore)) if row.restore else None,
        lock_due=row.lock_due,
    )


def items_json(items: Sequence[wf.Item]) -> str:
    return json.dumps(
        [{"sku": i.sku, "quantity": i.quantity, "amount": i.amount, "payout": i.payout} for i in items],
        separators=(",", ":"),
    )


def insert_action(conn: Connection, values: dict[str, Any], action: wf.Action, update: dict[str, Any]) -> int:
    pk = conn.execute(
        insert(actions).values(
            **values,
            state=action.state.value,
            amount=action.amount,
            payout=action.payout,
            intended_amount=action.intended_amount,
            intended_payout=action.intended_payout,
            version=1,
            update_count=1,
        )
    ).inserted_primary_key
    assert pk is not None
    action_id = int(pk[0])
    conn.execute(
        insert(action_items),
        [
            {
                "action_id": action_id, "position": n, "sku": i.sku, "name": i.name, "category": i.category,
                "quantity": i.quantity, "amount": i.amount, "payout": i.payout,
                "intended_quantity": i.intended_quantity, "intended_amount": i.intended_amount,
                "intended_payout": i.intended_payout,
            }
            for n, i in enumerate(action.items)
        ],
    )
    conn.execute(
        insert(action_updates).values(
            action_id=action_id, kind=wf.Kind.CREATED.value, state=action.state.value,
            delta_amount=action.amount, delta_payout=action.payout, items=items_json(action.items), **update,
        )
    )
    return action_id


_item_update = (
    update(action_items)
    .where(action_items.c.action_id == bindparam("a_id"), action_items.c.position == bindparam("pos"))
    .values(quantity=bindparam("q"), amount=bindparam("amt"), payout=bindparam("pay"))
)


def _typed(sql: str) -> TextClause:
    """A text statement whose time and date parameters go through the column types."""
    stmt = text(sql)
    for name, type_ in (("now", UTCDateTime()), ("as_of", Date())):
        if f":{name}" in sql:
            stmt = stmt.bindparams(bindparam(name, type_=type_))
    return stmt


def lock_chunk(conn: Connection, as_of: date, now: datetime, account_id: int | None, chunk: int,
               *, skip_locked: bool = True) -> int:
    """R3, one bounded chunk: lock due actions and write their LOCKED entries. Returns how many.

    On PostgreSQL, ``skip_locked`` passes over rows another transaction holds (a concurrent lock
    run shares the work that way); without it the chunk waits for them and re-checks them.
    """
    account_sql = "AND account_id = :account_id" if account_id is not None else ""
    params: dict[str, Any] = {"as_of": as_of, "now": now, "chunk": chunk, "account_id": account_id}
    if is_sqlite(conn):
        # The write transaction is BEGIN IMMEDIATE: nobody else writes until it commits, so the chunk
        # (the first due actions in the order of the partial index, a walk without sorting) is the
        # same set in both statements; the INSERT reads the states before the UPDATE changes them.
        chunk_ids = (
            "SELECT id FROM actions WHERE locked_at IS NULL AND lock_due <= :as_of "
            f"{account_sql} ORDER BY lock_due, id LIMIT :chunk"
        )
        conn.execute(
            _typed(
                "INSERT INTO action_updates (action_id, at, kind, state, delta_amount, delta_payout, channel, actor) "
                f"SELECT id, :now, 'LOCKED', CASE state WHEN 'PENDING' THEN 'APPROVED' ELSE state END, 0, 0, "
                f"'system', 'lock run' FROM actions WHERE id IN ({chunk_ids}) ORDER BY id"
            ),
            params,
        )
        result = conn.execute(
            _typed(
                "UPDATE actions SET state = CASE state WHEN 'PENDING' THEN 'APPROVED' ELSE state END, "
                f"locked_at = :now, version = version + 1, update_count = update_count + 1 WHERE id IN ({chunk_ids})"
            ),
            params,
        )
        return int(result.rowcount)
    result = conn.execute(
        _typed(
            # the ids as an array: the update then fetches each row by its primary key, where a join
            # with the CTE would be planned as a hash join over a sequential scan of all actions
            "WITH due AS (SELECT id FROM actions WHERE locked_at IS NULL AND lock_due <= :as_of "
            f"{account_sql} ORDER BY lock_due, id LIMIT :chunk FOR UPDATE{' SKIP LOCKED' if skip_locked else ''}), "
            "locked AS (UPDATE actions a SET state = CASE a.state WHEN 'PENDING' THEN 'APPROVED' ELSE a.state END, "
            "locked_at = :now, version = a.version + 1, update_count = a.update_count + 1 "
            "WHERE a.id = ANY(ARRAY(SELECT id FROM due)) RETURNING a.id, a.state) "
            "INSERT INTO action_updates (action_id, at, kind, state, delta_amount, delta_payout, channel, actor) "
            "SELECT id, :now, 'LOCKED', state, 0, 0, 'system', 'lock run' FROM locked"
        ),
        params,
    )
    return int(result.rowcount)


def count(conn: Connection, account_id: int, f: Filters) -> int:
    return int(conn.execute(filtered(select(func.count()).select_from(actions), account_id, f)).scalar_one())


def reserve_action_ids(conn: Connection, n: int) -> list[int]:
    """Ids for ``n`` actions inserted in bulk: from the sequence on PostgreSQL (safe beside other
    writers); after the largest id on SQLite, whose write transaction excludes other writers."""
    if n <= 0:
        return []
    if is_sqlite(conn):
        first = int(conn.execute(select(func.coalesce(func.max(actions.c.id), 0))).scalar_one()) + 1
        return list(range(first, first + n))
    return [
        int(i)
        for i in conn.execute(
            text("SELECT nextval(pg_get_serial_sequence('actions', 'id')) FROM generate_series(1, :n)"), {"n": n}
        ).scalars()
    ]


# --- reads of the impact.com-compatible API (api/compat.py) ------------------------------------


def offset_page(conn: Connection, account_id: int, f: Filters, offset: int, limit: int) -> list[Row[Any]]:
    """One page of the account's matching actions, newest first, from row ``offset`` on (impact.com's
    Page/PageSize paging; ``list_page`` is the keyset-paged one)."""
    stmt = filtered(select(actions), account_id, f)
    return list(conn.execute(stmt.order_by(actions.c.id.desc()).offset(offset).limit(limit)))


def newest_changes(conn: Connection, action_ids: Sequence[int]) -> dict[int, Row[Any]]:
    """The newest change of each of these actions, by action id: its ``at``, ``delta_amount``,
    ``delta_payout``, ``note`` and ``reason``. A lock is a state transition, not a change (as in
    impact.com), so LOCKED entries are passed over; an action without a change is missing."""
    if not action_ids:
        return {}
    u = action_updates.c
    newest = (
        select(u.action_id, func.max(u.id).label("uid"))
        .where(u.action_id.in_(list(action_ids)), u.kind != wf.Kind.LOCKED.value)
        .group_by(u.action_id)
        .subquery()
    )
    stmt: Select[Any] = select(u.action_id, u.at, u.delta_amount, u.delta_payout, u.note, u.reason).join(
        newest, u.id == newest.c.uid
    )
    return {int(r.action_id): r for r in conn.execute(stmt)}


def order_keys(conn: Connection, account_id: int, action_ids: Sequence[int]) -> dict[int, Row[Any]]:
    """The ``event_type_id``, ``order_id`` and ``partner_id`` of each of these actions of the account,
    by action id (other accounts' actions are missing)."""
    ids = set(action_ids)
    if not ids:
        return {}
    a = actions.c
    stmt: Select[Any] = select(a.id, a.event_type_id, a.order_id, a.partner_id).where(
        a.id.in_(ids), a.account_id == account_id
    )
    return {int(r.id): r for r in conn.execute(stmt)}


# --- one action's change (ledger.service.apply and change) ------------------------------------
# Statements built once and run with bound values: building a statement (and its cache key) costs
# more than running it on a warm cache.

_WRITE_ACTION = (
    update(actions)
    .where(actions.c.id == bindparam("a_id"), actions.c.version == bindparam("a_version"))
    .values(
        state=bindparam("a_state"),
        reason=bindparam("a_reason"),
        amount=bindparam("a_amount"),
        payout=bindparam("a_payout"),
        locked_at=bindparam("a_locked_at", type_=UTCDateTime()),
        restore=bindparam("a_restore"),
        update_count=bindparam("a_update_count"),
        version=bindparam("a_new_version"),
    )
)
_INSERT_UPDATE = insert(action_updates)


def _action_params(after: wf.Action, version: int) -> dict[str, Any]:
    """The parameters of the version-checked action write (R14)."""
    return {
        "a_id": after.id,
        "a_version": version,
        "a_state": after.state.value,
        "a_reason": after.reason,
        "a_amount": after.amount,
        "a_payout": after.payout,
        "a_locked_at": after.locked_at,
        "a_restore": json.dumps(after.restore) if after.restore is not None else None,
        "a_update_count": after.update_count,
        "a_new_version": version + 1,
    }


def write_change(conn: Connection, version: int, change: wf.Change, update_values: dict[str, Any]) -> None:
    """Write one change: the action (version-checked, R14), its changed items, one history entry."""
    after = change.after
    result = conn.execute(
        _WRITE_ACTION,
        _action_params(after, version),
    )
    if result.rowcount != 1:
        raise StaleVersion(f"Action {after.id} was changed by someone else meanwhile.")
    changed = [
        {"a_id": after.id, "pos": n, "q": a.quantity, "amt": a.amount, "pay": a.payout}
        for n, (b, a) in enumerate(zip(change.before.items, after.items, strict=True))
        if a != b
    ]
    if changed:
        conn.execute(_item_update, changed)
    conn.execute(
        _INSERT_UPDATE,
        {
            "action_id": after.id,
            "kind": change.kind.value,
            "state": after.state.value,
            "reason": change.reason,
            "delta_amount": change.delta_amount,
            "delta_payout": change.delta_payout,
            "items": items_json(change.changed_items()) if changed else None,
            **update_values,
        },
    )


_HISTORY: dict[str, Select[Any]] = {}


def history_of_action(conn: Connection, action_id: int) -> Sequence[Sequence[Any]]:
    """An action's history as the API shows it, oldest first (one indexed query): per entry (at, kind,
    state, reason, note, delta_amount, delta_payout, items, channel, submission_id, actor), with ``at``
    already ISO text as ``kit.time.iso`` writes it (rendered by the database, like the export's times)."""
    stmt = _HISTORY.get(conn.dialect.name)
    if stmt is None:
        u = action_updates.c
        stmt = _HISTORY[conn.dialect.name] = (
            select(_iso_time(conn, u.at).label("at"), u.kind, u.state, u.reason, u.note, u.delta_amount,
                   u.delta_payout, u["items"], u.channel, u.submission_id, u.actor)
            .where(u.action_id == bindparam("action_id"))
            .order_by(u.id)
        )
    return list(conn.execute(stmt, {"action_id": action_id}))


# PostgreSQL: the writes of ``write_change`` and the history read after them in one statement (one
# round trip instead of four). Every part depends on the version-checked UPDATE of the action: when it
# matches nothing, nothing is written and no new entry comes back. The history is the entries the
# statement's snapshot sees (all but the new one) followed by the new one, as INSERT ... RETURNING
# answers it.
_HISTORY_COLUMNS_PG = (
    "to_char(timezone('UTC', {t}.at), 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), {t}.kind, {t}.state, {t}.reason, "
    "{t}.note, {t}.delta_amount, {t}.delta_payout, {t}.items, {t}.channel, {t}.submission_id, {t}.actor"
)
_WRITE_AND_HISTORY_PG = text(
    "WITH a AS ("
    " UPDATE actions SET state = :a_state, reason = :a_reason, amount = :a_amount, payout = :a_payout,"
    " locked_at = :a_locked_at, restore = :a_restore, update_count = :a_update_count, version = :a_new_version"
    " WHERE id = :a_id AND version = :a_version RETURNING id"
    "), i AS ("
    " UPDATE action_items SET quantity = v.q, amount = v.amt, payout = v.pay"
    " FROM unnest(CAST(:i_pos AS integer[]), CAST(:i_q AS integer[]), CAST(:i_amt AS bigint[]),"
    " CAST(:i_pay AS bigint[])) AS v(pos, q, amt, pay)"
    " WHERE action_items.action_id = (SELECT id FROM a) AND action_items.position = v.pos"
    "), u AS ("
    " INSERT INTO action_updates (action_id, at, kind, state, reason, note, delta_amount, delta_payout, items,"
    " channel, submission_id, actor)"
    " SELECT id, :at, :kind, :state, :reason, :note, :delta_amount, :delta_payout, :items, :channel,"
    " :submission_id, :actor FROM a"
    " RETURNING id, at, kind, state, reason, note, delta_amount, delta_payout, items, channel, submission_id, actor"
    ") "
    f"SELECT * FROM (SELECT false AS new, h.id, {_HISTORY_COLUMNS_PG.format(t='h')}"
    " FROM action_updates h WHERE h.action_id = :a_id"
    f" UNION ALL SELECT true, u.id, {_HISTORY_COLUMNS_PG.format(t='u')} FROM u) AS all_updates ORDER BY id"
).bindparams(bindparam("a_locked_at", type_=UTCDateTime()), bindparam("at", type_=UTCDateTime()))


def write_change_with_history_pg(
    conn: Connection, version: int, change: wf.Change, update_values: dict[str, Any]
) -> list[tuple[Any, ...]]:
    """PostgreSQL: ``write_change`` then ``history_of_action``, in one statement and round trip."""
    after = change.after
    changed = [
        (n, a) for n, (b, a) in enumerate(zip(change.before.items, after.items, strict=True)) if a != b
    ]
    rows = conn.execute(
        _WRITE_AND_HISTORY_PG,
        {
            **_action_params(after, version),
            "i_pos": [n for n, _ in changed],
            "i_q": [a.quantity for _, a in changed],
            "i_amt": [a.amount for _, a in changed],
            "i_pay": [a.payout for _, a in changed],
            "kind": change.kind.value,
            "state": after.state.value,
            "reason": change.reason,
            "delta_amount": change.delta_amount,
            "delta_payout": change.delta_payout,
            "items": items_json(change.changed_items()) if changed else None,
            **update_values,
        },
    ).all()
    if not rows or not rows[-1][0]:
        raise StaleVersion(f"Action {after.id} was changed by someone else meanwhile.")
    return [tuple(r)[2:] for r in rows]


def _items_and_terms_statement() -> Select[Any]:
    from sqlalchemy import true

    from payoutdesk.catalog.service import TERMS_IN_FORCE  # the catalog's statement, as it reads the terms

    terms = TERMS_IN_FORCE.subquery()
    i = action_items.c
    return (
        select(i.sku, i.name, i.category, i.quantity, i.amount, i.payout, i.intended_quantity, i.intended_amount,
               i.intended_payout, *[c.label(f"t_{c.name}") for c in terms.c])
        .select_from(action_items.outerjoin(terms, true()))
        .where(i.action_id == bindparam("action_id"))
        .order_by(i.position)
    )


_ITEMS_AND_TERMS: list[Select[Any]] = []


def items_and_terms(conn: Connection, action_id: int, campaign_id: int, partner_id: int, event_type_id: int,
                    on: date) -> tuple[list[Row[Any]], Row[Any] | None]:
    """``items_of`` and, in the same round trip, the row of ``catalog.service.TERMS_IN_FORCE`` for the
    campaign, partner, event type and day (its columns prefixed ``t_``; None when no contract started).
    The items rows have the item columns ``to_domain`` and the API read."""
    if not _ITEMS_AND_TERMS:
        _ITEMS_AND_TERMS.append(_items_and_terms_statement())
    rows = list(conn.execute(_ITEMS_AND_TERMS[0], {
        "action_id": action_id, "campaign_id": campaign_id, "partner_id": partner_id, "on": on,
        "event_type_id": event_type_id,
    }))
    return rows, (rows[0] if rows and rows[0].t_id is not None else None)
