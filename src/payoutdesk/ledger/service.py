"""The ledger service: applies the pure rules inside a transaction and writes the history."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Engine, Row

from payoutdesk.catalog import repository as catalog_repo
from payoutdesk.catalog.service import attribute_click, get_owned, parse_time, terms_from_row, terms_in_force, terms_of
from payoutdesk.context import Actor
from payoutdesk.contracts.terms import Terms, locking_date, open_ended_lock_date
from payoutdesk.errors import NotFound, UnknownReason, ValidationFailed, WrongCurrency, quote
from payoutdesk.kit import db, logs
from payoutdesk.kit.ids import MAX_ID, parse_id
from payoutdesk.kit.money import exponent, format_amount, parse_amount
from payoutdesk.kit.time import iso, utcnow
from payoutdesk.ledger import export, locking, schedule
from payoutdesk.ledger import repository as repo
from payoutdesk.ledger import workflow as wf
from payoutdesk.ledger.schemas import action_dict
from payoutdesk.models import campaigns, contracts, event_types, partners

MAX_ITEMS = 1000
MAX_QUANTITY = 10**9
MAX_PAGE = 500
LOCK_CHUNK = 50_000


@dataclass(frozen=True)
class Applied:
    """What one command did: the outcome and the action's id."""

    action_id: int
    outcome: wf.Outcome

    @property
    def unchanged(self) -> bool:
        return isinstance(self.outcome, wf.Unchanged)


# --- reasons ---------------------------------------------------------------------------------


def list_reasons(conn: Connection, account_id: int, event_type_id: int | None) -> list[dict[str, Any]]:
    out = [
        {"code": code, "name": name, "system_only": code in wf.SYSTEM_ONLY_REASONS, "custom": False}
        for code, name in wf.PREDEFINED_REASONS.items()
    ]
    if event_type_id is not None:
        get_owned(conn, event_types, account_id, event_type_id, "event type")
        out += [
            {"code": c.code, "name": c.name, "operation": c.operation, "system_only": False, "custom": True}
            for c in catalog_repo.codes_of(conn, event_type_id)
        ]
    return out


def resolve_reason(conn: Connection, actor: Actor, event_type_id: int, code: str | None) -> str | None:
    """A predefined reason or a custom disposition code of the event type (R15)."""
    if code is None:
        return None
    if not isinstance(code, str) or not code.strip():
        raise UnknownReason("The reason is empty; leave it out for the default or give a reason code.")
    code = code.strip()
    if code in wf.PREDEFINED_REASONS:
        if code in wf.SYSTEM_ONLY_REASONS and not actor.system:
            raise UnknownReason(f"Reason {code} is set by the system only.")
        return code
    if catalog_repo.code_of(conn, event_type_id, code) is not None:
        return code
    upper = code.upper()
    hint = f" (did you mean {upper}?)" if upper in wf.PREDEFINED_REASONS else ""
    raise UnknownReason(
        f"Unknown reason {quote(code)}{hint}. Use a predefined reason (GET /api/v1/reasons) or a "
        f"disposition code of event type {event_type_id}."
    )


# --- recording conversions -------------------------------------------------------------------


def _text(data: Mapping[str, Any], key: str, *, required: bool, limit: int = 200) -> str | None:
    value = data.get(key)
    if value is None or (isinstance(value, str) and not value.strip() and not required):
        if required:
            raise ValidationFailed(f"{key} is required.")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed(f"{key} must be a non-empty text.")
    if len(value) > limit:
        raise ValidationFailed(f"{key} is longer than {limit} characters.")
    return value.strip()


