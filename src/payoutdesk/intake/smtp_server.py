"""Our SMTP server (DESIGN §3, "E-mail to our SMTP server"): aiosmtpd on ``PAYOUTDESK_SMTP_PORT``, serving in
a background thread with its own event loop.

It accepts mail for the campaigns' returns addresses only: an unknown recipient is refused at ``RCPT``
(550 5.1.1), so is a sender the campaign's allowed-senders lists do not name (550 5.7.1). A message larger
than 1.4 times the file limit (room for base64) is refused with 552; the limit is announced in EHLO
(``SIZE``), and aiosmtpd holds a message in memory up to it, no further. The database work of a ``RCPT``
and a ``DATA`` runs in a thread pool, so a slow mail does not hold up the other sessions; what becomes of a
mail is ``mail_intake``'s. A mail that cannot be taken just now (the database is away) is answered 451, and
the sender's server tries again later.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session, syntax

from payoutdesk.intake import mail_intake
from payoutdesk.intake.common import IntakeContext
from payoutdesk.kit import logs, net

log = logging.getLogger("payoutdesk.intake")

MAX_RECIPIENTS = 20
MAX_RECEIVING = 4  # mails received and taken at once
WORKERS = MAX_RECEIVING + 2  # threads that take mails and check recipients
SESSION_TIMEOUT_SECONDS = 300
STOP_SECONDS = 4.0


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

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        content = envelope.original_content
        if content is None:
            raw = envelope.content
            content = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else (raw or b"")
        if isinstance(server, _Session):
            server.hold_timeout()
        try:
            outcome = await asyncio.get_running_loop().run_in_executor(
                self.executor, mail_intake.take_mail, self.ctx, envelope.mail_from or "", list(envelope.rcpt_tos),
                content)
        except Exception:  # nothing answered 250 yet: the sender's server tries again later
            log.exception("smtp: a mail from %s could not be taken", _peer(session))
            return "451 4.3.0 The mail cannot be taken just now; try again later"
        finally:
            if isinstance(server, _Session):
                server.resume_timeout()
        if outcome.queued:
            return "250 2.0.0 Taken: " + ", ".join(outcome.queued)[:400]
        return "250 2.0.0 Received, but no returns file was taken from it"


def _peer(session: Session) -> str:
    peer = getattr(session, "peer", None)
    if isinstance(peer, tuple) and peer:
        return f"{peer[0]}:{peer[1]}" if len(peer) > 1 else str(peer[0])
    return str(peer)


class _Session(SMTP):
    """One SMTP connection, known to its server so that ``stop`` can end it. At most ``MAX_RECEIVING`` mails
    are received and taken at once (each is held in memory up to the size limit); a mail beyond that is
    answered 451 at ``DATA`` and comes again later. The idle timeout counts from the last bytes received, not
    from the ``DATA`` command, and does not run while a mail is being taken."""

    def __init__(self, owner: SmtpServer, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._owner = owner

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
        envelope = self.envelope
        if envelope is not None and envelope.rcpt_tos and not arg and self._owner.receiving >= MAX_RECEIVING:
            await self.push("451 4.3.2 Too many mails arriving at once; try again later")
            return
        self._owner.receiving += 1
        try:
            await super().smtp_DATA(arg)
        finally:
            self._owner.receiving -= 1


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
