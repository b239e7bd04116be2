"""Readers that turn the bytes of a returns file into rows for the submission engine.

Pure: no database, no value checks (amounts, reasons and ids are the engine's job,
row by row). Only the structure of the file is judged here, and a file that cannot
be used as a whole raises :class:`FileRejected` with one message for a person and
no row at all.

Formats, recognised from the bytes, never from the file name:

- gzip (``1f 8b``) or zip (``PK\\x03\\x04``) around exactly one file ("+gzip" / "+zip"
  in ``ParsedFile.format``; directory entries and ``__MACOSX/``, ``.DS_Store``,
  ``Thumbs.db`` entries do not count). An archive inside an archive is refused,
  except a workbook (an XLSX is itself a zip).
- XLSX: a zip holding ``xl/workbook.xml``; the first worksheet, read-only.
- XML: text whose first non-blank character is ``<``.
- CSV otherwise: UTF-8 with or without a byte-order mark, comma, semicolon or tab,
  CRLF, LF or CR line ends, fields quoted with ``"`` (delimiters and line breaks
  inside quotes are data).

Columns: matched to canonical names case-insensitively, ignoring surrounding
spaces; ``OrderId`` is ``Oid`` and ``DispositionCode`` is ``Reason``; ``Sku1``,
``Quantity1``, ``Amount1``, ``Category1`` … up to 1000. Other columns are ignored.
A column present twice (also through its alias) is refused, as is an item column
without its ``SkuN``. Required: ``Reason``, and ``ActionId`` or both
``ActionTrackerId`` and ``Oid``; in XML the columns are the union of the row
elements' children.

Rows and their numbers: blank lines (every cell empty or spaces) are skipped
everywhere, before the header too, and do not count. Row 1 is the first non-blank
row after the header (in XML the first non-empty row element); row N is the N-th
non-blank data row. A row whose used columns are all empty but that has text in an
ignored column is not blank: it comes through with empty ``fields`` for the engine
to report. In CSV and XLSX the header is the first non-blank row; in CSV an
Excel ``sep=;`` first line sets the delimiter.

Decimal comma: in a CSV whose delimiter is not a comma, the ``Amount`` and
``AmountN`` values written with a decimal comma are turned into dot form:
``19,99`` -> ``19.99``, ``1.234,56`` -> ``1234.56``, ``1 234,56`` -> ``1234.56``
(thousands grouped by dots or spaces, exactly 3 digits a group). A value without a
comma (``1.234``) is left as written, as is any other column. XLSX numbers come out as
the text a person sees: 15 significant digits, no exponent, integers without ``.0``.

Limits (:class:`Limits`): a gzip, zip or XLSX file above ``max_compressed_bytes``
(200 MB) is refused at once; the table, once decompressed, may not pass
``max_expanded_bytes`` (1 GB) -- decompression is streamed and stops there, so a
bomb is refused without being expanded (a zip member or a workbook part whose
declared size is too large, or a gzip whose trailer says so, is refused before any
decompression) -- and no CSV line nor XML element text may pass ``max_line_bytes``
(1 MB). A workbook part above 10 MB that expands more than ``max_workbook_ratio``
(100) times is refused as a zip bomb (openpyxl would hold its strings in memory).

Memory: nothing is held whole, neither the file nor its decompressed table. The file
is bytes in memory (``parse(data)``) or a :class:`Blob`, such as a file on disk
(``parse(FileBlob.of_path(path))``, or the worker's temporary copy of a stored file),
read through fresh streams; a workbook inside gzip or zip is spooled to a temporary
file. ``parse`` reads the file completely (twice for CSV: a byte scan for UTF-8 and
NUL, then the csv reader) before it returns, so every whole-file failure is raised by
``parse`` itself; ``ParsedFile.rows`` is a :class:`Rows` object that reads the file
again on each iteration and yields the rows lazily, and ``len(rows)`` /
``ParsedFile.total`` give the row count.
"""

from __future__ import annotations

from payoutdesk.errors import FileRejected

from . import archive, delimited, workbook, xmlfile
from .blob import Blob, BytesBlob, FileBlob
from .model import DEFAULT_LIMITS, Limits, ParsedFile, RawRow, Rows

__all__ = ["DEFAULT_LIMITS", "Blob", "BytesBlob", "FileBlob", "FileRejected", "Limits", "ParsedFile", "RawRow",
           "Rows", "parse"]


def parse(data: bytes | Blob, file_name: str | None = None, *, limits: Limits = DEFAULT_LIMITS) -> ParsedFile:
    """Read a returns file's structure; raise ``FileRejected`` when it cannot be used as a whole.

    ``data``: the file's bytes, or a :class:`Blob` (a file on disk: ``FileBlob.of_path``), which the
    rows read again on each iteration, so it must stay open while they are used. ``file_name`` is
    only quoted back in the error (as ``extra["file_name"]``); the format is recognised from the bytes.
    """
    blob = data if isinstance(data, Blob) else BytesBlob(data)
    try:
        return _parse(blob, limits)
    except FileRejected as exc:
        if file_name:
            exc.extra.setdefault("file_name", file_name)
        raise


def _parse(blob: Blob, limits: Limits) -> ParsedFile:
    if not blob.size:
        raise FileRejected("The file is empty.")
    content = archive.open_content(blob, limits)
    if content.workbook is not None:
        return workbook.parse(content.workbook, "xlsx" + content.wrapper, limits)
    head = content.head
    if not head.lstrip(b"\xef\xbb\xbf \t\r\n"):
        if len(head) < archive.HEAD_BYTES:
            raise FileRejected("The file is empty.")
    else:
        problem = archive.sniff_other(head)
        if problem is not None:
            raise FileRejected(problem)
        if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
            return xmlfile.parse(content, "xml" + content.wrapper, limits)
    return delimited.parse(content, "csv" + content.wrapper, limits)
