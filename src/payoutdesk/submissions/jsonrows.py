"""API batches: JSON rows with the returns file's column names, as the readers' rows.

A batch is read as a stream of JSON events (ijson), never parsed whole (DESIGN §6, "Bounded memory"):
:func:`read_batch` checks a request body ``{"campaign_id", "rows", "dry_run"?}`` row by row while it
yields the rows in their stored form (a compact JSON array) for the file store, and :func:`stored_rows`
reads a stored batch back one row at a time for the worker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, BinaryIO

import ijson

from payoutdesk.errors import MalformedJson, ValidationFailed

MAX_ROWS = 100_000
MAX_BODY_BYTES = 32 * 1024 * 1024  # a JSON batch body (api/limits.py refuses more while reading it)
MAX_ROW_VALUES = 50_000  # keys and values in one row (1,000 items of 4 columns are 8,000)
MAX_TEXT = 1024 * 1024  # characters of one key or value
_READ = 1024 * 1024  # bytes read at a time (ijson's default of 64 KiB is slow on long values)
ROWS_MESSAGE = "rows must be a non-empty list of objects with the returns file's column names."
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
        raise ValidationFailed(ROWS_MESSAGE)
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


def canonical_rows(rows: Iterable[dict[str, Any]]) -> list[_Row]:
    return list(iter_canonical_rows(rows))


def iter_canonical_rows(rows: Iterable[dict[str, Any]]) -> Iterator[_Row]:
    """The rows as the readers' rows, one at a time (the worker's stored batch is never a list)."""
    for n, row in enumerate(rows, 1):
        fields: dict[str, str] = {}
        for k, v in row.items():
            name = canonical_name(str(k))
            text = _cell(v)
            if name is not None and text:
                fields[name] = text
        yield _Row(n, fields)


# --- streaming ---------------------------------------------------------------------------------


_ABSENT: Any = object()
_SCALARS = frozenset(("null", "boolean", "integer", "double", "number", "string"))


@dataclass
class Batch:
    """What :func:`read_batch` found besides the rows, checked once the body is read (the answers keep the
    order of checks of a body parsed whole: the body's shape, unknown fields, campaign_id, dry_run, rows)."""

    is_object: bool = False
    unknown: list[str] = field(default_factory=list)
    campaign_id: Any = None
    dry_run: Any = None
    rows_error: str | None = None
    rows: int = 0


class _Events:
    """ijson's events of a stream, with JSON errors as ``MalformedJson``."""

    def __init__(self, stream: BinaryIO) -> None:
        self._events = ijson.basic_parse(stream, use_float=True, buf_size=_READ)

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return self

    def __next__(self) -> tuple[str, Any]:
        try:
            return next(self._events)  # type: ignore[no-any-return]
        except ijson.JSONError as exc:
            text = str(exc).split("\n", 1)[0]
            if "integer overflow" in text:
                raise MalformedJson("The request body is not valid JSON for us: a number is beyond 64 bits; "
                                    "send such a value as text.") from None
            raise MalformedJson(f"The request body is not valid JSON ({text[:100]}).") from None
        except UnicodeDecodeError:
            raise MalformedJson("The request body is not valid JSON (it must be UTF-8 text).") from None


class _TooBig(Exception):
    def __init__(self, depth: int) -> None:
        super().__init__(depth)
        self.depth = depth  # containers left open where the value was given up


def _value(first: tuple[str, Any], events: Iterator[tuple[str, Any]], budget: int) -> Any:
    """The JSON value that starts with event ``first``, built from ``events``; ``_TooBig`` past ``budget``
    events or for a text longer than MAX_TEXT (then the value's remaining events are not consumed)."""
    kind, value = first
    if kind in _SCALARS:
        if kind == "string" and len(value) > MAX_TEXT:
            raise _TooBig(0)
        return value
    root: Any = {} if kind == "start_map" else []
    stack: list[Any] = [root]
    key: str | None = None
    used = 1
    for kind, value in events:
        used += 1
        if used > budget or (kind in ("map_key", "string") and len(value) > MAX_TEXT):
            depth = len(stack) + (kind in ("start_map", "start_array"))
            depth -= kind in ("end_map", "end_array")
            raise _TooBig(depth)
        top = stack[-1]
        if kind == "map_key":
            key = value
            continue
        if kind in ("end_map", "end_array"):
            stack.pop()
            if not stack:
                return root
            continue
        new = value if kind in _SCALARS else {} if kind == "start_map" else []
        if isinstance(top, dict):
            assert key is not None
            top[key] = new
        else:
            top.append(new)
        if kind in ("start_map", "start_array"):
            stack.append(new)
    raise MalformedJson("The request body is not valid JSON (it ends too early).")


def _skip(first: tuple[str, Any], events: Iterator[tuple[str, Any]]) -> None:
    """Consume the rest of the value that starts with ``first`` without building it."""
    if first[0] in ("start_map", "start_array"):
        _close(events, 1)


def _close(events: Iterator[tuple[str, Any]], depth: int) -> None:
    """Consume events until ``depth`` open containers are closed."""
    if depth <= 0:
        return
    for kind, _ in events:
        if kind in ("start_map", "start_array"):
            depth += 1
        elif kind in ("end_map", "end_array"):
            depth -= 1
            if not depth:
                return


def read_batch(stream: BinaryIO, batch: Batch) -> Iterator[bytes]:
    """Read a JSON batch body from ``stream``; yield its rows in their stored form (``[``, each row as compact
    JSON, ``,`` between them, ``]``) as they are read, and fill ``batch`` with the rest. After the first
    problem with the rows (``batch.rows_error``) nothing more is yielded, but the body is read to its end.
    Raises ``MalformedJson`` for a body that is not JSON (nothing else is judged here)."""
    events = _Events(stream)
    first = next(events, None)
    if first is None:
        raise MalformedJson("The request body is not valid JSON (it is empty).")
    if first[0] != "start_map":
        _skip(first, events)
        return
    batch.is_object = True
    seen_rows = False
    for kind, key in events:
        if kind == "end_map":
            break
        value = next(events)
        if key == "rows":
            if seen_rows:
                batch.rows_error = batch.rows_error or "rows is given twice; give it once."
                _skip(value, events)
                continue
            seen_rows = True
            yield from _rows(value, events, batch)
        elif key in ("campaign_id", "dry_run"):
            try:
                got = _value(value, events, 1000)
            except _TooBig as exc:
                _close(events, exc.depth)
                got = "(too long to show)"
            setattr(batch, key, got)
        else:
            batch.unknown.append(key[:100])
            _skip(value, events)
    for _ in events:  # anything after the object is a JSON error, raised here
        pass
    if not seen_rows:
        batch.rows_error = ROWS_MESSAGE


def _rows(first: tuple[str, Any], events: Iterator[tuple[str, Any]], batch: Batch) -> Iterator[bytes]:
    if first[0] != "start_array":
        batch.rows_error = ROWS_MESSAGE
        _skip(first, events)
        return
    yield b"["
    for event in events:
        if event[0] == "end_array":
            break
        if batch.rows_error is not None:
            _skip(event, events)
            continue
        n = batch.rows + 1
        if n > MAX_ROWS:
            batch.rows_error = f"A JSON batch has at most {MAX_ROWS:,} rows; upload a file for more."
            _skip(event, events)
            continue
        if event[0] != "start_map":
            batch.rows_error = f"Row {n} is not an object."
            _skip(event, events)
            continue
        try:
            row = _value(event, events, MAX_ROW_VALUES)
        except _TooBig as exc:
            batch.rows_error = (f"Row {n} is too large: at most {MAX_ROW_VALUES:,} keys and values, none longer "
                                f"than {MAX_TEXT:,} characters.")
            _close(events, exc.depth)  # the rest of the row
            continue
        batch.rows = n
        text = json.dumps(row, separators=(",", ":"), default=str).encode()
        yield text if n == 1 else b"," + text
    else:
        raise MalformedJson("The request body is not valid JSON (it ends too early).")
    if batch.rows == 0 and batch.rows_error is None:
        batch.rows_error = ROWS_MESSAGE
    yield b"]"


def stored_rows(stream: BinaryIO) -> Iterator[dict[str, Any]]:
    """The rows of a stored batch (a JSON array of objects), one at a time."""
    return ijson.items(stream, "item", use_float=True, buf_size=_READ)  # type: ignore[no-any-return]
