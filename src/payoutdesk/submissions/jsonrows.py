"""API batches: JSON rows with the returns file's column names, as the readers' rows."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from payoutdesk.errors import ValidationFailed

MAX_ROWS = 100_000
_BASE = {
    "actionid": "ActionId", "actiontrackerid": "ActionTrackerId", "oid": "Oid", "orderid": "Oid",
    "amount": "Amount", "reason": "Reason", "dispositioncode": "Reason", "customerstatus": "CustomerStatus",
    "currencycode": "CurrencyCode", "note": "Note",
}
_ITEM = re.compile(r"^(sku|quantity|amount|category)(\d{1,4})$")
_ITEM_NAMES = {"sku": "Sku", "quantity": "Quantity", "amount": "Amount", "category": "Category"}


def canonical_name(name: str) -> str | None:
    key = name.strip().lower()
    if key in _BASE:
        return _BASE[key]
    m = _ITEM.match(key)
    if m and 1 <= int(m.group(2)) <= 1000:
        return f"{_ITEM_NAMES[m.group(1)]}{int(m.group(2))}"
    return None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return str(Decimal(repr(value)))
    return str(value).strip()


def validate_rows(rows: Any) -> list[dict[str, Any]]:
    """Check the shape of a JSON batch before it is queued."""
    if not isinstance(rows, list) or not rows:
        raise ValidationFailed("rows must be a non-empty list of objects with the returns file's column names.")
    if len(rows) > MAX_ROWS:
        raise ValidationFailed(f"A JSON batch has at most {MAX_ROWS:,} rows; upload a file for more.")
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise ValidationFailed(f"Row {n} is not an object.")
    return rows


class _Row:
    __slots__ = ("fields", "number")

    def __init__(self, number: int, fields: dict[str, str]) -> None:
        self.number = number
        self.fields = fields


def canonical_rows(rows: list[dict[str, Any]]) -> list[_Row]:
    out = []
    for n, row in enumerate(rows, 1):
        fields: dict[str, str] = {}
        for k, v in row.items():
            name = canonical_name(str(k))
            text = _cell(v)
            if name is not None and text:
                fields[name] = text
        out.append(_Row(n, fields))
    return out
