"""A MIME reader over a file (DESIGN §6, "Bounded memory"): the structure of a mail spooled to disk, read
without holding the mail, and the decoded body of any of its parts in pieces.

:func:`scan` reads the top-level headers and walks the MIME structure (multipart boundaries at any depth,
``message/rfc822`` parts, a single-part mail whose body is the file), yielding each leaf part with its
headers (parsed by the email package, so that ``get_filename`` decodes RFC 2231 and RFC 2047 names) and
the offsets of its body in the file; only header blocks are ever read whole. :func:`decode` reads one
body back in blocks and decodes it (base64, quoted-printable, 7bit/8bit/binary as is) into pieces of
``PIECE`` bytes.

What counts as a part follows the email package's parser: a delimiter is a line ``--<boundary>``
(``--<boundary>--`` closes), optionally followed by spaces or tabs, at the start of a line; the line ending
before it belongs to the delimiter; a delimiter of an enclosing multipart also ends an inner one; lines
may end in CRLF or LF.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser
from typing import BinaryIO

from payoutdesk.kit.chunks import in_pieces

PIECE = 1024 * 1024  # decoded bodies come in pieces of this size (the last one shorter)
BLOCK = 1024 * 1024  # the file is searched and read in blocks of this size
MAX_HEADER_BYTES = 1024 * 1024  # header lines beyond this, in one header block, are skipped
MAX_LINE = 64 * 1024  # a header line is read at most this long at once
MAX_DEPTH = 40  # multiparts nested deeper are taken as leaves
MAX_PARTS = 1000  # leaves beyond this are not looked at

_HEADER_LINE = re.compile(rb"^(From |[\041-\071\073-\176]*:|[\t ])")  # the email package's feedparser headerRE
_B64_JUNK = bytes(sorted(set(range(256)) - set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")))
_PARSER = BytesHeaderParser(policy=policy.default)


class Undecodable(Exception):
    """A body whose content does not decode (broken base64)."""


@dataclass(frozen=True)
class Leaf:
    """A part that is no multipart: its headers, and where its body lies in the file (``start``, ``end``)."""

    headers: EmailMessage
    start: int
    end: int

    @property
    def encoding(self) -> str:
        return str(self.headers.get("content-transfer-encoding", "") or "").strip().lower()


@dataclass(frozen=True)
class _Delimiter:
    body_end: int  # where the body before it ends (the line ending before the delimiter belongs to it)
    after: int  # the first byte after the delimiter line
    boundary: bytes
    closing: bool


def parse_headers(data: bytes) -> EmailMessage:
    """A header block (without the blank line) as a message without body, as the email package reads it."""
    msg = _PARSER.parsebytes(data)
    assert isinstance(msg, EmailMessage)
    return msg


class _Walker:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        f.seek(0, 2)
        self.size = f.tell()
        self.leaves = 0
        self.truncated = False  # more than MAX_PARTS leaves: the walk stopped there
        self._cached: tuple[int, bytes] = (0, b"")

    def _read(self, pos: int, n: int) -> bytes:
        self.f.seek(pos)
        return self.f.read(n)

    def _line(self, pos: int, limit: int) -> bytes:
        """The line at ``pos`` with its line ending, at most ``limit`` bytes."""
        self.f.seek(pos)
        return self.f.readline(limit)

    def delimiter_at(self, line_start: int, body_start: int, stack: tuple[bytes, ...]) -> _Delimiter | None:
        line = self._line(line_start, 1024)
        if not line.startswith(b"--"):
            return None
        for boundary in reversed(stack):  # the innermost first, as the email package checks them
            if not line.startswith(boundary, 2):
                continue
            rest = line[2 + len(boundary):]
            closing = rest.startswith(b"--")
            if closing:
                rest = rest[2:]
            rest = rest.lstrip(b" \t")
            if rest in (b"\r\n", b"\n") or (rest == b"" and line_start + len(line) == self.size):
                body_end = line_start
                if line_start > body_start:
                    body_end -= 2 if line_start - 2 >= body_start and self._read(line_start - 2, 2) == b"\r\n" else 1
                return _Delimiter(body_end, line_start + len(line), boundary, closing)
        return None

    def _block(self, pos: int, least: int) -> tuple[int, bytes]:
        """A block of the file that holds ``pos`` and at least ``least`` bytes after it (unless the file
        ends first), and where it starts: the last block read when it does, so that walking many small
        parts does not read the same bytes again and again."""
        base, block = self._cached
        if not (base <= pos and pos + least <= base + len(block)):
            base, block = pos, self._read(pos, max(BLOCK, 2 * least))
            self._cached = (base, block)
        return base, block

    def next_delimiter(self, pos: int, stack: tuple[bytes, ...]) -> _Delimiter | None:
        """The first delimiter of ``stack`` at a line start at or after ``pos`` (itself a line start). Each
        boundary of the stack is searched for as ``LF--<boundary>`` in blocks (the bytes searched by C, the
        few lines that begin so looked at in Python), the blocks overlapping by a needle's length."""
        if not stack:
            return None
        found = self.delimiter_at(pos, pos, stack)
        if found is not None:
            return found
        needles = [b"\n--" + boundary for boundary in stack]
        overlap = max(len(n) for n in needles) - 1
        scan = pos
        while scan < self.size:
            base, block = self._block(scan, overlap + 64)
            start = scan - base
            while True:
                hits = [i for i in (block.find(n, start) for n in needles) if i >= 0]
                if not hits:
                    break
                hit = min(hits)
                found = self.delimiter_at(base + hit + 1, pos, stack)
                if found is not None:
                    return found
                start = hit + 1
            if base + len(block) >= self.size:
                break
            scan = base + len(block) - overlap  # a needle across the blocks' edge is found in the next block
        return None

    def headers(self, pos: int, stack: tuple[bytes, ...]) -> tuple[EmailMessage, int, _Delimiter | None]:
        """The header block at ``pos``: the headers, where the body starts, and the delimiter that ended the
        part before any body (a part without a blank line after its headers)."""
        kept = bytearray()
        while pos < self.size:
            line = self._line(pos, MAX_LINE)
            if line in (b"\r\n", b"\n"):
                return parse_headers(bytes(kept)), pos + len(line), None
            if line.startswith(b"--"):
                found = self.delimiter_at(pos, pos, stack)
                if found is not None:
                    return parse_headers(bytes(kept)), pos, found
            if not _HEADER_LINE.match(line) or (not line.endswith(b"\n") and pos + len(line) < self.size):
                break  # no header: the body starts here (the email package does the same)
            if len(kept) + len(line) <= MAX_HEADER_BYTES:
                kept += line
            pos += len(line)
        return parse_headers(bytes(kept)), pos, None

    def entity(self, pos: int, stack: tuple[bytes, ...], depth: int) -> Generator[Leaf, None, _Delimiter | None]:
        """Yields the leaves of the entity at ``pos``; returns the delimiter that ended it (None: the end of
        the file)."""
        if self.truncated:
            return None
        headers, body, ended = self.headers(pos, stack)
        if ended is not None:
            yield from self._leaf(Leaf(headers, body, body))
            return ended
        boundary = str(headers.get_param("boundary", "") or "").encode("utf-8", "surrogateescape")
        if headers.get_content_maintype() == "multipart" and boundary and depth < MAX_DEPTH:
            inner = (*stack, boundary)
            found = self.next_delimiter(body, inner)  # the preamble is skipped
            while found is not None and found.boundary == boundary and not found.closing and not self.truncated:
                found = yield from self.entity(found.after, inner, depth + 1)
            if found is not None and found.boundary == boundary:  # closed: the epilogue is skipped
                found = self.next_delimiter(found.after, stack)
            return found
        if (headers.get_content_type() == "message/rfc822" and depth < MAX_DEPTH
                and str(headers.get("content-transfer-encoding", "7bit")).strip().lower()
                in ("7bit", "8bit", "binary")):
            return (yield from self.entity(body, stack, depth + 1))  # a mail attached: its own parts
        found = self.next_delimiter(body, stack)
        yield from self._leaf(Leaf(headers, body, found.body_end if found is not None else self.size))
        return found

    def _leaf(self, leaf: Leaf) -> Iterator[Leaf]:
        if self.leaves >= MAX_PARTS:
            self.truncated = True
            return
        self.leaves += 1
        yield leaf


