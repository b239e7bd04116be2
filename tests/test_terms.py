from datetime import date

import pytest

from payoutdesk.contracts.terms import (
    Period,
    Terms,
    add_months,
    item_payouts,
    locking_date,
    open_ended_lock_date,
    payment_date,
)


@pytest.mark.parametrize(
    ("event", "months", "days", "expected"),
    [
        (date(2026, 1, 1), 0, 27, date(2026, 2, 28)),  # every January action locks on 28 February
        (date(2026, 1, 31), 0, 27, date(2026, 2, 28)),
        (date(2028, 1, 15), 0, 27, date(2028, 2, 28)),  # leap year: still the 28th
        (date(2028, 1, 15), 0, 28, date(2028, 2, 29)),  # leap day
        (date(2027, 1, 15), 0, 28, date(2027, 3, 1)),  # no leap day: spills into March
        (date(2026, 12, 31), 0, 0, date(2027, 1, 1)),  # year end
        (date(2026, 12, 5), 1, 10, date(2027, 2, 11)),
        (date(2026, 11, 30), 2, 0, date(2027, 2, 1)),
        (date(2026, 3, 31), 0, 30, date(2026, 5, 1)),
        (date(2024, 2, 29), 12, 0, date(2025, 3, 1)),
    ],
)
def test_locking_date(event: date, months: int, days: int, expected: date) -> None:
    assert locking_date(event, Period(months, days)) == expected


def test_open_ended_locks_after_730_days() -> None:
    assert open_ended_lock_date(date(2026, 1, 15)) == date(2028, 1, 15)
    assert open_ended_lock_date(date(2027, 3, 1)) == date(2029, 2, 28)  # 2028 is a leap year


def test_add_months_clamps() -> None:
    assert add_months(date(2026, 1, 31), 1) == date(2026, 2, 28)
    assert add_months(date(2028, 1, 31), 1) == date(2028, 2, 29)
    assert add_months(date(2026, 12, 15), 1) == date(2027, 1, 15)


@pytest.mark.parametrize(
    ("locked", "months", "days", "expected"),
    [
        (date(2026, 2, 10), 0, 20, date(2026, 3, 20)),  # impact.com's example: locked 10 or 28 February
        (date(2026, 2, 28), 0, 20, date(2026, 3, 20)),
        (date(2026, 2, 1), 0, 0, date(2026, 2, 28)),  # the month's end itself
        (date(2028, 2, 3), 0, 0, date(2028, 2, 29)),  # leap year
        (date(2026, 1, 5), 1, 0, date(2026, 2, 28)),  # 31 January + 1 month: clamped to 28 February
        (date(2028, 1, 31), 1, 1, date(2028, 3, 1)),  # 29 February + 1 day
        (date(2026, 2, 14), 1, 0, date(2026, 3, 31)),  # a month after the end of February: the end of March
        (date(2026, 12, 1), 0, 20, date(2027, 1, 20)),  # year end
        (date(2026, 12, 31), 0, 1, date(2027, 1, 1)),
        (date(2026, 11, 30), 2, 0, date(2027, 1, 31)),  # two months after the end of November, across the year
        (date(2027, 4, 2), 1, 0, date(2027, 5, 31)),  # the end of April (30th) + 1 month: 31 May
        (date(2026, 10, 15), 3, 5, date(2027, 2, 5)),  # 31 October + 3 months = 31 January, + 5 days
        (date(2026, 8, 15), 6, 0, date(2027, 2, 28)),  # 31 August + 6 months: clamped
    ],
)
def test_payment_date(locked: date, months: int, days: int, expected: date) -> None:
    """R16: the last day of the month N months after the month the action locked in, + D days, whichever
    day of the month it locked on (the old rule added the period to the locking day itself)."""
    assert payment_date(locked, Period(months, days)) == expected


def _terms(**kw: object) -> Terms:
    return Terms(contract_id=1, lock_after=Period(), pay_after=Period(), referral_window_days=30, **kw)  # type: ignore[arg-type]


def test_percent_payout_half_up_per_item() -> None:
    t = _terms(rate_ppm=80_000)  # 8 %
    # 8 % of 60.00 = 4.80; of 0.07 = 0.0056 -> 0.01; of 0.06 = 0.0048 -> 0.00
    assert item_payouts(t, [6000, 7, 6], [None, None, None], reversed_=False) == [480, 1, 0]


def test_category_rate_overrides() -> None:
    t = _terms(rate_ppm=80_000, category_ppm={"shoes": 100_000})
    assert item_payouts(t, [6000, 4000], ["Shoes", "hats"], reversed_=False) == [600, 320]


def test_fixed_payout_spread_and_zero_when_reversed() -> None:
    t = _terms(fixed_minor=500)
    assert sum(item_payouts(t, [6000, 4000], [None, None], reversed_=False)) == 500
    assert item_payouts(t, [6000, 4000], [None, None], reversed_=False) == [300, 200]
    assert item_payouts(t, [0], [None], reversed_=False) == [500]  # a lead with no sale amount
    assert item_payouts(t, [6000, 4000], [None, None], reversed_=True) == [0, 0]
