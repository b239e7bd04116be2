import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payoutdesk.errors import InvalidAmount, quote
from payoutdesk.kit.money import (
    MAX_MINOR,
    allocate,
    apply_rate,
    exponent,
    format_amount,
    format_percent,
    parse_amount,
    parse_file_amount,
    parse_percent,
    round_half_up,
)


@pytest.mark.parametrize(
    ("value", "currency", "minor"),
    [("12.50", "USD", 1250), ("12.5", "USD", 1250), ("0", "USD", 0), ("12", "USD", 1200), ("1250", "JPY", 1250),
     ("1.234", "BHD", 1234), ("3.10", "EUR", 310), ("0.1", "USD", 10), ("007.00", "USD", 700), ("0.00", "USD", 0)],
)
def test_parse_amount(value: object, currency: str, minor: int) -> None:
    assert parse_amount(value, currency) == minor


@pytest.mark.parametrize(
    ("value", "currency", "words"),
    [("-1", "USD", "negative"), ("abc", "USD", "plain decimal"), ("1.234", "USD", "decimals"),
     ("1.5", "JPY", "decimals"), ("NaN", "USD", "finite"), ("Infinity", "USD", "finite"),
     ("-Infinity", "USD", "finite"), ("1e30", "USD", "exponent"), ("9" * 30, "USD", "too large"),
     ("10000000000000.01", "USD", "too large"), (True, "USD", "true or false"), ("", "USD", "empty"),
     (None, "USD", "null"), ([], "USD", "decimal string"),
     # DESIGN §6: every one of these was accepted before (issue 10 item 5)
     ("1e5", "USD", "exponent"), ("1_000", "USD", "underscores"), ("\u0661\u0662", "USD", "ASCII"),
     ("+5", "USD", "sign"), (".5", "USD", "each side"), ("12.", "USD", "each side"), ("-0", "USD", "negative"),
     ("-0.00", "USD", "negative"), ("  7.00 ", "USD", "spaces"), ("12,50", "USD", "point"),
     ("\u00b9", "USD", "ASCII"), ("\u0661\u0662.\u0665\u0660", "USD", "ASCII"),
     # a JSON number is refused: money is a decimal string (docs/API.md)
     (12, "USD", "in quotes"), (0.1, "USD", "in quotes"), (float("nan"), "USD", "in quotes"),
     (Decimal("3.10"), "EUR", "in quotes")],
)
def test_parse_amount_refuses(value: object, currency: str, words: str) -> None:
    with pytest.raises(InvalidAmount, match=words):
        parse_amount(value, currency)


def test_a_file_amount_may_have_spaces_around_it_and_nothing_else() -> None:
    assert parse_file_amount(" 7.00\t", "USD") == 700
    assert parse_file_amount("12.5", "USD") == 1250
    for loose in ("1e5", "1_000", "+5", ".5", "12.", "-0", "\u0661\u0662", "12,50", "", " ", "Infinity"):
        with pytest.raises(InvalidAmount):
            parse_file_amount(loose, "USD")


def test_messages_quote_at_most_200_characters_of_the_value() -> None:
    with pytest.raises(InvalidAmount) as caught:
        parse_amount("x" * 10_000, "USD")
    assert len(caught.value.detail) < 400 and "(10,000 characters)" in caught.value.detail
    assert quote("x" * 10_000).count("x") == 200 and quote("ab") == "'ab'"


_CURRENCIES = st.sampled_from(["USD", "JPY", "BHD", "CLF"])


@given(st.integers(min_value=0, max_value=MAX_MINOR), _CURRENCIES, st.integers(min_value=0, max_value=3),
       st.booleans())
def test_every_plain_decimal_parses_to_its_exact_minor_units(minor: int, currency: str, zeros: int,
                                                             short: bool) -> None:
    """Every string of the strict grammar (digits, optionally a point with digits on both sides, at most the
    currency's decimals, leading zeros allowed) is exactly its minor units."""
    exp = exponent(currency)
    whole, frac = divmod(minor, 10**exp)
    text = "0" * zeros + str(whole)
    if exp:
        digits = f"{frac:0{exp}d}"
        if short:
            digits = digits.rstrip("0")
        if digits:
            text += "." + digits
        elif not short:
            text += "." + "0" * exp
    assert parse_amount(text, currency) == minor
    assert parse_file_amount(f" {text} ", currency) == minor


_PLAIN = re.compile(r"[0-9]+(\.[0-9]+)?")


@given(st.text(max_size=30), _CURRENCIES)
def test_any_other_text_is_refused_as_invalid_amount(text: str, currency: str) -> None:
    """Random text: either the grammar's (then its value), or ``InvalidAmount`` (never another error)."""
    if _PLAIN.fullmatch(text):
        frac = text.partition(".")[2]
        if len(frac) <= exponent(currency) and int(text.replace(".", "")) < 10**25:
            value = Decimal(text) * 10 ** exponent(currency)
            if value <= MAX_MINOR:
                assert parse_amount(text, currency) == int(value)
                return
    with pytest.raises(InvalidAmount):
        parse_amount(text, currency)


@given(st.one_of(st.from_regex(r"\A[+-]?[0-9]*\.?[0-9]*([eE][+-]?[0-9]+)?\Z"),
                 st.from_regex(r"\A[0-9]{1,5}[_ ,][0-9]{1,3}\Z"), st.floats(), st.integers()), _CURRENCIES)
def test_near_misses_are_refused(value: object, currency: str) -> None:
    """Signs, exponents, lone points, separators, and JSON numbers: all refused, as ``invalid_amount``."""
    if isinstance(value, str) and _PLAIN.fullmatch(value):
        return
    with pytest.raises(InvalidAmount):
        parse_amount(value, currency)


@pytest.mark.parametrize("loose", ["8.00001", "-0", "+8", "1e1", ".5", "8.", "8_0", "\u0668", 8, 8.5, ""])
def test_percentages_are_strict_too(loose: object) -> None:
    with pytest.raises(InvalidAmount):
        parse_percent(loose)


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
