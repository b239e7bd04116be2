"""Paging through every action over the impact.com-compatible API, as impact.com's clients do (issue 14).

    python -m bench.compat_paging [--backend sqlite|postgresql|both] [--database-url URL] [--actions N]
                                  [--page-size 20000] [--keep]

Data as ``bench/datagen.py`` writes it (one account, ``--actions`` actions, default 1,000,000), in
``data/bench`` (``--keep`` keeps it and the PostgreSQL cluster for the next run), or in the database of
``--database-url`` (generated there when it holds no benchmark data). The API runs alone in a child
process (``bench/serve_child.py``: uvicorn on ``create_app``, no worker or scheduler), and the client
walks ``GET /Advertisers/<SID>/Actions.json?PageSize=20000`` by following ``@nextpageuri`` (its
``PageKey`` keyset position) to the last page, timing each page from the request to its last byte and
reading the server's VmRSS after each page. Then:

- ``Page=N`` asked directly (offsets) for the first, middle and last page, for comparison;
- the tap's way (tap-impact 2.1.1, ``sync.py``): per campaign, ``CampaignId`` with 45-day windows of
  ``ActionDateStart``/``ActionDateEnd`` from the first event day to today, each followed by ``@nextpageuri``;
- the floor: the bare SELECT of the same pages (the actions' columns, keyset on the id, no names, no
  history, no JSON) in this process, on the same database.

Medians of the per-page figures are quoted in docs/PERFORMANCE.md ("Compatible Actions paging"); the
JSON of the results is written to bench/results/.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import text

from bench import datagen
from bench.backends import Backend, free_port, machine, open_backend
from bench.datagen import generate, read_meta, sync_indexes
from payoutdesk.kit import db
from payoutdesk.kit.db import make_engine
from payoutdesk.models import actions

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
_NEXT = re.compile(rb'"@nextpageuri":"([^"]*)"')


def log(msg: str) -> None:
    print(msg, flush=True)


class Api:
    """The API server in a child process, and a keep-alive HTTP client to it."""

    def __init__(self, url: str, data_dir: Path, sid: str, token: str) -> None:
        self.port = free_port()
        env = {**os.environ, "PAYOUTDESK_DATABASE_URL": url, "PAYOUTDESK_DATA_DIR": str(data_dir),
               "PAYOUTDESK_HTTP_PORT": str(self.port), "PAYOUTDESK_API_RATE_LIMIT": "0",
               "PAYOUTDESK_SECRET_KEY": "bench-compat-paging", "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT)}
        self.log = data_dir / "compat-paging-server.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "bench.serve_child"], env=env, stdout=out,
                                         stderr=subprocess.STDOUT, cwd=ROOT)
        self.headers = {"Authorization": "Basic " + base64.b64encode(f"{sid}:{token}".encode()).decode(),
                        "Accept": "application/json"}
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(self.log.read_text()[-2000:])
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start: " + self.log.read_text()[-2000:])
            time.sleep(0.2)
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def peak_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self) -> float:
        """The server process's CPU time so far (user + system, all its threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def get(self, path: str) -> tuple[float, bytes]:
        t0 = time.perf_counter()
        self.conn.request("GET", path, headers=self.headers)
        r = self.conn.getresponse()
        body = r.read()
        took = time.perf_counter() - t0
        if r.status != 200:
            raise RuntimeError(f"{path}: {r.status} {body[:500]!r}")
        return took, body

    def stop(self) -> None:
        self.conn.close()
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def shown(body: bytes) -> int:
    head = body[:4096]
    start = int(re.search(rb'"@start":"(\d+)"', head).group(1))  # type: ignore[union-attr]
    end = int(re.search(rb'"@end":"(\d+)"', head).group(1))  # type: ignore[union-attr]
    return 0 if b'"Actions":[]' in head else end - start + 1


def walk(api: Api, first: str) -> dict[str, Any]:
    """Follow ``@nextpageuri`` from ``first`` to the end: seconds, actions and RSS per page."""
    pages: list[dict[str, Any]] = []
    path = first
    while path:
        cpu = api.cpu_seconds()
        took, body = api.get(path)
        cpu = api.cpu_seconds() - cpu
        n = shown(body)
        m = _NEXT.search(body[:4096])
        path = m.group(1).decode().replace("\\u0026", "&") if m else ""
        pages.append({"seconds": took, "cpu_seconds": cpu, "actions": n, "rss_mb": api.rss_mb(), "bytes": len(body)})
        del body
    return {"pages": pages}


def summary(pages: list[dict[str, Any]]) -> dict[str, Any]:
    full = [p for p in pages if p["actions"]]
    rates = [p["actions"] / p["seconds"] for p in full]
    total_n = sum(p["actions"] for p in pages)
    total_s = sum(p["seconds"] for p in pages)
    cpu_s = sum(p.get("cpu_seconds", 0.0) for p in pages)
    return {
        "server_cpu_seconds": round(cpu_s, 2),
        "actions_per_server_cpu_s": round(total_n / cpu_s) if cpu_s else 0,
        "pages": len(pages), "actions": total_n, "seconds": round(total_s, 2),
        "actions_per_s_overall": round(total_n / total_s) if total_s else 0,
        "actions_per_s_median": round(statistics.median(rates)) if rates else 0,
        "first_page_actions_per_s": round(rates[0]) if rates else 0,
        "last_full_page_actions_per_s": round(rates[-2] if len(rates) > 1 and full[-1]["actions"] < full[0]["actions"]
                                              else rates[-1]) if rates else 0,
        "page_ms_median": round(statistics.median(p["seconds"] for p in full) * 1000, 1) if full else 0,
        "rss_mb_first": round(pages[0]["rss_mb"], 1), "rss_mb_last": round(pages[-1]["rss_mb"], 1),
        "rss_mb_max": round(max(p["rss_mb"] for p in pages), 1),
    }


