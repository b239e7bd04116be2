"""Bytes cut into pieces of one size, whatever sizes they arrive in."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import BinaryIO


def in_pieces(parts: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The bytes of ``parts`` again, cut or joined into pieces of exactly ``size`` bytes (the last shorter)."""
    pending = bytearray()
    for part in parts:
        if not part:
            continue
        if not pending and len(part) == size:
            yield bytes(part)
            continue
        pending += part
        while len(pending) >= size:
            yield bytes(pending[:size])
            del pending[:size]
    if pending:
        yield bytes(pending)


def read_in(stream: BinaryIO, size: int) -> Iterator[bytes]:
    """``stream`` read to its end in pieces of (at most) ``size`` bytes."""
    return iter(lambda: stream.read(size), b"")
