"""The long-running processes: ``payoutdesk serve`` (web server, worker and scheduler in one process) and
``payoutdesk worker``, with their shutdown (DESIGN §6, "Restarts" and "Logs").

SIGTERM or SIGINT sets one stop event: uvicorn stops accepting connections and finishes the requests in
flight (at most ``GRACEFUL_SECONDS``), the worker ends the chunk in hand at its current batch, commits it
and gives its submission back to the queue, so that the next start resumes it at once, and the process
exits (well within 10 s). The web server binds its port before anything else starts: a busy port is a
clear error and a non-zero exit, and the "serving" line is logged only once the port is bound.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable
from types import FrameType

from payoutdesk.config import Settings
from payoutdesk.kit import logs
from payoutdesk.kit.net import BindFailed, bind

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


def serve(settings: Settings, host: str, port: int) -> None:
    """Run the web server, a worker and the scheduler until SIGTERM or SIGINT. Raises ``BindFailed``
    (before starting anything) when the port cannot be bound."""
    import uvicorn

    from payoutdesk.api.app import create_app
    from payoutdesk.worker import runner, scheduler

    sock = bind(host, port)
    stop = threading.Event()
    on_stop_signals(stop.set)  # also what uvicorn hands a caught signal back to when it returns
    app = create_app(settings)
    engine = app.state.engine
    worker = threading.Thread(target=runner.run_forever, args=(engine, stop), name="payoutdesk-worker", daemon=True)
    jobs = threading.Thread(target=scheduler.run_forever, args=(engine, stop, runner.worker_name()),
                            name="payoutdesk-scheduler", daemon=True)
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::", "::1") else host  # noqa: S104
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
                logs.event(log, f"payoutdesk serving on http://{shown}:{bound}  (API: /api/v1, docs: /docs)",
                           event="bound", server="http", address=host, port=bound)

    config = uvicorn.Config(app, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=GRACEFUL_SECONDS)
    worker.start()
    jobs.start()
    try:
        Server(config).run(sockets=[sock])
    finally:
        stop.set()
        _join(worker)
        jobs.join(timeout=1)
        engine.dispose()
    logs.event(log, "payoutdesk stopped", event="stopped")


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
    thread.join(timeout=WORKER_STOP_SECONDS)
    if thread.is_alive():
        logs.event(log, "the worker did not stop in time; its submission is taken over when its lease runs out",
                   level=logging.WARNING, event="worker_stop_timeout")
