"""The bytes of a file: gzip and zip wrappers, size limits, and what the first bytes say.

Nothing here holds a file in memory, compressed or not: the file is a :class:`Blob` (bytes in
memory for small ones, a file on disk for the worker's spooled copy), ``Content.open`` gives a
fresh stream each time it is called, decompressing on the fly and refusing to go past
``Limits.max_expanded_bytes`` (a zip or gzip bomb stops there, not at its end), and a workbook
inside a gzip or zip is spooled to a temporary file, since reading it needs seeking.
"""

from __future__ import annotations

import gzip
import io
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from payoutdesk.errors import FileRejected

from .blob import Blob, spool
from .model import Limits, MiB

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
HEAD_BYTES = 64 * 1024
_BUFFER = 256 * 1024
_RATIO_FLOOR = 10 * MiB  # workbook parts smaller than this are not judged by their compression ratio

# First bytes of files people send by mistake, and what to tell them.
_OTHER_KINDS: tuple[tuple[bytes, str], ...] = (
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Excel 97-2003 workbook (.xls); save it as .xlsx or as CSV UTF-8"),
    (b"%PDF", "a PDF document, not a table"),
    (b"\x89PNG", "an image, not a table"),
    (b"\xff\xd8\xff", "an image, not a table"),
    (b"GIF8", "an image, not a table"),
    (b"BZh", "a bzip2 archive; only gzip and zip archives are accepted"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive; only gzip and zip archives are accepted"),
    (b"Rar!", "a RAR archive; only gzip and zip archives are accepted"),
    (b"\xfd7zXZ\x00", "an xz archive; only gzip and zip archives are accepted"),
    (b"\x28\xb5\x2f\xfd", "a zstd archive; only gzip and zip archives are accepted"),
    (b"\xff\xfe", "UTF-16 text; save it as CSV UTF-8"),
    (b"\xfe\xff", "UTF-16 text; save it as CSV UTF-8"),
)
_JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}


def human_size(n: int) -> str:
    """Bytes as a short text for messages: 209715200 -> '200 MB'."""
    if n >= 1024 * MiB:
        return f"{n / (1024 * MiB):g} GB"
    if n >= MiB:
        return f"{n / MiB:g} MB"
    if n >= 1024:
        return f"{n / 1024:g} KB"
    return f"{n} bytes"


def too_large(limit: int, what: str = "The file") -> FileRejected:
    return FileRejected(
        f"{what} is larger than the limit of {human_size(limit)} once decompressed.",
        limit_bytes=limit,
    )


class _Limited(io.RawIOBase):
    """A decompressing stream that refuses to expand past a limit and reports damage clearly."""

    def __init__(self, inner: BinaryIO, limit: int, what: str) -> None:
        super().__init__()
        self._inner = inner
        self._limit = limit
        self._what = what
        self._count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        want = min(len(buffer), self._limit + 1 - self._count)
        try:
            data = self._inner.read(max(want, 1))
        except (OSError, EOFError, zlib.error, zipfile.BadZipFile, NotImplementedError) as exc:
            raise FileRejected(f"The {self._what} archive is damaged or incomplete ({exc}).") from exc
        n = len(data)
        self._count += n
        if self._count > self._limit:
            raise too_large(self._limit)
        buffer[:n] = data
        return n

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            super().close()


@dataclass(frozen=True)
class Content:
    """The table's bytes, possibly still compressed inside a wrapper."""

    wrapper: str  # "" | "+gzip" | "+zip"
    open: Callable[[], BinaryIO]  # a fresh stream of the table's bytes, from the start
    head: bytes  # the first HEAD_BYTES of the table (decompressed)
    workbook: Blob | None = None  # set when the table is an XLSX workbook (read by seeking in it)

    def spool(self, limit: int) -> Blob:
        """The table decompressed into a temporary file (only for a workbook inside a wrapper), at most
        ``limit`` bytes."""
        with self.open() as stream:
            try:
                return spool(iter(lambda: stream.read(MiB), b""), in_memory_up_to=MiB, limit=limit)
            except ValueError:
                raise too_large(limit) from None


def is_workbook_zip(names: list[str]) -> bool:
    return "xl/workbook.xml" in names


def _zip_file(blob: Blob) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(blob.open())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise FileRejected(f"The zip archive is damaged or incomplete ({exc}).") from exc


def _is_junk(name: str) -> bool:
    base = name.rsplit("/", 1)[-1].lower()
    return name.startswith("__MACOSX/") or base in _JUNK_NAMES or base.startswith("._")


def _check_other_zip(zf: zipfile.ZipFile) -> None:
    names = zf.namelist()
    if "mimetype" in names and zf.getinfo("mimetype").file_size < 200:
        try:
            kind = zf.read("mimetype")
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError):
            kind = b""
        if kind.startswith(b"application/vnd.oasis.opendocument"):
            raise FileRejected("The file is an OpenDocument file (.ods); save it as .xlsx or as CSV UTF-8.")
    if "word/document.xml" in names:
        raise FileRejected("The file is a Word document, not a table.")


