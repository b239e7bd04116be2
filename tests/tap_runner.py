"""Runs impact.com's Singer tap (tap-impact) unchanged against another server: run it with the tap's own
virtual environment (.venv-tap/bin/python, made by scripts/ensure-tap.sh), never with the project's.

    TAP_IMPACT_BASE_URL=http://127.0.0.1:8000 .venv-tap/bin/python tests/tap_runner.py --config c.json --discover

Only the tap's fixed base URL changes: every request the tap sends to https://api.impact.com/ goes to
TAP_IMPACT_BASE_URL instead, the path and the query string untouched (its next-page links are built on
https://api.impact.com too). The arguments are the tap's own (--config, --catalog or --properties, --state,
--discover). With TAP_IMPACT_NO_BACKOFF_WAIT=1 the tap's retries (backoff on a 5xx answer, up to 7 tries
with waits of minutes) follow each other without waiting, so that a server error fails a test at once.
"""

from __future__ import annotations

import os
from typing import Any

IMPACT = "https://api.impact.com/"


def point_at(base_url: str) -> None:
    """Send what requests would send to impact.com's API to ``base_url`` instead."""
    import requests

    target = base_url.rstrip("/") + "/"
    original = requests.Session.request

    def request(self: requests.Session, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        if isinstance(url, str) and url.startswith(IMPACT):
            url = target + url[len(IMPACT):]
        return original(self, method, url, *args, **kwargs)

    requests.Session.request = request  # type: ignore[method-assign]


def no_backoff_wait() -> None:
    """backoff's retries without the waits between them (the tries themselves are unchanged)."""
    import types

    from backoff import _sync

    _sync.time = types.SimpleNamespace(sleep=lambda _seconds: None)  # type: ignore[attr-defined]


def main() -> None:
    base_url = os.environ.get("TAP_IMPACT_BASE_URL")
    if not base_url:
        raise SystemExit("tap_runner.py: set TAP_IMPACT_BASE_URL to the server that stands in for api.impact.com")
    point_at(base_url)
    if os.environ.get("TAP_IMPACT_NO_BACKOFF_WAIT") == "1":
        no_backoff_wait()
    import tap_impact

    tap_impact.main()


if __name__ == "__main__":
    main()
