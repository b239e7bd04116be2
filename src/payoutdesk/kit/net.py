"""Listening sockets of the servers (HTTP, FTP, SMTP) and the shape of a running server."""

from __future__ import annotations

import socket
from typing import Protocol


class BindFailed(Exception):
    """A server's address or port cannot be listened on (in use, not an address of this machine)."""


def bind(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket bound to ``host``:``port``, or ``BindFailed`` saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise BindFailed(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        why = "the port is in use by another process" if exc.errno in (98, 48, 10048) else exc.strerror or str(exc)
        raise BindFailed(f"cannot listen on {host}:{port}: {why}") from None
    return sock


def shown_host(host: str) -> str:
    """How to name a listening address in a message people copy (localhost for the wildcard ones)."""
    return "localhost" if host in ("127.0.0.1", "0.0.0.0", "::", "::1", "") else host  # noqa: S104


class RunningServer(Protocol):
    """An intake server started in the background (``ftp_server.start``, ``smtp_server.start``)."""

    name: str  # ftp, smtp
    port: int  # the port it listens on (the real one when 0 was asked)

    def stop(self) -> None:
        """Stop listening and end the sessions in flight (an upload cut off is not queued); returns
        within a few seconds."""
