"""The server's memory under large request bodies (issue 10 item 1; DESIGN §6, "Bounded memory").

Starts ``payoutdesk serve`` (web server, worker and scheduler in one process) in a child process on a
fresh database, and for each case streams a request body from a generator (never built in memory) over
a raw socket, reading the answer as soon as the server sends one, while the server's resident memory is
read from ``/proc/<pid>/status`` (VmRSS before, VmHWM, the peak, during; the peak is reset before each
case through ``/proc/<pid>/clear_refs``):

1. ``multipart``: a 1 GiB file to ``POST /api/v1/submissions``, chunked (no Content-Length);
2. ``rows``: a 200 MiB JSON batch of rows to the same route, chunked;
3. ``action``: a 300 MiB JSON body to ``POST /api/v1/actions/1/modify``, chunked;
4. ``three``: three 200 MB files at once (with their Content-Length, just under the limit), then the
   memory kept once the worker has run them.

    python -m bench.memory [--database-url URL] [--source DIR] [--cases multipart,rows,action,three]

``--source DIR`` runs the server from another checkout's ``DIR/src`` (``git archive <commit> | tar -x
-C DIR``), for the figures before a change. The results go to docs/PERFORMANCE.md ("Memory under
large bodies"). The tests (tests/test_body_limits.py) use the same client with wide margins.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent
_BLOCK = b"ActionId,Reason,Padding\n" + b"1,X," + b"p" * (MiB - 29) + b"\n"  # 1 MiB of CSV-looking bytes
assert len(_BLOCK) == MiB


# --- the server -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A ``payoutdesk serve`` child process."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def status(self, key: str) -> int:
        """A line of /proc/<pid>/status in kB (VmRSS, VmHWM)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)

    def rss_mb(self) -> float:
        return self.status("VmRSS") / 1024

    def peak_mb(self) -> float:
        return self.status("VmHWM") / 1024

    def reset_peak(self) -> None:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def server_env(database_url: str, data_dir: Path, port: int, source: Path | None = None,
               extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "PAYOUTDESK_DATABASE_URL": database_url, "PAYOUTDESK_DATA_DIR": str(data_dir),
           "PAYOUTDESK_HTTP_PORT": str(port), "PAYOUTDESK_API_RATE_LIMIT": "0",
           "PAYOUTDESK_SECRET_KEY": "bench-memory", "PAYOUTDESK_FTP_PORT": "0", "PAYOUTDESK_SMTP_PORT": "0",
           **(extra or {})}
    if source is not None:
        env["PYTHONPATH"] = str(source / "src")
    return env


def cli(env: dict[str, str], *args: str) -> str:
    code = "import sys; from payoutdesk.cli import main; sys.exit(main())"
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, check=True, capture_output=True, text=True,
                         cwd=tempfile.gettempdir())
    return out.stdout


