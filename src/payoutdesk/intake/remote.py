"""The brand's server of a pull (DESIGN §3, "Pull from your FTP server"): FTP, FTPS (explicit, ``AUTH TLS``)
and SFTP behind one small interface.

``connect(endpoint)`` logs in (trying the connection ``len(CONNECT_DELAYS) + 1`` times, waiting those delays
between attempts; a refused login is not retried) and gives a ``Remote``: list a folder (``list_folder``: files
with their size and modification time, folders marked), read a file as an iterator of chunks (never the whole file
in memory), write a file from chunks, delete, rename. Every socket has a timeout (``TIMEOUT_SECONDS``), for
connecting and for every read and write.

Errors are ``RemoteError``s whose text is written for the brand's partnership manager (what happened and
what to check), never with a password in it.

Host keys and certificates are not verified: the settings hold no expected fingerprint yet. The transport
is still encrypted (FTPS, SFTP); a forged server could read the returns file and the login.
"""

from __future__ import annotations

import contextlib
import errno
import ftplib
import io
import logging
import posixpath
import socket
import ssl
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import paramiko

from payoutdesk.kit.chunks import in_pieces

log = logging.getLogger("payoutdesk.intake")

TIMEOUT_SECONDS = 30.0  # connecting, and every read or write on a connection
CONNECT_DELAYS: tuple[float, ...] = (1.0, 2.0)  # waits between connection attempts (tests lower them)
CHUNK_BYTES = 1024 * 1024  # what a read hands on at a time


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to log in (the secrets already opened)."""

    protocol: str  # ftp, ftps, sftp
    host: str
    port: int
    username: str
    password: str | None = None
    private_key: str | None = None  # PEM or OpenSSH text (SFTP)

    @property
    def address(self) -> str:
        return f"{self.protocol}://{self.host}:{self.port}"

    def __repr__(self) -> str:  # never the secrets
        return f"Endpoint({self.protocol}://{self.username}@{self.host}:{self.port})"


@dataclass(frozen=True)
class RemoteEntry:
    """One entry of a folder listing."""

    name: str
    size: int
    mtime: str  # ISO 8601 UTC as the server gave it ("" when it gives none)
    is_file: bool


class RemoteError(Exception):
    """Something on the brand's server went wrong; the text says what, for people."""


class Unreachable(RemoteError):
    """No connection could be made (down, wrong host or port, a firewall, a TLS or SSH handshake failing)."""


class LoginRefused(RemoteError):
    """The server refused the user name, password or key."""


class FolderMissing(RemoteError):
    """The folder does not exist or cannot be opened by this user."""


class FileGone(RemoteError):
    """The file went away between the listing and the read."""


class TransferFailed(RemoteError):
    """A read, write, delete or rename failed on the way."""


def _why(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return f"no answer within {TIMEOUT_SECONDS:g} seconds"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: nothing listens on that port"
    if isinstance(exc, socket.gaierror):
        return "the host name is not known"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc).strip() or type(exc).__name__
    return text[:300]


