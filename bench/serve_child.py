"""The API alone in one process: uvicorn on ``create_app`` (``payoutdesk serve`` also starts the
submissions worker and the scheduler, whose lock run would change the data under the benchmark).

``python -m bench.serve_child`` reads the usual PAYOUTDESK_* environment variables, and
``PAYOUTDESK_BENCH_HTTP`` (``h11`` or ``httptools``; default: uvicorn's choice, httptools when installed)
to compare HTTP parsers.
"""

from __future__ import annotations

import os

import uvicorn

from payoutdesk.api.app import create_app
from payoutdesk.config import Settings
from payoutdesk.kit.db import migrate


def main() -> int:
    s = Settings.from_env()
    migrate(s.database_url)
    uvicorn.run(create_app(s), host=s.bind, port=s.http_port, log_level="warning", access_log=False,
                http=os.environ.get("PAYOUTDESK_BENCH_HTTP", "auto"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