@dataclass
class Structure:
    """A mail's top-level headers and its leaf parts (``leaves`` is read as it is iterated)."""

    headers: EmailMessage
    walker: _Walker

    def leaves(self) -> Iterator[Leaf]:
        self.walker.leaves = 0
        self.walker.truncated = False
        yield from self.walker.entity(0, (), 0)

    @property
    def truncated(self) -> bool:
        """Whether the mail had more than ``MAX_PARTS`` leaves, the rest not looked at (known once
        ``leaves`` has been read)."""
        return self.walker.truncated


def scan(f: BinaryIO) -> Structure:
    """The structure of the mail in ``f`` (a binary file that can seek): its top-level headers at once, the
    leaves as they are iterated."""
    walker = _Walker(f)
    headers, _, _ = walker.headers(0, ())
    return Structure(headers, walker)


def filename(part: Message) -> str | None:
    """The file name of a part (Content-Disposition ``filename``, else Content-Type ``name``; RFC 2231 and
    RFC 2047 decoded), None when it has none or it does not parse."""
    try:
        name = part.get_filename()
    except Exception:  # noqa: BLE001 - a malformed disposition: a part without a name
        return None
    return str(name) if name else None


# --- decoding a body ---------------------------------------------------------------------------------


def _ranges(f: BinaryIO, start: int, end: int, block: int = BLOCK) -> Iterator[bytes]:
    pos = start
    while pos < end:
        f.seek(pos)
        data = f.read(min(block, end - pos))
        if not data:
            return
        pos += len(data)
        yield data


