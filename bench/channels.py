"""How fast each intake channel takes a large file, and what it costs the server's memory (issue 11).

Starts ``payoutdesk serve --only http,ftp,smtp`` (no worker: what is measured is the intake, from the first
byte sent to the answer that the file is queued) in a child process on a fresh database, and sends the
same file, ``--mb`` MiB of CSV-looking bytes (a different first line each time, so that no upload is a
duplicate), by each channel ``--repeat`` times:

- ``http``: multipart ``POST /api/v1/submissions`` (the reference channel of issue 10);
- ``ftp``: ``STOR`` with ftplib (the final ``226 … queued as F-…`` comes once the file is stored and queued);
- ``smtp``: one mail with the file attached (base64, so 1.37 times the bytes on the wire): smtplib for the
  conversation; the message itself (headers, a text part, the file base64-encoded in 76-character lines) is
  built before the clock starts and sent as fast as the socket takes it, so that what is measured is the
  server, not the client building a message;
- ``floor``: ``submissions.files.store_stream`` of the same bytes in this process against the same
  database, with no network and no protocol: the chunked store's own cost, which every channel pays.

For each: the median seconds and MiB/s, the ratio to the floor, and the server's peak memory growth over
its resident size before the upload (``VmHWM`` after ``clear_refs``). The results go to docs/PERFORMANCE.md
("Intake channels").

``--parallel N`` sends N mails at once in the smtp case (its seconds are then for all N, its memory the
peak of all N). ``--source DIR`` runs the server from another checkout (``git archive <commit> | tar -x -C
DIR``), to measure the code before a change; ``--only smtp`` measures some channels only (the floor always).

    python -m bench.channels [--database-url URL] [--mb 100] [--repeat 3] [--source DIR] [--only http,ftp,smtp]
                             [--parallel 1]
"""

from __future__ import annotations

import argparse
import base64
import ftplib
import http.client
import io
import json
import smtplib
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.memory import MiB, Server, cli, free_port, multipart, send_streamed, server_env, start_server
from bench.stats import median


def file_parts(size: int, tag: str) -> Iterator[bytes]:
    head = f"ActionId,Reason,Padding\n1,{tag},p\n".encode()
    yield head
    block = b"1,X," + b"p" * (MiB - 5) + b"\n"
    left = size - len(head)
    while left > 0:
        part = block[:left]
        left -= len(part)
        yield part


class Reader(io.RawIOBase):
    """A file-like over a generator of bytes, for ftplib's storbinary."""

    def __init__(self, parts: Iterator[bytes]) -> None:
        self.parts, self.buf = parts, b""

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        while len(self.buf) < max(n, 1):
            try:
                self.buf += next(self.parts)
            except StopIteration:
                break
        out, self.buf = (self.buf, b"") if n < 0 else (self.buf[:n], self.buf[n:])
        return out


def mail_parts(size: int, tag: str, sender: str, to: str) -> Iterator[bytes]:
    """A mail carrying the file as ``big.csv``, CRLF lines, generated as it is sent (no line starts with a dot:
    no dot-stuffing is needed; base64 has no dot)."""
    yield (f"From: {sender}\r\nTo: {to}\r\nSubject: returns\r\nMessage-ID: <{tag}@brand.test>\r\n"
           "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"=-bench-=\"\r\n\r\n"
           "--=-bench-=\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nattached\r\n"
           "--=-bench-=\r\nContent-Type: text/csv\r\nContent-Disposition: attachment; filename=\"big.csv\"\r\n"
           "Content-Transfer-Encoding: base64\r\n\r\n").encode()
    pending = b""
    for part in file_parts(size, tag):
        pending += part
        cut = len(pending) - len(pending) % 57
        yield base64.encodebytes(pending[:cut]).replace(b"\n", b"\r\n")
        pending = pending[cut:]
    if pending:
        yield base64.encodebytes(pending).replace(b"\n", b"\r\n")
    yield b"--=-bench-=--\r\n"


def measure(server: Server, send: Callable[[], Any]) -> tuple[float, float]:
    server.reset_peak()
    before = server.rss_mb()
    began = time.perf_counter()
    send()
    return time.perf_counter() - began, server.peak_mb() - before



