"""Our SMTP server (DESIGN §3, "E-mail to our SMTP server"): aiosmtpd on ``PAYOUTDESK_SMTP_PORT``, serving in
a background thread with its own event loop.

It accepts mail for the campaigns' returns addresses only: an unknown recipient is refused at ``RCPT``
(550 5.1.1), so is a sender the campaign's allowed-senders lists do not name (550 5.7.1). A message larger
than 1.4 times the file limit (room for base64) is refused with 552; the limit is announced in EHLO
(``SIZE``). The database work of a ``RCPT`` and a ``DATA`` runs in a thread pool, so a slow mail does not
hold up the other sessions; what becomes of a mail is ``mail_intake``'s. A mail that cannot be taken just
now (the database is away) is answered 451, and the sender's server tries again later.

``DATA`` is ours, not aiosmtpd's (DESIGN §6, "Bounded memory"): the message is read in blocks as it
arrives, its dot-stuffing undone and its end (``CRLF.CRLF``) found across the blocks by ``DataStream``,
and written to a private spool file (``<data dir>/smtp-spool``, mode 0600 in a 0700 folder, deleted once
the mail is taken; what a process that died left there is deleted at the next start). The size limit is
enforced as the message arrives: past it, 552 at once, nothing more is written, and the rest is read and
dropped up to the end marker so that the session goes on (the same, with 452, when the disk is full).
``mail_intake`` then reads the spooled mail with ``mime_stream``, a part at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from aiosmtpd.smtp import SMTP, Envelope, Session, syntax

from payoutdesk.intake import mail_intake, spool
from payoutdesk.intake.common import IntakeContext
from payoutdesk.kit import logs, net

log = logging.getLogger("payoutdesk.intake")

MAX_RECIPIENTS = 20
MAX_RECEIVING = 4  # mails received and taken at once
WORKERS = MAX_RECEIVING + 2  # threads that take mails and check recipients
SESSION_TIMEOUT_SECONDS = 300
STOP_SECONDS = 4.0
SPOOL_FOLDER = "smtp-spool"
END = b"\r\n.\r\n"  # the end of DATA (RFC 5321 §4.1.1.4)


def spool_dir(data_dir: Path) -> Path:
    """The private folder of mails being received and taken (mode 0700)."""
    return spool.spool_dir(data_dir, SPOOL_FOLDER)


def clean_spool(data_dir: Path, older_than_seconds: float = 86_400) -> int:
    """Delete spool files left by a process that died; how many (intake/spool.py)."""
    return spool.clean_spool(data_dir, SPOOL_FOLDER, older_than_seconds)


def open_spool(fd: int) -> IO[bytes]:
    """The spool file of a mail being received, for writing."""
    return os.fdopen(fd, "wb")


class DataStream:
    """The text after ``DATA`` as it arrives in blocks of any sizes: ``feed`` returns the message bytes of a
    block (dot-stuffing undone: a line that starts with a dot loses it) and sets ``ended`` at the end marker
    (a line holding a lone dot). Bytes that cannot be decided yet (a block ending in ``CR``, ``CRLF``,
    ``CRLF.`` or ``CRLF.CR``) are kept for the next block; ``need`` says how many more bytes decide them,
    so that a reader never reads past the end marker (what follows it is the next command)."""

    def __init__(self) -> None:
        self._carry = b"\r\n"  # the line ending of the DATA command: the first line starts after it
        self._skip = 2  # ... and is no part of the message
        self.ended = False
        self.size = 0  # message bytes returned so far

    @property
    def need(self) -> int:
        """0 when nothing is pending, else the bytes that complete the end marker if it is one."""
        return len(END) - len(self._carry) if self._carry else 0

    def feed(self, block: bytes) -> bytes:
        if self.ended:
            raise ValueError("the message has ended")
        buf = self._carry + block if self._carry else block
        pending = 0
        for m in (4, 3, 2, 1):  # the longest end of buf that may begin the end marker stays undecided
            if buf.endswith(END[:m]):
                pending = m
                break
        limit = len(buf) - pending
        out: list[bytes] = []
        i = 0
        while True:
            j = buf.find(b"\r\n.", i)
            if j < 0 or j >= limit:
                break
            out.append(buf[i:j + 2])
            if buf[j + 3:j + 5] == b"\r\n":  # the end marker
                if j + 5 != len(buf):
                    raise ValueError("bytes after the end marker")
                self.ended = True
                self._carry = b""
                return self._out(out)
            i = j + 3  # a dot-stuffed line: its first dot goes
        out.append(buf[i:limit])
        self._carry = buf[limit:]
        return self._out(out)

    def _out(self, out: list[bytes]) -> bytes:
        data = b"".join(out)
        if self._skip:
            cut = min(self._skip, len(data))
            data = data[cut:]
            self._skip -= cut
        self.size += len(data)
        return data


def size_limit(ctx: IntakeContext) -> int:
    """The largest message taken: the file limit and room for its base64 encoding and the mail around it."""
    return int(ctx.settings.max_file_bytes * 1.4)


class _Handler:
    """aiosmtpd's hooks: check each recipient, take each mail (both in the server's thread pool)."""

    def __init__(self, ctx: IntakeContext, executor: ThreadPoolExecutor) -> None:
        self.ctx = ctx
        self.executor = executor

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,  # noqa: N802
                          rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        sender = envelope.mail_from or ""
        try:
            verdict = await asyncio.get_running_loop().run_in_executor(
                self.executor, mail_intake.check_recipient, self.ctx, sender, address)
        except Exception as exc:  # noqa: BLE001 - the database is away: the sender tries again later
            logs.event(log, f"smtp: recipient {address[:200]} not checked: {exc}", level=logging.WARNING,
                       event="smtp_error", server="smtp")
            return "451 4.3.0 The address cannot be checked just now; try again later"
        if verdict.refusal is not None:
            logs.event(log, f"smtp: {address[:200]} refused for {mail_intake.bare_sender(sender)[:200] or '<>'} "
                       f"from {_peer(session)}: {verdict.refusal[4:]}",
                       event="rcpt_refused", server="smtp", reply=verdict.refusal[:9])
            return verdict.refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def take(self, server: SMTP, session: Session, envelope: Envelope, spool: Path) -> str:
        """Take the mail spooled at ``spool`` (in the thread pool, which deletes the file once done); the
        answer to the message."""
        started = threading.Event()

        def run() -> mail_intake.MailOutcome:
            started.set()
            try:
                return mail_intake.take_mail(self.ctx, envelope.mail_from or "", list(envelope.rcpt_tos), spool)
            finally:
                spool.unlink(missing_ok=True)

        if isinstance(server, _Session):
            server.hold_timeout()
        try:
            outcome = await asyncio.get_running_loop().run_in_executor(self.executor, run)
        except Exception:  # nothing answered 250 yet: the sender's server tries again later
            log.exception("smtp: a mail from %s could not be taken", _peer(session))
            return "451 4.3.0 The mail cannot be taken just now; try again later"
        finally:
            if not started.is_set():  # never began (the server stopping): not left behind
                spool.unlink(missing_ok=True)
            if isinstance(server, _Session):
                server.resume_timeout()
        if outcome.queued:
            return "250 2.0.0 Taken: " + ", ".join(outcome.queued)[:400]
        return "250 2.0.0 Received, but no returns file was taken from it"


def _peer(session: Session | None) -> str:
    peer = getattr(session, "peer", None)
    if isinstance(peer, tuple) and peer:
        return f"{peer[0]}:{peer[1]}" if len(peer) > 1 else str(peer[0])
    return str(peer)


class _Session(SMTP):
    """One SMTP connection, known to its server so that ``stop`` can end it. At most ``MAX_RECEIVING`` mails
    are received and taken at once; a mail beyond that is answered 451 at ``DATA`` and comes again later.
    The idle timeout counts from the last bytes received, not from the ``DATA`` command, and does not run
    while a mail is being taken."""

    def __init__(self, owner: SmtpServer, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._owner = owner
        self._handler = handler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._owner.sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._owner.sessions.discard(self)
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        self._reset_timeout()
        super().data_received(data)

    def hold_timeout(self) -> None:
        self._reset_timeout(24 * 3600)

    def resume_timeout(self) -> None:
        self._reset_timeout()

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        envelope = self.envelope
        assert envelope is not None
        if not envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        if self._owner.receiving >= MAX_RECEIVING:
            await self.push("451 4.3.2 Too many mails arriving at once; try again later")
            return
        self._owner.receiving += 1
        try:
            await self._data(envelope)
        finally:
            self._owner.receiving -= 1

    async def _data(self, envelope: Envelope) -> None:
        try:
            fd, name = tempfile.mkstemp(prefix="mail-", dir=spool_dir(self._owner.ctx.settings.data_dir))  # 0600
        except OSError as exc:
            logs.event(log, f"smtp: no spool file for a mail: {exc}", level=logging.WARNING, event="smtp_error",
                       server="smtp")
            await self.push("451 4.3.0 The mail cannot be received just now; try again later")
            return
        spool = Path(name)
        out: IO[bytes] | None = open_spool(fd)
        handed = False
        try:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            stream = DataStream()
            limit = self.data_size_limit
            while not stream.ended:
                block = await self._next_block(stream)
                if block is None:  # the connection went
                    return
                data = stream.feed(block)
                if out is None:
                    continue  # refused already: read to the end marker and drop, so that the session goes on
                refusal: str | None = None
                if limit and stream.size > limit:
                    logs.event(log, f"smtp: a mail from {_peer(self.session)} passed the limit of {limit:,} bytes",
                               level=logging.WARNING, event="mail_too_large", server="smtp", limit=limit)
                    refusal = f"552 5.3.4 The message is larger than the limit of {limit:,} bytes"
                else:
                    try:
                        out.write(data)
                    except OSError as exc:  # the disk is full: the sender's server tries again later
                        logs.event(log, f"smtp: a mail could not be spooled: {exc}", level=logging.WARNING,
                                   event="smtp_error", server="smtp")
                        refusal = "452 4.3.1 The mail cannot be stored just now; try again later"
                if refusal is not None:
                    self._drop(out, spool)
                    out = None
                    await self.push(refusal)  # at once: a client that reads it may stop sending
            if out is None:
                self.envelope = self._create_envelope()  # aiosmtpd's post-DATA state
                return
            try:
                out.close()
            except OSError:
                self._drop(out, spool)
                out = None
                self.envelope = self._create_envelope()
                await self.push("452 4.3.1 The mail cannot be stored just now; try again later")
                return
            out = None
            handed = True
            assert self.session is not None
            status = await self._handler.take(self, self.session, envelope, spool)
            self.envelope = self._create_envelope()  # aiosmtpd's post-DATA state
            await self.push(status)
        finally:
            if out is not None:
                self._drop(out, spool)
            if not handed:
                spool.unlink(missing_ok=True)

    @staticmethod
    def _drop(out: IO[bytes], spool: Path) -> None:
        with contextlib.suppress(OSError):
            out.close()
        spool.unlink(missing_ok=True)

    async def _next_block(self, stream: DataStream) -> bytes | None:
        """The next bytes of the message text, never beyond its end marker: a few bytes that decide a
        pending end, or what the reader holds up to the end marker."""
        reader = self._reader
        try:
            if stream.need:
                return await reader.readexactly(stream.need)
            try:
                return await reader.readuntil(END)
            except asyncio.LimitOverrunError as exc:  # no end marker in what has arrived: take that
                return await reader.read(exc.consumed)
        except asyncio.IncompleteReadError:
            return None


class SmtpServer:
    """The running server (``kit.net.RunningServer``)."""

    name = "smtp"

    def __init__(self, ctx: IntakeContext, sock: socket.socket, host: str) -> None:
        self.ctx = ctx
        self.host = host
        self.port = int(sock.getsockname()[1])
        self.sessions: set[_Session] = set()
        self.receiving = 0  # sessions in DATA (read and written on the server's event loop only)
        self._sock = sock
        self._executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="smtp-mail")
        self._handler = _Handler(ctx, self._executor)
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"smtp-{self.port}", daemon=True)

    def _session(self) -> _Session:
        return _Session(self, self._handler, data_size_limit=size_limit(self.ctx), enable_SMTPUTF8=True,
                        hostname=self.ctx.settings.mail_domain, ident="payoutdesk ESMTP",
                        timeout=SESSION_TIMEOUT_SECONDS, loop=self._loop)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            clean_spool(self.ctx.settings.data_dir)
        except OSError:
            log.warning("smtp: the spool folder could not be cleaned", exc_info=True)
        try:
            self._server = self._loop.run_until_complete(self._loop.create_server(self._session, sock=self._sock))
        except BaseException as exc:  # noqa: BLE001 - handed to start(), which raises it
            self._error = exc
            self._ready.set()
            return
        logs.event(log, f"SMTP server listening on {net.shown_host(self.host)}:{self.port} (returns addresses "
                   f"returns-<token>@{self.ctx.settings.mail_domain}, messages up to {size_limit(self.ctx):,} bytes)",
                   event="bound", server="smtp", address=self.host, port=self.port)
        self._ready.set()
        self._loop.run_forever()

    def begin(self) -> None:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None or self._server is None:
            self._sock.close()
            self._executor.shutdown(wait=False)
            raise net.BindFailed(f"cannot serve SMTP on {self.host}:{self.port}: {self._error or 'no start'}")

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for s in list(self.sessions):
            if s.transport is not None:
                s.transport.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_SECONDS / 2)

    def stop(self) -> None:
        """Stop listening and end the sessions in flight (a mail not yet answered 250 is sent again by its
        sender's server); returns within a few seconds."""
        if self._stopped:
            return
        self._stopped = True
        if self._loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(STOP_SECONDS)
            except Exception:  # stopping anyway
                log.warning("smtp: sessions did not end in time", exc_info=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(STOP_SECONDS)
        if not self._thread.is_alive():
            self._loop.close()
        self._sock.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        logs.event(log, f"smtp server on {self.host}:{self.port} stopped", event="stopped", server="smtp",
                   port=self.port)


def start(ctx: IntakeContext, host: str, port: int) -> SmtpServer:
    """Listen on ``host``:``port`` (0: any free port; ``.port`` tells which) and serve in the background;
    ``kit.net.BindFailed`` when the port cannot be had."""
    sock = net.bind(host, port)
    server = SmtpServer(ctx, sock, host)
    server.begin()
    return server