def _b64(data: bytes) -> bytes:
    try:
        return binascii.a2b_base64(data)
    except binascii.Error as exc:
        raise Undecodable(f"broken base64 ({exc})") from None


def decode_base64(blocks: Iterator[bytes]) -> Iterator[bytes]:
    """Base64 text in blocks of any sizes (lines of any length, CRLF or LF, stray whitespace or other
    characters outside the alphabet, which are dropped) decoded; ``Undecodable`` when what is left at the
    end is no whole group (a lone character)."""
    rest = b""
    for block in blocks:
        chunk = rest + block.translate(None, _B64_JUNK)
        cut = len(chunk) - len(chunk) % 4
        rest = chunk[cut:]
        if cut:
            yield _b64(chunk[:cut])
    if rest.strip(b"="):
        yield _b64(rest + b"=" * (-len(rest) % 4))


def decode_quoted_printable(blocks: Iterator[bytes]) -> Iterator[bytes]:
    """Quoted-printable text decoded, cut at line ends so that no escape or soft line break is split."""
    rest = b""
    for block in blocks:
        chunk = rest + block
        cut = chunk.rfind(b"\n") + 1
        if not cut:  # one very long line: cut before a possible escape
            eq = chunk.rfind(b"=", max(0, len(chunk) - 3))
            cut = eq if eq >= 0 else len(chunk)
        rest = chunk[cut:]
        if cut:
            yield binascii.a2b_qp(chunk[:cut])
    if rest:
        yield binascii.a2b_qp(rest)


def decode(f: BinaryIO, leaf: Leaf, piece: int = PIECE) -> Iterator[bytes]:
    """The decoded body of ``leaf`` read from ``f``, in pieces of ``piece`` bytes (the last shorter);
    ``Undecodable`` for base64 that is broken."""
    blocks = _ranges(f, leaf.start, leaf.end)
    if leaf.encoding == "base64":
        yield from in_pieces(decode_base64(blocks), piece)
    elif leaf.encoding == "quoted-printable":
        yield from in_pieces(decode_quoted_printable(blocks), piece)
    else:
        yield from in_pieces(blocks, piece)