def _unzip(blob: Blob, limits: Limits) -> Content:
    zf = _zip_file(blob)
    names = zf.namelist()
    if is_workbook_zip(names):
        check_workbook_sizes(zf, limits)
        zf.close()
        return Content(wrapper="", open=blob.open, head=blob.head(HEAD_BYTES), workbook=blob)
    _check_other_zip(zf)
    members = [i for i in zf.infolist() if not i.is_dir() and not _is_junk(i.filename)]
    if not members:
        raise FileRejected("The zip archive holds no file; it must hold exactly one.")
    if len(members) > 1:
        shown = ", ".join(m.filename for m in members[:5]) + (", …" if len(members) > 5 else "")
        raise FileRejected(
            f"The zip archive holds {len(members)} files ({shown}); it must hold exactly one.",
            files=len(members),
        )
    info = members[0]
    if info.flag_bits & 0x1:
        raise FileRejected("The zip archive is password-protected; send it without a password.")
    if info.file_size > limits.max_expanded_bytes:
        raise too_large(limits.max_expanded_bytes, f"The file inside the zip archive ({info.filename})")

    def opener() -> BinaryIO:
        try:
            inner = zf.open(info)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError, ValueError) as exc:
            raise FileRejected(f"The zip archive is damaged or cannot be read ({exc}).") from exc
        return io.BufferedReader(_Limited(inner, limits.max_expanded_bytes, "zip"), _BUFFER)  # type: ignore[arg-type]

    return _with_head("+zip", opener)


def _gunzip(blob: Blob, limits: Limits) -> Content:
    # The gzip trailer's size field is not trusted (a damaged file says anything there): decompression
    # is streamed and stops at the limit instead.
    if blob.size < 18:
        raise FileRejected("The gzip file is incomplete.")

    def opener() -> BinaryIO:
        inner = gzip.GzipFile(fileobj=blob.open(), mode="rb")
        return io.BufferedReader(_Limited(inner, limits.max_expanded_bytes, "gzip"), _BUFFER)  # type: ignore[arg-type]

    return _with_head("+gzip", opener)


def _with_head(wrapper: str, opener: Callable[[], BinaryIO]) -> Content:
    with opener() as stream:
        head = stream.read(HEAD_BYTES)
    return Content(wrapper=wrapper, open=opener, head=head)


def check_workbook_sizes(zf: zipfile.ZipFile, limits: Limits) -> None:
    """An XLSX is a zip: its parts together must stay under the expanded limit.

    Python's zipfile never expands a part past the size its directory declares,
    so the declared sizes are a real bound.
    """
    infos = zf.infolist()
    total = sum(i.file_size for i in infos)
    if total > limits.max_expanded_bytes:
        raise too_large(limits.max_expanded_bytes, "The workbook")
    for info in infos:
        if info.file_size > _RATIO_FLOOR and info.file_size > limits.max_workbook_ratio * max(info.compress_size, 1):
            raise FileRejected(
                f"The workbook looks like a zip bomb: its part {info.filename} expands "
                f"{info.file_size // max(info.compress_size, 1)} times.",
            )


def open_content(blob: Blob, limits: Limits) -> Content:
    """Unwrap gzip or zip (one file inside) and check the size limits."""
    first = blob.head(HEAD_BYTES)
    if first.startswith((GZIP_MAGIC, ZIP_MAGIC, EMPTY_ZIP_MAGIC)):
        if blob.size > limits.max_compressed_bytes:
            raise FileRejected(
                f"The compressed file is larger than the limit of {human_size(limits.max_compressed_bytes)}.",
                limit_bytes=limits.max_compressed_bytes,
            )
        if first.startswith(GZIP_MAGIC):
            content = _gunzip(blob, limits)
        elif first.startswith(EMPTY_ZIP_MAGIC):
            raise FileRejected("The zip archive holds no file; it must hold exactly one.")
        else:
            content = _unzip(blob, limits)
        if content.workbook is None:
            content = _unwrap_inner(content, limits)
        return content
    if blob.size > limits.max_expanded_bytes:
        raise FileRejected(
            f"The file is larger than the limit of {human_size(limits.max_expanded_bytes)}.",
            limit_bytes=limits.max_expanded_bytes,
        )
    return Content(wrapper="", open=blob.open, head=first)


def _unwrap_inner(content: Content, limits: Limits) -> Content:
    """A wrapped file may be a workbook (itself a zip); any other archive inside an archive is refused."""
    head = content.head
    if head.startswith(GZIP_MAGIC):
        raise FileRejected("The archive holds another archive; send the table file itself, compressed once.")
    if head.startswith(ZIP_MAGIC):
        inner = content.spool(min(limits.max_expanded_bytes, limits.max_compressed_bytes))
        with _zip_file(inner) as zf:
            if not is_workbook_zip(zf.namelist()):
                raise FileRejected("The archive holds another archive; send the table file itself, compressed once.")
            check_workbook_sizes(zf, limits)
        return Content(wrapper=content.wrapper, open=inner.open, head=head, workbook=inner)
    return content


def sniff_other(head: bytes) -> str | None:
    """A message when the first bytes show a kind of file that is not a returns table."""
    for magic, what in _OTHER_KINDS:
        if head.startswith(magic):
            return f"The file is {what}."
    if b"\x00" in head:
        sample = head[:4096]
        odd, even = sample[1::2], sample[0::2]
        # UTF-16 without a byte-order mark: one byte of each pair zero, the other mostly not.
        for zeros, chars in ((odd, even), (even, odd)):
            if zeros.count(0) > len(zeros) * 0.4 and chars.count(0) < len(chars) * 0.05:
                return "The file looks like UTF-16 text; save it as CSV UTF-8."
        return "The file holds binary data, not a text table."
    return None
