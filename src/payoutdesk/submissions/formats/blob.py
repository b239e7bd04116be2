"""The bytes of a returns file as the readers take them: in memory, or in a file on disk.

A reader never needs a whole file in memory: it asks a :class:`Blob` for a fresh stream from the
start (``open``) as often as it needs one (CSV is read in several passes), and a zip or a workbook
seeks in that stream. :class:`FileBlob` reads a file on disk through independent handles (each with
its own position, by ``os.pread``), so the worker spools a stored file to one anonymous temporary
file (:func:`spool`) and every pass reads it from there.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

_BUFFER = 256 * 1024


class Blob:
    """A file's bytes: ``size`` and ``open()``, a fresh binary stream from the start each call."""

    size: int

    def open(self) -> BinaryIO:
        raise NotImplementedError

    def head(self, n: int) -> bytes:
        """The first ``n`` bytes (fewer when the file is shorter)."""
        with self.open() as stream:
            return stream.read(n)

    def close(self) -> None:
        """Give back what the blob holds (a file descriptor); later ``open`` calls fail."""


class BytesBlob(Blob):
    """Bytes in memory: small files, and the tests' files."""

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.size = len(self.data)

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data)

    def head(self, n: int) -> bytes:
        return self.data[:n]


class _Positional(io.RawIOBase):
    """A read-only, seekable view of a file descriptor with its own position (``os.pread``)."""

    def __init__(self, fd: int, size: int) -> None:
        super().__init__()
        self._fd = fd
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        data = os.pread(self._fd, want, self._pos)
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def tell(self) -> int:
        return self._pos


class FileBlob(Blob):
    """A file on disk, opened once; each ``open()`` is an independent buffered reader of it."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd: int | None = fd
        self.size = size

    @classmethod
    def of_path(cls, path: str | Path) -> FileBlob:
        fd = os.open(path, os.O_RDONLY)
        return cls(fd, os.fstat(fd).st_size)

    def open(self) -> BinaryIO:
        if self._fd is None:
            raise ValueError("the blob is closed")
        return io.BufferedReader(_Positional(self._fd, self.size), _BUFFER)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()


def spool(parts: Iterable[bytes], *, in_memory_up_to: int = 0, limit: int | None = None) -> Blob:
    """The bytes of ``parts`` as a blob: in memory when they are at most ``in_memory_up_to`` bytes, else in
    an anonymous temporary file (gone when the blob is closed or collected, or the process ends).
    ``limit``: raise ``ValueError`` past that many bytes."""
    held: list[bytes] = []
    size = 0
    spill: BinaryIO | None = None
    try:
        for part in parts:
            size += len(part)
            if limit is not None and size > limit:
                raise ValueError(f"more than {limit} bytes")
            if spill is None and size <= in_memory_up_to:
                held.append(part)
                continue
            if spill is None:
                spill = tempfile.TemporaryFile()  # noqa: SIM115 - handed over to the FileBlob below
                for h in held:
                    spill.write(h)
                held = []
            spill.write(part)
        if spill is None:
            return BytesBlob(b"".join(held))
        spill.flush()
        fd = os.dup(spill.fileno())
    finally:
        if spill is not None:
            spill.close()
    return FileBlob(fd, size)
