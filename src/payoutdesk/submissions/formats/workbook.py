"""XLSX: the first worksheet, its first non-blank row as the header, read with openpyxl in read-only mode.

openpyxl parses the workbook's XML through defusedxml when it is installed (it is
a dependency), and the parts' declared sizes are checked against the limits
before anything is expanded. One pass inside ``parse`` reads the whole sheet
(so every failure shows before any row is handed out) and counts the rows. Up to
100,000 rows are kept from that pass for the first iteration; beyond that, or on
later iterations, the rows are yielded lazily from a fresh pass.
"""

from __future__ import annotations

import datetime as dt
import math
import zipfile
from collections.abc import Iterator
from decimal import Decimal

from payoutdesk.errors import FileRejected

from . import columns as cols
from .archive import check_workbook_sizes, human_size
from .blob import Blob
from .model import Limits, ParsedFile, RawRow, Rows

_Values = tuple[object, ...]
_CACHE_ROWS = 100_000  # rows kept in memory between the checking pass and the first iteration


def cell_text(value: object) -> str:
    """A cell's value as the text a person sees: 19.99 not 19.989999999999998, 80 not 80.0."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value.is_integer():
            return str(int(value))
        # Excel keeps 15 significant digits; beyond them a float only shows binary noise.
        return format(Decimal(format(value, ".15g")), "f")
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value).strip()


def _sheet(blob: Blob) -> Iterator[_Values]:
    """The first worksheet's rows as tuples of values; any failure to read becomes ``FileRejected``."""
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(blob.open(), read_only=True, data_only=True, keep_links=False)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a third-party reader on untrusted bytes
        raise FileRejected(f"The XLSX workbook cannot be read ({type(exc).__name__}: {exc}).") from None
    try:
        sheets = workbook.worksheets
        if not sheets:
            raise FileRejected("The XLSX workbook has no worksheet.")
        sheet = sheets[0]
        sheet.reset_dimensions()
        rows = sheet.iter_rows(values_only=True)
        while True:
            try:
                values = next(rows)
            except StopIteration:
                return
            except MemoryError:
                raise
            except Exception as exc:  # noqa: BLE001 - as above
                raise FileRejected(
                    f"The XLSX workbook's first sheet cannot be read ({type(exc).__name__}: {exc})."
                ) from None
            yield values
    finally:
        workbook.close()


def _blank(values: _Values) -> bool:
    return all(v is None or (isinstance(v, str) and not v.strip()) for v in values)


def _data(blob: Blob) -> tuple[list[str], Iterator[_Values]]:
    rows = _sheet(blob)
    for values in rows:
        if not _blank(values):
            return [cell_text(v) for v in values], rows
    raise FileRejected("The XLSX workbook's first sheet is empty.")


def parse(blob: Blob, fmt: str, limits: Limits) -> ParsedFile:
    if blob.size > limits.max_compressed_bytes:
        raise FileRejected(
            f"The workbook is larger than the limit of {human_size(limits.max_compressed_bytes)}.",
            limit_bytes=limits.max_compressed_bytes,
        )

    try:
        with zipfile.ZipFile(blob.open()) as zf:
            check_workbook_sizes(zf, limits)
    except zipfile.BadZipFile as exc:
        raise FileRejected(f"The XLSX workbook is damaged ({exc}).") from None
    names, body = _data(blob)
    header = cols.resolve(names)
    positions = header.positions
    # openpyxl is slow (its XML goes through defusedxml's pure-Python parser), so the rows of the
    # checking pass are kept for the first iteration when there are not too many of them.
    cache: list[RawRow] | None = []
    total = 0
    for row in _raw_rows(body, positions):
        total += 1
        if cache is not None:
            cache.append(row)
            if total > _CACHE_ROWS:
                cache = None
    if total == 0:
        raise FileRejected("The file has a header but no rows.")
    kept = cache

    def iterate() -> Iterator[RawRow]:
        if kept is not None:
            return iter(kept)
        return _raw_rows(_data(blob)[1], positions)

    return ParsedFile(format=fmt, columns=header.columns, item_level=header.item_level, rows=Rows(iterate, total))


def _raw_rows(body: Iterator[_Values], positions: tuple[tuple[int, str], ...]) -> Iterator[RawRow]:
    number = 0
    for values in body:
        n = len(values)
        fields: dict[str, str] = {}
        for i, name in positions:
            if i < n and (text := cell_text(values[i])):
                fields[name] = text
        if not fields and _blank(values):
            continue
        number += 1
        yield RawRow(number, fields)