def iso_mtime(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ftp_time(value: str) -> str:
    """``20261126120000`` or ``20261126120000.123`` (MLSD ``modify``, MDTM, always UTC) as ISO 8601."""
    digits = value.strip().split(".", 1)[0]
    try:
        return datetime.strptime(digits, "%Y%m%d%H%M%S").replace(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return value.strip()[:40]


class Remote:
    """A logged-in connection to the brand's server. Use it as a context manager."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def list_folder(self, folder: str) -> list[RemoteEntry]:
        raise NotImplementedError

    def read(self, path: str) -> Iterator[bytes]:
        raise NotImplementedError

    def write(self, path: str, chunks: Iterable[bytes]) -> None:
        raise NotImplementedError

    def delete(self, path: str) -> None:
        raise NotImplementedError

    def rename(self, source: str, target: str) -> None:
        raise NotImplementedError

    def make_folder(self, path: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def connect(endpoint: Endpoint) -> Remote:
    """Log in to ``endpoint``: a connection that fails is tried again after each of ``CONNECT_DELAYS``;
    a refused login is not (it would only be refused again, and may lock the account)."""
    attempts = len(CONNECT_DELAYS) + 1
    last: BaseException | None = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(CONNECT_DELAYS[attempt - 1])
        try:
            if endpoint.protocol == "sftp":
                return SftpRemote.open(endpoint)
            return FtpRemote.open(endpoint)
        except Unreachable as exc:
            last = exc
            log.info("connecting to %s failed (attempt %s of %s): %s", endpoint.address, attempt + 1, attempts, exc)
    raise Unreachable(
        f"Could not connect to the server {endpoint.host} on port {endpoint.port} ({endpoint.protocol.upper()}): "
        f"{last or 'unknown error'}; tried {attempts} times. Check that the server is running and "
        "that the host, port and protocol in the settings are right.") from last


# --- FTP and FTPS -----------------------------------------------------------------------------------


def _tls_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # see the module's note: no expected certificate in the settings
    return context


class FtpRemote(Remote):
    def __init__(self, endpoint: Endpoint, ftp: ftplib.FTP) -> None:
        super().__init__(endpoint)
        self.ftp = ftp

    @classmethod
    def open(cls, endpoint: Endpoint) -> FtpRemote:
        secure = endpoint.protocol == "ftps"
        # the brand's server decides the protocol; plain FTP only when the settings say so
        ftp: ftplib.FTP = (ftplib.FTP_TLS(context=_tls_context(), timeout=TIMEOUT_SECONDS) if secure  # noqa: S321
                           else ftplib.FTP(timeout=TIMEOUT_SECONDS))  # noqa: S321
        try:
            ftp.connect(endpoint.host, endpoint.port, timeout=TIMEOUT_SECONDS)
            if isinstance(ftp, ftplib.FTP_TLS):
                try:
                    ftp.auth()
                except ftplib.error_perm as exc:
                    _close_ftp(ftp)
                    raise LoginRefused(
                        f"The server {endpoint.host} does not offer FTPS (explicit TLS) on port {endpoint.port}: "
                        f"{_why(exc)}. Choose the protocol FTP or SFTP, or ask for TLS to be enabled.") from exc
        except (OSError, EOFError, ftplib.error_temp, ftplib.error_reply, ftplib.error_proto) as exc:
            _close_ftp(ftp)
            raise Unreachable(_why(exc)) from exc
        try:
            ftp.login(endpoint.username, endpoint.password or "")
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.prot_p()
            ftp.voidcmd("TYPE I")
        except ftplib.error_perm as exc:
            _close_ftp(ftp)
            raise LoginRefused(
                f"The server {endpoint.host} refused the login of user {endpoint.username!r} "
                f"({_why(exc)}). Check the user name and password in the settings.") from exc
        except (OSError, EOFError, ftplib.Error) as exc:
            _close_ftp(ftp)
            raise Unreachable(_why(exc)) from exc
        return cls(endpoint, ftp)

    def _data_done(self, conn: socket.socket) -> None:
        if isinstance(conn, ssl.SSLSocket):
            conn.unwrap()
        conn.close()

    def list_folder(self, folder: str) -> list[RemoteEntry]:
        try:
            facts = list(self.ftp.mlsd(folder))  # the server's default facts (OPTS MLST is not always taken)
        except ftplib.error_perm as exc:
            if str(exc)[:3] in ("500", "501", "502", "504"):  # no MLSD: NLST, then SIZE and MDTM
                return self._list_plain(folder)
            raise FolderMissing(_folder_missing(self.endpoint, folder, exc)) from exc
        except (OSError, EOFError, ftplib.Error) as exc:
            raise TransferFailed(f"Listing the folder {folder!r} failed: {_why(exc)}.") from exc
        out = []
        for name, fact in facts:
            kind = fact.get("type", "file").lower()
            if kind in ("cdir", "pdir") or name in (".", ".."):
                continue
            size = int(fact["size"]) if fact.get("size", "").isdigit() else 0
            out.append(RemoteEntry(posixpath.basename(name), size, _ftp_time(fact.get("modify", "")),
                                   kind == "file"))
        return out

    def _list_plain(self, folder: str) -> list[RemoteEntry]:
        try:
            names = self.ftp.nlst(folder)
            self.ftp.voidcmd("TYPE I")  # SIZE is refused in ASCII mode, where NLST left the connection
        except ftplib.error_perm as exc:
            if str(exc)[:3] == "550" and "no files" in str(exc).lower():
                return []
            raise FolderMissing(_folder_missing(self.endpoint, folder, exc)) from exc
        except (OSError, EOFError, ftplib.Error) as exc:
            raise TransferFailed(f"Listing the folder {folder!r} failed: {_why(exc)}.") from exc
        out = []
        for full in names:
            name = posixpath.basename(full.rstrip("/"))
            if name in (".", "..", ""):
                continue
            path = posixpath.join(folder, name)
            try:
                size = self.ftp.size(path)
            except ftplib.error_perm:  # a folder (SIZE is for files)
                out.append(RemoteEntry(name, 0, "", False))
                continue
            except (OSError, EOFError, ftplib.Error) as exc:
                raise TransferFailed(f"Listing the folder {folder!r} failed: {_why(exc)}.") from exc
            try:
                mtime = _ftp_time(self.ftp.voidcmd(f"MDTM {path}")[4:])
            except ftplib.error_perm:
                mtime = ""
            except (OSError, EOFError, ftplib.Error) as exc:
                raise TransferFailed(f"Listing the folder {folder!r} failed: {_why(exc)}.") from exc
            out.append(RemoteEntry(name, int(size or 0), mtime, True))
        return out

    def read(self, path: str) -> Iterator[bytes]:
        try:
            self.ftp.voidcmd("TYPE I")  # a listing (MLSD, NLST) leaves the connection in ASCII mode
            conn = self.ftp.transfercmd(f"RETR {path}")
        except ftplib.error_perm as exc:
            raise FileGone(f"The file {path!r} could not be read: {_why(exc)}.") from exc
        except (OSError, EOFError, ftplib.Error) as exc:
            raise TransferFailed(f"Reading {path!r} failed: {_why(exc)}.") from exc
        return self._read_data(conn, path)

    def _read_data(self, conn: socket.socket, path: str) -> Iterator[bytes]:
        complete = False
        try:
            conn.settimeout(TIMEOUT_SECONDS)
            yield from in_pieces(iter(lambda: conn.recv(256 * 1024), b""), CHUNK_BYTES)
            self._data_done(conn)
            self.ftp.voidresp()
            complete = True
        except (OSError, EOFError, ftplib.Error) as exc:
            raise TransferFailed(f"Reading {path!r} was cut off: {_why(exc)}.") from exc
        finally:
            if not complete:  # stopped half-way (an error, or the reader gave up): close, read the 426
                conn.close()
                with contextlib.suppress(OSError, EOFError, ftplib.Error):
                    self.ftp.getresp()

    def write(self, path: str, chunks: Iterable[bytes]) -> None:
        try:
            self.ftp.voidcmd("TYPE I")
            conn = self.ftp.transfercmd(f"STOR {path}")
            try:
                conn.settimeout(TIMEOUT_SECONDS)
                for chunk in chunks:
                    conn.sendall(chunk)
                self._data_done(conn)
            finally:
                conn.close()
            self.ftp.voidresp()
        except (OSError, EOFError, ftplib.Error) as exc:
            raise TransferFailed(f"Writing {path!r} failed: {_why(exc)}.") from exc

    def delete(self, path: str) -> None:
        try:
            self.ftp.delete(path)
        except (OSError, EOFError, ftplib.Error) as exc:
            raise TransferFailed(f"Deleting {path!r} failed: {_why(exc)}.") from exc

    def rename(self, source: str, target: str) -> None:
        try:
            self.ftp.rename(source, target)
        except (OSError, EOFError, ftplib.Error) as exc:
            raise TransferFailed(f"Moving {source!r} to {target!r} failed: {_why(exc)}.") from exc

    def make_folder(self, path: str) -> None:
        try:
            self.ftp.mkd(path)
        except (OSError, EOFError, ftplib.Error) as exc:
            raise TransferFailed(f"Creating the folder {path!r} failed: {_why(exc)}.") from exc

    def close(self) -> None:
        _close_ftp(self.ftp)


def _close_ftp(ftp: ftplib.FTP) -> None:
    try:
        if ftp.sock is not None:
            ftp.quit()
    except (OSError, EOFError, ftplib.Error):
        pass
    finally:
        ftp.close()


def _folder_missing(endpoint: Endpoint, folder: str, exc: BaseException) -> str:
    return (f"The folder {folder!r} does not exist on the server {endpoint.host}, or user {endpoint.username!r} "
            f"may not open it ({_why(exc)}). Check the folder in the settings.")


# --- SFTP ------------------------------------------------------------------------------------------


def load_private_key(text: str) -> paramiko.PKey:
    """A private key from its PEM or OpenSSH text (RSA, ECDSA or Ed25519, not protected by a passphrase)."""
    problems = []
    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            key: paramiko.PKey = kind.from_private_key(io.StringIO(text.strip() + "\n"))
            return key
        except paramiko.PasswordRequiredException:
            raise LoginRefused("The private key in the settings is protected by a passphrase; store it "
                               "without one (payoutdesk keeps it encrypted).") from None
        except (paramiko.SSHException, ValueError, TypeError, IndexError) as exc:
            problems.append(str(exc))
    raise LoginRefused("The private key in the settings cannot be read: paste the whole key, from "
                       "-----BEGIN to -----END (an RSA, ECDSA or Ed25519 key in PEM or OpenSSH form).")


class SftpRemote(Remote):
    def __init__(self, endpoint: Endpoint, transport: paramiko.Transport, sftp: paramiko.SFTPClient) -> None:
        super().__init__(endpoint)
        self.transport = transport
        self.sftp = sftp

    @classmethod
    def open(cls, endpoint: Endpoint) -> SftpRemote:
        key = load_private_key(endpoint.private_key) if endpoint.private_key else None
        try:
            sock = socket.create_connection((endpoint.host, endpoint.port), timeout=TIMEOUT_SECONDS)
        except OSError as exc:
            raise Unreachable(_why(exc)) from exc
        transport = paramiko.Transport(sock)
        transport.banner_timeout = TIMEOUT_SECONDS
        transport.handshake_timeout = TIMEOUT_SECONDS
        transport.auth_timeout = TIMEOUT_SECONDS
        try:
            transport.start_client(timeout=TIMEOUT_SECONDS)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            transport.close()
            raise Unreachable(f"the SSH handshake failed ({_why(exc)})") from exc
        try:
            cls._login(endpoint, transport, key)
            sftp = paramiko.SFTPClient.from_transport(transport)
        except RemoteError:
            transport.close()
            raise
        except (paramiko.SSHException, OSError, EOFError) as exc:
            transport.close()
            raise Unreachable(f"the server opened no SFTP session ({_why(exc)})") from exc
        if sftp is None:
            transport.close()
            raise Unreachable("the server opened no SFTP session")
        channel = sftp.get_channel()
        if channel is not None:
            channel.settimeout(TIMEOUT_SECONDS)
        return cls(endpoint, transport, sftp)

    @staticmethod
    def _login(endpoint: Endpoint, transport: paramiko.Transport, key: paramiko.PKey | None) -> None:
        refused = (f"The server {endpoint.host} refused the login of user {endpoint.username!r}")
        if key is None and not endpoint.password:
            raise LoginRefused(f"{refused}: the settings have neither a password nor a private key.")
        errors: list[str] = []
        if key is not None:
            try:
                transport.auth_publickey(endpoint.username, key)
            except paramiko.AuthenticationException as exc:
                errors.append(f"with the private key: {_why(exc)}")
            else:
                return
        if endpoint.password:
            try:
                transport.auth_password(endpoint.username, endpoint.password)
            except paramiko.AuthenticationException as exc:
                errors.append(f"with the password: {_why(exc)}")
            else:
                return
        raise LoginRefused(f"{refused} ({'; '.join(errors)}). Check the user name and the "
                           f"{'private key' if key is not None else 'password'} in the settings.")

    def list_folder(self, folder: str) -> list[RemoteEntry]:
        try:
            attrs = self.sftp.listdir_attr(folder)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EACCES, errno.ENOTDIR) or isinstance(exc, FileNotFoundError):
                raise FolderMissing(_folder_missing(self.endpoint, folder, exc)) from exc
            raise TransferFailed(f"Listing the folder {folder!r} failed: {_why(exc)}.") from exc
        except (paramiko.SSHException, EOFError) as exc:
            raise TransferFailed(f"Listing the folder {folder!r} failed: {_why(exc)}.") from exc
        out = []
        for a in attrs:  # a server that gives no mode: taken for a file (reading a folder would fail the run)
            is_file = stat.S_ISREG(a.st_mode) if a.st_mode is not None else True
            out.append(RemoteEntry(a.filename, int(a.st_size or 0), iso_mtime(a.st_mtime), is_file))
        return out

    def read(self, path: str) -> Iterator[bytes]:
        try:
            handle = self.sftp.open(path, "rb")
        except FileNotFoundError as exc:
            raise FileGone(f"The file {path!r} could not be read: {_why(exc)}.") from exc
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise TransferFailed(f"Reading {path!r} failed: {_why(exc)}.") from exc
        return self._read_data(handle, path)

    @staticmethod
    def _read_data(handle: Any, path: str) -> Iterator[bytes]:
        try:
            with handle:
                while True:
                    data = handle.read(CHUNK_BYTES)
                    if not data:
                        return
                    yield bytes(data)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise TransferFailed(f"Reading {path!r} was cut off: {_why(exc)}.") from exc

    def write(self, path: str, chunks: Iterable[bytes]) -> None:
        try:
            with self.sftp.open(path, "wb") as handle:
                handle.set_pipelined(True)
                for chunk in chunks:
                    handle.write(chunk)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise TransferFailed(f"Writing {path!r} failed: {_why(exc)}.") from exc

    def delete(self, path: str) -> None:
        try:
            self.sftp.remove(path)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise TransferFailed(f"Deleting {path!r} failed: {_why(exc)}.") from exc

    def rename(self, source: str, target: str) -> None:
        try:
            try:
                self.sftp.posix_rename(source, target)  # replaces a file of that name, as FTP's RNTO does
            except OSError as exc:
                if "posix-rename" not in str(exc) and "unsupported" not in str(exc).lower():
                    raise
                self.sftp.rename(source, target)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise TransferFailed(f"Moving {source!r} to {target!r} failed: {_why(exc)}.") from exc

    def make_folder(self, path: str) -> None:
        try:
            self.sftp.mkdir(path)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise TransferFailed(f"Creating the folder {path!r} failed: {_why(exc)}.") from exc

    def close(self) -> None:
        try:
            self.sftp.close()
        finally:
            self.transport.close()
