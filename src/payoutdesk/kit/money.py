"""Money: integers in the currency's minor unit, ``Decimal`` only at the edges.

There is exactly one rounding function, :func:`round_half_up`, used for every
division of money (rates, proportional spreads, quantity scaling).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal

from payoutdesk.errors import InvalidAmount, ValidationFailed, quote, shorten

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
        raise ValidationFailed(f"{quote(code)} is not an ISO 4217 currency code (three letters, like USD).")
    if code.strip().upper() not in ISO_4217:
        raise ValidationFailed(f"{quote(code)} is not a currency of ISO 4217; give one like USD, EUR or JPY.")
    return code.strip().upper()


def exponent(currency: str) -> int:
    """Number of decimals of the currency's minor unit."""
    return _EXPONENT_EXCEPTIONS.get(currency, 2)


# The one grammar of a money value (DESIGN §6 "Strict inputs"): ASCII digits, optionally a point with at
# least one digit on each side. No sign ("-0" included), exponent, underscore, space, other digits.
_PLAIN_DECIMAL = re.compile(r"([0-9]+)(?:\.([0-9]+))?")
_MAX_WHOLE_DIGITS = 20  # a bound on the digits read before the range check (never a huge int parse)
_NOT_FINITE = frozenset({"nan", "snan", "inf", "infinity"})
FILE_SPACES = " \t"  # what a file's amount may carry around it


def _not_plain(text: str) -> str:
    """Why ``text`` is not a plain decimal, in a few words."""
    bare = text.strip()
    if bare.lstrip("+-").lower() in _NOT_FINITE:
        return "it must be a finite number"
    if bare.startswith("-"):
        return "it must not be negative, and is written without a sign"
    if bare.startswith("+"):
        return "it is written without a sign"
    if bare != text:
        return "it has spaces around it"
    if "_" in text:
        return "it is written without underscores"
    if any(c.isdigit() and not c.isascii() for c in text):
        return "it is written with the ASCII digits 0-9"
    if text.startswith(".") or text.endswith("."):
        return "a decimal point needs a digit on each side, like 0.50 or 12.0"
    if "e" in text.lower() and any(c.isdigit() for c in text):
        return "it is written out, without an exponent"
    if "," in text:
        return "the decimal separator is a point"
    return "ASCII digits with an optional decimal point"


def decimal_units(value: object, places: int, *, what: str, unit: str = "", example: str = "12.50") -> int:
    """A plain decimal string with at most ``places`` decimals, in units of 10^-places.

    The one strict parser of money and percentages (DESIGN §6): ``"12"``, ``"12.5"``, ``"012.50"``;
    everything else is ``InvalidAmount``: a sign (``"-0"`` included), an exponent, underscores,
    spaces, non-ASCII digits, ``".5"`` or ``"12."``, Infinity/NaN, the empty string, and a JSON
    number (money travels as a decimal string, so that no float ever holds it).
    """
    if not isinstance(value, str):
        if isinstance(value, bool) or value is None:
            given = "null" if value is None else "true or false"
            raise InvalidAmount(f'{what} must be a decimal string like "{example}", not {given}.')
        if isinstance(value, int | float | Decimal):
            raise InvalidAmount(f'{what} must be a decimal string in quotes, like "{example}", not the number '
                                f"{shorten(value)}.")
        raise InvalidAmount(f'{what} must be a decimal string like "{example}", not {type(value).__name__}.')
    if not value:
        raise InvalidAmount(f'{what} is empty; give a decimal like "{example}".')
    m = _PLAIN_DECIMAL.fullmatch(value)
    if m is None:
        raise InvalidAmount(f'{what} must be a plain decimal like "{example}" ({_not_plain(value)}), '
                            f"not {quote(value)}.")
    whole, frac = m.group(1).lstrip("0"), m.group(2) or ""
    if len(frac) > places:
        raise InvalidAmount(f"{what} {quote(value)} has more than {places} decimals{unit}.")
    if len(whole) > _MAX_WHOLE_DIGITS:
        raise InvalidAmount(f"{what} {quote(value)} is too large.")
    scale: int = 10**places
    return int(whole or "0") * scale + (int(frac.ljust(places, "0")) if frac else 0)


def parse_amount(value: object, currency: str, *, what: str = "amount") -> int:
    """A money amount of a request (a plain decimal string) in minor units of ``currency``.

    Strict (see ``decimal_units``); at most the currency's decimals; at most ``MAX_MINOR``.
    """
    exp = exponent(currency)
    minor = decimal_units(value, exp, what=what, unit=f", which {currency} does not have")
    if minor > MAX_MINOR:
        raise InvalidAmount(f"{what} {quote(value)} is too large.")
    return minor


def parse_file_amount(text: str, currency: str, *, what: str = "Amount") -> int:
    """An amount of a returns file: as ``parse_amount``, but spaces and tabs around it are allowed.

    A decimal comma (DESIGN §3) reaches here already turned into a point by the CSV reader, where
    the file's delimiter allows it; nothing else is loosened.
    """
    return parse_amount(text.strip(FILE_SPACES), currency, what=what)


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
    """'8' or '7.25' percent -> parts per million (80_000, 72_500). Strict as money, at most 4 decimals, 0 to 100."""
    ppm = decimal_units(value, 4, what=what, example="7.25")
    if ppm > 100 * 10**4:
        raise InvalidAmount(f"{what} must be between 0 and 100 (got {quote(value)}).")
    return ppm


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