def _int(value: object, what: str, *, minimum: int = 0, maximum: int = 2**31 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationFailed(f"{what} must be a whole number, not {quote(value)}.")
    if value < minimum:
        raise ValidationFailed(f"{what} must be at least {minimum}.")
    if value > maximum:
        raise ValidationFailed(f"{what} must be at most {maximum:,}.")
    return value


def record_conversion(conn: Connection, actor: Actor, data: Mapping[str, Any], now: datetime | None = None) -> int:
    """Record an action (R2, R8): credited to ``partner_id`` or by last-click attribution."""
    now = now or utcnow()
    event_type_id = _int(data.get("event_type_id"), "event_type_id", minimum=1)
    et = get_owned(conn, event_types, actor.account_id, event_type_id, "event type")
    campaign = get_owned(conn, campaigns, actor.account_id, et.campaign_id, "campaign")
    currency = campaign.currency
    if data.get("currency") is not None and str(data["currency"]).upper() != currency:
        raise WrongCurrency(f"Campaign {campaign.id} pays in {currency}, not {data['currency']}.")
    order_id = _text(data, "order_id", required=True)
    assert order_id is not None
    event_at = parse_time(data.get("event_date"), "event_date")
    if event_at > now + timedelta(days=1):
        raise ValidationFailed(f"event_date {iso(event_at)} is in the future.")
    customer_id = _text(data, "customer_id", required=False)
    promo_code = _text(data, "promo_code", required=False)
    created_note: str | None = None  # R13: the attribution's decision, when a click credited the action
    if data.get("partner_id") is not None:
        partner_id = _int(data["partner_id"], "partner_id", minimum=1)
        get_owned(conn, partners, actor.account_id, partner_id, "partner")
    else:
        if customer_id is None:
            raise ValidationFailed("Give partner_id, or customer_id so that the last click can credit a partner.")
        decision = attribute_click(conn, campaign.id, event_type_id, customer_id, event_at)
        partner_id, created_note = decision.partner_id, decision.note
    terms = terms_in_force(conn, campaign.id, partner_id, event_type_id, event_at.date())

    items: list[tuple[str, str | None, str | None, int, int]] = []
    has_amount, has_items = data.get("amount") is not None, data.get("items") is not None
    if has_amount == has_items:
        raise ValidationFailed("Give either amount (the order total) or items, not both and not neither.")
    if has_amount:
        items.append(("ORDER", None, None, 1, parse_amount(data["amount"], currency)))
    else:
        raw = data["items"]
        if not isinstance(raw, list) or not raw:
            raise ValidationFailed("items must be a non-empty list of {sku, quantity, amount}.")
        if len(raw) > MAX_ITEMS:
            raise ValidationFailed(f"An action has at most {MAX_ITEMS} items.")
        for n, it in enumerate(raw, 1):
            if not isinstance(it, Mapping):
                raise ValidationFailed(f"Item {n} must be an object {{sku, quantity, amount}}.")
            sku = _text(it, "sku", required=True)
            assert sku is not None
            qty = _int(it.get("quantity", 1), f"quantity of item {n}", minimum=0, maximum=MAX_QUANTITY)
            if it.get("amount") is None:
                raise ValidationFailed(f"Item {n} ({sku}) needs an amount.")
            items.append(
                (
                    sku,
                    _text(it, "name", required=False, limit=300),
                    _text(it, "category", required=False),
                    qty,
                    parse_amount(it["amount"], currency, what=f"amount of item {n}"),
                )
            )
    action = wf.new_action(tuple(items), terms)
    event_day = event_at.date()
    if et.locking == "open_ended":
        lock_date, due = None, open_ended_lock_date(event_day)
    else:
        lock_date = locking_date(event_day, terms.lock_after)
        due = lock_date
    return repo.insert_action(
        conn,
        {
            "account_id": actor.account_id,
            "campaign_id": campaign.id,
            "event_type_id": event_type_id,
            "partner_id": partner_id,
            "contract_id": terms.contract_id,
            "order_id": order_id,
            "customer_id": customer_id,
            "promo_code": promo_code,
            "event_date": event_at,
            "currency": currency,
            "locking_date": lock_date,
            "lock_due": due,
            "created_at": now,
        },
        action,
        {"at": now, "channel": actor.channel.value, "actor": actor.name, "note": created_note, "reason": None},
    )


# --- reading ---------------------------------------------------------------------------------


def get_action(conn: Connection, account_id: int, action_id: int, *, with_updates: bool = True) -> dict[str, Any]:
    row = repo.load(conn, account_id, action_id, for_update=False)
    if row is None:
        raise NotFound(f"No action with id {action_id}.")
    updates = repo.updates_of(conn, action_id) if with_updates else None
    labels = repo.submission_labels(conn, [u.submission_id for u in updates or ()])
    out = action_dict(row, repo.items_of(conn, action_id), updates, labels)
    schedule.annotate(conn, [(out, row)])  # R16: clearing_date, status_detail
    return out


def _cursor_text(sort: str, row: Row[Any]) -> str:
    """The opaque cursor after ``row``: for the default sort its id (as ever), for another sort the
    sort, its key and the id, base64url-encoded."""
    if sort == repo.DEFAULT_SORT:
        return str(row.id)
    column, _ = repo.SORTS[sort]
    key = getattr(row, column) if column is not None else None
    if isinstance(key, date):
        key = key.isoformat()
    raw = json.dumps([sort, key, int(row.id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor_after(sort: str, cursor: str) -> tuple[Any, int]:
    """(sort key, id) of an opaque cursor of ``sort``; ``validation_error`` for any other text."""
    refused = ValidationFailed("cursor is not one this API gave out for this sort; use next_cursor of the "
                               "previous page, with the same sort.")
    if cursor.isascii() and cursor.isdigit() and len(cursor) <= 19:
        number = parse_id(cursor)
        if sort != repo.DEFAULT_SORT or number is None:
            raise refused
        return None, number
    if sort == repo.DEFAULT_SORT or len(cursor) > 200:
        raise refused
    try:
        got = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        given_sort, key, last = got
    except (ValueError, TypeError, binascii.Error):
        raise refused from None
    column, _ = repo.SORTS[sort]
    if given_sort != sort or isinstance(last, bool) or not isinstance(last, int) or not 0 < last <= MAX_ID:
        raise refused
    if column == "locking_date":
        if key is not None:
            try:
                key = date.fromisoformat(key)
            except (TypeError, ValueError):
                raise refused from None
    elif column is not None and (isinstance(key, bool) or not isinstance(key, int) or abs(key) > MAX_ID):
        raise refused
    return key, last


def list_actions(
    conn: Connection, account_id: int, filters: repo.Filters, limit: int, cursor: str | None,
    sort: str = repo.DEFAULT_SORT,
) -> dict[str, Any]:
    """A page of the list in ``sort`` order (``repo.SORTS``), keyset-paged by ``cursor``."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationFailed(f"limit must be between 1 and {MAX_PAGE}.")
    if sort not in repo.SORTS:
        raise ValidationFailed(f"sort must be one of {', '.join(repo.SORTS)}.")
    after = _cursor_after(sort, cursor) if cursor else None
    if sort == repo.DEFAULT_SORT:  # the tuned plans of list_page
        rows = repo.list_page(conn, account_id, filters, limit + 1, after[1] if after else None)
    else:
        rows = repo.sorted_page(conn, account_id, filters, sort, limit + 1, after)
    more = len(rows) > limit
    rows = rows[:limit]
    items = repo.items_of_many(conn, [r.id for r in rows])
    shown = [action_dict(r, items[r.id]) for r in rows]
    schedule.annotate(conn, list(zip(shown, rows, strict=True)))  # R16: clearing_date, status_detail
    return {
        "items": shown,
        "next_cursor": _cursor_text(sort, rows[-1]) if more and rows else None,
    }


EXPORT_COLUMNS = (
    "action_id", "campaign_id", "event_type_id", "partner_id", "order_id", "customer_id", "promo_code",
    "event_date", "state", "status_detail", "currency", "amount", "payout", "intended_amount",
    "intended_payout", "locking_date", "locked_at", "clearing_date",  # clearing_date (R16): added last
)

def _amount_format(currency: str) -> Callable[[int], str]:
    """``format_amount`` for one currency, with the common two-decimal case inlined."""
    if exponent(currency) != 2:
        return lambda minor: format_amount(minor, currency)

    def fmt(minor: int) -> str:
        return f"{minor // 100}.{minor % 100:02d}" if minor >= 0 else format_amount(minor, currency)

    return fmt


def export_rows(conn: Connection, account_id: int, filters: repo.Filters) -> Iterator[str]:
    """The CSV export, yielded in chunks of text; memory stays flat whatever the size.

    The header, then each action as ``csv.writer`` writes the row (``\\r\\n`` after each line): the
    columns of ``EXPORT_COLUMNS``, the text cells neutralised (a quote in front of a cell that starts
    with ``= + - @``, a tab or a carriage return, so that a spreadsheet does not run it as a
    formula), the amounts as
    ``format_amount`` writes them, times and dates as ISO text, NULL as empty. The database builds
    the lines (``ledger.export``).
    """
    yield ",".join(EXPORT_COLUMNS) + "\r\n"
    yield from export.csv_lines(conn, account_id, filters)


# --- changing --------------------------------------------------------------------------------


def current_terms(conn: Connection, row: Row[Any], today: date) -> Terms:
    """R8: the terms in force at the time of the change; the recording contract if none covers it now."""
    try:
        return terms_in_force(conn, row.campaign_id, row.partner_id, row.event_type_id, today)
    except Exception:  # noqa: BLE001 - fall back to the contract the action was recorded under
        contract = conn.execute(contracts.select().where(contracts.c.id == row.contract_id)).one()
        terms = terms_of(conn, contract, row.event_type_id)
        assert terms is not None
        return terms


def apply(
    conn: Connection,
    actor: Actor,
    action_id: int,
    command: wf.Command,
    *,
    note: str | None = None,
    submission_id: int | None = None,
    now: datetime | None = None,
) -> Applied:
    """Apply one command to one action: load (locked for update), decide, write, record history."""
    return _apply(conn, actor, action_id, command, note, submission_id, now)[0]


CommandOf = Callable[[Row[Any]], wf.Command]


def _apply(
    conn: Connection,
    actor: Actor,
    action_id: int,
    command: wf.Command | CommandOf,
    note: str | None,
    submission_id: int | None,
    now: datetime | None,
    *,
    with_history: bool = False,
    commit: bool = False,
) -> tuple[Applied, Row[Any], list[Row[Any]], Sequence[Sequence[Any]] | None]:
    """``apply``, also answering the action's row and items as loaded (before the change) and, with
    ``with_history`` on PostgreSQL when something changed, the history after the change as
    ``repo.history_of_action`` answers it (read by the statement that writes the change).

    ``command`` may be a function of the loaded row (a modification's amounts are parsed in the
    currency of the action), called right after the action was found.

    With ``with_history`` on PostgreSQL, the action, its items and the terms are read in one round
    trip (with BEGIN), and with ``commit`` the write is the end of the transaction (COMMIT in the
    same round trip; see ``repo.load_for_change_pg`` and ``repo.write_change_with_history_pg``).
    """
    now = now or utcnow()
    today = now.date()
    pg = with_history and not db.is_sqlite(conn)
    items: list[Row[Any]] = []
    terms_row: Row[Any] | None = None
    if pg:
        loaded, loaded_items, loaded_terms = repo.load_for_change_pg(conn, actor.account_id, action_id, today)
        row = cast(Row[Any] | None, loaded)
        items, terms_row = cast(list[Row[Any]], loaded_items), cast(Row[Any] | None, loaded_terms)
    else:
        row = repo.load(conn, actor.account_id, action_id, for_update=True)
    if row is None:
        raise NotFound(f"No action with id {action_id}.")
    if callable(command):
        command = command(row)
    if note is not None and len(note) > 2000:
        raise ValidationFailed("A note has at most 2,000 characters.")
    command = _resolve_command(conn, actor, row.event_type_id, command)
    if not pg:
        items, terms_row = repo.items_and_terms(conn, action_id, row.campaign_id, row.partner_id, row.event_type_id,
                                                today)
    terms = terms_from_row(terms_row, "t_") or current_terms(conn, row, today)
    outcome = wf.decide(repo.to_domain(row, items), command, terms, now)
    history = None
    if isinstance(outcome, wf.Change):
        entry = {
            "at": now,
            "note": note,
            "channel": actor.channel.value,
            "submission_id": submission_id,
            "actor": actor.name,
        }
        if pg:
            history = repo.write_change_with_history_pg(conn, row.version, outcome, entry, commit=commit)
        else:
            repo.write_change(conn, row.version, outcome, entry)
    return Applied(action_id, outcome), row, items, history


def change(
    conn: Connection, actor: Actor, action_id: int, command: wf.Command | CommandOf, *, note: str | None = None,
    commit: bool = False,
) -> dict[str, Any]:
    """``apply``, then the action as ``get_action`` shows it, with ``outcome`` ("applied" or "unchanged").

    The answer is built from what the change loaded and wrote (the action row with the values
    ``write_change`` set, its items likewise) instead of reading them again; only the history is
    read, after the new entry, in one indexed query (on PostgreSQL by the statement that writes).

    ``commit``: the caller writes nothing more in this transaction, so on PostgreSQL the last
    statement (the writes, or the history when nothing changed) goes out with COMMIT, in one round
    trip; the caller's own commit then finds nothing left to do. An error before that leaves the
    transaction uncommitted, to be rolled back as usual.
    """
    applied, row, items, history = _apply(conn, actor, action_id, command, note, None, None, with_history=True,
                                          commit=commit)
    outcome = applied.outcome
    if isinstance(outcome, wf.Change):
        after_items = [_AfterItem(i, a) for i, a in zip(items, outcome.after.items, strict=True)]
        shown_row: Any = _AfterRow(row, outcome)
        out = action_dict(cast(Row[Any], shown_row), cast(list[Row[Any]], after_items))
    else:
        shown_row = row
        out = action_dict(row, items)
    schedule.annotate(conn, [(out, shown_row)])  # R16: clearing_date, status_detail
    if history is None:
        if db.is_sqlite(conn):
            history = repo.history_of_action(conn, action_id)
        else:
            history = repo.history_of_action_pg(conn, action_id, commit=commit)
    out["updates"] = _history(history, row.currency)
    out["outcome"] = "unchanged" if applied.unchanged else "applied"
    return out


def _history(rows: Sequence[Sequence[Any]], currency: str) -> list[dict[str, Any]]:
    """An action's ``updates`` as ``schemas.update_dict`` shows them, from ``repo.history_of_action`` rows
    (which carry the submission's label, not its id)."""
    fmt = _amount_format(currency)
    out = []
    for r in rows:
        items = json.loads(r[7]) if r[7] else None
        out.append({
            "at": r[0],
            "kind": r[1],
            "state": r[2],
            "reason": r[3],
            "note": r[4],
            "delta_amount": fmt(r[5]),
            "delta_payout": fmt(r[6]),
            "items": [
                {"sku": i["sku"], "quantity": i["quantity"], "amount": fmt(i["amount"]), "payout": fmt(i["payout"])}
                for i in items
            ]
            if items is not None
            else None,
            "channel": r[8],
            "submission_id": r[9],
            "actor": r[10],
        })
    return out


class _AfterRow:
    """An action's row as ``write_change`` leaves it: ``row`` with the changed columns of ``change.after``."""

    def __init__(self, row: Row[Any], change: wf.Change) -> None:
        after = change.after
        self._row = row
        self.state = after.state.value
        self.reason = after.reason
        self.amount = after.amount
        self.payout = after.payout
        self.locked_at = after.locked_at
        self.update_count = after.update_count
        self.version = row.version + 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._row, name)


class _AfterItem:
    """An item's row with the quantity, amount and payout ``write_change`` set."""

    def __init__(self, row: Row[Any], after: wf.Item) -> None:
        self._row = row
        self.quantity = after.quantity
        self.amount = after.amount
        self.payout = after.payout

    def __getattr__(self, name: str) -> Any:
        return getattr(self._row, name)


def _resolve_command(conn: Connection, actor: Actor, event_type_id: int, command: wf.Command) -> wf.Command:
    reason = command.reason if isinstance(command, wf.Reverse | wf.Modify) else None
    if reason is not None and reason.strip() == "RESET":
        raise UnknownReason("RESET is not a reason for a reversal or a modification: it resets the action to "
                            "its original (POST /actions/{id}/reset, or Reason RESET in a file).")
    if isinstance(command, wf.Reverse):
        return wf.Reverse(resolve_reason(conn, actor, event_type_id, command.reason))
    if isinstance(command, wf.Modify):
        return wf.Modify(command.amount, command.items, resolve_reason(conn, actor, event_type_id, command.reason))
    return command


def find_by_order(conn: Connection, account_id: int, event_type_id: int, order_id: str) -> int:
    row = repo.newest_by_order(conn, account_id, event_type_id, order_id)
    if row is None:
        raise NotFound(f"No action of event type {event_type_id} with order id {quote(order_id)}.")
    return int(row.id)


# --- locking ---------------------------------------------------------------------------------


def lock_run(engine: Engine, as_of: date | None = None, account_id: int | None = None,
             now: datetime | None = None, chunk: int = LOCK_CHUNK) -> int:
    """R3: lock every due action in bounded chunks, each its own transaction. Returns how many.

    Concurrent runs share the work (rows another run holds are skipped); a last pass then waits
    for rows that other writers held meanwhile (a change in flight), so that every action due
    when the run started is locked when it returns. The statements are in ``ledger.locking``.
    """
    now = now or utcnow()
    as_of = as_of or now.date()
    locked = locking.run(engine, as_of, now, account_id, chunk)
    logs.event(logging.getLogger("payoutdesk.lock"), f"lock run: {locked} actions locked, due by {as_of.isoformat()}, "
               f"{'account ' + str(account_id) if account_id is not None else 'all accounts'}", event="lock_run",
               locked=locked, as_of=as_of.isoformat(), account_id=account_id)
    return locked


def action_row(conn: Connection, account_id: int, action_id: int) -> Row[Any]:
    row = repo.load(conn, account_id, action_id, for_update=False)
    if row is None:
        raise NotFound(f"No action with id {action_id}.")
    return row


__all__ = ["Applied", "apply", "catalog_repo", "parse_amount"]


# --- reading a filter, previewing a change (the pages) -------------------------------------------


def day_bound(value: str | None, what: str, *, end: bool) -> datetime | None:
    """A date (whole day; ``end`` makes it inclusive) or a time, as an aware UTC bound of a list filter."""
    from datetime import UTC, time

    if value is None:
        return None
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            start = datetime.combine(d, time(), tzinfo=UTC)
            if end:
                return start + timedelta(days=1) if d < date.max else None
            return start
        return parse_time(value, what)
    except ValueError:
        raise ValidationFailed(f"{what} must be a date like 2026-01-15 or a time like 2026-01-15T10:00:00Z.") from None


def preview(conn: Connection, actor: Actor, action_id: int, command: wf.Command | CommandOf,
            now: datetime | None = None) -> dict[str, Any]:
    """What ``change`` would do, without locking or writing anything: the action's amount and payout
    before and after under the terms in force now, and each item after. Refused as the change would be
    (an unknown reason, a locked action, a state that does not allow it)."""
    now = now or utcnow()
    today = now.date()
    row = repo.load(conn, actor.account_id, action_id, for_update=False)
    if row is None:
        raise NotFound(f"No action with id {action_id}.")
    if callable(command):
        command = command(row)
    command = _resolve_command(conn, actor, row.event_type_id, command)
    items, terms_row = repo.items_and_terms(conn, action_id, row.campaign_id, row.partner_id, row.event_type_id,
                                            today)
    terms = terms_from_row(terms_row, "t_") or current_terms(conn, row, today)
    before = repo.to_domain(row, items)
    outcome = wf.decide(before, command, terms, now)
    after = outcome.after if isinstance(outcome, wf.Change) else outcome.action
    fmt = _amount_format(row.currency)
    return {
        "action_id": action_id,
        "currency": row.currency,
        "outcome": "unchanged" if isinstance(outcome, wf.Unchanged) else "change",
        "kind": outcome.kind.value if isinstance(outcome, wf.Change) else None,
        "reason": outcome.reason if isinstance(outcome, wf.Change) else None,
        "state": after.state.value,
        "before": {"amount": fmt(before.amount), "payout": fmt(before.payout)},
        "after": {"amount": fmt(after.amount), "payout": fmt(after.payout)},
        "items": [
            {"sku": a.sku, "quantity": a.quantity, "amount": fmt(a.amount), "payout": fmt(a.payout),
             "before_quantity": b.quantity, "before_amount": fmt(b.amount), "before_payout": fmt(b.payout)}
            for b, a in zip(before.items, after.items, strict=True)
        ],
    }
