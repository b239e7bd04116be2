"""A believable demo account, loaded in bulk (``payoutdesk demo``)."""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Engine, insert, select

from payoutdesk.accounts.service import add_user, create_account
from payoutdesk.catalog import service as catalog
from payoutdesk.config import Settings
from payoutdesk.context import Actor
from payoutdesk.contracts.terms import Terms, locking_date, open_ended_lock_date
from payoutdesk.kit import db
from payoutdesk.kit.crypto import SecretBox, load_secret_key
from payoutdesk.kit.net import shown_host
from payoutdesk.kit.progress import Progress
from payoutdesk.kit.time import utcnow
from payoutdesk.ledger import repository as ledger_repo
from payoutdesk.ledger import service as ledger
from payoutdesk.ledger import workflow as wf
from payoutdesk.models import action_items, action_updates, clicks
from payoutdesk.models import actions as actions_table
from payoutdesk.models import event_types as event_types_table

PARTNERS = [
    "CashbackWorld", "TopCashback DE", "Honey Savings", "RetailMeNot", "Slickdeals", "Skimlinks Network",
    "The Style Edit (blog)", "Runner's Review", "Coupons.com", "Ebates Japan", "Influencer: @mia.moves",
    "Influencer: @trailtom", "Loyalty Miles Club", "Student Beans", "UNiDAYS", "Shopmium", "Quidco",
    "Mydealz", "Wirecutter", "Podcast: Gear Talk",
]
CATALOG = [
    ("SKU-RUN-42", "Trail runner 42", "shoes", 8900), ("SKU-RUN-40", "Trail runner 40", "shoes", 8900),
    ("SKU-JKT-M", "Rain jacket M", "apparel", 12900), ("SKU-HAT", "Sun hat", "accessories", 1900),
    ("SKU-SOCK-3", "Socks 3-pack", "accessories", 1299), ("SKU-TENT-2", "Tent for two", "gear", 24900),
    ("SKU-BOTTLE", "Steel bottle", "gear", 2450), ("SKU-TEE-L", "Merino tee L", "apparel", 5900),
]


