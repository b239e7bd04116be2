from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payoutdesk.errors import InvalidAmount
from payoutdesk.kit.money import (
    allocate,
    apply_rate,
    format_amount,
    format_percent,
    parse_amount,
    parse_percent,
    round_half_up,
)


@pytest.mark.parametrize(
    ("value", "currency", "minor"),
    [("12.50", "USD", 1250), ("12.5", "USD", 1250), ("0", "USD", 0), (12, "USD", 1200), ("1250", "JPY", 1250),
     ("1.234", "BHD", 1234), (Decimal("3.10"), "EUR", 310), (0.1, "USD", 10), ("  7.00 ", "USD", 700)],
)
def test_parse_amount(value: object, currency: str, minor: int) -> None:
    assert parse_amount(value, currency) == minor


@pytest.mark.parametrize(
    ("value", "currency", "words"),
    [("-1", "USD", "negative"), ("abc", "USD", "number"), ("1.234", "USD", "decimals"), ("1.5", "JPY", "decimals"),
     ("NaN", "USD", "finite"), ("Infinity", "USD", "finite"), (float("nan"), "USD", "finite"),
     ("1e30", "USD", "too large"), (True, "USD", "number"), ("", "USD", "empty"), (None, "USD", "number"),
     ([], "USD", "number")],
)
def test_parse_amount_refuses(value: object, currency: str, words: str) -> None:
    with pytest.raises(InvalidAmount, match=words):
        parse_amount(value, currency)


def test_format_amount() -> None:
    assert format_amount(1250, "USD") == "12.50"
    assert format_amount(5, "USD") == "0.05"
    assert format_amount(-405, "EUR") == "-4.05"
    assert format_amount(1250, "JPY") == "1250"
    assert format_amount(1234, "BHD") == "1.234"


def test_round_half_up() -> None:
    assert round_half_up(5, 10) == 1  # 0.5 -> 1
    assert round_half_up(4, 10) == 0
    assert round_half_up(15, 10) == 2  # 1.5 -> 2 (not banker's 2 by accident: check 2.5)
    assert round_half_up(25, 10) == 3  # 2.5 -> 3, where banker's rounding gives 2
    assert round_half_up(-25, 10) == -3
    assert round_half_up(0, 7) == 0


def test_rates_half_up() -> None:
    # 8 % of 0.06 = 0.0048 -> 0.00; 8 % of 0.07 = 0.0056 -> 0.01; 12.5 % of 0.04 = 0.005 -> 0.01
    assert apply_rate(6, parse_percent("8")) == 0
    assert apply_rate(7, parse_percent("8")) == 1
    assert apply_rate(4, parse_percent("12.5")) == 1
    assert parse_percent("7.25") == 72_500
    assert format_percent(72_500) == "7.25"
    assert format_percent(80_000) == "8"
    with pytest.raises(InvalidAmount):
        parse_percent("101")
    with pytest.raises(InvalidAmount):
        parse_percent("1.00001")


def test_allocate_remainder_to_largest() -> None:
    assert allocate(100, [1, 1, 1]) == [34, 33, 33]
    assert allocate(1000, [300, 600, 100]) == [300, 600, 100]
    assert allocate(1001, [300, 600, 100]) == [300, 601, 100]
    assert allocate(2, [100, 300, 200]) == [0, 2, 0]  # R6: leftover cents go to the largest items
    assert allocate(10, [0, 0]) == [5, 5]
    assert allocate(0, [5, 5]) == [0, 0]


@given(st.integers(0, 10**12), st.lists(st.integers(0, 10**9), min_size=1, max_size=20))
def test_allocate_always_sums(total: int, weights: list[int]) -> None:
    parts = allocate(total, weights)
    assert sum(parts) == total
    assert all(p >= 0 for p in parts)
    if sum(weights) > 0:
        for p, w in zip(parts, weights, strict=True):
            exact = Decimal(total) * w / sum(weights)
            assert abs(Decimal(p) - exact) < 1 + Decimal("1e-9")
