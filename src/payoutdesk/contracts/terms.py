"""Pure contract rules: locking dates (R2), clearing dates (R16) and payouts (R8). No I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from payoutdesk.kit.money import allocate, apply_rate

OPEN_ENDED_LOCK_DAYS = 730


@dataclass(frozen=True)
class Period:
    months: int = 0
    days: int = 0


@dataclass(frozen=True)
class Terms:
    """What a contract says for one event type."""

    contract_id: int
    lock_after: Period
    pay_after: Period
    referral_window_days: int
    rate_ppm: int | None = None  # percent of sale amount, parts per million
    fixed_minor: int | None = None  # fixed payout per action
    category_ppm: Mapping[str, int] = field(default_factory=dict)  # lower-cased category -> rate


def add_months(day: date, months: int) -> date:
    """Same day-of-month ``months`` later, clamped to the month's last day."""
    index = day.year * 12 + (day.month - 1) + months
    year, month0 = divmod(index, 12)
    month = month0 + 1
    last = _days_in_month(year, month)
    return date(year, month, min(day.day, last))


def _days_in_month(year: int, month: int) -> int:
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    return (nxt - timedelta(days=1)).day


def locking_date(event_day: date, lock_after: Period) -> date:
    """R2: first day of the month after the event + N months + D days."""
    first_next = add_months(date(event_day.year, event_day.month, 1), 1)
    return add_months(first_next, lock_after.months) + timedelta(days=lock_after.days)


def open_ended_lock_date(event_day: date) -> date:
    """R2: open-ended actions lock on their own 730 days after the event."""
    return event_day + timedelta(days=OPEN_ENDED_LOCK_DAYS)


def month_end(day: date) -> date:
    """The last day of the month of ``day``."""
    return date(day.year, day.month, _days_in_month(day.year, day.month))


def payment_date(lock_day: date, pay_after: Period) -> date:
    """R16, the clearing date of an action that locked on ``lock_day`` (the UTC day of its ``locked_at``):
    the end of the month it locked in, N months on (the last day of the month N months after that
    month), + D days. Locked 10 or 28 February with 0 months 20 days: 20 March; with 1 month 0 days:
    31 March (a month after the end of February is the end of March, not the 28th: docs/RULES.md)."""
    return month_end(add_months(lock_day.replace(day=1), pay_after.months)) + timedelta(days=pay_after.days)


def item_rate(terms: Terms, category: str | None) -> int | None:
    if category is not None and category.lower() in terms.category_ppm:
        return terms.category_ppm[category.lower()]
    return terms.rate_ppm


def item_payouts(
    terms: Terms,
    amounts: Sequence[int],
    categories: Sequence[str | None],
    *,
    reversed_: bool,
) -> list[int]:
    """R8: each item's payout; the action payout is their sum.

    Percent contracts: the rate of each item amount (the category's rate when the contract
    has one for the item's category), rounded half-up. Fixed contracts: the fixed amount per
    action, spread over the items in proportion to their amounts so the items still sum to
    the action payout; category rates do not apply to fixed payouts. Reversed: zero.
    """
    if reversed_:
        return [0] * len(amounts)
    if terms.fixed_minor is not None:
        return allocate(terms.fixed_minor, amounts)
    return [apply_rate(a, item_rate(terms, c) or 0) for a, c in zip(amounts, categories, strict=True)]


def one_item_payout(terms: Terms, amount: int, category: str | None) -> int:
    """``item_payouts(terms, [amount], [category], reversed_=False)[0]`` for one item of ``amount`` >= 0,
    without the lists (the common order-level change of a bulk submission)."""
    if terms.fixed_minor is not None:
        return terms.fixed_minor  # allocate(fixed, [amount]) is [fixed] for a single part
    return apply_rate(amount, item_rate(terms, category) or 0)
