"""The Pending Payouts page (HTML) over the bench data set: server time per page, beside the API's list.

Target (DESIGN §6): p95 ≤ 100 ms server time, HTML included, for any filter, sort and page. Measured
in-process: the application (``create_app``) is called through Starlette's TestClient with a signed-in
session cookie, and a wrapper around the ASGI application times each request from its first call to its
last body byte (the server's part: routing, sign-in, the list, the names, the template; not the test
client). Floor, in the same run: the list service alone (``db.read`` + ``ledger.list_actions``, as the
API's ``GET /api/v1/actions`` runs it, target p95 ≤ 50 ms) for the same filters and pages.
"""

from __future__ import annotations

import html
import random
import re
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi.testclient import TestClient
from sqlalchemy import select

from payoutdesk.accounts.service import add_user
from payoutdesk.accounts.sessions import open_session
from payoutdesk.api.app import create_app
from payoutdesk.config import Settings
from payoutdesk.kit import db
from payoutdesk.ledger import repository as repo
from payoutdesk.ledger import service as ledger
from payoutdesk.models import accounts, users

from .backends import Backend
from .datagen import Meta
from .stats import median, pct
from .work import list_filters

Log = Callable[[str], None]
PATH = "/pending-payouts/actions"
SORTS = ("-event_date", "locking_date", "-amount", "payout")
NEXT_LINK = re.compile(r'<a\b[^>]*\brel="next"[^>]*>')
HREF = re.compile(r'\bhref="([^"]+)"')


class ServerTimer:
    """Wraps an ASGI application: the seconds from each request's call to its last body byte."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.last = 0.0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()

        async def timed(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.last = time.perf_counter() - t0

        await self.app(scope, receive, timed)


def query_of(f: repo.Filters, sort: str) -> tuple[str, dict[str, str]] | None:
    """The page (the Actions tab, or the Reversed tab for reversed actions) and its query for ``f`` and
    ``sort``; None for a filter the page does not offer (campaign, locking dates: the API's only)."""
    if f.campaign_id is not None or f.locking_date_from is not None or f.locking_date_to is not None:
        return None
    q: dict[str, str] = {}
    path = PATH
    if f.state == "REVERSED":
        path = "/pending-payouts/reversed"
    else:
        q["state"] = f.state or "ALL"
    for name in ("partner_id", "event_type_id", "order_id", "action_id", "promo_code", "reason"):
        value = getattr(f, name)
        if value is not None:
            q[name] = str(value)
    # the page's dates are whole days, "to" inclusive (the bench's bounds are midnights, "to" exclusive)
    if isinstance(f.event_date_from, datetime):
        q["event_date_from"] = f.event_date_from.date().isoformat()
    if isinstance(f.event_date_to, datetime):
        q["event_date_to"] = (f.event_date_to.date() - timedelta(days=1)).isoformat()
    if sort != "-event_date":
        q["sort"] = sort
    return path, q


def next_query(page_html: str) -> dict[str, str] | None:
    """The query of the page's "Next page" link (``rel="next"``), if it has one."""
    tag = NEXT_LINK.search(page_html)
    href = HREF.search(tag.group(0)) if tag else None
    if href is None:
        return None
    return {k: v[-1] for k, v in parse_qs(urlsplit(html.unescape(href.group(1))).query).items()}


def _session_cookie(backend: Backend, meta: Meta) -> str:
    email = "bench-pages@bench.example"
    with db.write(backend.engine) as conn:
        sid = conn.execute(select(accounts.c.sid).where(accounts.c.id == meta.account_id)).scalar_one()
        if conn.execute(select(users.c.id).where(users.c.email == email)).first() is None:  # not from a --keep run
            add_user(conn, sid, email, "viewer", "bench-password-1")
    with db.write(backend.engine) as conn:
        return open_session(conn, email, "bench-password-1").token


def bench_page(backend: Backend, meta: Meta, rounds: int, samples: int, log: Log) -> dict[str, Any]:
    settings = Settings.from_env({"PAYOUTDESK_DATA_DIR": tempfile.mkdtemp(prefix="bench-pages-"),
                                  "PAYOUTDESK_API_RATE_LIMIT": "0", "PAYOUTDESK_SECRET_KEY": "bench-secret"})
    timer = ServerTimer(create_app(settings, backend.engine))
    client = TestClient(timer)
    client.cookies.set("pd_session", _session_cookie(backend, meta))
    specs = list_filters(meta)
    cases: list[tuple[str, str, Callable[[random.Random], repo.Filters]]] = [
        (name, "-event_date", make) for name, make in specs.items()]
    # the page's own filters that the API list bench leaves out: a promo code, the Reversed tab's reason
    reasons = ("ITEM_RETURNED", "CONS_FRAUD", "TEST_ACTION", "ORDER_ERROR")
    cases.append(("promo_code", "-event_date", lambda r: repo.Filters(state="PENDING",
                                                                      promo_code=f"PROMO-{r.randrange(40)}")))
    cases.append(("state=REVERSED+reason", "-event_date",
                  lambda r: repo.Filters(state="REVERSED", reason=r.choice(reasons))))
    for sort in SORTS[1:]:
        for name in ("none", "partner_id", "state", "event_date(7d)"):
            cases.append((f"{name}, sort={sort}", sort, specs[name]))

    def page(path: str, q: dict[str, str]) -> tuple[float, str]:
        r = client.get(path, params=q)
        if r.status_code != 200 or "error-box" in r.text:
            raise RuntimeError(f"{path}?{q}: {r.status_code} {r.text[:300]}")
        return timer.last, r.text

    def floor(f: repo.Filters, sort: str, cursor: str | None) -> float:
        t0 = time.perf_counter()
        with db.read(backend.engine) as conn:
            ledger.list_actions(conn, meta.account_id, f, 50, cursor, sort)
        return time.perf_counter() - t0

    out: dict[str, Any] = {}
    for name, sort, make in cases:
        rnd = random.Random(hash(name) & 0xFFFF)
        if query_of(make(rnd), sort) is None:
            continue  # not a filter of the page
        for _ in range(2):  # warm up
            page(*query_of(make(rnd), sort))  # type: ignore[misc]
        per_round = []
        for _r in range(rounds):
            first, later, ffirst, flater = [], [], [], []
            for _s in range(samples):
                f = make(rnd)
                path, q = query_of(f, sort)  # type: ignore[misc]
                dt, text = page(path, q)
                first.append(dt)
                ffirst.append(floor(f, sort, None))
                nq = next_query(text)
                if nq is not None:
                    dt, _ = page(path, nq)
                    later.append(dt)
                    flater.append(floor(f, sort, nq.get("cursor")))
            per_round.append({
                "first_p50": median(first), "first_p95": pct(first, 95),
                "later_p50": median(later), "later_p95": pct(later, 95),
                "floor_first_p95": pct(ffirst, 95), "floor_later_p95": pct(flater, 95),
            })
        res = {k: median([r[k] for r in per_round]) for k in per_round[0]}
        out[name] = res
        log(f"    {name:42s} first p50 {res['first_p50'] * 1e3:6.1f} p95 {res['first_p95'] * 1e3:6.1f} ms | "
            f"later p50 {res['later_p50'] * 1e3:6.1f} p95 {res['later_p95'] * 1e3:6.1f} ms | list (API) p95 "
            f"{res['floor_first_p95'] * 1e3:5.1f}/{res['floor_later_p95'] * 1e3:5.1f} ms")
    client.close()
    worst = max(max(r["first_p95"], r["later_p95"] if r["later_p95"] == r["later_p95"] else 0) for r in out.values())
    return {"cases": out, "worst_p95": worst}