def start_server(env: dict[str, str], log: Path, timeout: float = 60, args: tuple[str, ...] = ()) -> Server:
    """``payoutdesk serve *args``, once it answers on its HTTP port."""
    code = "import sys; from payoutdesk.cli import main; sys.exit(main())"
    port = int(env["PAYOUTDESK_HTTP_PORT"])
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code, "serve", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=tempfile.gettempdir())
    server = Server(proc, port, log)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {log.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"the server did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)


# --- the client: bodies streamed from generators over a raw socket ---------------------------------


def basic(sid: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{sid}:{token}".encode()).decode()


def repeat(total: int, block: bytes = _BLOCK) -> Iterator[bytes]:
    """``total`` bytes as slices of one block, never more than a block in memory."""
    view = memoryview(block)
    left = total
    while left > 0:
        n = min(left, len(block))
        yield bytes(view[:n]) if n < len(block) else block
        left -= n


def multipart(fields: dict[str, str], file_name: str, file_parts: Iterable[bytes], boundary: str = "bXmemoryX"
              ) -> tuple[str, Iterator[bytes]]:
    """(content type, body parts) of a multipart form with small fields and one file, streamed."""
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ) + (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
         "Content-Type: application/octet-stream\r\n\r\n").encode()

    def parts() -> Iterator[bytes]:
        yield head
        yield from file_parts
        yield f"\r\n--{boundary}--\r\n".encode()

    return f"multipart/form-data; boundary={boundary}", parts()


def multipart_size(fields: dict[str, str], file_name: str, file_size: int, boundary: str = "bXmemoryX") -> int:
    _, parts = multipart(fields, file_name, [], boundary)
    return sum(len(p) for p in parts) + file_size


def json_rows_parts(total: int, campaign_id: int) -> Iterator[bytes]:
    """A valid JSON batch of about ``total`` bytes of rows (about 1 KB each)."""
    row = b'{"ActionId":"1","Amount":"1.00","Reason":"ORDER_UPDATE","Note":"' + b"n" * 900 + b'"},'
    block = row * (MiB // len(row))
    yield b'{"campaign_id":%d,"rows":[' % campaign_id
    yield from repeat(total // len(block) * len(block), block)
    yield b"{}]}"


def json_padding_parts(total: int) -> Iterator[bytes]:
    """A valid JSON object of about ``total`` bytes: a note of that length."""
    yield b'{"note":"'
    yield from repeat(total, b"x" * MiB)
    yield b'"}'


@dataclass
class Answer:
    status: int | None
    body: dict[str, Any] = field(default_factory=dict)
    sent: int = 0  # bytes of the body sent before the answer came (or the connection closed)
    seconds: float = 0.0
    error: str | None = None


def send_streamed(port: int, method: str, path: str, headers: dict[str, str], parts: Iterable[bytes], *,
                  chunked: bool = True, timeout: float = 300) -> Answer:
    """Send a request whose body comes from ``parts``, reading the answer as soon as there is one: the body
    stops being sent then (a refusal that waits for the whole body shows as ``sent`` near the total)."""
    t0 = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    sock.setblocking(False)
    it = iter(parts)
    pending = b""
    sent = 0
    finished = False
    received = b""
    error = None
    deadline = t0 + timeout

    def framed(p: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(p), p) if chunked else p

    try:
        while time.monotonic() < deadline:
            want_write = not finished
            r, w, _ = select.select([sock], [sock] if want_write else [], [], 0.5)
            if r:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if not data:
                    break
                received += data
                if _complete(received):
                    break
            if w and not finished:
                if not pending:
                    nxt = next(it, None)
                    if nxt is None:
                        pending = b"0\r\n\r\n" if chunked else b""
                        finished = True
                        if not pending:
                            continue
                    else:
                        pending = framed(nxt)
                try:
                    n = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError) as exc:
                    error = type(exc).__name__
                    finished = True
                    continue
                except BlockingIOError:
                    continue
                sent += n
                pending = pending[n:]
    finally:
        sock.close()
    status, body = _parse(received)
    return Answer(status, body, sent, time.monotonic() - t0, error)


def _complete(raw: bytes) -> bool:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(rest) >= int(value.strip())
    return False


def _parse(raw: bytes) -> tuple[int | None, dict[str, Any]]:
    head, _, rest = raw.partition(b"\r\n\r\n")
    if not head:
        return None, {}
    status = int(head.split(b" ", 2)[1])
    try:
        body = json.loads(rest) if rest else {}
    except ValueError:
        body = {"raw": rest[:200].decode("latin-1")}
    return status, body if isinstance(body, dict) else {"value": body}


class Sampler:
    """The server's peak memory during a block (VmHWM after a reset), and its VmRSS before and after."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def __enter__(self) -> Sampler:
        self.server.reset_peak()
        self.before = self.server.rss_mb()
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak = self.server.peak_mb()
        self.after = self.server.rss_mb()

    @property
    def growth(self) -> float:
        return self.peak - self.before


# --- the cases ------------------------------------------------------------------------------------


@dataclass
class Setup:
    server: Server
    auth: str
    campaign_id: int
    action_id: int


def setup(env: dict[str, str], log: Path) -> Setup:
    cli(env, "init")
    made = json.loads(cli(env, "account", "create", "bench-memory", "--json"))
    sid = made.get("account_sid") or made.get("sid")
    token = made.get("auth_token") or made.get("token")
    server = start_server(env, log)
    auth = basic(sid, token)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/api/v1/campaigns", json.dumps({"name": "memory", "currency": "USD"}),
                 {"Authorization": auth, "Content-Type": "application/json"})
    r = conn.getresponse()
    campaign = json.loads(r.read())
    assert r.status == 201, campaign
    # warm up: a small upload, so that lazily imported modules are in before the first measure
    ctype, parts = multipart({"campaign_id": str(campaign["id"]), "dry_run": "true"}, "warm.csv",
                             [b"ActionId,Reason\n1,APPROVED\n"])
    send_streamed(server.port, "POST", "/api/v1/submissions", {"Authorization": auth, "Content-Type": ctype}, parts)
    time.sleep(1)
    return Setup(server, auth, int(campaign["id"]), 1)


def case_multipart(s: Setup, size: int = 1024 * MiB) -> tuple[Answer, Sampler]:
    ctype, parts = multipart({"campaign_id": str(s.campaign_id)}, "huge.csv", repeat(size))
    with Sampler(s.server) as m:
        a = send_streamed(s.server.port, "POST", "/api/v1/submissions",
                          {"Authorization": s.auth, "Content-Type": ctype}, parts)
    return a, m


def case_rows(s: Setup, size: int = 200 * MiB) -> tuple[Answer, Sampler]:
    with Sampler(s.server) as m:
        a = send_streamed(s.server.port, "POST", "/api/v1/submissions",
                          {"Authorization": s.auth, "Content-Type": "application/json"},
                          json_rows_parts(size, s.campaign_id))
    return a, m


def case_action(s: Setup, size: int = 300 * MiB) -> tuple[Answer, Sampler]:
    with Sampler(s.server) as m:
        a = send_streamed(s.server.port, "POST", f"/api/v1/actions/{s.action_id}/modify",
                          {"Authorization": s.auth, "Content-Type": "application/json"}, json_padding_parts(size))
    return a, m


def case_three(s: Setup, size: int = 200 * MiB - 128 * 1024, settle: Callable[[], None] | None = None
               ) -> tuple[list[Answer], Sampler, float]:
    """Three uploads at once, each with its Content-Length; returns the answers, the memory while they ran
    and were processed, and the RSS once the worker is done (``settle`` waits for that)."""
    answers: list[Answer] = []

    def one(n: int) -> None:
        # different bytes per upload (else the duplicate guard refuses two of them); a PNG signature first,
        # so that the worker refuses each file at once after reading it back
        first = b"\x89PNG\r\n\x1a\n" + str(n).encode() * 100
        file_parts = _concat([first], repeat(size - len(first)))
        fields = {"campaign_id": str(s.campaign_id)}
        ctype, parts = multipart(fields, f"three-{n}.csv", file_parts)
        length = multipart_size(fields, f"three-{n}.csv", size)
        answers.append(send_streamed(s.server.port, "POST", "/api/v1/submissions",
                                     {"Authorization": s.auth, "Content-Type": ctype, "Content-Length": str(length)},
                                     parts, chunked=False))

    with Sampler(s.server) as m:
        threads = [threading.Thread(target=one, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if settle is not None:
            settle()
    return answers, m, s.server.rss_mb()


def _concat(*iterables: Iterable[bytes]) -> Iterator[bytes]:
    for it in iterables:
        yield from it


def wait_idle(s: Setup, timeout: float = 300) -> None:
    """Until no submission of the account is queued or running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", s.server.port, timeout=30)
        conn.request("GET", "/api/v1/submissions?limit=50", headers={"Authorization": s.auth})
        items = json.loads(conn.getresponse().read()).get("items", [])
        conn.close()
        if all(i["status"] not in ("QUEUED", "IN_PROGRESS") for i in items):
            return
        time.sleep(0.5)
    raise TimeoutError("submissions still running")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", help="default: a new SQLite file in a temporary folder")
    p.add_argument("--source", type=Path, help="run the server from DIR/src (another checkout)")
    p.add_argument("--cases", default="multipart,rows,action,three")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pd-memory-"))
    url = args.database_url or f"sqlite:///{tmp / 'payoutdesk.db'}"
    env = server_env(url, tmp, free_port(), args.source)
    s = setup(env, tmp / "server.log")
    print(f"server pid {s.server.pid}, RSS {s.server.rss_mb():.0f} MB after warm-up; source "
          f"{args.source or ROOT}; database {url.split('://')[0]}")
    try:
        for name in args.cases.split(","):
            if name == "three":
                answers, m, kept = case_three(s, settle=lambda: wait_idle(s))
                codes = [(a.status, a.body.get("code") or a.body.get("status")) for a in answers]
                print(f"three   : answers {codes} in {max(a.seconds for a in answers):.1f} s; RSS {m.before:.0f} MB "
                      f"-> peak {m.peak:.0f} MB (+{m.growth:.0f}), {kept:.0f} MB kept after the worker ran them "
                      f"(+{kept - m.before:.0f})")
                continue
            fn = {"multipart": case_multipart, "rows": case_rows, "action": case_action}[name]
            a, m = fn(s)
            print(f"{name:8}: {a.status} {a.body.get('code')} after {a.sent / MiB:,.0f} MiB sent, {a.seconds:.1f} s; "
                  f"RSS {m.before:.0f} MB -> peak {m.peak:.0f} MB (+{m.growth:.0f}), after {m.after:.0f} MB"
                  + (f"; client {a.error}" if a.error else ""))
    finally:
        s.server.stop()
    with contextlib.suppress(OSError):
        (tmp / "server.log").unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