def build_demo(engine: Engine, settings: Settings, actions: int = 5000, progress: bool = True,
               seed: int = 7) -> dict[str, Any]:
    rnd = random.Random(seed)
    box = SecretBox(load_secret_key(settings.secret_key, settings.data_dir))
    now = utcnow()
    with db.write(engine) as conn:
        new = create_account(conn, "Northwind Outdoor (demo)")
        sid = new.account.sid
        actor = Actor(new.account.id, "demo", wf.Channel.SYSTEM)
        users = []
        for email, role in (("admin@northwind.example", "admin"), ("manager@northwind.example", "manager"),
                            ("viewer@northwind.example", "viewer")):
            local = email.split("@")[0]
            email_n = email if _free_email(conn, email) else f"{local}+{sid[-6:].lower()}@northwind.example"
            e, p = add_user(conn, sid, email_n, role, f"demo-{role}-pass")
            users.append({"email": e, "password": p, "role": role})
        camp_us = catalog.create_campaign(conn, actor, "Northwind US", "USD", None, settings.mail_domain)
        camp_eu = catalog.create_campaign(conn, actor, "Northwind Europe", "EUR", None, settings.mail_domain)
        sale_us = catalog.create_event_type(conn, actor, {"campaign_id": camp_us["id"], "name": "Online Sale",
                                                          "disposition_codes": [{"code": "WRONG_SIZE",
                                                                                 "name": "Wrong size returned",
                                                                                 "operation": "modify"}]}, box)
        lead_us = catalog.create_event_type(conn, actor, {"campaign_id": camp_us["id"], "name": "Newsletter Lead",
                                                          "locking": "open_ended"}, box)
        sale_eu = catalog.create_event_type(conn, actor, {"campaign_id": camp_eu["id"], "name": "Online Sale"}, box)
        # returns processing: the US sales by e-mail (any sender), the European ones from Salesforce
        catalog.patch_event_type(conn, actor, sale_us, {"returns_processing": {"mode": "email"}}, box)
        catalog.patch_event_type(conn, actor, sale_eu, {"returns_processing": {
            "mode": "salesforce", "object": "Opportunity", "order_id_field": "Order_Id__c",
            "status_field": "StageName", "amount_field": "Amount",
            "status_map": {"Closed Lost": {"operation": "reverse", "reason": "CONS_FRAUD"},
                           "Closed Won": {"operation": "approve"},
                           "Adjusted": {"operation": "modify", "reason": "ORDER_UPDATE"}}}}, box)
        outbound_token = str(conn.execute(select(event_types_table.c.outbound_token)
                                          .where(event_types_table.c.id == sale_eu)).scalar_one())
        partner_ids = [catalog.create_partner(conn, actor, name)["id"] for name in PARTNERS]
        start = date(now.year - 1, 1, 1)
        for n, pid in enumerate(partner_ids):
            # percent with category rates; a newer contract supersedes some from mid-year
            catalog.create_contract(conn, actor, {
                "campaign_id": camp_us["id"], "partner_id": pid, "starts_on": start,
                "payout": [{"event_type_id": sale_us, "percent": str(5 + n % 6)},
                           {"event_type_id": lead_us, "fixed": "2.50"}],
                "category_percent": {"gear": "4"} if n % 3 == 0 else {},
                "lock_after": {"months": 0, "days": 27 if n % 2 else 45},
                "pay_after": {"months": 0, "days": 20}, "referral_window_days": 30})
            if n % 4 == 0:
                catalog.create_contract(conn, actor, {
                    "campaign_id": camp_us["id"], "partner_id": pid, "starts_on": date(now.year, 7, 1),
                    "payout": [{"event_type_id": sale_us, "percent": str(8 + n % 3)},
                               {"event_type_id": lead_us, "fixed": "3.00"}],
                    "lock_after": {"months": 1, "days": 0}, "pay_after": {"months": 0, "days": 30},
                    "referral_window_days": 45})
            fixed = n % 5 == 0
            catalog.create_contract(conn, actor, {
                "campaign_id": camp_eu["id"], "partner_id": pid, "starts_on": start,
                "payout": [{"event_type_id": sale_eu, **({"fixed": "7.50"} if fixed else {"percent": "6.5"})}],
                "lock_after": {"months": 1, "days": 10}, "pay_after": {"months": 1, "days": 0},
                "referral_window_days": 14})
        event_types = [(sale_us, camp_us, "contract"), (lead_us, camp_us, "open_ended"), (sale_eu, camp_eu, "contract")]
        click_rows = [
            {"account_id": new.account.id, "campaign_id": camp_us["id"], "partner_id": rnd.choice(partner_ids),
             "customer_id": f"cust-{k}", "clicked_at": now - timedelta(days=rnd.randint(0, 20), minutes=k)}
            for k in range(500)
        ]
        conn.execute(insert(clicks), click_rows)
        terms_cache: dict[tuple[int, int, int, date], Terms] = {}

        def terms(camp: int, pid: int, et: int, day: date) -> Terms:
            key = (camp, pid, et, day if day >= date(now.year, 7, 1) else start)
            if key not in terms_cache:
                terms_cache[key] = catalog.terms_in_force(conn, camp, pid, et, day)
            return terms_cache[key]


    bar = Progress(actions, "demo actions", enabled=progress)
    span_days = 420
    all_ids: list[int] = []
    chunk = 5000
    for offset in range(0, actions, chunk):
        a_rows: list[dict[str, Any]] = []
        i_rows: list[dict[str, Any]] = []
        u_rows: list[dict[str, Any]] = []
        with db.write(engine) as conn:
            for k, action_id in enumerate(ledger_repo.reserve_action_ids(conn, min(chunk, actions - offset))):
                all_ids.append(action_id)
                et, camp, locking = event_types[rnd.choices((0, 1, 2), (6, 1, 3))[0]]
                pid = rnd.choice(partner_ids)
                # recorded as they happen, over the last 420 days (ids follow the event dates, as tracked
                # conversions arrive), some reported up to two days late
                age = span_days * (1 - (offset + k + rnd.random()) / actions) + rnd.random() * 2 * (rnd.random() < 0.3)
                event_at = now - timedelta(days=max(age, 0.0))
                event_at = event_at.replace(microsecond=0)
                t = terms(camp["id"], pid, et, event_at.date())
                if locking == "open_ended":
                    lines: list[tuple[str, str | None, str | None, int, int]] = [
                        ("LEAD", "Newsletter sign-up", None, 1, 0)
                    ]
                else:
                    picks = rnd.sample(CATALOG, rnd.choice((1, 1, 1, 2, 2, 3)))
                    lines = [(sku, name, cat, q, price * q) for sku, name, cat, price in picks
                             for q in (rnd.choice((1, 1, 2)),)]
                act = wf.new_action(tuple(lines), t, action_id)
                lock_date = None if locking == "open_ended" else locking_date(event_at.date(), t.lock_after)
                due = open_ended_lock_date(event_at.date()) if lock_date is None else lock_date
                a_rows.append({
                    "id": action_id, "account_id": new.account.id, "campaign_id": camp["id"], "event_type_id": et,
                    "partner_id": pid, "contract_id": t.contract_id, "order_id": f"O-{100000 + action_id}",
                    "customer_id": f"cust-{rnd.randint(1, 4000)}",
                    "promo_code": rnd.choice((None, None, None, "SPRING10", "WELCOME")),
                    "event_date": event_at, "state": "PENDING", "reason": None, "currency": camp["currency"],
                    "amount": act.amount, "payout": act.payout, "intended_amount": act.amount,
                    "intended_payout": act.payout, "locking_date": lock_date, "lock_due": due, "locked_at": None,
                    "version": 1, "update_count": 1, "restore": None, "created_at": event_at,
                })
                for pos, it in enumerate(act.items):
                    i_rows.append({
                        "action_id": action_id, "position": pos, "sku": it.sku, "name": it.name,
                        "category": it.category, "quantity": it.quantity, "amount": it.amount, "payout": it.payout,
                        "intended_quantity": it.quantity, "intended_amount": it.amount,
                        "intended_payout": it.payout,
                    })
                u_rows.append({
                    "action_id": action_id, "at": event_at, "kind": "CREATED", "state": "PENDING", "reason": None,
                    "note": None, "delta_amount": act.amount, "delta_payout": act.payout,
                    "items": ledger_repo.items_json(act.items), "channel": "api", "submission_id": None,
                    "actor": "tracking",
                })
            conn.execute(insert(actions_table), a_rows)
            conn.execute(insert(action_items), i_rows)
            conn.execute(insert(action_updates), u_rows)
        bar.advance(len(a_rows))
    bar.close()

    # some history through the real service: returns, corrections, approvals, restores
    changes = min(max(actions // 8, 1), 20_000)
    picked = rnd.sample(all_ids, min(changes, len(all_ids)))
    worker = Actor(new.account.id, "manager@northwind.example", wf.Channel.WEB)
    for n, aid in enumerate(picked):
        with db.write(engine) as conn:
            row = ledger.action_row(conn, new.account.id, aid)
            try:
                ledger.apply(conn, worker, aid, _demo_command(rnd, n, row), now=max(now, row.event_date),
                             note="demo")
            except Exception:  # noqa: BLE001,S112 - a demo change that the rules refuse is simply skipped
                continue
    ledger.lock_run(engine, as_of=now.date(), account_id=new.account.id, now=now)
    return {
        "account_sid": sid,
        "auth_token": new.auth_token,
        "users": users,
        "campaigns": [
            {"id": c["id"], "currency": c["currency"], "ftp_username": c["ftp_username"],
             "ftp_password": c["ftp_password"], "returns_email": c["returns_email"],
             "event_types": [{"id": e, "name": nm} for e, nm in ets]}
            for c, ets in ((camp_us, ((sale_us, "Online Sale"), (lead_us, "Newsletter Lead"))),
                           (camp_eu, ((sale_eu, "Online Sale"),)))
        ],
        "ftp": f"ftp://{shown_host(settings.bind)}:{settings.ftp_port}/",
        "smtp": f"{shown_host(settings.bind)}:{settings.smtp_port}",
        "salesforce_outbound_url": f"{settings.public_url}/salesforce/outbound/{outbound_token}",
        "salesforce_event_type": sale_eu,
    }


def _demo_command(rnd: random.Random, n: int, row: Any) -> wf.Command:
    kind = n % 6
    if kind == 0:
        return wf.Reverse(rnd.choice(("ITEM_RETURNED", "CONS_FRAUD", "ORDER_ERROR", "TEST_ACTION")))
    if kind == 1:
        return wf.Modify(amount=int(row.amount * rnd.choice((0.5, 0.8, 0.9))), reason="ORDER_UPDATE")
    if kind == 2:
        return wf.Approve()
    if kind == 3:
        return wf.Reverse("ITEM_RETURNED")
    return wf.Modify(amount=max(0, row.amount - 500), reason="ITEM_RETURNED") if row.amount > 500 else wf.Approve()


def _free_email(conn: Any, email: str) -> bool:
    from payoutdesk.models import users

    return conn.execute(select(users.c.id).where(users.c.email == email)).first() is None


