"""The long-running processes: ``payoutdesk serve`` (the web server, our FTP and SMTP servers, a worker and
the scheduler in one process, or ``--only`` some of them) and ``payoutdesk worker``, with their shutdown
(DESIGN §6, "Restarts" and "Logs").

SIGTERM or SIGINT sets one stop event: uvicorn stops accepting connections and finishes the requests in
flight (at most ``GRACEFUL_SECONDS``), the worker ends the chunk in hand at its current batch, commits it
and gives its submission back to the queue, so that the next start resumes it at once, and the process
exits (well within 10 s); the FTP and SMTP servers stop listening and end their sessions (an upload cut
off is not queued). Every server binds its port before anything else starts: a busy port is a clear error
and a non-zero exit, and each server's "bound" line is logged only once its port is bound.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from payoutdesk.config import Settings
from payoutdesk.kit import logs
from payoutdesk.kit.net import BindFailed, RunningServer, bind, shown_host

__all__ = ["BindFailed", "bind", "serve", "work"]

log = logging.getLogger("payoutdesk.server")

GRACEFUL_SECONDS = 5  # for the requests in flight when a stop is asked
WORKER_STOP_SECONDS = 8  # for the worker to end its chunk and release its submission


def on_stop_signals(handler: Callable[[], None]) -> None:
    """Call ``handler`` on SIGTERM and SIGINT (instead of dying or raising KeyboardInterrupt)."""

    def handle(_sig: int, _frame: FrameType | None) -> None:
        handler()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


PARTS = ("http", "ftp", "smtp", "worker", "scheduler")


def parse_parts(text: str) -> frozenset[str]:
    """``--only http,ftp`` → the parts; ValueError naming an unknown one."""
    parts = frozenset(p.strip().lower() for p in text.split(",") if p.strip())
    unknown = sorted(parts - set(PARTS))
    if unknown or not parts:
        raise ValueError(f"{', '.join(unknown) or 'nothing'}: the parts are {', '.join(PARTS)}")
    return parts


def serve(settings: Settings, host: str, port: int, parts: frozenset[str] = frozenset(PARTS),
          ftp_port: int | None = None, smtp_port: int | None = None) -> None:
    """Run the parts of payoutdesk asked for (all by default: the web server, our FTP and SMTP servers,
    a worker and the scheduler) until SIGTERM or SIGINT. Every server binds its port before anything
    starts: a busy port raises ``BindFailed`` and nothing keeps running. A port of 0 turns its server off."""
    from payoutdesk.intake.common import IntakeContext
    from payoutdesk.kit.db import make_engine
    from payoutdesk.worker import runner, scheduler

    ftp_port = settings.ftp_port if ftp_port is None else ftp_port
    smtp_port = settings.smtp_port if smtp_port is None else smtp_port
    want_http = "http" in parts and port != 0
    sock = bind(host, port) if want_http else None
    stop = threading.Event()
    on_stop_signals(stop.set)  # also what uvicorn hands a caught signal back to when it returns
    app = None
    if want_http:
        from payoutdesk.api.app import create_app

        app = create_app(settings)
        engine = app.state.engine
        ctx: IntakeContext = app.state.intake
    else:
        engine = make_engine(settings.database_url)
        ctx = IntakeContext.build(settings, engine)
    servers: list[RunningServer] = []
    threads: list[threading.Thread] = []
    try:
        if "ftp" in parts and ftp_port != 0:
            from payoutdesk.intake import ftp_server

            servers.append(ftp_server.start(ctx, host, ftp_port))
        if "smtp" in parts and smtp_port != 0:
            from payoutdesk.intake import smtp_server

            servers.append(smtp_server.start(ctx, host, smtp_port))
    except BindFailed:
        for running in servers:
            running.stop()
        if sock is not None:
            sock.close()
        engine.dispose()
        raise
    if "worker" in parts:
        threads.append(threading.Thread(target=runner.run_forever, args=(engine, stop), name="payoutdesk-worker",
                                        daemon=True))
    if "scheduler" in parts:
        threads.append(threading.Thread(target=scheduler.run_forever, args=(engine, stop, runner.worker_name()),
                                        kwargs={"ctx": ctx}, name="payoutdesk-scheduler", daemon=True))
    for thread in threads:
        thread.start()
    try:
        if app is not None and sock is not None:
            _run_http(app, sock, host, stop)
        else:
            logs.event(log, f"payoutdesk running: {', '.join(p for p in PARTS if p in parts)}", event="running",
                       parts=sorted(parts))
            while not stop.wait(0.5):
                pass
            logs.event(log, "stopping", event="stopping")
    finally:
        stop.set()
        for running in servers:
            running.stop()
        for thread in threads:
            _join(thread)
        engine.dispose()
    logs.event(log, "payoutdesk stopped", event="stopped")


def _run_http(app: Any, sock: socket.socket, host: str, stop: threading.Event) -> None:
    import uvicorn

    shown = shown_host(host)
    bound = sock.getsockname()[1]

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if not stop.is_set():
                logs.event(log, f"stopping on {signal.Signals(sig).name}", event="stopping",
                           signal=signal.Signals(sig).name)
            stop.set()  # the worker stops at once, while uvicorn finishes the requests in flight
            super().handle_exit(sig, frame)

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if not self.should_exit:
                logs.event(log, f"payoutdesk serving on http://{shown}:{bound}  (pages: sign in at /, "
                                "API: /api/v1, docs: /docs)",
                           event="bound", server="http", address=host, port=bound)

    config = uvicorn.Config(app, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=GRACEFUL_SECONDS)
    Server(config).run(sockets=[sock])


def work(settings: Settings, once: bool) -> int:
    """``payoutdesk worker``: take submissions until SIGTERM or SIGINT (``once``: until the queue is
    empty, too); a stop ends the chunk in hand and gives its submission back to the queue. Returns how
    many submissions it took."""
    from payoutdesk.kit.db import make_engine
    from payoutdesk.worker.runner import run_forever, run_once, worker_name

    engine = make_engine(settings.database_url)
    stop = threading.Event()
    on_stop_signals(stop.set)
    done = 0
    try:
        if once:
            name = worker_name()
            while run_once(engine, name, stop) is not None:
                done += 1
        else:
            run_forever(engine, stop)
    finally:
        engine.dispose()
    return done


def _join(thread: threading.Thread) -> None:
    thread.join(timeout=WORKER_STOP_SECONDS if thread.name == "payoutdesk-worker" else 1)
    if thread.is_alive() and thread.name == "payoutdesk-worker":
        logs.event(log, "the worker did not stop in time; its submission is taken over when its lease runs out",
                   level=logging.WARNING, event="worker_stop_timeout")
