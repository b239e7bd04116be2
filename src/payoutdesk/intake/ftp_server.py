"""Our FTP server (DESIGN §3, "Upload to our FTP server"): one login per campaign, whose home folder
(``intake.ftp_fs``) takes uploads and shows their results.

- **Login.** The user name is the campaign's ``ftp_username``, the password is checked against its
  argon2 hash (``PATCH /api/v1/campaigns/{id}`` with ``ftp_password`` sets it). An unknown user name
  costs the same hashing as a wrong password.
- **Uploads.** STOR into ``/`` is spooled to a private file while it arrives (at most
  ``PAYOUTDESK_MAX_FILE_MB``: past it the transfer is stopped with 552), then stored and queued by
  ``take_file`` before the final reply, which says what became of the file: ``226 … queued as F-17``,
  or ``550`` with the reason for a duplicate (same SHA-256 already submitted for the campaign) or an
  empty file, ``451`` when the database failed. Each upload is an intake run (channel ``ftp``, trigger
  ``upload``, source ``campaign:<id>:ftp``). An upload cut off (the connection reset, ABOR, the control
  connection closed, the server stopped) queues nothing and leaves nothing behind. In FTP's stream mode
  the end of a file *is* the sender closing the data connection, so a sender that closes it cleanly
  half-way looks like a complete, shorter file; a reset does not.
- **Refused.** APPE, REST before STOR, STOU, MKD, RMD, DELE, RNFR/RNTO, SITE CHMOD, MFMT: 550 with
  the reason. Uploads are stored in binary form whatever TYPE says (the bytes as sent).
- **FTPS.** With ``PAYOUTDESK_FTP_TLS_CERT`` (and the key in ``PAYOUTDESK_FTP_TLS_KEY`` or the same
  PEM), explicit TLS (AUTH TLS, TLS 1.2 or later); with ``PAYOUTDESK_FTP_TLS_REQUIRED`` USER and PASS
  before AUTH TLS answer 530 and data connections need PROT P.
- **Failed logins** (``LoginThrottle``): each failure from an address is answered after a delay that
  grows with that address's failures in the last 10 minutes (0.5 s per failure, at most 5 s); the 10th
  refuses the address for 15 minutes (421 at connect and login). This state is kept in memory by each
  process: several FTP processes each count on their own, and a restart forgets it.
- **Concurrency.** pyftpdlib's threaded server: each session runs in its own thread, so the database
  work of one upload holds up no other session.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from OpenSSL import SSL
from pyftpdlib.authorizers import AuthenticationFailed
from pyftpdlib.handlers import DTPHandler, FTPHandler, TLS_FTPHandler
from pyftpdlib.handlers.ftps.ssl import SSLConnectionMixin
from pyftpdlib.ioloop import _ERRNOS_DISCONNECTED, _ERRNOS_RETRY, IOLoop, _RetryError
from pyftpdlib.log import logger as ftp_logger
from pyftpdlib.servers import ThreadedFTPServer
from pyftpdlib.utils import is_ssl_sock

from payoutdesk.accounts.service import hash_password, verify_password
from payoutdesk.intake import repository as repo
from payoutdesk.intake import runs
from payoutdesk.intake.common import IntakeContext, Taken, take_file
from payoutdesk.intake.ftp_fs import CampaignFS, Upload, clean_spool
from payoutdesk.kit import db, logs, net
from payoutdesk.ledger.workflow import Channel

log = logging.getLogger("payoutdesk.intake.ftp")

BANNER = "payoutdesk FTP: upload returns files to /, results appear in /results."
MAX_USERNAME = 64


# --- failed logins ---------------------------------------------------------------------------------


@dataclass
class LoginThrottle:
    """Failed logins per client address, in this process's memory: a delay growing with the failures of
    the last ``window`` seconds, and after ``max_failures`` of them the address refused for ``block``."""

    max_failures: int = 10
    window: float = 600.0
    block: float = 900.0
    delay_step: float = 0.5
    max_delay: float = 5.0
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _blocked: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def blocked_for(self, address: str, now: float | None = None) -> float:
        """Seconds the address is still refused (0: not refused)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            until = self._blocked.get(address)
            if until is None:
                return 0.0
            if until <= now:
                del self._blocked[address]
                return 0.0
            return until - now

    def refusal(self, address: str) -> str | None:
        """The 421 reply for a refused address, or None."""
        wait = self.blocked_for(address)
        if not wait:
            return None
        return f"421 Too many failed logins from {address}; try again in {max(1, round(wait / 60))} minutes."

    def failed(self, address: str, now: float | None = None) -> tuple[float, bool]:
        """Note a failed login: (the delay before answering it, whether the address is now refused)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._failures) > 10_000:  # forget the addresses whose failures are all old
                for addr in [a for a, q in self._failures.items() if not q or q[-1] <= now - self.window]:
                    del self._failures[addr]
            seen = self._failures.setdefault(address, deque())
            while seen and seen[0] <= now - self.window:
                seen.popleft()
            seen.append(now)
            if len(seen) >= self.max_failures:
                self._blocked[address] = now + self.block
                del self._failures[address]
                return 0.0, True
            return min(self.delay_step * len(seen), self.max_delay), False


# --- logins ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Login:
    account_id: int
    campaign_id: int
    username: str


class CampaignAuthorizer:
    """pyftpdlib's authorizer: a user is a campaign's FTP login; what may be done is decided by the
    virtual filesystem and the handler, not by permission letters."""

    def __init__(self, ctx: IntakeContext) -> None:
        self.ctx = ctx
        self._dummy: str | None = None

    def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = hash_password("no such FTP login: the same work as a wrong password")
        return self._dummy

    def validate_authentication(self, username: str, password: str, handler: Any) -> None:
        row = None
        if 0 < len(username) <= MAX_USERNAME:
            with db.read(self.ctx.engine) as conn:
                row = repo.campaign_by_ftp_username(conn, username)
        stored = str(row.ftp_password_hash) if row is not None else self._dummy_hash()
        if not verify_password(stored, password) or row is None:
            raise AuthenticationFailed("Authentication failed.")
        handler.login = Login(int(row.account_id), int(row.id), username)

    def get_home_dir(self, username: str) -> str:
        return "/"

    def has_user(self, username: str) -> bool:
        return True

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        return True

    def get_perms(self, username: str) -> str:
        return "elrw"

    def get_msg_login(self, username: str) -> str:
        return "Logged in. Upload returns files to /; results appear in /results."

    def get_msg_quit(self, username: str) -> str:
        return "Goodbye."

    def impersonate_user(self, username: str, password: str) -> None:
        return None

    def terminate_impersonation(self, username: str) -> None:
        return None


# --- the data connection ---------------------------------------------------------------------------


def _reset(err: BaseException) -> bool:
    """Whether a receive error says the peer reset the connection (pyOpenSSL's SysCallError under TLS)."""
    args: tuple[Any, ...] = getattr(err, "args", ())
    return isinstance(err, SSL.SysCallError) and bool(args) and args[0] in _ERRNOS_DISCONNECTED


class _UploadDTP(DTPHandler):  # type: ignore[misc]  # pyftpdlib is untyped
    """The data connection: tells a complete upload from one cut off, stops one past the size limit, and
    has the upload taken before the final reply so that the reply says what became of it."""

    _cut_off = False

    def enable_receiving(self, type: str, cmd: str) -> None:
        super().enable_receiving("i", cmd)  # the bytes as sent, whatever TYPE says

    def recv(self, buffer_size: int) -> bytes:
        try:
            data: bytes = self.socket.recv(buffer_size)
        except OSError as err:
            if err.errno in _ERRNOS_DISCONNECTED:
                self._cut_off = True
                self.handle_close()
                return b""
            if err.errno in _ERRNOS_RETRY:
                raise _RetryError from err
            raise
        except Exception as err:
            if _reset(err):
                self._cut_off = True
            raise  # the TLS layer handles it (and closes)
        if not data:
            self.handle_close()
            return b""
        return data

    def handle_read(self) -> None:
        DTPHandler.handle_read(self)
        upload = self.file_obj
        if isinstance(upload, Upload) and upload.too_large and not self._closed:
            self.transfer_finished = False
            mib = upload.limit // (1024 * 1024)
            self._resp = (f"552 The file is larger than the limit of {mib} MB (PAYOUTDESK_MAX_FILE_MB); "
                          "transfer stopped, nothing was taken. Split it into smaller files.", ftp_logger.info)
            self.close()

    handle_read_event = handle_read

    def handle_close(self) -> None:
        if self.receive and self._cut_off and not self._closed:
            self.transfer_finished = False
            self._resp = (f"426 The connection was cut off after {self.get_transmitted_bytes():,} bytes; "
                          "nothing was taken, upload the file again.", ftp_logger.info)
            self.close()
            return
        super().handle_close()

    def close(self) -> None:
        upload = self.file_obj
        if not self._closed and self.receive and isinstance(upload, Upload):
            upload.close()
            if self.transfer_finished and not upload.too_large:
                self._resp = (self.cmd_channel.take_upload(upload), ftp_logger.info)
            else:
                self.cmd_channel.drop_upload(upload, self._resp[0] if self._resp else "")
        super().close()


class _UploadTLSDTP(SSLConnectionMixin, _UploadDTP):  # type: ignore[misc]
    """``_UploadDTP`` under TLS: pyftpdlib's ``TLS_DTPHandler`` with the upload handling below the TLS layer."""

    def __init__(self, sock: Any, cmd_channel: Any) -> None:
        super().__init__(sock, cmd_channel)
        if self.cmd_channel._prot:
            self.secure_connection(self.cmd_channel.ssl_context)

    def use_sendfile(self) -> bool:
        return False if is_ssl_sock(self.socket) else bool(super().use_sendfile())

    def handle_failed_ssl_handshake(self) -> None:
        self.cmd_channel.respond("522 SSL handshake failed.")
        self.close()


# --- the control connection ------------------------------------------------------------------------


class _Session:
    """What both handlers (plain and TLS) add to pyftpdlib's: the throttle, the campaign logged in, the
    refusals with their reasons, and taking an upload."""

    ctx: IntakeContext
    throttle: LoginThrottle
    login: Login | None = None

    # pyftpdlib's, for the type checker
    remote_ip: str
    username: str
    auth_failed_timeout: float
    _restart_position: int
    if TYPE_CHECKING:
        def respond(self, resp: str, logfun: Any = ...) -> None: ...
        def close_when_done(self) -> None: ...

    def _refuse_blocked(self) -> bool:
        reply = self.throttle.refusal(self.remote_ip)
        if reply is None:
            return False
        self.respond(reply)
        self.close_when_done()
        return True

    def ftp_PASS(self, line: str) -> None:  # noqa: N802 - pyftpdlib's name
        if self._refuse_blocked():
            return
        super().ftp_PASS(line)  # type: ignore[misc]

    def handle_auth_failed(self, msg: str, password: str) -> None:
        delay, blocked = self.throttle.failed(self.remote_ip)
        logs.event(log, f"ftp: failed login as {self.username[:64]!r} from {self.remote_ip}"
                        f"{' (address refused for a while)' if blocked else ''}",
                   level=logging.WARNING, event="ftp_login_failed", address=self.remote_ip, refused=blocked)
        if blocked:
            self.username = ""
            self._refuse_blocked()
            return
        self.auth_failed_timeout = delay
        super().handle_auth_failed(msg, password)  # type: ignore[misc]

    def flush_account(self) -> None:
        super().flush_account()  # type: ignore[misc]
        self.login = None

    # --- refusals with their reasons

    def ftp_STOR(self, file: str, mode: str = "w") -> Any:  # noqa: N802 - pyftpdlib's name
        if self._restart_position:
            self._restart_position = 0
            self.respond("550 Resumed uploads (REST) are refused: upload the whole file again.")
            return None
        return super().ftp_STOR(file, mode)  # type: ignore[misc]

    def ftp_APPE(self, file: str) -> None:  # noqa: N802 - pyftpdlib's name
        self._restart_position = 0
        self.respond("550 Appending to a file is refused: upload the whole file with STOR.")

    def ftp_STOU(self, line: str) -> None:  # noqa: N802 - pyftpdlib's name
        self.respond("550 Uploads need a file name (STOU is refused): use STOR.")

    def ftp_RNFR(self, path: str) -> None:  # noqa: N802 - pyftpdlib's name
        self.respond("550 Files cannot be renamed here: upload under the final name.")

    def ftp_RNTO(self, path: str) -> None:  # noqa: N802 - pyftpdlib's name
        self.respond("550 Files cannot be renamed here: upload under the final name.")

    def ftp_MFMT(self, path: str, timeval: str) -> None:  # noqa: N802 - pyftpdlib's name
        self.respond("550 Times cannot be changed here.")

    # --- uploads

    def take_upload(self, upload: Upload) -> str:
        """Store and queue a complete upload; the final reply."""
        login = self.login
        try:
            if login is None:  # the session logged out (REIN, USER) while the file arrived
                return "426 The login ended during the transfer; nothing was taken."
            try:
                taken = take_file(self.ctx, account_id=login.account_id, campaign_id=login.campaign_id,
                                  channel=Channel.FTP, actor_name=login.username, parts=upload.parts(),
                                  file_name=upload.file_name)
            except Exception as exc:
                log.exception("ftp: %s for campaign %s could not be taken", upload.file_name, login.campaign_id)
                self._record(login, upload, None, error=f"{upload.file_name} could not be taken: {exc}")
                return "451 The file could not be stored (a local error); nothing was taken, upload it again."
            self._record(login, upload, taken)
            if taken.outcome == "queued":
                return f"226 Transfer complete: {upload.file_name} queued as {taken.label}."
            return "550 " + _one_line(taken.message)
        finally:
            upload.discard()

    def drop_upload(self, upload: Upload, reply: str) -> None:
        """An upload that did not complete: nothing is taken; the run says why."""
        upload.discard()
        login = self.login
        if login is None:
            return
        why = reply[4:] if reply[:3].isdigit() else "the transfer was aborted; nothing was taken"
        logs.event(log, f"ftp: {upload.file_name} for campaign {login.campaign_id} not taken: {why}",
                   level=logging.WARNING, event="file_refused", channel="ftp", campaign=login.campaign_id,
                   file_name=upload.file_name)
        self._record(login, upload, None, error=f"{upload.file_name}: {why}")

    def _record(self, login: Login, upload: Upload, taken: Taken | None, error: str | None = None) -> None:
        counts = runs.RunCounts()
        if taken is not None:
            if taken.outcome == "queued" and taken.label:
                counts.files_taken = 1
                counts.submissions.append(taken.label)
            elif taken.outcome == "duplicate":
                counts.duplicates = 1
                counts.notes.append(f"{upload.file_name}: {taken.message}")
            else:
                error = f"{upload.file_name}: {taken.message}"
        try:
            runs.record(self.ctx, account_id=login.account_id, campaign_id=login.campaign_id, event_type_id=None,
                        channel="ftp", trigger="upload", counts=counts, source=f"campaign:{login.campaign_id}:ftp",
                        error=error, what=f"an upload to the FTP login of campaign {login.campaign_id}")
        except Exception:
            log.exception("ftp: the intake run of %s could not be recorded", upload.file_name)


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _Handler(_Session, FTPHandler):  # type: ignore[misc]  # pyftpdlib is untyped
    pass


class _TLSHandler(_Session, TLS_FTPHandler):  # type: ignore[misc]
    def process_command(self, cmd: str, *args: Any, **kwargs: Any) -> None:
        if cmd in ("USER", "PASS") and self.tls_control_required and not self._ssl_established:
            self.respond("530 FTPS is required here: send AUTH TLS before USER and PASS.")
            return
        super().process_command(cmd, *args, **kwargs)


# --- the server ------------------------------------------------------------------------------------


class _Server(ThreadedFTPServer):  # type: ignore[misc]
    poll_timeout = 0.2  # how soon session threads see the server stopping
    join_timeout = 3
    max_cons = 256
    max_cons_per_ip = 16

    def __init__(self, sock: Any, handler: Any) -> None:
        super().__init__(sock, handler, ioloop=IOLoop())  # its own loop: not pyftpdlib's one per process
        # pyftpdlib keeps these on the class: one server's stop would end every server's sessions
        self._exit = threading.Event()
        self._lock = threading.Lock()

    def handle_accepted(self, sock: Any, addr: Any) -> Any:
        reply = self.handler.throttle.refusal(addr[0])
        if reply is not None:  # a refused address is told so and let go before any session starts
            with contextlib.suppress(OSError):
                sock.sendall(f"{reply}\r\n".encode())
            sock.close()
            return None
        return super().handle_accepted(sock, addr)


class FtpServer:
    """A running FTP server (``kit.net.RunningServer``)."""

    name = "ftp"

    def __init__(self, server: _Server, port: int) -> None:
        self.port = port
        self._server = server
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="payoutdesk-ftp", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            while not self._stopping.is_set():
                self._server.serve_forever(timeout=0.2, blocking=False, handle_exit=False)
        except Exception:
            log.exception("ftp: the server stopped on an error")
        finally:
            self._server.close_all()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(8)


def _quiet_pyftpdlib() -> None:
    """pyftpdlib logs every command at INFO unless told otherwise; payoutdesk logs what matters itself."""
    lib = logging.getLogger("pyftpdlib")
    if not lib.handlers:
        lib.addHandler(logging.NullHandler())
        lib.setLevel(logging.WARNING)


def handler_class(ctx: IntakeContext, throttle: LoginThrottle) -> type[Any]:
    """The handler of one server, configured from the settings (pyftpdlib configures by class attributes)."""
    s = ctx.settings
    attrs: dict[str, Any] = {
        "ctx": ctx, "throttle": throttle, "authorizer": CampaignAuthorizer(ctx), "abstracted_fs": CampaignFS,
        "dtp_handler": _UploadDTP, "banner": BANNER, "max_login_attempts": 3, "permit_foreign_addresses": False,
        "passive_ports": list(range(s.ftp_passive_ports[0], s.ftp_passive_ports[1] + 1)) if s.ftp_passive_ports
        else None,
        "masquerade_address": s.ftp_masquerade_address or None,
    }
    if not s.ftp_tls_cert:
        return type("PayoutdeskFTPHandler", (_Handler,), attrs)
    attrs.update({
        "dtp_handler": _UploadTLSDTP, "certfile": s.ftp_tls_cert, "keyfile": s.ftp_tls_key or None,
        "ssl_context": None, "tls_control_required": s.ftp_tls_required, "tls_data_required": s.ftp_tls_required,
        "ssl_options": TLS_FTPHandler.ssl_options | SSL.OP_NO_TLSv1 | SSL.OP_NO_TLSv1_1,
    })
    return type("PayoutdeskFTPSHandler", (_TLSHandler,), attrs)


def start(ctx: IntakeContext, host: str, port: int, *, throttle: LoginThrottle | None = None) -> FtpServer:
    """Listen on ``host``:``port`` (0: any free port) and serve in the background; ``BindFailed`` when the
    address cannot be listened on. A TLS certificate that cannot be loaded is a ``ValueError``."""
    _quiet_pyftpdlib()
    sock = net.bind(host, port)
    try:
        handler = handler_class(ctx, throttle or LoginThrottle())
        try:
            server = _Server(sock, handler)
        except (OSError, SSL.Error, ValueError) as exc:
            raise ValueError(f"the FTPS certificate or key cannot be used (PAYOUTDESK_FTP_TLS_CERT, "
                             f"PAYOUTDESK_FTP_TLS_KEY): {exc}") from None
        clean_spool(ctx.settings.data_dir)
    except BaseException:
        sock.close()
        raise
    real_port = int(sock.getsockname()[1])
    running = FtpServer(server, real_port)
    tls = " (FTPS)" if ctx.settings.ftp_tls_cert else ""
    logs.event(log, f"FTP server{tls} listening on {net.shown_host(host)}:{real_port}", event="bound", server="ftp",
               address=host, port=real_port)
    return running


__all__ = ["FtpServer", "LoginThrottle", "start"]