def floor(backend: Backend, account_id: int, size: int) -> dict[str, Any]:
    """The bare SELECT of the same pages (keyset on the id), fetched by the driver."""
    cols = ", ".join(c.name for c in actions.c if c.name not in ("restore",))
    sql = text(f"SELECT {cols} FROM actions WHERE account_id = :acc AND id < :key ORDER BY id DESC LIMIT :lim")
    rates = []
    key = 2**62
    n, cpu = 0, time.process_time()
    with db.read(backend.engine) as conn:
        while True:
            t0 = time.perf_counter()
            rows = conn.execute(sql, {"acc": account_id, "key": key, "lim": size}).all()
            took = time.perf_counter() - t0
            if not rows:
                break
            n += len(rows)
            rates.append(len(rows) / took)
            key = rows[-1][0]
    cpu = time.process_time() - cpu
    return {"pages": len(rates), "actions_per_s_median": round(statistics.median(rates)),
            "actions_per_client_cpu_s": round(n / cpu) if cpu else 0,
            "first_page_actions_per_s": round(rates[0]), "last_page_actions_per_s": round(rates[-1])}


def tap_way(api: Api, sid: str, meta: datagen.Meta, size: int) -> dict[str, Any]:
    """tap-impact's calls: per campaign, 45-day ActionDateStart/End windows up to today 00:00 UTC."""
    start = (datagen.NOW - timedelta(days=datagen.SPAN_DAYS + 5)).date()
    today = datetime.now(UTC).date()
    pages: list[dict[str, Any]] = []
    for cid in meta.campaigns:
        day = start
        while day < today:
            end = min(day + timedelta(days=45), today)
            q = urlencode({"PageSize": size, "CampaignId": cid, "ActionDateStart": f"{day}T00:00:00Z",
                           "ActionDateEnd": f"{end}T00:00:00Z"})
            pages += walk(api, f"/Advertisers/{sid}/Actions.json?{q}")["pages"]
            day = end
    return summary(pages)


def run(backend: Backend, n: int, size: int, data_dir: Path, tap: bool = True) -> dict[str, Any]:
    with db.read(backend.engine) as conn:
        try:
            meta = read_meta(conn)
        except Exception:
            meta = None
    if meta is None or meta.actions != n:
        log(f"[{backend.name}] generating {n:,} actions")
        meta = generate(backend, n, 42, log)
    else:
        db.migrate(backend.url)
        sync_indexes(backend, log)
    with db.read(backend.engine) as conn:
        total = conn.execute(text("SELECT count(*) FROM actions WHERE account_id = :a"),
                             {"a": meta.account_id}).scalar_one()
    log(f"[{backend.name}] {total:,} actions; floor ...")
    out: dict[str, Any] = {"actions": total, "page_size": size, "floor": floor(backend, meta.account_id, size)}
    log(f"  floor: {out['floor']}")
    api = Api(backend.url, data_dir, meta.sid, meta.token)
    try:
        base = f"/Advertisers/{meta.sid}/Actions.json"
        out["rss_mb_start"] = round(api.rss_mb(), 1)
        for round_no in (1, 2):
            got = walk(api, f"{base}?PageSize={size}")
            out[f"keyset_round{round_no}"] = summary(got["pages"])
            out[f"keyset_round{round_no}"]["per_page_actions_per_s"] = [
                round(p["actions"] / p["seconds"]) for p in got["pages"] if p["actions"]]
            log(f"  keyset walk {round_no}: {out[f'keyset_round{round_no}']}")
        numpages = -(-total // size)
        offsets = {}
        for page in sorted({1, max(1, numpages // 2), numpages}):
            took, body = api.get(f"{base}?PageSize={size}&Page={page}")
            offsets[str(page)] = round(shown(body) / took)
        out["offset_actions_per_s_by_page"] = offsets
        log(f"  Page=N (offsets): {offsets}")
        if tap:
            out["tap_way"] = tap_way(api, meta.sid, meta, size)
            log(f"  tap's way: {out['tap_way']}")
        out["rss_mb_peak"] = round(api.peak_mb(), 1)
    finally:
        api.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compat_paging", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--database-url", default=None, help="a database to use instead of one in data/bench")
    p.add_argument("--actions", type=int, default=1_000_000)
    p.add_argument("--page-size", type=int, default=20_000)
    p.add_argument("--data-dir", type=Path, default=ROOT / "data" / "bench")
    p.add_argument("--no-tap", action="store_true", help="leave out the tap's way of calling")
    p.add_argument("--keep", action="store_true", help="keep the data (and the PostgreSQL cluster) for the next run")
    a = p.parse_args(argv)
    results: dict[str, Any] = {}
    backends: list[Backend] = []
    try:
        if a.database_url:
            name = "sqlite" if a.database_url.startswith("sqlite") else "postgresql"
            backends.append(Backend(name, a.database_url, make_engine(a.database_url), []))
        else:
            names = ["sqlite", "postgresql"] if a.backend == "both" else [a.backend]
            backends += [open_backend(nm, a.data_dir, f"compat-{a.actions}", a.keep) for nm in names]
        results["machine"] = machine(backends)
        for b in backends:
            results[b.name] = run(b, a.actions, a.page_size, Path(tempfile.mkdtemp(prefix="compat-paging-")),
                                  tap=not a.no_tap)
    finally:
        for b in backends:
            b.close()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"compat-paging-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{a.actions}.json"
    out.write_text(json.dumps(results, indent=2))
    log(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
