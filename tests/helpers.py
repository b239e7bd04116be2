"""Scenario builders shared by the tests: a tenant with a campaign, partners, contracts."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from payoutdesk.accounts.service import create_account
from payoutdesk.api.app import create_app
from payoutdesk.config import Settings
from payoutdesk.context import Actor
from payoutdesk.kit import db
from payoutdesk.ledger import workflow as wf


@dataclass
class World:
    engine: Engine
    account_id: int
    sid: str
    token: str
    campaign_id: int = 0
    currency: str = "USD"
    sale: int = 0  # event type with contract locking
    lead: int = 0  # event type with open-ended locking
    partners: list[int] = field(default_factory=list)
    contract_id: int = 0

    @property
    def actor(self) -> Actor:
        return Actor(self.account_id, "test", wf.Channel.API)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{self.sid}:{self.token}".encode()).decode()}


def make_world(engine: Engine, tmp_dir: Any = "/tmp", currency: str = "USD", percent: str = "10",
               category_percent: dict[str, str] | None = None, fixed_lead: str = "2.50",
               starts_on: date = date(2020, 1, 1), lock_after: dict[str, int] | None = None) -> World:
    from payoutdesk.catalog import service as catalog
    from payoutdesk.kit.crypto import SecretBox

    box = SecretBox("test-secret")
    with db.write(engine) as conn:
        new = create_account(conn, "Test brand")
        w = World(engine, new.account.id, new.account.sid, new.auth_token, currency=currency)
        actor = w.actor
        w.campaign_id = catalog.create_campaign(conn, actor, "Main", currency, None, "mail.test")["id"]
        w.sale = catalog.create_event_type(
            conn, actor, {"campaign_id": w.campaign_id, "name": "Online Sale",
                          "disposition_codes": [{"code": "Wrong_Size", "name": "Wrong size", "operation": "modify"}]},
            box)
        w.lead = catalog.create_event_type(
            conn, actor, {"campaign_id": w.campaign_id, "name": "Lead", "locking": "open_ended"}, box)
        for name in ("Alpha", "Beta", "Gamma"):
            w.partners.append(catalog.create_partner(conn, actor, name)["id"])
        for pid in w.partners:
            cid = catalog.create_contract(conn, actor, {
                "campaign_id": w.campaign_id, "partner_id": pid, "starts_on": starts_on,
                "payout": [{"event_type_id": w.sale, "percent": percent},
                           {"event_type_id": w.lead, "fixed": fixed_lead}],
                "category_percent": category_percent or {},
                "lock_after": lock_after or {"months": 0, "days": 27},
                "pay_after": {"months": 0, "days": 20}, "referral_window_days": 30})
            w.contract_id = w.contract_id or cid
    return w


def conversion(w: World, order_id: str = "O-1", amount: str | None = "100.00",
               items: list[dict[str, Any]] | None = None, event_date: str = "2026-11-20T10:00:00Z",
               partner: int | None = None, event_type: int | None = None) -> int:
    from payoutdesk.ledger import service as ledger

    data: dict[str, Any] = {"event_type_id": event_type or w.sale, "order_id": order_id, "event_date": event_date,
                            "partner_id": partner or w.partners[0]}
    if items is not None:
        data["items"] = items
    else:
        data["amount"] = amount
    with db.write(w.engine) as conn:
        return ledger.record_conversion(conn, w.actor, data)


def drain(engine: Engine) -> None:
    """Run the queued submissions to their end, as a worker would."""
    from payoutdesk.worker.runner import run_once

    while run_once(engine, "test-worker") is not None:
        pass


def client_for(engine: Engine, tmp_path: Any, **env: str) -> TestClient:
    settings = Settings.from_env({"PAYOUTDESK_DATA_DIR": str(tmp_path), "PAYOUTDESK_API_RATE_LIMIT": "0",
                                  "PAYOUTDESK_SECRET_KEY": "test-secret", **env})
    return TestClient(create_app(settings, engine), raise_server_exceptions=False)


def bulk_actions(w: World, n: int, amount_minor: int = 10_000, order_prefix: str = "B") -> list[int]:
    """``n`` pending one-item actions on ``w.sale`` for partner 1, inserted in bulk (with CREATED rows)."""
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from payoutdesk.catalog.service import terms_in_force
    from payoutdesk.contracts.terms import locking_date
    from payoutdesk.ledger.repository import items_json, reserve_action_ids
    from payoutdesk.models import action_items, action_updates, actions

    event_at = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    with db.write(w.engine) as conn:
        terms = terms_in_force(conn, w.campaign_id, w.partners[0], w.sale, event_at.date())
        act = wf.new_action((("ORDER", None, None, 1, amount_minor),), terms)
        ids = reserve_action_ids(conn, n)
        lock = locking_date(event_at.date(), terms.lock_after)
        conn.execute(insert(actions), [{
            "id": i, "account_id": w.account_id, "campaign_id": w.campaign_id, "event_type_id": w.sale,
            "partner_id": w.partners[0], "contract_id": terms.contract_id, "order_id": f"{order_prefix}-{i}",
            "customer_id": None, "promo_code": None, "event_date": event_at, "state": "PENDING", "reason": None,
            "currency": w.currency, "amount": act.amount, "payout": act.payout, "intended_amount": act.amount,
            "intended_payout": act.payout, "locking_date": lock, "lock_due": lock, "locked_at": None,
            "version": 1, "update_count": 1, "restore": None, "created_at": event_at} for i in ids])
        conn.execute(insert(action_items), [{
            "action_id": i, "position": 0, "sku": "ORDER", "name": None, "category": None, "quantity": 1,
            "amount": act.amount, "payout": act.payout, "intended_quantity": 1, "intended_amount": act.amount,
            "intended_payout": act.payout} for i in ids])
        conn.execute(insert(action_updates), [{
            "action_id": i, "at": event_at, "kind": "CREATED", "state": "PENDING", "reason": None, "note": None,
            "delta_amount": act.amount, "delta_payout": act.payout, "items": items_json(act.items),
            "channel": "api", "submission_id": None, "actor": "test"} for i in ids])
    return ids


SCRIPT = Path(sys.executable).parent / "payoutdesk"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "payoutdesk.cli"]
CliRun = Callable[..., "subprocess.CompletedProcess[str]"]


def cli_runner(env: dict[str, str], *, timeout: float = 120, umask: int = -1) -> CliRun:
    """``payoutdesk ARGS`` in a child process with ``env``: ``ok`` asks for exit 0, else for a refusal (a
    non-zero exit without a traceback)."""
    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([*COMMAND, *args], env=env, capture_output=True, text=True, timeout=timeout,
                           check=False, umask=umask)
        if ok:
            assert p.returncode == 0, (args, p.stdout, p.stderr)
        else:
            assert p.returncode != 0, (args, p.stdout)
            assert "Traceback" not in p.stderr, p.stderr
        return p

    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(app: Any) -> Iterator[int]:
    """``app`` behind a real uvicorn server on 127.0.0.1, in a thread; yields its port once it listens."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


@dataclass(frozen=True)
class SelfSigned:
    """A self-signed certificate for localhost and 127.0.0.1, for the TLS servers of the tests."""

    cert: Path  # the certificate alone (PEM)
    key: Path  # its private key alone (PEM, PKCS#8)
    combined: Path  # the certificate and its key in one PEM file


def self_signed(folder: Path) -> SelfSigned:
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    out = SelfSigned(folder / "cert.pem", folder / "key.pem", folder / "combined.pem")
    out.cert.write_bytes(cert_pem)
    out.key.write_bytes(key_pem)
    out.combined.write_bytes(cert_pem + key_pem)
    return out
