"""The operator's log (DESIGN §6, "Logs"): one line per HTTP request, per submission state change, per
lock run, and one when a server has bound its port; plain text or, with ``PAYOUTDESK_LOG_FORMAT=json``,
one JSON object per line.

Every line is written with ``event``: a message for people and the same facts as fields, which the
JSON format puts beside ``time``, ``level``, ``logger`` and ``message``. Nothing here ever receives a
token or a password (the access log takes the signed-in account's SID, and hides the values of query
parameters whose names look like secrets).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

ROOT = "payoutdesk"
_FIELDS = "pd_fields"
_HANDLER_NAME = "payoutdesk-log"
FORMATS = ("text", "json")


def event(logger: logging.Logger, message: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``message`` with ``fields`` (event name, ids, counts ...), cheaply skipped when not enabled."""
    if logger.isEnabledFor(level):
        logger.log(level, message, extra={_FIELDS: fields})


def _time(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """``2026-12-07T21:55:00.123Z INFO payoutdesk.http GET /api/v1/actions 200 3.1 ms account=AC…``"""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_time(record)} {record.levelname} {record.name} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": _time(record), "level": record.levelname, "logger": record.name,
                               "message": record.getMessage()}
        fields = getattr(record, _FIELDS, None)
        if isinstance(fields, dict):
            for k, v in fields.items():
                out.setdefault(k, v)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def log_format(env: dict[str, str] | None = None) -> str:
    raw = (os.environ if env is None else env).get("PAYOUTDESK_LOG_FORMAT", "").strip().lower() or "text"
    if raw not in FORMATS:
        raise SystemExit(f"PAYOUTDESK_LOG_FORMAT must be text or json, not '{raw}'.")
    return raw


def configure(fmt: str | None = None, stream: TextIO | None = None, level: int = logging.INFO) -> logging.Handler:
    """Send the ``payoutdesk`` loggers' lines to ``stream`` (standard error) in ``fmt`` (default: from
    ``PAYOUTDESK_LOG_FORMAT``). Called by ``serve`` and ``worker``; calling it again replaces the handler."""
    fmt = fmt or log_format()
    root = logging.getLogger(ROOT)
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    return handler


def submission_queued(row: Any) -> None:
    """The line of a new submission (``submissions.service.create``), from its row."""
    label = f"{row.kind}-{row.id}"
    what = f"file {row.file_name}" if row.file_name else "rows"
    event(logging.getLogger("payoutdesk.submissions"),
          f"submission {label} queued: {what}, {row.size} bytes, campaign {row.campaign_id}, via {row.channel}"
          + (" (dry run)" if row.dry_run else ""),
          event="submission_queued", submission=label, campaign_id=row.campaign_id, channel=row.channel,
          file_name=row.file_name, size=row.size, dry_run=bool(row.dry_run))
