"""The ``payoutdesk`` command."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

from payoutdesk import __version__
from payoutdesk.config import Settings
from payoutdesk.errors import PayoutdeskError, quote
from payoutdesk.kit.ids import parse_id, ref32


def _settings() -> Settings:
    from payoutdesk.kit.files import private_data_dir

    s = Settings.from_env()
    private_data_dir(s.data_dir)  # tighten a data folder or key that others can read (docs/OPERATIONS.md)
    return s


def _engine(settings: Settings) -> Any:
    from payoutdesk.kit.db import make_engine

    return make_engine(settings.database_url)


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}"
    return url


def cmd_init(args: argparse.Namespace) -> int:
    from payoutdesk.kit.db import migrate

    s = _settings()
    migrate(s.database_url)
    print(f"Database ready: {_redact(s.database_url)}")
    return 0


def cmd_account_create(args: argparse.Namespace) -> int:
    from payoutdesk.accounts.service import create_account
    from payoutdesk.kit import db

    s = _settings()
    with db.write(_engine(s)) as conn:
        new = create_account(conn, args.name)
    if args.json:
        print(json.dumps({"account_sid": new.account.sid, "auth_token": new.auth_token, "name": new.account.name}))
    else:
        print(f"Account:     {new.account.name}")
        print(f"Account SID: {new.account.sid}")
        print(f"Auth token:  {new.auth_token}   (shown once; keep it safe)")
    return 0


def cmd_account_rotate_token(args: argparse.Namespace) -> int:
    from payoutdesk.accounts.service import rotate_token
    from payoutdesk.kit import db

    s = _settings()
    with db.write(_engine(s)) as conn:
        new = rotate_token(conn, args.sid)
    if args.json:
        print(json.dumps({"account_sid": new.account.sid, "auth_token": new.auth_token}))
    else:
        print(f"Account SID: {new.account.sid}")
        print(f"Auth token:  {new.auth_token}   (new; shown once; keep it safe)")
        print("The old token is refused from now on (by a running server within 10 seconds: docs/OPERATIONS.md).")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from payoutdesk.kit.backup import BackupRefused, backup_sqlite
    from payoutdesk.kit.files import sqlite_path

    s = _settings()
    source = sqlite_path(s.database_url)
    if source is None:
        print(f"error: `payoutdesk backup` copies a SQLite database; {_redact(s.database_url)} is not one. "
              "Back up PostgreSQL with its own tools: pg_dump (or base backups with WAL archiving); "
              "see docs/OPERATIONS.md.", file=sys.stderr)
        return 2
    try:
        done = backup_sqlite(source, Path(args.file), force=args.force)
    except BackupRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    restarts = f", started again {done.restarts} times for writes made meanwhile" if done.restarts else ""
    print(f"Backed up {done.source} to {done.target}: {done.size / 1_048_576:,.1f} MiB "
          f"({done.pages:,} pages) in {done.seconds:.1f} s{restarts}; the copy is readable by you only.")
    if not s.secret_key:
        print(f"Keep a copy of {s.data_dir / 'secret.key'} too: the remote credentials stored in the "
              "database (FTP/SFTP pull, Salesforce) are encrypted with it.")
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    from payoutdesk.accounts.service import add_user
    from payoutdesk.kit import db

    s = _settings()
    with db.write(_engine(s)) as conn:
        email, password = add_user(conn, args.account, args.email, args.role, args.password)
    if args.json:
        print(json.dumps({"email": email, "password": password, "role": args.role, "account_sid": args.account}))
    else:
        print(f"User {email} ({args.role}) added to account {args.account}; password: {password}")
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    from payoutdesk.ledger.service import lock_run

    s = _settings()
    as_of: date | None = args.as_of
    n = lock_run(_engine(s), as_of=as_of)
    print(f"Locked {n} actions" + (f" due by {as_of.isoformat()}" if as_of else "") + ".")
    return 0


def cmd_reprocess(args: argparse.Namespace) -> int:
    """R13 re-processing in the foreground (ledger/reprocess.py), in chunks, with a progress bar; the counts."""
    from payoutdesk.accounts.service import account_by_sid
    from payoutdesk.kit import db
    from payoutdesk.kit.progress import Progress
    from payoutdesk.ledger import reprocess

    s = _settings()
    engine = _engine(s)
    c = reprocess.criteria(ref32(args.campaign), args.date_from, args.date_to, args.order_ids)
    with db.read(engine) as conn:
        account = account_by_sid(conn, args.account)
    bar: Progress | None = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = Progress(total, "re-processing", enabled=total > reprocess.JOB_CHUNK)
        bar.advance(done - bar.done)

    import getpass

    counts = reprocess.run_in_chunks(engine, account.id, c, progress=progress, asked_by=f"cli:{getpass.getuser()}")
    if bar is not None:
        bar.close()
    for name, n in counts.as_dict().items():
        print(f"{name:<18} {n:>10,}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from payoutdesk.accounts.service import account_by_sid
    from payoutdesk.kit import db
    from payoutdesk.ledger.repository import Filters
    from payoutdesk.ledger.service import export_rows

    s = _settings()
    engine = _engine(s)
    with db.read(engine) as conn:
        if args.account:
            account = account_by_sid(conn, args.account)
        elif args.campaign is not None:
            account = _account_of_campaign(conn, args.campaign)
        else:
            account = _only_account(conn)
        filters = Filters(state=args.state, campaign_id=ref32(args.campaign))  # campaign ids are 32-bit
        out = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout  # noqa: SIM115
        try:
            for chunk in export_rows(conn, account.id, filters):
                out.write(chunk)
        finally:
            if args.output:
                out.close()
    return 0


def cmd_forecast(args: argparse.Namespace) -> int:
    """The lock forecast (ledger/forecast.py) as a table: one line per locking date and partner."""
    from rich.console import Console
    from rich.table import Table

    from payoutdesk.accounts.service import account_by_sid
    from payoutdesk.kit import db
    from payoutdesk.ledger.forecast import ForecastFilters, forecast

    s = _settings()
    with db.read(_engine(s)) as conn:
        if args.account:
            account = account_by_sid(conn, args.account)
        elif args.campaign is not None:
            account = _account_of_campaign(conn, args.campaign)
        else:
            account = _only_account(conn)
        f = ForecastFilters(ref32(args.campaign), ref32(args.partner), args.date_from, args.date_to)
        out = forecast(conn, account.id, f)

    def money(payout: dict[str, str]) -> str:
        return "  ".join(f"{v} {cur}" for cur, v in payout.items()) or "0"

    table = Table(title=f"Lock forecast of {account.name}", show_lines=False)
    for name, justify in (("Locking date", "left"), ("Partner", "left"), ("Actions", "right"),
                          ("Payout", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    sections = [(d["locking_date"], d) for d in out["dates"]]
    if out["open_ended"]["count"]:
        sections.append(("open-ended", out["open_ended"]))
    for label, group in sections:
        for p in group["partners"]:
            table.add_row(label, f"{p['partner_name']} ({p['partner_id']})", f"{p['count']:,}", money(p["payout"]))
        table.add_row(label, "[bold]all partners[/bold]", f"[bold]{group['count']:,}[/bold]",
                      f"[bold]{money(group['payout'])}[/bold]", end_section=True)
    table.add_row("[bold]total[/bold]", "", f"[bold]{out['total']['count']:,}[/bold]",
                  f"[bold]{money(out['total']['payout'])}[/bold]")
    Console(width=max(100, Console().width)).print(table)
    return 0


def cmd_payments(args: argparse.Namespace) -> int:
    """Payments owed per partner and clearing date (payments/service.py): a table, or CSV with --csv."""
    from rich.console import Console
    from rich.table import Table

    from payoutdesk.accounts.service import account_by_sid
    from payoutdesk.kit import db
    from payoutdesk.payments.service import PaymentFilters, report, report_csv

    s = _settings()
    with db.read(_engine(s)) as conn:
        account = account_by_sid(conn, args.account) if args.account else _only_account(conn)
        f = PaymentFilters(ref32(args.partner), args.date_from, args.date_to)
        if args.csv:
            for chunk in report_csv(conn, account.id, f):
                sys.stdout.write(chunk)
            return 0
        out = report(conn, account.id, f)
    table = Table(title=f"Payments owed by {account.name}")
    for name in ("Clearing date", "Partner", "Actions", "Owed", "Paid", "Difference", "Due"):
        table.add_column(name, justify="left" if name in ("Clearing date", "Partner", "Due") else "right")
    for r in out["items"]:
        table.add_row(r["clearing_date"], f"{r['partner_name']} ({r['partner_id']})", f"{r['actions']:,}",
                      f"{r['owed']} {r['currency']}", f"{r['paid']} {r['currency']}",
                      f"{r['difference']} {r['currency']}", "due" if r["due"] else "")
    for t in out["totals"]:
        table.add_row("[bold]total[/bold]", "", f"{t['actions']:,}", f"{t['owed']} {t['currency']}",
                      f"{t['paid']} {t['currency']}", f"{t['difference']} {t['currency']}",
                      f"{t['due']} {t['currency']} due")
    Console(width=max(110, Console().width)).print(table)
    return 0


def _account_of_campaign(conn: Any, campaign_id: int) -> Any:
    from sqlalchemy import select

    from payoutdesk.accounts.service import AccountRef
    from payoutdesk.errors import NotFound
    from payoutdesk.models import accounts, campaigns

    row = conn.execute(
        select(accounts.c.id, accounts.c.sid, accounts.c.name)
        .join(campaigns, campaigns.c.account_id == accounts.c.id)
        .where(campaigns.c.id == ref32(campaign_id))  # campaign ids are 32-bit
    ).first()
    if row is None:
        raise NotFound(f"No campaign with id {campaign_id}.")
    return AccountRef(row.id, row.sid, row.name)


def _port_arg(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port number (0-65535)")
    return int(text)


def _campaign_arg(text: str) -> int:
    """A campaign id: a whole number 1 … 2^63-1 in ASCII digits (a larger one than any campaign has is not
    found, never a crash)."""
    number = parse_id(text.strip())
    if number is None:
        raise argparse.ArgumentTypeError(f"{quote(text)} is not a campaign id (a whole number)")
    return number


def _partner_arg(text: str) -> int:
    number = parse_id(text.strip())
    if number is None:
        raise argparse.ArgumentTypeError(f"{quote(text)} is not a partner id (a whole number)")
    return number


def _date_arg(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a date like 2026-01-15") from None


def _only_account(conn: Any) -> Any:
    from sqlalchemy import select

    from payoutdesk.accounts.service import AccountRef
    from payoutdesk.errors import ValidationFailed
    from payoutdesk.models import accounts

    rows = conn.execute(select(accounts.c.id, accounts.c.sid, accounts.c.name).limit(2)).all()
    if len(rows) != 1:
        raise ValidationFailed("There is more than one account (or none): name one with --account SID.")
    return AccountRef(rows[0].id, rows[0].sid, rows[0].name)


def cmd_submit(args: argparse.Namespace) -> int:
    import getpass

    from payoutdesk.context import Actor
    from payoutdesk.kit import db
    from payoutdesk.kit.chunks import read_in
    from payoutdesk.kit.progress import Progress
    from payoutdesk.ledger.workflow import Channel
    from payoutdesk.models import campaigns
    from payoutdesk.submissions import engine as sub_engine
    from payoutdesk.submissions import files
    from payoutdesk.submissions import service as subs
    from payoutdesk.submissions.formats.model import MiB
    from payoutdesk.worker.runner import claim, worker_name

    s = _settings()
    engine = _engine(s)
    path = Path(args.file)
    if not path.is_file():
        print(f"error: no file {path}", file=sys.stderr)
        return 2
    with db.read(engine) as conn:
        campaign = conn.execute(campaigns.select().where(campaigns.c.id == ref32(args.campaign))).first()
    if campaign is None:
        print(f"error: no campaign {args.campaign}", file=sys.stderr)
        return 2
    actor = Actor(campaign.account_id, f"cli:{getpass.getuser()}", Channel.FILE)
    max_bytes = s.max_file_mb * MiB
    # streamed from disk into the file store, 1 MiB at a time, then queued in one short transaction
    with path.open("rb") as f:
        stored = files.store_stream(engine, read_in(f, files.CHUNK_BYTES), max_bytes=max_bytes)
    try:
        with db.write(engine) as conn:
            created = subs.create(conn, actor, args.campaign, stored, file_name=path.name, content_type=None,
                                  dry_run=args.dry_run, force=args.force, max_bytes=max_bytes,
                                  force_hint="run it again with --force")
    finally:
        files.discard(engine, stored.id)  # only when no submission uses it (a refused duplicate)
    sid = subs.parse_id(created["id"])
    worker = worker_name()
    claim(engine, sid, worker)
    bar = Progress(0, f"{created['id']} {path.name}", enabled=not args.json)

    def progress(done: int, total: int) -> None:
        bar.total = max(total, 1)
        bar.advance(done - bar.done)

    sub_engine.process(engine, sid, worker, progress=progress)
    bar.close()
    with db.read(engine) as conn:
        final = subs.get(conn, campaign.account_id, sid)
        errors = subs.errors(conn, campaign.account_id, sid, limit=20)["items"]
    if args.json:
        print(json.dumps({**final, "first_errors": errors}))
    else:
        what = "would change (dry run)" if final["dry_run"] else "applied"
        print(f"{final['id']} {final['status']}: {final['total_records']} rows, {final['applied']} {what}, "
              f"{final['unchanged']} unchanged, {final['errors']} errors; payout change "
              f"{final['payout_delta']} {final['currency']}")
        if final["failure"]:
            print(f"The file failed as a whole: {final['failure']}")
        for e in errors:
            print(f"  row {e['row']} {e['column'] or ''}: {e['type']} {e['code']}: {e['message']}")
    return 1 if final["status"] == "FAILED" else 0


def cmd_worker(args: argparse.Namespace) -> int:
    from payoutdesk import server
    from payoutdesk.kit import logs

    logs.configure()
    s = _settings()
    if not args.once:
        print("payoutdesk worker running; Ctrl-C or SIGTERM stops it.", flush=True)
    done = server.work(s, once=args.once)
    if args.once:
        print(f"Processed {done} submissions.")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from payoutdesk.demo import build_demo
    from payoutdesk.kit.db import migrate
    from payoutdesk.kit.files import write_private

    s = _settings()
    migrate(s.database_url)
    saved = s.data_dir / "demo.json"
    if args.once and saved.exists():
        info = json.loads(saved.read_text())
    else:
        info = build_demo(_engine(s), s, actions=args.actions, progress=not args.json)
        write_private(saved, json.dumps(info, indent=2))
    if args.json:
        print(json.dumps(info))
    else:
        print_demo(info)
    return 0


def print_demo(info: dict[str, Any]) -> None:
    print("Demo account ready (credentials also in $PAYOUTDESK_DATA_DIR/demo.json).")
    print(f"  Account SID: {info['account_sid']}")
    print(f"  Auth token:  {info['auth_token']}")
    print(f"  Sign in at:  {_settings().public_url}/  with one of these users:")
    for u in info["users"]:
        print(f"  User:        {u['email']} / {u['password']} ({u['role']})")
    for c in info["campaigns"]:
        ets = ", ".join(f"{e['id']} {e['name']}" for e in c["event_types"])
        print(f"  Campaign {c['id']} ({c['currency']}): event types {ets}")
        print(f"    FTP login:   {c['ftp_username']} / {c['ftp_password']}" +
              (f"  ({info['ftp']})" if info.get("ftp") else ""))
        print(f"    E-mail to:   {c['returns_email']}" + (f"  (SMTP {info['smtp']})" if info.get("smtp") else ""))
    if info.get("salesforce_outbound_url"):
        print(f"  Salesforce Outbound Messages (event type {info['salesforce_event_type']}): "
              f"{info['salesforce_outbound_url']}")


def cmd_serve(args: argparse.Namespace) -> int:
    from payoutdesk import server
    from payoutdesk.kit import logs
    from payoutdesk.kit.db import migrate

    logs.configure()
    s = _settings()
    port = s.http_port if args.port is None else args.port
    try:
        parts = server.parse_parts(args.only) if args.only else frozenset(server.PARTS)
    except ValueError as exc:
        print(f"error: --only {exc}", file=sys.stderr)
        return 2
    migrate(s.database_url)
    try:
        server.serve(s, args.bind or s.bind, port, parts, ftp_port=args.ftp_port, smtp_port=args.smtp_port)
    except server.BindFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="payoutdesk", description="Control partner payouts before they lock.")
    p.add_argument("--version", action="version", version=f"payoutdesk {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="create or migrate the database").set_defaults(fn=cmd_init)

    demo = sub.add_parser("demo", help="create a demo account with campaigns, partners, contracts and actions")
    demo.add_argument("--actions", type=int, default=5000, help="how many actions (default 5000)")
    demo.add_argument("--json", action="store_true", help="print the credentials as one JSON object")
    demo.add_argument("--once", action="store_true",
                      help="reuse the demo made before in this data folder (its credentials are in demo.json)")
    demo.set_defaults(fn=cmd_demo)

    serve = sub.add_parser("serve", help="serve the web pages, the API, our FTP and SMTP servers, and run a worker "
                                         "and the scheduler (pulls, polls, lock runs)")
    serve.add_argument("--bind", metavar="ADDR", help="address to listen on (default: $PAYOUTDESK_BIND, 127.0.0.1)")
    serve.add_argument("--port", metavar="N", type=_port_arg,
                       help="HTTP port (default: $PAYOUTDESK_HTTP_PORT, 8000; 0: no web server)")
    serve.add_argument("--ftp-port", metavar="N", type=_port_arg,
                       help="FTP port (default: $PAYOUTDESK_FTP_PORT, 2121; 0: no FTP server)")
    serve.add_argument("--smtp-port", metavar="N", type=_port_arg,
                       help="SMTP port (default: $PAYOUTDESK_SMTP_PORT, 2525; 0: no SMTP server)")
    serve.add_argument("--only", metavar="PARTS",
                       help="run only these parts, comma-separated: http, ftp, smtp, worker, scheduler "
                            "(default: all), for deployments of several processes (docs/DEPLOYMENT.md)")
    serve.set_defaults(fn=cmd_serve)

    account = sub.add_parser("account", help="accounts").add_subparsers(dest="sub", required=True)
    create = account.add_parser("create", help="create an account and print its API credentials")
    create.add_argument("name")
    create.add_argument("--json", action="store_true")
    create.set_defaults(fn=cmd_account_create)
    rotate = account.add_parser("rotate-token", help="give an account a new auth token; the old one stops working")
    rotate.add_argument("sid", metavar="SID", help="Account SID")
    rotate.add_argument("--json", action="store_true", help="print {account_sid, auth_token} as JSON")
    rotate.set_defaults(fn=cmd_account_rotate_token)

    user = sub.add_parser("user", help="users").add_subparsers(dest="sub", required=True)
    add = user.add_parser("add", help="add a user to an account")
    add.add_argument("email")
    add.add_argument("--account", required=True, help="Account SID")
    add.add_argument("--role", default="manager", choices=["admin", "manager", "viewer"])
    add.add_argument("--password", help="generated when not given")
    add.add_argument("--json", action="store_true")
    add.set_defaults(fn=cmd_user_add)

    submit = sub.add_parser("submit", help="process a returns file in the foreground")
    submit.add_argument("file")
    submit.add_argument("--campaign", type=_campaign_arg, required=True, help="campaign id")
    submit.add_argument("--dry-run", action="store_true", help="report what each row would do; change nothing")
    submit.add_argument("--force", action="store_true", help="process a file that was submitted before")
    submit.add_argument("--json", action="store_true", help="print the submission as JSON")
    submit.set_defaults(fn=cmd_submit)

    wk = sub.add_parser("worker", help="run a submissions worker (any number may run)")
    wk.add_argument("--once", action="store_true", help="empty the queue, then exit")
    wk.set_defaults(fn=cmd_worker)

    lock = sub.add_parser("lock", help="lock every action whose locking date has come")
    lock.add_argument("--as-of", type=_date_arg, help="lock as if today were this date (YYYY-MM-DD)")
    lock.set_defaults(fn=cmd_lock)

    rp = sub.add_parser("reprocess", help="run attribution again over unlocked PENDING actions (R13)")
    rp.add_argument("--account", required=True, help="Account SID")
    rp.add_argument("--campaign", type=_campaign_arg)
    rp.add_argument("--from", dest="date_from", type=_date_arg, help="event dates from (YYYY-MM-DD)")
    rp.add_argument("--to", dest="date_to", type=_date_arg, help="event dates up to (YYYY-MM-DD, inclusive)")
    rp.add_argument("--order-id", dest="order_ids", action="append", metavar="ORDER_ID",
                    help="an order id (again for more)")
    rp.set_defaults(fn=cmd_reprocess)

    export = sub.add_parser("export", help="export actions as CSV")
    export.add_argument("--account", help="Account SID (needed when there are several and no --campaign)")
    export.add_argument("--campaign", type=_campaign_arg)
    export.add_argument("--state", choices=["PENDING", "APPROVED", "REVERSED"])
    export.add_argument("--output", type=Path, help="file to write (default: standard output)")
    export.set_defaults(fn=cmd_export)

    fc = sub.add_parser("forecast", help="what locks on which date, payout per partner (the lock forecast)")
    fc.add_argument("--account", help="Account SID (needed when there are several and no --campaign)")
    fc.add_argument("--campaign", type=_campaign_arg)
    fc.add_argument("--partner", type=_partner_arg, help="a partner id")
    fc.add_argument("--from", dest="date_from", type=_date_arg, help="locking dates from (YYYY-MM-DD)")
    fc.add_argument("--to", dest="date_to", type=_date_arg, help="locking dates up to (YYYY-MM-DD, inclusive)")
    fc.set_defaults(fn=cmd_forecast)

    pay = sub.add_parser("payments", help="payments owed per partner and clearing date, and what was paid")
    pay.add_argument("--account", help="Account SID (needed when there are several)")
    pay.add_argument("--partner", type=_partner_arg, help="a partner id")
    pay.add_argument("--from", dest="date_from", type=_date_arg, help="clearing dates from (YYYY-MM-DD)")
    pay.add_argument("--to", dest="date_to", type=_date_arg, help="clearing dates up to (YYYY-MM-DD, inclusive)")
    pay.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    pay.set_defaults(fn=cmd_payments)

    backup = sub.add_parser("backup", help="copy the SQLite database to FILE while it is in use")
    backup.add_argument("file", metavar="FILE", help="the copy to write (0600)")
    backup.add_argument("--force", action="store_true", help="replace FILE if it exists")
    backup.set_defaults(fn=cmd_backup)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except PayoutdeskError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
