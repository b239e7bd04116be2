"""Money: integers in the currency's minor unit, ``Decimal`` only at the edges.

There is exactly one rounding function, :func:`round_half_up`, used for every
division of money (rates, proportional spreads, quantity scaling).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from payoutdesk.errors import InvalidAmount, ValidationFailed

# ISO 4217 minor units that differ from 2.
_EXPONENT_EXCEPTIONS: dict[str, int] = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0,
    "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    "CLF": 4, "UYW": 4,
}
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
# ISO 4217 currencies a brand can pay in (funds, metals and test codes left out; a few
# recently replaced codes kept so that older programmes still load).
ISO_4217 = frozenset((
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN", "BHD",
    "BIF", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHE", "CHF",
    "CHW", "CLF", "CLP", "CNY", "COP", "COU", "CRC", "CUC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD",
    "HNL", "HRK", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS",
    "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL",
    "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN",
    "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD",
    "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SLL", "SOS", "SRD", "SSP", "STN",
    "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD",
    "USN", "UYI", "UYU", "UYW", "UZS", "VED", "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF",
    "YER", "ZAR", "ZMW", "ZWG", "ZWL"
))

# The largest amount accepted anywhere: 10^13 major units is far beyond any order.
MAX_MINOR = 10**15
RATE_SCALE = 1_000_000  # rates are stored as parts per million of the amount (8 % = 80_000)


def check_currency(code: str) -> str:
    """Return the upper-cased ISO 4217 code or raise ``ValidationFailed``."""
    if not isinstance(code, str) or not _CURRENCY_RE.match(code.strip().upper()):
        raise ValidationFailed(f"'{code}' is not an ISO 4217 currency code (three letters, like USD).")
    if code.strip().upper() not in ISO_4217:
        raise ValidationFailed(f"'{code}' is not a currency of ISO 4217; give one like USD, EUR or JPY.")
    return code.strip().upper()


def exponent(currency: str) -> int:
    """Number of decimals of the currency's minor unit."""
    return _EXPONENT_EXCEPTIONS.get(currency, 2)


def _to_decimal(value: object, what: str) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise InvalidAmount(f"{what} must be a number like 12.50, not {value!r}.")
    if isinstance(value, Decimal):
        dec = value
    elif isinstance(value, int):
        dec = Decimal(value)
    elif isinstance(value, float):
        dec = Decimal(repr(value))
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise InvalidAmount(f"{what} is empty.")
        try:
            dec = Decimal(text)
        except InvalidOperation:
            raise InvalidAmount(f"{what} must be a number like 12.50, not '{value}'.") from None
    else:
        raise InvalidAmount(f"{what} must be a number like 12.50, not {type(value).__name__}.")
    if not dec.is_finite():
        raise InvalidAmount(f"{what} must be a finite number, not {value!r}.")
    return dec


def parse_amount(value: object, currency: str, *, what: str = "amount") -> int:
    """Parse a non-negative money amount into minor units of ``currency``.

    Refuses NaN, infinities, negative numbers, more decimals than the currency has,
    and absurdly large amounts.
    """
    dec = _to_decimal(value, what)
    if dec < 0:
        raise InvalidAmount(f"{what} must not be negative (got {value}).")
    exp = exponent(currency)
    scaled = dec.scaleb(exp)
    if scaled != scaled.to_integral_value():
        raise InvalidAmount(f"{what} {value} has more than {exp} decimals, which {currency} does not have.")
    minor = int(scaled)
    if minor > MAX_MINOR:
        raise InvalidAmount(f"{what} {value} is too large.")
    return minor


def format_amount(minor: int, currency: str) -> str:
    """Minor units as a decimal string: 1250 USD -> '12.50', 1250 JPY -> '1250'."""
    exp = exponent(currency)
    if exp == 0:
        return str(minor)
    sign = "-" if minor < 0 else ""
    q, r = divmod(abs(minor), 10**exp)
    return f"{sign}{q}.{r:0{exp}d}"


def round_half_up(numerator: int, denominator: int) -> int:
    """The one rounding function: numerator/denominator rounded half away from zero."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    sign = -1 if numerator < 0 else 1
    q, r = divmod(abs(numerator), denominator)
    if 2 * r >= denominator:
        q += 1
    return sign * q


def apply_rate(amount_minor: int, rate_ppm: int) -> int:
    """A percentage (in parts per million) of an amount, half-up to the minor unit."""
    return round_half_up(amount_minor * rate_ppm, RATE_SCALE)


def parse_percent(value: object, *, what: str = "percent") -> int:
    """'8' or '7.25' percent -> parts per million (80_000, 72_500). At most 4 decimals, 0 to 100."""
    dec = _to_decimal(value, what)
    if dec < 0 or dec > 100:
        raise InvalidAmount(f"{what} must be between 0 and 100 (got {value}).")
    scaled = dec.scaleb(4)
    if scaled != scaled.to_integral_value():
        raise InvalidAmount(f"{what} {value} has more than 4 decimals.")
    return int(scaled)


def format_percent(rate_ppm: int) -> str:
    """Parts per million back to a percent string without trailing zeros."""
    return format(Decimal(rate_ppm).scaleb(-4).normalize(), "f")


def allocate(total: int, weights: Sequence[int]) -> list[int]:
    """Spread ``total`` over ``weights`` proportionally; the parts always sum to ``total``.

    Each share is rounded down, and the remaining minor units go one each to the
    largest weights (earlier position first on ties). With all weights zero the
    total is spread evenly.
    """
    n = len(weights)
    if n == 0:
        if total:
            raise ValueError("cannot allocate a non-zero total over no parts")
        return []
    if any(w < 0 for w in weights):
        raise ValueError("weights must not be negative")
    ws = list(weights) if sum(weights) > 0 else [1] * n
    wsum = sum(ws)
    shares = [total * w // wsum for w in ws]
    remainder = total - sum(shares)
    order = sorted(range(n), key=lambda i: (-ws[i], i))
    for k in range(remainder):
        shares[order[k % n]] += 1
    return shares
