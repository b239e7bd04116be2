"""impact.com's own Singer tap, tap-impact 2.1.1 from PyPI, runs unchanged against a served payoutdesk (issue 14).

The tap lives in its own virtual environment (.venv-tap/, scripts/ensure-tap.sh: its pins differ from ours);
tests/tap_runner.py points only its fixed base URL (https://api.impact.com) at the test server. Its discovery,
then its sync of company_information, campaigns, actions, action_updates, media_partners, ftp_file_submissions
and api_submissions: the sync exits 0 and prints, stream by stream, the records that the native API
(/api/v1/...) holds for the account, as far as the tap's own windows and bookmarks select them
(``tap_selects``: the tap's sync.py, which asks up to today 00:00 UTC, in 45-day windows for actions and
action updates, bookmarks each stream on one date and keeps the records at or after its bookmark). A second
sync with the state that the first printed brings the actions whose event dates came after the first one's
bookmark, those at the bookmark again, and nothing older.

The application's clock runs at 2026-11-26 (tests/conftest.py); the tap's is the real one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from payoutdesk.api.app import create_app
from payoutdesk.catalog import service as catalog
from payoutdesk.config import Settings
from payoutdesk.kit import db
from payoutdesk.kit.crypto import SecretBox
from payoutdesk.ledger import service as ledger
from tests.conftest import only_on
from tests.helpers import World, bulk_actions, client_for, conversion, drain, make_world, serving

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "tests" / "tap_runner.py"
STREAMS = ("company_information", "campaigns", "actions", "action_updates", "media_partners",
           "ftp_file_submissions", "api_submissions")
START_DATE = "2026-09-01T00:00:00Z"  # the config's start_date: before every event of the account
WINDOW = timedelta(days=45)  # sync.DEFAULT_WINDOW_SIZE: the windows of actions and action_updates
TAP_TIMEOUT = 120  # seconds for one run of the tap (it takes a few)
STATUS = {"QUEUED": "Queued", "IN_PROGRESS": "In Progress", "COMPLETE": "Complete", "FAILED": "Failed"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


# --- the tap -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tap_python() -> Path:
    """The tap's interpreter; the venv is made once (make test makes it before pytest starts)."""
    venv = Path(os.environ.get("TAP_VENV", ".venv-tap"))
    venv = venv if venv.is_absolute() else ROOT / venv
    p = subprocess.run(["bash", str(ROOT / "scripts" / "ensure-tap.sh")], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    return venv / "bin" / "python"


@dataclass
class Run:
    messages: list[dict[str, Any]]
    stderr: str

    def records(self, stream: str) -> list[dict[str, Any]]:
        return [m["record"] for m in self.messages if m["type"] == "RECORD" and m["stream"] == stream]

    @property
    def state(self) -> dict[str, Any]:
        states = [m["value"] for m in self.messages if m["type"] == "STATE"]
        assert states, "the sync printed no STATE"
        return dict(states[-1])


class Tap:
    def __init__(self, python: Path, port: int, folder: Path, w: World) -> None:
        self.python, self.port, self.folder = python, port, folder
        self.config = folder / "config.json"
        self.config.write_text(json.dumps({"account_sid": w.sid, "auth_token": w.token, "api_catalog": "Advertisers",
                                           "start_date": START_DATE, "user_agent": "payoutdesk-tests"}))

    def run(self, *args: str) -> tuple[str, str]:
        """The tap's stdout and stderr (into files: a pipe would slow its many small writes down)."""
        env = {**os.environ, "TAP_IMPACT_BASE_URL": f"http://127.0.0.1:{self.port}", "TAP_IMPACT_NO_BACKOFF_WAIT": "1"}
        out, err = self.folder / "tap.out", self.folder / "tap.err"
        with out.open("w") as stdout, err.open("w") as stderr:
            p = subprocess.run([str(self.python), str(RUNNER), "--config", str(self.config), *args], env=env,
                               stdout=stdout, stderr=stderr, timeout=TAP_TIMEOUT, check=False, cwd=self.folder)
        assert p.returncode == 0, f"tap-impact {' '.join(args)} exited {p.returncode}:\n{err.read_text()[-6000:]}"
        return out.read_text(), err.read_text()

    def discover(self) -> dict[str, Any]:
        return dict(json.loads(self.run("--discover")[0]))

    def sync(self, catalog_: dict[str, Any], state: dict[str, Any] | None, name: str) -> Run:
        cat = self.folder / "catalog.json"
        cat.write_text(json.dumps(catalog_))
        args = ["--catalog", str(cat)]
        if state is not None:
            path = self.folder / f"state-{name}.json"
            path.write_text(json.dumps(state))
            args += ["--state", str(path)]
        out, err = self.run(*args)
        return Run([json.loads(line) for line in out.splitlines() if line.strip()], err)


def select(discovered: dict[str, Any]) -> dict[str, Any]:
    """The catalog as a Singer user selects streams: ``selected`` on the stream's own (empty) breadcrumb."""
    names = {s["tap_stream_id"] for s in discovered["streams"]}
    assert set(STREAMS) <= names, sorted(set(STREAMS) - names)
    for s in discovered["streams"]:
        if s["tap_stream_id"] in STREAMS:
            top = [m for m in s["metadata"] if m["breadcrumb"] == []]
            assert len(top) == 1
            top[0]["metadata"]["selected"] = True
    return discovered


# --- what the tap's sync.py selects ----------------------------------------------------------------


def at(text: str | None) -> datetime | None:
    return None if not text else datetime.fromisoformat(text.replace("Z", "+00:00"))


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def windows(start: date, end: date) -> list[tuple[date, date]]:
    """sync.split_date_range."""
    out = []
    while start < end:
        out.append((start, min(start + WINDOW, end)))
        start = out[-1][1]
    return out


Row = tuple[datetime | None, dict[str, Any]]


def tap_selects(parents: Iterable[list[Row]], bookmark: str | None, today: date, *, windowed: bool
                ) -> tuple[list[dict[str, Any]], str]:
    """The records that sync.sync_endpoint writes, and the bookmark it leaves, for one incremental stream:
    ``parents`` holds the stream's rows (bookmark field, expected record) under each parent in the order the
    tap meets them (actions and action updates come per campaign; both share one bookmark across campaigns).

    The bookmark (the config's start_date the first time) starts the first window at 00:00 of its day; the
    windows (45 days, windowed streams only) end at 00:00 UTC of today; the other streams are asked for
    everything. Of what comes back the tap keeps the records at or after the bookmark, and moves the bookmark
    to the latest value seen. No record of these tests falls on a window's bound (a midnight), so whether the
    server takes an end as inclusive (ActionDateEnd) or exclusive (ActionUpdates' EndDate) changes nothing."""
    mark = at(bookmark or START_DATE)
    assert mark is not None
    kept: list[dict[str, Any]] = []
    for rows in parents:
        last = mark
        if windowed:  # sync.py: a bookmark older than 3 years (of 365 days) starts 3 years ago
            last = max(last, (datetime.now(UTC) - timedelta(days=3 * 365)).replace(microsecond=0))
        asked = windows(last.date(), today) if windowed else [(last.date(), today)]
        for lo, hi in asked:
            for value, record in rows:
                assert value not in (midnight(lo), midnight(hi)), f"{record} falls on a window's bound"
                if windowed and (value is None or not midnight(lo) < value < midnight(hi)):
                    continue
                if value is None:
                    continue  # the tap writes no record without its bookmark field
                mark = max(mark, value)
                if value >= last:
                    kept.append(record)
    return kept, mark.isoformat()


# --- the comparison -------------------------------------------------------------------------------

Kind = Callable[[Any], Any]


def text(v: Any) -> str:
    return "" if v is None else str(v)


def number(v: Any) -> Decimal | None:
    return None if v is None or v == "" else Decimal(str(v)).normalize()


def whole(v: Any) -> int | None:
    return None if v is None or v == "" else int(v)


def moment(v: Any) -> datetime | None:
    return at(v) if isinstance(v, str) else v


# the fields compared, stream by stream, with the kind of value the tap's schema gives them
FIELDS: dict[str, dict[str, Kind]] = {
    "company_information": {"company_name": text},
    "campaigns": {"id": whole, "name": text},
    "media_partners": {"id": whole, "name": text},
    "actions": {
        "id": text, "campaign_id": whole, "campaign_name": text, "action_tracker_id": whole,
        "action_tracker_name": text, "media_partner_id": whole, "media_partner_name": text, "state": text,
        "amount": number, "payout": number, "delta_amount": number, "delta_payout": number,
        "intended_amount": number, "intended_payout": number, "currency": text, "event_date": moment,
        "creation_date": moment, "locking_date": moment, "order_id": text, "customer_id": text,
        "promo_code": text, "note": text, "uri": text,
    },
    "action_updates": {
        "action_id": text, "campaign_id": whole, "action_tracker_id": whole, "media_partner_id": whole,
        "order_id": text, "state": text, "state_detail": text, "delta_amount": number, "delta_payout": number,
        "update_date": moment,
    },
    "ftp_file_submissions": {
        "batch_id": text, "account_id": whole, "status": text, "submission_date": moment,
        "completion_date": moment, "total_records": whole, "total_errors": text, "file_name": text,
    },
    "api_submissions": {
        "batch_id": text, "account_id": whole, "campaign_id": whole, "status": text, "submission_date": moment,
        "completion_date": moment, "type": text,
    },
}


def project(stream: str, record: Mapping[str, Any]) -> dict[str, Any]:
    out = {name: kind(record.get(name)) for name, kind in FIELDS[stream].items()}
    if stream == "action_updates" and out["state"] != "REVERSED":
        out["state_detail"] = None  # an update's StateDetail is compared where it is the reversal reason
    return out


def same(stream: str, got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """The tap's records of ``stream`` are the expected ones, as many times each (in any order)."""
    def key(r: dict[str, Any]) -> str:
        return json.dumps(r, sort_keys=True, default=str)

    mine, theirs = sorted(map(key, (project(stream, r) for r in got))), sorted(map(key, (project(stream, r)
                                                                                       for r in expected)))
    missing = [r for r in theirs if r not in mine]
    extra = [r for r in mine if r not in theirs]
    assert mine == theirs, (f"{stream}: {len(mine)} records, {len(theirs)} expected\n  missing (native API):\n    "
                            + "\n    ".join(missing[:8]) + "\n  unexpected (tap):\n    " + "\n    ".join(extra[:8]))


def update_ids(records: list[dict[str, Any]], sid: str) -> None:
    """Each action update has its own Id and Uri, and one Id is always the same update."""
    seen: dict[str, dict[str, Any]] = {}
    for r in records:
        assert r.get("id") and str(r.get("uri") or "").startswith(f"/Advertisers/{sid}/"), r
        assert seen.setdefault(r["id"], project("action_updates", r)) == project("action_updates", r), r


# --- the native API's view of the account ----------------------------------------------------------


def get(api: TestClient, w: World, path: str) -> Any:
    r = api.get(path, headers=w.auth)
    assert r.status_code == 200, (path, r.text)
    return r.json()


def paged(api: TestClient, w: World, path: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        sep = "&" if "?" in path else "?"
        page = get(api, w, path + (f"{sep}cursor={cursor}" if cursor else ""))
        out += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return out


@dataclass
class Native:
    """What the native API holds for the account, as the tap's records would show it (FIELDS)."""

    company: dict[str, Any]
    campaigns: list[dict[str, Any]]
    partners: list[dict[str, Any]]
    actions: dict[str, dict[str, Any]]  # by id
    updates: list[tuple[str, dict[str, Any]]]  # (action id, the update as the tap shows it)
    files: list[dict[str, Any]]
    api_submissions: list[dict[str, Any]]


def native_view(api: TestClient, w: World, kinds: Mapping[str, str]) -> Native:
    account = get(api, w, "/api/v1/account")
    campaigns = get(api, w, "/api/v1/campaigns")["items"]
    partners = get(api, w, "/api/v1/partners")["items"]
    event_types = get(api, w, "/api/v1/event-types")["items"]
    campaign_name = {c["id"]: c["name"] for c in campaigns}
    partner_name = {p["id"]: p["name"] for p in partners}
    tracker_name = {e["id"]: e["name"] for e in event_types}
    actions: dict[str, dict[str, Any]] = {}
    updates: list[tuple[str, dict[str, Any]]] = []
    for listed in paged(api, w, "/api/v1/actions?limit=500"):
        a = get(api, w, f"/api/v1/actions/{listed['id']}")
        assert a["updates"][0]["kind"] == "CREATED"
        last = [u for u in a["updates"] if u["kind"] != "LOCKED"][-1]  # a lock is no change (docs/COMPAT.md)
        aid = str(a["id"])
        actions[aid] = {
            "id": aid, "campaign_id": a["campaign_id"], "campaign_name": campaign_name[a["campaign_id"]],
            "action_tracker_id": a["event_type_id"], "action_tracker_name": tracker_name[a["event_type_id"]],
            "media_partner_id": a["partner_id"], "media_partner_name": partner_name[a["partner_id"]],
            "state": a["state"], "amount": a["amount"], "payout": a["payout"],
            "delta_amount": last["delta_amount"], "delta_payout": last["delta_payout"],
            "intended_amount": a["intended_amount"], "intended_payout": a["intended_payout"],
            "currency": a["currency"], "event_date": a["event_date"], "creation_date": a["updates"][0]["at"],
            "locking_date": f"{a['locking_date']}T00:00:00Z" if a["locking_date"] else None,
            "order_id": a["order_id"], "customer_id": a["customer_id"], "promo_code": a["promo_code"],
            "note": last["note"], "uri": f"/Advertisers/{w.sid}/Actions/{aid}",
        }
        for u in a["updates"]:
            updates.append((aid, {
                "action_id": aid, "campaign_id": a["campaign_id"], "action_tracker_id": a["event_type_id"],
                "media_partner_id": a["partner_id"], "order_id": a["order_id"], "state": u["state"],
                "state_detail": u["reason"], "delta_amount": u["delta_amount"], "delta_payout": u["delta_payout"],
                "update_date": u["at"],
            }))
    files, api_subs = [], []
    for s in paged(api, w, "/api/v1/submissions?limit=500"):
        common = {"batch_id": s["id"], "account_id": w.account_id, "status": STATUS[s["status"]],
                  "submission_date": s["created_at"], "completion_date": s["finished_at"]}
        if s["id"].startswith("F-"):
            files.append({**common, "total_records": s["total_records"], "total_errors": s["errors"],
                          "file_name": s["file_name"]})
        else:
            api_subs.append({**common, "campaign_id": s["campaign_id"], "type": kinds[s["id"]]})
    return Native({"company_name": account["name"]}, campaigns, partners, actions, updates, files, api_subs)


def expected(native: Native, campaign_order: list[int], state: Mapping[str, Any], today: date
             ) -> dict[str, list[dict[str, Any]]]:
    """What a sync from ``state`` should print, stream by stream (tap_selects)."""
    marks = state.get("bookmarks", {})

    def per_campaign(rows: list[Row], campaign_of: Callable[[dict[str, Any]], int]) -> list[list[Row]]:
        return [[r for r in rows if campaign_of(r[1]) == c] for c in campaign_order]

    action_rows = [(at(a["event_date"]), a) for a in native.actions.values()]
    update_rows = [(at(u["update_date"]), u) for _, u in native.updates]
    return {
        "company_information": [native.company],
        "campaigns": native.campaigns,
        "media_partners": native.partners,
        "actions": tap_selects(per_campaign(action_rows, lambda a: a["campaign_id"]), marks.get("actions"), today,
                               windowed=True)[0],
        "action_updates": tap_selects(per_campaign(update_rows, lambda u: u["campaign_id"]),
                                      marks.get("action_updates"), today, windowed=True)[0],
        "ftp_file_submissions": tap_selects([[(at(f["submission_date"]), f) for f in native.files]],
                                            marks.get("ftp_file_submissions"), today, windowed=False)[0],
        "api_submissions": tap_selects([[(at(s["submission_date"]), s) for s in native.api_submissions]],
                                       marks.get("api_submissions"), today, windowed=False)[0],
    }


# --- the account -----------------------------------------------------------------------------------


def compat(api: TestClient, w: World, method: str, body: str) -> str:
    """A PUT or DELETE on impact.com's /Actions: the A-… submission it queued."""
    r = api.request(method, f"/Advertisers/{w.sid}/Actions", content=body, headers={**w.auth, **FORM})
    assert r.status_code == 200, r.text
    return str(r.json()["BatchId"])


def post_file(api: TestClient, w: World, name: str, data: bytes) -> str:
    r = api.post("/api/v1/submissions", headers=w.auth, data={"campaign_id": str(w.campaign_id)},
                 files={"file": (name, data, "text/csv")})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def native_post(api: TestClient, w: World, path: str, body: dict[str, Any] | None = None) -> None:
    r = api.post(path, headers=w.auth, json=body)
    assert r.status_code == 200, (path, r.text)


def second_campaign(w: World) -> int:
    """A second campaign, in euros, with an event type and a contract but no actions: the tap asks it too."""
    with db.write(w.engine) as conn:
        cid = int(catalog.create_campaign(conn, w.actor, "Archive", "EUR", None, "mail.test")["id"])
        et = catalog.create_event_type(conn, w.actor, {"campaign_id": cid, "name": "Archived sale"},
                                       SecretBox("test-secret"))
        catalog.create_contract(conn, w.actor, {
            "campaign_id": cid, "partner_id": w.partners[1], "starts_on": date(2020, 1, 1),
            "payout": [{"event_type_id": et, "percent": "5"}], "category_percent": {},
            "lock_after": {"months": 0, "days": 27}, "pay_after": {"months": 0, "days": 20},
            "referral_window_days": 30})
    return cid


def real_today_action(w: World, today: date) -> int:
    """An action of today on the real clock (the tap's), after 00:00 UTC: the tap asks up to today 00:00."""
    with db.write(w.engine) as conn:
        return ledger.record_conversion(conn, w.actor, {
            "event_type_id": w.sale, "order_id": "TODAY-1", "partner_id": w.partners[0], "amount": "33.00",
            "event_date": (midnight(today) + timedelta(seconds=1)).isoformat()}, now=datetime.now(UTC))


def first_data(api: TestClient, w: World, today: date) -> tuple[dict[str, str], dict[str, int]]:
    """The account before the first sync: conversions of both event types, changes by every channel (an API
    submission modifying items, one reversing, a restore, a file), a lock. Returns the API submissions' Type
    by id, and the actions by name."""
    a = {
        "locked": conversion(w, "O-1", "100.00", event_date="2026-09-20T09:00:00Z", partner=w.partners[0]),
        "items": conversion(w, "O-2", None, event_date="2026-11-05T14:30:00Z", partner=w.partners[1], items=[
            {"sku": "SKU-A", "name": "Shirt", "category": "apparel", "quantity": 2, "amount": "60.00"},
            {"sku": "SKU-B", "quantity": 1, "amount": "40.00"}]),
        "restored": conversion(w, "O-3", "250.00", event_date="2026-11-12T08:15:00Z", partner=w.partners[2]),
        "lead": conversion(w, "L-1", "0.00", event_date="2026-11-18T20:00:00Z", event_type=w.lead),
        "filed": conversion(w, "O-5", "80.00", event_date="2026-11-20T10:00:00Z", partner=w.partners[1]),
        "twin": conversion(w, "O-6", "40.00", event_date="2026-11-20T10:00:00Z", partner=w.partners[2]),
    }
    a["today"] = real_today_action(w, today)
    native_post(api, w, "/api/v1/locking/run")  # O-1 locks on 2026-10-28
    kinds = {
        compat(api, w, "PUT", f"ActionId={a['items']}&Sku=SKU-A&Quantity=1&Reason=ITEM_RETURNED"): "Modification",
        compat(api, w, "DELETE", f"ActionId={a['restored']}&DispositionCode=CONS_FRAUD"): "Reversal",
    }
    post_file(api, w, "returns.csv", (f"ActionId,Amount,Reason\r\n{a['filed']},60.00,ORDER_UPDATE\r\n"
                                      "999999999,0,ITEM_RETURNED\r\n").encode())
    drain(w.engine)
    native_post(api, w, f"/api/v1/actions/{a['restored']}/reset", {"note": "fraud check passed"})
    native_post(api, w, f"/api/v1/actions/{a['lead']}/approve")
    return kinds, a


def other_account(api: TestClient, engine: Engine) -> World:
    """Another account on the same server, with actions and submissions of both kinds: never in the tap's output."""
    other = make_world(engine)
    theirs = conversion(other, "THEIRS-1", "500.00", event_date="2026-11-21T10:00:00Z")
    compat(api, other, "PUT", f"ActionId={theirs}&Amount=450&Reason=ORDER_UPDATE")
    post_file(api, other, "theirs.csv", f"ActionId,Amount\r\n{theirs},400\r\n".encode())
    drain(engine)
    return other


# --- the test --------------------------------------------------------------------------------------


def test_tap_impact_syncs_the_account_and_resumes_from_its_state(tap_python: Path, engine: Engine,
                                                                  tmp_path: Path) -> None:
    today = datetime.now(UTC).date()  # the tap's today: the real clock's
    w = make_world(engine)
    second_campaign(w)
    api = client_for(engine, tmp_path)
    kinds, a = first_data(api, w, today)
    other = other_account(api, engine)
    settings = Settings.from_env({"PAYOUTDESK_DATA_DIR": str(tmp_path), "PAYOUTDESK_API_RATE_LIMIT": "0",
                                  "PAYOUTDESK_SECRET_KEY": "test-secret"})
    with serving(create_app(settings, engine)) as port:
        tap = Tap(tap_python, port, tmp_path, w)
        chosen = select(tap.discover())

        # the first sync, from the config's start_date
        first = tap.sync(chosen, None, "first")
        native = native_view(api, w, kinds)
        order = [r["id"] for r in first.records("campaigns")]
        want = expected(native, order, {}, today)
        for stream in STREAMS:
            same(stream, first.records(stream), want[stream])
        assert sorted(order) == sorted(c["id"] for c in native.campaigns)
        first_ids = {r["id"] for r in first.records("actions")}
        assert str(a["today"]) not in first_ids  # after today 00:00: not asked for
        assert first_ids == {str(v) for k, v in a.items() if k != "today"}
        assert not ({r["order_id"] for r in first.records("actions")} & {"THEIRS-1"})
        assert len(first.records("api_submissions")) == 2 and len(first.records("ftp_file_submissions")) == 1
        assert {r["update_date"] for r in first.records("action_updates")}, "no action updates"
        state = first.state
        marks = state["bookmarks"]
        assert at(marks["actions"]) == datetime(2026, 11, 20, 10, tzinfo=UTC), marks  # the latest event date

        # between the two: actions with later, older and same-day event dates, a change, two submissions
        later = conversion(w, "O-7", "70.00", event_date="2026-11-24T09:00:00Z", partner=w.partners[0])
        older = conversion(w, "O-8", "90.00", event_date="2026-11-15T10:00:00Z", partner=w.partners[0])
        same_day = conversion(w, "O-9", "15.00", event_date="2026-11-20T08:00:00Z", partner=w.partners[1])
        kinds[compat(api, w, "PUT", f"ActionId={a['twin']}&Amount=35&Reason=ORDER_UPDATE")] = "Modification"
        post_file(api, w, "more.csv", f"ActionId,Amount,Reason\r\n{later},65.00,ORDER_UPDATE\r\n".encode())
        drain(engine)

        second = tap.sync(chosen, state, "second")
        native = native_view(api, w, kinds)
        want = expected(native, order, state, today)
        for stream in STREAMS:
            same(stream, second.records(stream), want[stream])
        update_ids(first.records("action_updates") + second.records("action_updates"), w.sid)
        assert len({r["id"] for r in first.records("action_updates")}) == len(first.records("action_updates"))

    bookmark = at(marks["actions"])
    assert bookmark is not None
    events = {r["id"]: at(r["event_date"]) for r in second.records("actions")}
    assert all(e is not None and e >= bookmark for e in events.values()), events  # nothing older
    assert set(events) == {str(later), str(a["filed"]), str(a["twin"])}  # after the bookmark, and at it again
    assert str(older) not in events and str(same_day) not in events and str(a["today"]) not in events
    # action updates by their own time: the new actions' creation (even the older event's) and the change
    updated = {r["action_id"] for r in second.records("action_updates")}
    assert {str(later), str(older), str(same_day), str(a["twin"])} <= updated
    assert len(second.records("api_submissions")) >= 1 and len(second.records("ftp_file_submissions")) >= 1
    assert other.sid not in json.dumps(first.messages + second.messages)


# --- the types of the answers ----------------------------------------------------------------------

# what the tap reads, stream by stream: the path (the tap adds .json) and the key of the list (None: the
# answer is the record)
ENDPOINTS = {
    "company_information": ("CompanyInformation", None), "campaigns": ("Campaigns", "Campaigns"),
    "actions": ("Actions", "Actions"), "action_updates": ("ActionUpdates", "ActionUpdates"),
    "media_partners": ("MediaPartners", "MediaPartners"),
    "ftp_file_submissions": ("FTPFileSubmissions", "FTPFileSubmissions"),
    "api_submissions": ("APISubmissions", "APISubmission"),
}


def snake(name: str) -> str:
    """tap_impact.transform.convert: impact.com's key as the tap's schema names it."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def mistyped(value: Any, schema: Mapping[str, Any], where: str) -> list[str]:
    """Where ``value`` (an answer's JSON) is not of the type the tap's schema gives it, strictly: a number
    is a JSON number, a whole number an integer, a date-time a time (or "" for none)."""
    if "anyOf" in schema:
        tries = [mistyped(value, sub, where) for sub in schema["anyOf"]]
        return [] if any(not t for t in tries) else tries[0]
    if "type" not in schema:
        return []
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    fits = {
        "null": value is None,
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
    }
    if not any(fits.get(t, False) for t in types):
        return [f"{where}: {json.dumps(value)[:80]} is not {'/'.join(types)}"]
    if schema.get("format") == "date-time" and isinstance(value, str) and value:
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return [f"{where}: {value[:80]!r} is not a date-time"]
    out: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key, item in value.items():
            name = "order_id" if key == "Oid" else snake(key)  # the tap renames Oid (transform.replace_order_id)
            if name in properties:
                out += mistyped(item, properties[name], f"{where}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for n, item in enumerate(value):
            out += mistyped(item, schema["items"], f"{where}[{n}]")
    return out


def test_every_answer_has_the_types_of_the_taps_schemas(tap_python: Path, engine: Engine, tmp_path: Path) -> None:
    """Each field the tap reads has the JSON type of the tap's own schema (tap_impact/schemas/), not only one
    that its transformer can coerce; list keys and records are where the tap looks for them."""
    where = "import os, tap_impact; print(os.path.dirname(tap_impact.__file__))"
    folder = subprocess.run([str(tap_python), "-c", where], capture_output=True, text=True, check=True).stdout.strip()
    w = make_world(engine)
    second_campaign(w)
    api = client_for(engine, tmp_path)
    first_data(api, w, datetime.now(UTC).date())
    problems: list[str] = []
    for stream, (path, key) in ENDPOINTS.items():
        schema = json.loads((Path(folder) / "schemas" / f"{stream}.json").read_text())
        body = get(api, w, f"/Advertisers/{w.sid}/{path}.json")
        records = [body] if key is None else body.get(key)
        if not isinstance(records, list) or not records:
            problems.append(f"{path}.json: no records under {key!r} (keys: {sorted(body)[:20]})")
            continue
        for n, record in enumerate(records):
            problems += mistyped(record, schema, f"{path}[{n}]")
    unique = list(dict.fromkeys(re.sub(r"\[\d+\]", "[]", p) for p in problems))
    assert not unique, "\n".join(unique)


# --- paging ----------------------------------------------------------------------------------------

PAGED = 20_050  # more than the tap's PageSize (20,000): it follows @nextpageuri


# PostgreSQL only: what this test adds is the tap's side of paging (it follows @nextpageuri, prefixed with
# https://api.impact.com, with no query string of its own), which is the same whatever the database; the
# server's pages by @nextpageuri are tested on both in tests/test_compat_reads.py, and 20,000 records cost the
# tap itself about 30 seconds (dateutil parses every date of every record, singer's transformer checks each).
@only_on("postgresql")
def test_the_tap_follows_the_next_page_links(tap_python: Path, engine: Engine, tmp_path: Path) -> None:
    """More actions in one window than the tap's PageSize (20,000): it reads the second page by the answer's
    @nextpageuri and gets every action once. (Actions alone: the tap spends about 2 ms on each record it
    writes, so action updates, which page the same way, would double the 40 seconds this takes.)"""
    w = make_world(engine)
    bulk_actions(w, PAGED)  # pending, on 2026-11-20T10:00Z, each with its CREATED update then
    api = client_for(engine, tmp_path)
    listed = [str(a["id"]) for a in paged(api, w, "/api/v1/actions?limit=500")]
    assert len(listed) == PAGED
    settings = Settings.from_env({"PAYOUTDESK_DATA_DIR": str(tmp_path), "PAYOUTDESK_API_RATE_LIMIT": "0",
                                  "PAYOUTDESK_SECRET_KEY": "test-secret"})
    with serving(create_app(settings, engine)) as port:
        tap = Tap(tap_python, port, tmp_path, w)
        discovered = tap.discover()
        for s in discovered["streams"]:
            if s["tap_stream_id"] in ("campaigns", "actions"):
                next(m for m in s["metadata"] if m["breadcrumb"] == [])["metadata"]["selected"] = True
        run = tap.sync(discovered, None, "paged")
    assert sorted(r["id"] for r in run.records("actions")) == sorted(listed)
    assert "@nextpageuri" not in run.stderr and run.stderr.count("Actions.json?") >= 2  # two pages were asked
