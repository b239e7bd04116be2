"""The ``payoutdesk`` console script, run as a subprocess against a fresh database of each backend."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from payoutdesk.cli import main
from payoutdesk.kit import db
from payoutdesk.kit.db import make_engine
from payoutdesk.ledger.service import EXPORT_COLUMNS
from payoutdesk.models import actions, users
from tests.helpers import cli_runner, client_for


@pytest.fixture
def cli(fresh_url: str, tmp_path: Path) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUTDESK_")}
    env |= {"PAYOUTDESK_DATA_DIR": str(tmp_path / "data"), "PAYOUTDESK_DATABASE_URL": fresh_url}

    return cli_runner(env)


@pytest.fixture
def engine_of(fresh_url: str) -> Iterator[Engine]:
    eng = make_engine(fresh_url)
    yield eng
    eng.dispose()


@pytest.fixture
def inproc(fresh_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
           capsys: pytest.CaptureFixture[str]) -> Any:
    """The same command line, in this process: quick, for the many ways of getting it wrong."""
    monkeypatch.setenv("PAYOUTDESK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PAYOUTDESK_DATABASE_URL", fresh_url)

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse refusing the arguments
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def auth(sid: str, token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{sid}:{token}".encode()).decode()}


def test_init_account_and_users(cli: Any, inproc: Any, engine_of: Engine, tmp_path: Path) -> None:
    first = cli("init")
    assert "Database ready" in first.stdout
    new = json.loads(cli("account", "create", "Brand One", "--json").stdout)
    assert set(new) >= {"account_sid", "auth_token"}
    assert inproc("init")[0] == 0  # again: a no-op that keeps the data
    with client_for(engine_of, tmp_path) as api:
        r = api.get("/api/v1/campaigns", headers=auth(new["account_sid"], new["auth_token"]))
        assert r.status_code == 200 and r.json() == {"items": []}
        assert api.get("/api/v1/campaigns", headers=auth(new["account_sid"], "nope")).status_code == 401
    code, human, _ = inproc("account", "create", "Brand Two")
    assert code == 0 and "Account SID:" in human and "Auth token:" in human

    user = json.loads(cli("user", "add", "Ann@Brand.example", "--account", new["account_sid"], "--role", "viewer",
                          "--json").stdout)
    assert user["email"] == "ann@brand.example" and user["role"] == "viewer" and len(user["password"]) >= 12
    chosen = json.loads(inproc("user", "add", "bob@brand.example", "--account", new["account_sid"],
                               "--password", "correct horse", "--json")[1])
    assert chosen["password"] == "correct horse" and chosen["role"] == "manager"  # the default role

    p = cli("user", "add", "not-an-email", "--account", new["account_sid"], ok=False)  # the real script says no
    assert p.returncode == 2 and p.stderr.strip() == "error: 'not-an-email' is not an e-mail address."
    for args, words in [
        (("user", "add", "c@brand.example", "--account", new["account_sid"], "--role", "owner"), "invalid choice"),
        (("user", "add", "not-an-email", "--account", new["account_sid"]), "not an e-mail address"),
        (("user", "add", "d@brand.example", "--account", "IRNOSUCHSID"), "No account with SID 'IRNOSUCHSID'"),
        (("user", "add", "ann@brand.example", "--account", new["account_sid"]), "exists already"),
        (("user", "add", "e@brand.example", "--account", new["account_sid"], "--password", "short"), "8 characters"),
        (("user", "add", "f@brand.example"), "--account"),
        (("account", "create", "   "), "needs a name"),
    ]:
        code, _, err = inproc(*args)
        assert code != 0 and words in err, (args, err)
    with db.read(engine_of) as conn:  # none of them left anything behind
        assert conn.execute(select(func.count()).select_from(users)).scalar_one() == 2


def test_demo_lock_and_export(cli: Any, inproc: Any, engine_of: Engine, tmp_path: Path) -> None:
    cli("account", "create", "Someone else")  # the demo is not the only account
    info = json.loads(cli("demo", "--actions", "300", "--json").stdout)
    assert set(info) >= {"account_sid", "auth_token", "users", "campaigns"}
    assert {u["role"] for u in info["users"]} == {"admin", "manager", "viewer"}
    for u in info["users"]:
        assert set(u) >= {"email", "password", "role"} and "@" in u["email"] and len(u["password"]) >= 8
    camps = info["campaigns"]
    assert len(camps) >= 2 and len({c["currency"] for c in camps}) >= 2
    for c in camps:
        assert set(c) >= {"id", "currency", "ftp_username", "ftp_password", "returns_email", "event_types"}
        assert re.fullmatch(r"returns-\w+@[\w.-]+", c["returns_email"]) and c["ftp_password"]
        assert c["event_types"] and all(set(e) >= {"id", "name"} for e in c["event_types"])
    with db.read(engine_of) as conn:
        assert conn.execute(select(func.count()).select_from(actions)).scalar_one() == 300
    with client_for(engine_of, tmp_path) as api:
        r = api.get("/api/v1/actions", params={"limit": 5}, headers=auth(info["account_sid"], info["auth_token"]))
        assert r.status_code == 200 and len(r.json()["items"]) == 5

    first = cli("lock", "--as-of", "2030-01-01").stdout
    m = re.search(r"Locked (\d+) actions", first)
    assert m, first
    with db.read(engine_of) as conn:
        unlocked = select(func.count()).select_from(actions).where(actions.c.locked_at.is_(None))
        assert conn.execute(unlocked).scalar_one() == 0 and int(m.group(1)) > 0
    assert "Locked 0 actions" in cli("lock", "--as-of", "2030-01-01").stdout
    code, _, err = inproc("lock", "--as-of", "tomorrow")
    assert code == 2 and "'tomorrow' is not a date like 2026-01-15" in err

    usd = camps[0]["id"]
    out = tmp_path / "pending.csv"
    cli("export", "--campaign", str(usd), "--state", "APPROVED", "--output", str(out))
    text = out.read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(next(csv.reader(io.StringIO(text)))) == EXPORT_COLUMNS
    assert rows and {r["state"] for r in rows} == {"APPROVED"} and {r["campaign_id"] for r in rows} == {str(usd)}
    to_stdout = cli("export", "--campaign", str(usd), "--state", "APPROVED").stdout
    assert to_stdout.replace("\r\n", "\n") == text.replace("\r\n", "\n")
    whole = inproc("export", "--account", info["account_sid"])[1]
    assert len(list(csv.DictReader(io.StringIO(whole)))) == 300
    for args, words in [
        ((), "--account"),  # two accounts and no campaign: say which
        (("--campaign", "999999"), "No campaign with id 999999"),
        (("--account", "IRNOSUCHSID"), "No account with SID"),
        (("--state", "LOST"), "invalid choice"),
        (("--campaign", "one"), "is not a campaign id"),
        (("--campaign", "9" * 30), "is not a campaign id"),  # was a traceback on PostgreSQL
        (("--campaign", str(2**40)), f"No campaign with id {2**40}"),  # 64-bit: names no campaign
    ]:
        code, _, err = inproc("export", *args)
        assert code != 0 and words in err, (args, err)
    # a campaign id past 32 bits names no campaign: an empty export, not a traceback (PostgreSQL's integer)
    code, out, err = inproc("export", "--account", info["account_sid"], "--campaign", str(2**40))
    assert code == 0 and out.splitlines()[0].startswith("action_id,") and len(out.splitlines()) == 1, (out, err)
    (tmp_path / "r.csv").write_text("ActionId,Reason\n1,APPROVED\n")
    code, _, err = inproc("submit", str(tmp_path / "r.csv"), "--campaign", str(2**40))
    assert code == 2 and f"no campaign {2**40}" in err, err
