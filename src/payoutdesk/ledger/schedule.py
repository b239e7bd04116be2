"""R16: an action's clearing date and its status detail, as the native API shows them.

- clearing date: for a locked APPROVED action, ``contracts.terms.payment_date`` of the UTC day of its
  ``locked_at`` under its contract's ``pay_after`` (an action approved early clears after the month of
  its approval); null otherwise (a locked reversal is never paid);
- status detail: PENDING blank (null), or ``OPEN`` under open-ended locking (no locking date);
  REVERSED the reversal reason; APPROVED ``PAYMENT_PENDING`` until the clearing date, then ``PAID``
  (from the clearing date on).

Contracts never change once made, so their payment periods are kept in a small process-wide cache by
contract id: a page of actions costs at most one query for the contracts it has not met yet.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, MutableMapping
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, select

from payoutdesk.contracts.terms import Period, payment_date
from payoutdesk.kit.time import as_utc, utcnow
from payoutdesk.models import contracts

OPEN = "OPEN"
PAYMENT_PENDING = "PAYMENT_PENDING"
PAID = "PAID"
_CACHE_MAX = 50_000

_pay_after: dict[int, Period] = {}
_lock = threading.Lock()


def pay_periods(conn: Connection, contract_ids: Iterable[int]) -> dict[int, Period]:
    """The ``pay_after`` of these contracts, by id (cached; one query for the ones not cached yet)."""
    wanted = {int(c) for c in contract_ids}
    with _lock:
        found = {c: _pay_after[c] for c in wanted if c in _pay_after}
    missing = wanted - found.keys()
    if missing:
        rows = conn.execute(select(contracts.c.id, contracts.c.pay_months, contracts.c.pay_days)
                            .where(contracts.c.id.in_(sorted(missing))))
        fresh = {int(r.id): Period(int(r.pay_months), int(r.pay_days)) for r in rows}
        with _lock:
            if len(_pay_after) + len(fresh) > _CACHE_MAX:
                _pay_after.clear()
            _pay_after.update(fresh)
        found.update(fresh)
    return found


def forget() -> None:
    """Empty the cache of payment periods (tests: a cold cache)."""
    with _lock:
        _pay_after.clear()


def clearing_date(state: str, locked_at: datetime | None, pay_after: Period | None) -> date | None:
    """R16: when a locked APPROVED action is paid; None for any other action."""
    if state != "APPROVED" or locked_at is None or pay_after is None:
        return None
    try:
        return payment_date(as_utc(locked_at).date(), pay_after)
    except (OverflowError, ValueError):  # past the year 9999: never
        return None


def status_detail(state: str, reason: str | None, locking_date: date | None, clearing: date | None,
                  today: date) -> str | None:
    """R16's status detail of an action."""
    if state == "REVERSED":
        return reason
    if state == "APPROVED":
        return PAID if clearing is not None and clearing <= today else PAYMENT_PENDING
    return OPEN if locking_date is None else None


def annotate(conn: Connection, pairs: list[tuple[MutableMapping[str, Any], Any]], today: date | None = None) -> None:
    """Set ``clearing_date`` and ``status_detail`` of action dicts (``ledger.schemas.action_dict``) from their
    rows (``state``, ``reason``, ``locking_date``, ``locked_at``, ``contract_id``), given as (dict, row)."""
    if not pairs:
        return
    today = today or utcnow().date()
    periods = pay_periods(conn, {int(row.contract_id) for _, row in pairs if row.state == "APPROVED"})
    for out, row in pairs:
        clearing = clearing_date(row.state, row.locked_at, periods.get(int(row.contract_id)))
        out["clearing_date"] = clearing.isoformat() if clearing else None
        out["status_detail"] = status_detail(row.state, row.reason, row.locking_date, clearing, today)
