"""Ids as requests write them (DESIGN §6 "Strict inputs"): 1 … 2^63-1 in ASCII digits, nothing else.

An id outside that range, or not a number, names nothing: adapters answer ``not_found`` for it in a
path and ``validation_error`` in a query. Campaigns, partners, event types and contracts have
32-bit ids: a larger id is well formed but names nothing (``ref32``), and never reaches a query
that would cast it to a 32-bit integer.
"""

from __future__ import annotations

MAX_ID = 2**63 - 1
MAX_ID32 = 2**31 - 1
NO_ROW = 0  # an id that no row has (every id starts at 1): a filter on it matches nothing


def parse_id(raw: object) -> int | None:
    """An id written as ASCII digits (or given as an integer), 1 … 2^63-1; None for anything else.

    Never a huge int parse, never a superscript or other non-ASCII digit (``str.isdigit`` takes them).
    """
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw if 1 <= raw <= MAX_ID else None
    if not isinstance(raw, str) or not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        return None
    number = int(raw)
    return number if 1 <= number <= MAX_ID else None


def ref32(value: int | None) -> int | None:
    """A filter's id of a 32-bit table: as given, or ``NO_ROW`` when it is larger than any such id."""
    if value is None or value <= MAX_ID32:
        return value
    return NO_ROW