def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--database-url", default="")
    p.add_argument("--mb", type=int, default=100)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--source", type=Path, default=None, help="run the server from this checkout")
    p.add_argument("--only", default="http,ftp,smtp", help="the channels to measure (the floor always)")
    p.add_argument("--parallel", type=int, default=1, help="mails sent at once by the smtp case")
    args = p.parse_args()
    only = set(args.only.split(","))
    size = args.mb * MiB
    work = Path(tempfile.mkdtemp(prefix="bench-channels-"))
    url = args.database_url or f"sqlite:///{work / 'channels.db'}"
    http_port, ftp_port, smtp_port = free_port(), free_port(), free_port()
    env = server_env(url, work, http_port, source=args.source, extra={"PAYOUTDESK_FTP_PORT": str(ftp_port),
                                                  "PAYOUTDESK_SMTP_PORT": str(smtp_port),
                                                  "PAYOUTDESK_MAIL_DOMAIN": "bench.test"})
    cli(env, "init")
    made = json.loads(cli(env, "account", "create", "bench-channels", "--json"))
    sid, token = made["account_sid"], made["auth_token"]
    server = start_server(env, work / "serve.log", args=("--only", "http,ftp,smtp"))  # no worker: intake alone
    try:
        auth = "Basic " + base64.b64encode(f"{sid}:{token}".encode()).decode()
        conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
        conn.request("POST", "/api/v1/campaigns", json.dumps({"name": "bench", "currency": "USD",
                                                              "ftp_password": "bench-password"}),
                     {"Authorization": auth, "Content-Type": "application/json"})
        campaign = json.loads(conn.getresponse().read())
        n = [0]

        def tag() -> str:
            n[0] += 1
            return f"T{n[0]}"

        def by_http() -> None:
            ctype, parts = multipart({"campaign_id": str(campaign["id"])}, "big.csv", file_parts(size, tag()))
            answer = send_streamed(http_port, "POST", "/api/v1/submissions",
                                   {"Authorization": auth, "Content-Type": ctype}, parts)
            assert answer.status == 202, answer

        def by_ftp() -> None:
            with ftplib.FTP() as ftp:
                ftp.connect("127.0.0.1", ftp_port, timeout=600)
                ftp.login(campaign["ftp_username"], "bench-password")
                reply = ftp.storbinary("STOR big.csv", Reader(file_parts(size, tag())), blocksize=MiB)
                assert reply.startswith("226"), reply

        def by_smtp() -> Callable[[], None]:
            """The mail is generated before the clock starts (base64 in Python is the client's cost, not the
            server's: 1.5 s for 50 MiB here), then sent as fast as the socket takes it."""
            sender, to = "bench@brand.test", campaign["returns_email"]
            wires = [list(mail_parts(size, tag(), sender, to)) for _ in range(args.parallel)]

            def send() -> None:
                threads = [threading.Thread(target=send_one, args=(wire,)) for wire in wires[1:]]
                for t in threads:
                    t.start()
                send_one(wires[0])
                for t in threads:
                    t.join()

            def send_one(wire: list[bytes]) -> None:
                with smtplib.SMTP("127.0.0.1", smtp_port, timeout=600) as client:
                    client.ehlo()
                    assert client.mail(sender)[0] == 250
                    assert client.rcpt(to)[0] == 250
                    client.putcmd("data")
                    assert client.getreply()[0] == 354
                    assert client.sock is not None
                    for chunk in wire:
                        client.sock.sendall(chunk)
                    client.sock.sendall(b".\r\n")
                    code, text = client.getreply()
                    assert code == 250, (code, text)
                    assert b"Taken: F-" in text, text

            return send

        def floor() -> None:
            from payoutdesk.kit.db import make_engine
            from payoutdesk.submissions import files

            engine = make_engine(url)
            try:
                stored = files.store_stream(engine, file_parts(size, tag()))
                files.discard(engine, stored.id)
            finally:
                engine.dispose()

        results: dict[str, dict[str, float]] = {}
        senders: list[tuple[str, Callable[[], Callable[[], Any]]]] = [
            ("floor", lambda: floor), ("http", lambda: by_http), ("ftp", lambda: by_ftp), ("smtp", by_smtp)]
        for name, make in senders:
            if name != "floor" and name not in only:
                continue
            seconds, growth = [], []
            for _ in range(args.repeat):
                s, g = measure(server, make())
                seconds.append(s)
                growth.append(g)
            results[name] = {"seconds": median(seconds), "mib_per_s": args.mb / median(seconds),
                             "peak_growth_mb": max(growth) if name != "floor" else 0.0}
        base = results["floor"]["seconds"]
        print(f"{args.mb} MiB file, {args.repeat} runs each, {url.split(':')[0]}"
              f"{f', {args.parallel} mails at once' if args.parallel > 1 else ''}:")
        print(f"{'channel':<8}{'median s':>10}{'MiB/s':>8}{'x floor':>9}{'server peak +MB':>17}")
        for name, r in results.items():
            print(f"{name:<8}{r['seconds']:>10.2f}{r['mib_per_s']:>8.1f}{r['seconds'] / base:>9.2f}"
                  f"{r['peak_growth_mb']:>17.0f}")
        json.dump({"mb": args.mb, "repeat": args.repeat, "parallel": args.parallel, "database": url.split(":")[0],
                   "results": results},
                  sys.stderr)
        print(file=sys.stderr)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
