"""CSV (comma, semicolon or tab), read in three streaming passes.

1. scan: every byte is UTF-8, no NUL, no absurdly long line, under the size limit;
2. count: the csv module reads every record (a broken quote shows here) and the
   non-blank data rows are counted;
3. rows: yielded lazily, as many times as the caller iterates.

Passes 1 and 2 run inside ``parse``, so a whole-file failure is raised before any
row is handed out, and memory stays flat whatever the number of rows.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass

from payoutdesk.errors import FileRejected

from . import columns as cols
from .archive import Content, human_size
from .model import Limits, ParsedFile, RawRow, Rows

_SCAN_CHUNK = 64 * 1024
_CANDIDATES = (",", ";", "\t")
_SEP_LINE = re.compile(r"^\s*sep=(.)\s*$", re.IGNORECASE)
_SEP_ALLOWED = {",", ";", "\t", "|"}
# "19,99", "1.234,56", "1 234,56" (space, no-break space or narrow no-break space between thousands).
_DECIMAL_COMMA = re.compile(r"^([+-]?)(\d{1,3}(?:([. \u00a0\u202f])\d{3})(?:\3\d{3})*|\d+),(\d+)$")
_THOUSANDS = re.compile(r"[. \u00a0\u202f]")
_NOT_UTF8 = "The file is not UTF-8 text"


def decimal_comma_to_dot(value: str) -> str:
    """'19,99' -> '19.99', '1.234,56' -> '1234.56'; anything else is returned unchanged."""
    whole, _, fraction = value.partition(",")
    if whole.isdigit() and fraction.isdigit() and value.isascii():  # the common case, without the regex
        return f"{whole}.{fraction}"
    m = _DECIMAL_COMMA.match(value)
    if m is None:
        return value
    return f"{m.group(1)}{_THOUSANDS.sub('', m.group(2))}.{m.group(4)}"


@dataclass(frozen=True, slots=True)
class _Layout:
    delimiter: str
    sep_line: bool  # the first non-blank line is Excel's "sep=;" hint


def _text(content: Content) -> io.TextIOWrapper:
    return io.TextIOWrapper(content.open(), encoding="utf-8-sig", newline="")


def _blank(record: list[str]) -> bool:
    return not "".join(record).strip()


def _reader(content: Content, layout: _Layout) -> tuple[list[str], Iterator[list[str]], io.TextIOWrapper]:
    """Open the file, skip to the header record and return it with the reader positioned after it."""
    text = _text(content)
    reader = csv.reader(text, delimiter=layout.delimiter, skipinitialspace=True)
    skip_sep = layout.sep_line
    for record in reader:
        if not record or _blank(record):
            continue
        if skip_sep:
            skip_sep = False
            continue
        return record, reader, text
    text.close()
    raise FileRejected("The file is empty.")


def _find_layout(content: Content, limits: Limits) -> _Layout:
    """Read the first lines to find Excel's optional sep= hint and the delimiter of the header."""
    max_chars = limits.max_line_bytes
    sep_line = False
    with _text(content) as text:
        while True:
            line = text.readline(max_chars)
            if not line:
                raise FileRejected("The file is empty.")
            if len(line) >= max_chars and not line.endswith(("\n", "\r")):
                raise FileRejected(
                    f"The first line is longer than {human_size(max_chars)}: this is not a table."
                )
            if not line.strip():
                continue
            m = _SEP_LINE.match(line) if not sep_line else None
            if m is not None and m.group(1) in _SEP_ALLOWED:
                sep_line = True
                forced = m.group(1)
                continue
            break
    if sep_line:
        return _Layout(forced, True)
    best, best_score = ",", (-1, -1)
    for delimiter in _CANDIDATES:
        names = next(csv.reader([line], delimiter=delimiter, skipinitialspace=True), [])
        score = (sum(1 for n in names if cols.canonical(n) is not None), len(names))
        if score > best_score:
            best, best_score = delimiter, score
    return _Layout(best, False)


