"""The shapes the readers produce: rows, the parsed file and the size limits."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RawRow:
    """One data row of a returns file, before any value is checked."""

    number: int  # 1-based position among the non-blank data rows (XML: among the row elements)
    fields: dict[str, str]  # canonical column name -> cell text, stripped; empty cells omitted


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits applied while reading a file; exceeding one rejects the whole file."""

    # A gzip, zip or XLSX file as received.
    max_compressed_bytes: int = 200 * MiB
    # The table once decompressed; also the largest plain (uncompressed) CSV or XML file.
    max_expanded_bytes: int = 1024 * MiB
    # One physical CSV line, or the text of one XML column element: longer means the bytes are no table.
    max_line_bytes: int = 1 * MiB
    # A workbook part above 10 MB that expands more than this many times is taken for a zip bomb
    # (real XLSX parts expand 5 to 20 times).
    max_workbook_ratio: int = 100


DEFAULT_LIMITS = Limits()


class Rows(Iterable[RawRow], Sized):
    """The data rows of a parsed file: re-iterable and sized.

    The file was read once in full before ``parse`` returned (so every whole-file
    failure is already known); each iteration reads it again from its bytes and
    yields the rows lazily, so a million rows never sit in memory at once.
    """

    __slots__ = ("_factory", "_total")

    def __init__(self, factory: Callable[[], Iterator[RawRow]], total: int) -> None:
        self._factory = factory
        self._total = total

    def __iter__(self) -> Iterator[RawRow]:
        return self._factory()

    def __len__(self) -> int:
        return self._total

    def __repr__(self) -> str:
        return f"Rows(total={self._total})"


@dataclass(frozen=True)
class ParsedFile:
    """A returns file whose structure is valid; its values are checked later, row by row."""

    format: str  # "csv" | "xml" | "xlsx", with "+gzip" / "+zip" when it came compressed
    columns: tuple[str, ...]  # canonical names present in the header, in file order
    item_level: bool  # True when Sku1.. columns are present
    # parse() gives a re-iterable, sized ``Rows``; a list works as well when building one by hand.
    rows: Iterable[RawRow]

    @property
    def total(self) -> int | None:
        """Number of data rows (None only for a hand-made ParsedFile with unsized rows)."""
        return len(self.rows) if isinstance(self.rows, Sized) else None
