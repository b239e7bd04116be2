"""XML: one element per row under the root, the columns as child elements.

Parsed with defusedxml's SAX (expat) parser, fed in chunks: a DTD (and with it any
entity declaration, internal or external) is refused, so neither a "billion laughs"
nor an external reference can do harm, and memory stays flat. Element names may
carry a namespace prefix, which is ignored. A column's text is all the text inside
its element, stripped. The pass inside ``parse`` checks well-formedness, gathers
the columns (the union over all rows, in first-seen order) and counts the rows;
the rows are then yielded lazily from a fresh pass on each iteration.
"""

from __future__ import annotations

from collections.abc import Iterator
from xml.sax import SAXException, SAXParseException
from xml.sax.handler import ContentHandler, ErrorHandler
from xml.sax.xmlreader import AttributesImpl

from defusedxml import DefusedXmlException, DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.expatreader import create_parser

from payoutdesk.errors import FileRejected

from . import columns as cols
from .archive import Content, human_size
from .model import Limits, ParsedFile, RawRow, Rows

_Cells = list[tuple[str, str]]
_FEED = 64 * 1024
_MAX_CELLS = 20_000  # column elements in one row (1000 items x 4 columns, plus the order's own)


def _local(name: str) -> str:
    return name.rsplit(":", 1)[-1]


class _Collector(ContentHandler):
    """Turns SAX events into (cells, has_content) per row element; rows wait in ``ready``."""

    def __init__(self, max_text: int) -> None:
        super().__init__()
        self.max_text = max_text
        self.depth = 0
        self.root: str | None = None
        self.ready: list[tuple[_Cells, bool]] = []
        self._cells: _Cells = []
        self._row_text = False
        self._tag = ""
        self._text: list[str] = []
        self._size = 0

    def startElement(self, name: str, attrs: AttributesImpl) -> None:  # noqa: N802 - SAX API
        self.depth += 1
        depth = self.depth
        if depth == 3:
            if len(self._cells) >= _MAX_CELLS:
                raise FileRejected(f"A row element holds more than {_MAX_CELLS} elements: this is not a returns file.")
            self._tag = _local(name)
            self._text = []
            self._size = 0
        elif depth == 2:
            self._cells = []
            self._row_text = False
        elif depth == 1:
            self.root = _local(name)

    def endElement(self, name: str) -> None:  # noqa: N802 - SAX API
        depth = self.depth
        if depth == 3:
            self._cells.append((self._tag, "".join(self._text).strip()))
        elif depth == 2:
            self.ready.append((self._cells, bool(self._cells) or self._row_text))
        self.depth = depth - 1

    def characters(self, content: str) -> None:
        depth = self.depth
        if depth >= 3:
            self._size += len(content)
            if self._size > self.max_text:
                raise FileRejected(
                    f"The element {self._tag} holds more than {human_size(self.max_text)} of text: "
                    "this is not a returns file."
                )
            self._text.append(content)
        elif depth == 2 and not self._row_text and content.strip():
            self._row_text = True


class _Strict(ErrorHandler):
    def warning(self, exception: BaseException) -> None:  # the default prints to stdout
        return


def _elements(content: Content, limits: Limits, roots: list[str] | None = None) -> Iterator[tuple[_Cells, bool]]:
    """Each row element's cells, streaming; parse errors and forbidden constructs become ``FileRejected``."""
    parser = create_parser(forbid_dtd=True, forbid_entities=True, forbid_external=True)
    collector = _Collector(limits.max_line_bytes)
    parser.setContentHandler(collector)
    parser.setErrorHandler(_Strict())
    try:
        with content.open() as stream:
            while chunk := stream.read(_FEED):
                parser.feed(chunk)
                if collector.ready:
                    batch, collector.ready = collector.ready, []
                    yield from batch
            parser.close()
        yield from collector.ready
    except (DTDForbidden, EntitiesForbidden) as exc:
        raise FileRejected(
            "The XML file declares a DTD or entities (<!DOCTYPE …>, <!ENTITY …>), which are refused for safety; "
            "send plain XML without them.",
        ) from exc
    except ExternalReferenceForbidden as exc:
        raise FileRejected("The XML file refers to an external resource, which is refused for safety.") from exc
    except DefusedXmlException as exc:
        raise FileRejected(f"The XML file uses a construct refused for safety ({exc}).") from exc
    except SAXParseException as exc:
        raise FileRejected(
            f"The file is not well-formed XML ({exc.getMessage()}: line {exc.getLineNumber()}, "
            f"column {exc.getColumnNumber()}).",
            line=exc.getLineNumber(),
        ) from exc
    except SAXException as exc:
        raise FileRejected(f"The file is not well-formed XML ({exc.getMessage()}).") from exc
    finally:
        if roots is not None and collector.root is not None:
            roots.append(collector.root)


def parse(content: Content, fmt: str, limits: Limits) -> ParsedFile:
    names: dict[str, str | None] = {}
    raw_seen: dict[str, None] = {}
    present: dict[str, None] = {}
    roots: list[str] = []
    total = 0
    for cells, has_content in _elements(content, limits, roots):
        if not has_content:
            continue
        total += 1
        seen_in_row: set[str] = set()
        for tag, _text in cells:
            if tag not in names:
                names[tag] = cols.canonical(tag)
                raw_seen[tag] = None
            name = names[tag]
            if name is None:
                continue
            if name in seen_in_row:
                raise FileRejected(f"Row {total} has the element {name} twice; keep only one of them.", row=total)
            seen_in_row.add(name)
            present.setdefault(name, None)
    if total == 0:
        where = f" under <{roots[0]}>" if roots else ""
        raise FileRejected(f"The XML file has no rows: there is no row element{where}.")
    columns = tuple(present)
    cols.check_columns(columns, list(raw_seen), what="element")

    def rows() -> Iterator[RawRow]:
        number = 0
        for cells, has_content in _elements(content, limits):
            if not has_content:
                continue
            number += 1
            fields: dict[str, str] = {}
            for tag, text in cells:
                name = names.get(tag)
                if name is not None and text:
                    fields[name] = text
            yield RawRow(number, fields)

    return ParsedFile(format=fmt, columns=columns, item_level=cols.item_level(columns), rows=Rows(rows, total))
