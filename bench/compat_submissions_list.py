"""The impact.com-compatible list of API submissions, ``GET /Advertisers/<SID>/APISubmissions``, in records/s.

    .venv/bin/python -m bench.compat_submissions_list --submissions 3000 [--database-url postgresql+psycopg://…]

A fresh database (a SQLite file in a temporary folder unless ``--database-url`` names an empty, migrated
one) gets one tenant (tests/helpers.make_world) with ``--submissions`` one-row API submissions made as the
compatible PUT makes them (``submissions.service.create_from_rows``), one in ten of them refused by the
worker (a reversed action), all run by the worker (``worker.runner.run_once``). Then the whole list is read
in pages of ``--page-size`` through the app in this process (FastAPI's TestClient: routing, the query, the
JSON), ``--repeat`` times; the figure is the median of the walks, with the number of SQL statements a walk
ran and this process's CPU time (the app and, on SQLite, the database; not PostgreSQL's server), a
steadier figure on a shared machine. Run it with ``PYTHONPATH=<a git archive of another commit>/src`` to
measure that commit's code.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compat_submissions_list", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--submissions", type=int, default=3000)
    p.add_argument("--page-size", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--database-url", default=None)
    args = p.parse_args(argv)

    from tests.helpers import client_for, conversion, make_world

    import payoutdesk
    from payoutdesk.kit import db
    from payoutdesk.ledger import service as ledger
    from payoutdesk.ledger import workflow as wf
    from payoutdesk.submissions import service as sub_service
    from payoutdesk.worker.runner import run_once

    tmp = Path(tempfile.mkdtemp(prefix="payoutdesk-bench-apisub-"))
    url = args.database_url or f"sqlite:///{tmp / 'bench.db'}"
    if args.database_url is None:
        db.migrate(url)
    engine = db.make_engine(url)
    w = make_world(engine, tmp)
    print(f"code: {Path(payoutdesk.__file__).parent}; database: {engine.dialect.name}")
    t0 = time.perf_counter()
    n = args.submissions
    ids = [conversion(w, f"S-{i}", "100.00") for i in range(max(1, n // 10) + 10)]
    reversed_ids = ids[: max(1, n // 10)]
    with db.write(engine) as conn:
        for aid in reversed_ids:
            ledger.change(conn, w.actor, aid, wf.Reverse(reason="ORDER_ERROR"))
    with db.write(engine) as conn:
        for i in range(n):
            target = reversed_ids[i // 10] if i % 10 == 0 else ids[len(reversed_ids) + i % 10]
            sub_service.create_from_rows(conn, w.actor, w.campaign_id, [
                {"ActionId": str(target), "Amount": f"{50 + i % 40}.00", "Reason": "ORDER_UPDATE",
                 "Type": "Modification", "Method": "PUT"}])
    while run_once(engine, "bench-worker") is not None:
        pass
    print(f"{n} submissions made and run in {time.perf_counter() - t0:.1f} s")

    api = client_for(engine, tmp)
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    event.listen(engine, "before_cursor_execute", count)
    walks, cpus = [], []
    for _ in range(args.repeat):
        statements = 0
        seen = 0
        start, cpu = time.perf_counter(), time.process_time()
        path: str = f"/Advertisers/{w.sid}/APISubmissions?PageSize={args.page_size}"
        while path:
            r = api.get(path, headers=w.auth)
            assert r.status_code == 200, r.text
            body = r.json()
            seen += len(body["APISubmission"])
            path = body["@nextpageuri"]
        walks.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
        assert seen == n, (seen, n)
    s, c = statistics.median(walks), statistics.median(cpus)
    print(f"{n} records in pages of {args.page_size}: median {s:.2f} s ({n / s:,.0f} records/s), "
          f"walks {', '.join(f'{x:.2f}' for x in walks)} s; this process's CPU a walk, median {c:.2f} s "
          f"({n / c:,.0f} records per CPU s); {statements} SQL statements a walk; load average "
          f"{os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