def _scan(content: Content, limits: Limits) -> None:
    """Pass 1: UTF-8 everywhere, no NUL byte, no line longer than the limit (and the size limit)."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    line = 1
    run = 0  # bytes since the last line break, at chunk granularity
    with content.open() as stream:
        while chunk := stream.read(_SCAN_CHUNK):
            zero = chunk.find(b"\x00")
            if zero >= 0:
                where = line + chunk.count(b"\n", 0, zero)
                raise FileRejected(f"The file holds binary data (a NUL byte on line {where}), not a text table.")
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                pending = len(exc.object) - len(chunk)  # bytes carried over from the previous chunk
                at = max(exc.start - pending, 0)
                bad = exc.object[exc.start : exc.start + 1].hex().upper()
                where = line + chunk.count(b"\n", 0, at)
                raise FileRejected(
                    f"{_NOT_UTF8} (byte 0x{bad} on line {where} is not valid UTF-8). Save it as CSV UTF-8.",
                    line=where,
                ) from None
            last = max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))
            run = run + len(chunk) if last < 0 else len(chunk) - last - 1
            if run > limits.max_line_bytes:
                raise FileRejected(
                    f"Line {line} is longer than {human_size(limits.max_line_bytes)}: this is not a table.",
                    line=line,
                )
            line += chunk.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise FileRejected(f"{_NOT_UTF8} (it ends in the middle of a character). Save it as CSV UTF-8.") from None


def _count(content: Content, layout: _Layout) -> tuple[list[str], int]:
    """Pass 2: the header record and the number of non-blank data rows; a broken record rejects the file."""
    header, reader, text = _reader(content, layout)
    total = 0
    with text:
        try:
            for record in reader:
                # The first cell usually settles it without joining the whole record.
                if record and (record[0].strip() or not _blank(record)):
                    total += 1
        except csv.Error as exc:
            line = getattr(reader, "line_num", 0)
            raise FileRejected(
                f"The file cannot be read as CSV near line {line} ({exc}); is a quote left open?",
                line=line,
            ) from None
    return header, total


def _rows(content: Content, layout: _Layout, positions: tuple[tuple[int, str], ...]) -> Iterator[RawRow]:
    """Pass 3: the data rows, lazily."""
    _header, reader, text = _reader(content, layout)
    width = max(i for i, _ in positions) + 1
    amounts = [name for _, name in positions if cols.is_amount(name)] if layout.delimiter != "," else []
    number = 0
    with text:
        for record in reader:
            if not record:
                continue
            if len(record) >= width:
                fields = {name: v for i, name in positions if (v := record[i].strip())}
            else:
                n = len(record)
                fields = {name: v for i, name in positions if i < n and (v := record[i].strip())}
            if not fields and _blank(record):
                continue
            number += 1
            for name in amounts:
                value = fields.get(name)
                if value is not None and "," in value:
                    fields[name] = decimal_comma_to_dot(value)
            yield RawRow(number, fields)


def parse(content: Content, fmt: str, limits: Limits) -> ParsedFile:
    # The header decides first, so that a file that is no returns file is refused without reading it all.
    try:
        layout = _find_layout(content, limits)
        header_names = _header_names(content, layout)
    except UnicodeDecodeError:
        _scan(content, limits)  # names the line of the bad byte
        raise FileRejected(f"{_NOT_UTF8}. Save it as CSV UTF-8.") from None
    header = cols.resolve(header_names)
    _scan(content, limits)
    _, total = _count(content, layout)
    if total == 0:
        raise FileRejected("The file has a header but no rows.")
    positions = header.positions
    return ParsedFile(
        format=fmt,
        columns=header.columns,
        item_level=header.item_level,
        rows=Rows(lambda: _rows(content, layout, positions), total),
    )


def _header_names(content: Content, layout: _Layout) -> list[str]:
    try:
        header, _reader_it, text = _reader(content, layout)
    except csv.Error as exc:
        raise FileRejected(f"The header cannot be read as CSV ({exc}); is a quote left open?") from None
    text.close()
    return header
