"""The actions list's fast plans (``ledger.repository.list_page``) give exactly the rows of the plain
query (``filtered`` + ``id < cursor`` + newest first + limit), whatever the filters and the cursor.

The plans (per-day, id window, rarest index first) only decide how the rows are found; this
checks random filters and cursors against the plain query on both backends, over data whose ids
follow the event dates only roughly (late and far-out-of-order conversions, another account's
actions in between), with the plans' budgets at their defaults and shrunk so that every fallback
runs.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from payoutdesk.catalog import service as catalog
from payoutdesk.kit import db
from payoutdesk.ledger import repository as repo
from payoutdesk.ledger import service as ledger
from payoutdesk.models import actions
from tests.helpers import World, make_world

BASE = date(2026, 1, 1)
SPAN = 150  # days of data
STATES = ("PENDING", "APPROVED", "REVERSED")


class Data:
    def __init__(self, w: World, campaigns: list[int], partners: list[int], max_id: int) -> None:
        self.w, self.campaigns, self.partners, self.max_id = w, campaigns, partners, max_id


def _fill(engine: Engine, n: int, seed: int) -> Data:
    """Two tenants; ``n`` actions of the first interleaved with about n/4 of the second."""
    rnd = random.Random(seed)
    w, other = make_world(engine), make_world(engine)
    with db.write(engine) as conn:
        c2 = catalog.create_campaign(conn, w.actor, "Second", "EUR", None, "mail.test")["id"]
        p4 = catalog.create_partner(conn, w.actor, "Delta")["id"]
    campaigns, partners = [w.campaign_id, c2], [*w.partners, p4]
    rows: list[dict[str, Any]] = []
    with db.write(engine) as conn:
        ids = repo.reserve_action_ids(conn, n + n // 4)
        mine = sorted(rnd.sample(ids, n))
        mine_set = set(mine)
        for k, i in enumerate(ids):
            ours = i in mine_set
            day = BASE + timedelta(days=k * SPAN // len(ids))  # ids follow the days ...
            r = rnd.random()
            if r < 0.3:
                day -= timedelta(days=rnd.randrange(0, 3))  # ... recorded a little late
            elif r < 0.34:
                day -= timedelta(days=rnd.randrange(3, 140))  # ... or much later
            at = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(seconds=rnd.randrange(86400))
            lock = None if rnd.random() < 0.15 else day + timedelta(days=rnd.choice((14, 27, 45, 90)))
            acc = w if ours else other
            rows.append({
                "id": i, "account_id": acc.account_id,
                "campaign_id": rnd.choices(campaigns, (5, 1))[0] if ours else acc.campaign_id,
                "event_type_id": rnd.choice((acc.sale, acc.lead)),
                "partner_id": rnd.choices(partners, (70, 20, 8, 2))[0] if ours else acc.partners[0],
                "contract_id": acc.contract_id, "order_id": f"O-{k % (n // 3)}", "customer_id": None,
                "promo_code": rnd.choices((None, "SPRING", "VIP", "RARE"), (85, 10, 4, 1))[0], "event_date": at,
                "state": (state := rnd.choices(STATES, (80, 8, 12))[0]),
                "reason": rnd.choices(("ITEM_RETURNED", "CONS_FRAUD", "TEST_ACTION"), (80, 15, 5))[0]
                if state == "REVERSED" else None,
                "currency": "USD", "amount": 100, "payout": 10, "intended_amount": 100, "intended_payout": 10,
                "locking_date": lock, "lock_due": lock or day, "locked_at": None, "version": 1,
                "update_count": 1, "restore": None, "created_at": at,
            })
        conn.execute(insert(actions), rows)
    return Data(w, campaigns, partners, max(ids))


@pytest.fixture(scope="module")
def data(engine: Engine) -> Data:
    return _fill(engine, 3000, 7)


def _day(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def _random_filters(rnd: random.Random, d: Data) -> repo.Filters:
    kw: dict[str, Any] = {}
    if rnd.random() < 0.35:
        kw["state"] = rnd.choice(STATES)
    if rnd.random() < 0.3:
        kw["campaign_id"] = rnd.choice(d.campaigns)
    if rnd.random() < 0.4:
        kw["partner_id"] = rnd.choice(d.partners)
    if rnd.random() < 0.25:
        kw["event_type_id"] = rnd.choice((d.w.sale, d.w.lead))
    if rnd.random() < 0.04:
        kw["order_id"] = f"O-{rnd.randrange(1000)}"
    if rnd.random() < 0.03:
        kw["action_id"] = rnd.randrange(1, d.max_id + 2)
    if rnd.random() < 0.1:  # partial indexes (migration 0013): rare, common and unknown values
        kw["promo_code"] = rnd.choice(("SPRING", "VIP", "RARE", "NONE-SUCH"))
    if rnd.random() < 0.1:
        kw["reason"] = rnd.choice(("ITEM_RETURNED", "CONS_FRAUD", "TEST_ACTION", "OTHER"))
    start = BASE + timedelta(days=rnd.randrange(-10, SPAN + 10))
    kind = rnd.choice(("none", "none", "short", "short", "long", "from", "to", "empty"))
    length = {"short": rnd.randrange(1, 12), "long": rnd.randrange(94, 200), "empty": 0}.get(kind, 0)
    lo, hi = _day(start), _day(start + timedelta(days=length))
    if rnd.random() < 0.3:  # times of day too, not only midnights
        lo += timedelta(seconds=rnd.randrange(86400))
        hi += timedelta(seconds=rnd.randrange(86400))
    if kind in ("short", "long", "empty", "from"):
        kw["event_date_from"] = lo
    if kind in ("short", "long", "empty", "to"):
        kw["event_date_to"] = hi
    lkind = rnd.choice(("none", "none", "none", "short", "long", "from", "to"))
    ls = BASE + timedelta(days=rnd.randrange(0, SPAN + 100))
    ln = {"short": rnd.randrange(0, 40), "long": rnd.randrange(94, 150)}.get(lkind, 0)
    if lkind in ("short", "long", "from"):
        kw["locking_date_from"] = ls
    if lkind in ("short", "long", "to"):
        kw["locking_date_to"] = ls + timedelta(days=ln)
    return repo.Filters(**kw)


def _plain(conn: Any, account_id: int, f: repo.Filters, limit: int, after: int | None) -> list[tuple[Any, ...]]:
    stmt = repo.filtered(select(actions), account_id, f)
    if after is not None:
        stmt = stmt.where(actions.c.id < after)
    return [tuple(r) for r in conn.execute(stmt.order_by(actions.c.id.desc()).limit(limit))]


@pytest.fixture(params=["defaults", "tiny-budgets"])
def budgets(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "tiny-budgets":  # every fast plan gives up early and hands over to the next
        monkeypatch.setattr(repo, "LIST_PROBE", 3)
        monkeypatch.setattr(repo, "DAY_PLAN_MAX_DAYS", 4)
        monkeypatch.setattr(repo, "WINDOW_MAX_DAYS", 20)
        monkeypatch.setattr(repo, "MERGE_GAIN", 10**9)  # PostgreSQL: merge indexes for every combination
        monkeypatch.setattr(repo, "MERGE_MAX_SHARE", 2.0)
        monkeypatch.setattr(repo, "LOCKING_DAYS_BATCH", 0)  # the locking-date sorts: one day at a time
    return str(request.param)


def _spy_on_plans(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts the plans that ran (and the window walks that handed over to the next plan)."""
    hits: Counter[str] = Counter()

    def spy(name: str) -> None:
        real = getattr(repo, name)

        def wrapped(*a: Any, **kw: Any) -> Any:
            out = real(*a, **kw)
            hits[name] += 1
            if name == "_window_page" and out[1] is not None and len(out[0]) < a[3]:
                hits["handover"] += 1
            if name == "_walk_page" and len(a) > 7 and a[7]:
                hits["index checks"] += 1
            if name == "_merge_page" and a[3] is None:
                hits["merge to the end"] += 1
            return out
        monkeypatch.setattr(repo, name, wrapped)

    for name in ("_window_page", "_per_day_page", "_plain_page", "_choose_walk", "_id_window", "_walk_page",
                 "_merge_page"):
        spy(name)
    return hits


def test_fast_plans_give_the_plain_querys_rows(engine: Engine, data: Data, budgets: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    rnd = random.Random(11 if budgets == "defaults" else 12)
    acc = data.w.account_id
    checked = nonempty = 0
    hits = _spy_on_plans(monkeypatch)
    with db.read(engine) as conn:
        for _ in range(160):
            f = _random_filters(rnd, data)
            limit = rnd.choice((1, 3, 20, 51))
            after: int | None = rnd.choice((None, None, rnd.randrange(1, data.max_id + 3)))
            for _page in range(3):  # a first (or random) page and the pages after it
                want = _plain(conn, acc, f, limit, after)
                got = [tuple(r) for r in repo.list_page(conn, acc, f, limit, after)]
                assert got == want, (f, limit, after)
                checked += 1
                nonempty += bool(want)
                if len(want) < limit:
                    break
                after = want[-1][0]
    assert nonempty > checked // 3  # the filters are not all empty
    assert all(hits[k] for k in ("_window_page", "_per_day_page", "_plain_page", "_choose_walk", "_id_window")), hits
    if budgets == "tiny-budgets":
        assert hits["handover"], hits
    assert hits["index checks"], hits  # SQLite: checks on the indexes; PostgreSQL: indexes merged
    if engine.dialect.name == "postgresql":
        assert hits["_merge_page"] and hits["merge to the end"], hits
        assert hits["_merge_page"] < hits["_walk_page"], hits  # and the plain plan where the merge costs more


def test_the_bench_filters_and_service_pages(engine: Engine, data: Data) -> None:
    """The combinations the bench measures, through ``list_actions`` and its cursors."""
    acc, w = data.w.account_id, data.w
    d0 = _day(BASE + timedelta(days=40))
    cases = [
        repo.Filters(partner_id=data.partners[3], event_date_from=d0, event_date_to=d0 + timedelta(days=7)),
        repo.Filters(campaign_id=data.campaigns[1], partner_id=data.partners[2], state="REVERSED"),
        repo.Filters(state="REVERSED", partner_id=data.partners[3]),
        repo.Filters(event_type_id=w.sale, locking_date_from=BASE + timedelta(days=50),
                     locking_date_to=BASE + timedelta(days=80)),
        repo.Filters(state="APPROVED", event_date_from=d0, event_date_to=d0 + timedelta(days=7)),
        repo.Filters(event_date_to=d0), repo.Filters(event_date_from=d0),
        repo.Filters(partner_id=data.partners[2], event_date_to=d0),
        repo.Filters(locking_date_to=BASE + timedelta(days=60)),
        repo.Filters(state="PENDING", locking_date_from=BASE + timedelta(days=100)),
        repo.Filters(event_date_from=d0, event_date_to=d0 + timedelta(days=120), campaign_id=data.campaigns[0]),
        repo.Filters(partner_id=data.partners[3], locking_date_from=BASE + timedelta(days=50),
                     locking_date_to=BASE + timedelta(days=80)),
        repo.Filters(state="REVERSED", locking_date_from=BASE + timedelta(days=50),
                     locking_date_to=BASE + timedelta(days=80)),
    ]
    with db.read(engine) as conn:
        for f in cases:
            cursor: str | None = None
            seen: list[int] = []
            while True:
                page = ledger.list_actions(conn, acc, f, 7, cursor)
                seen += [x["id"] for x in page["items"]]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            assert seen == [r[0] for r in _plain(conn, acc, f, 10**6, None)], f


def test_an_equality_filter_with_a_locking_range_walks_the_window_not_the_days(
        engine: Engine, data: Data, monkeypatch: pytest.MonkeyPatch) -> None:
    """A partner (or state, or campaign) with a bounded locking-date range goes by the range's id window on the
    partner's index: day by day, every day's actions were checked on their table rows (seconds at millions of
    actions, docs/PERFORMANCE.md). Without the equality filter the range still goes day by day."""
    hits = _spy_on_plans(monkeypatch)
    acc = data.w.account_id
    lk = {"locking_date_from": BASE + timedelta(days=40), "locking_date_to": BASE + timedelta(days=70)}
    with db.read(engine) as conn:
        for f in (repo.Filters(partner_id=data.partners[1], **lk), repo.Filters(state="REVERSED", **lk),
                  repo.Filters(campaign_id=data.campaigns[0], partner_id=data.partners[2], **lk)):
            got = [tuple(r) for r in repo.list_page(conn, acc, f, 20, None)]
            assert got == _plain(conn, acc, f, 20, None) and got, f
        assert hits["_per_day_page"] == 0 and hits["_id_window"] >= 3, hits
        repo.list_page(conn, acc, repo.Filters(**lk), 20, None)
        assert hits["_per_day_page"] == 1, hits


_NEVER = date.max  # a missing locking date: after every date in ``locking_date``, before all in ``-locking_date``


def _sorted_reference(conn: Any, acc: int, f: repo.Filters, sort: str) -> list[int]:
    """Every matching action's id in ``sort`` order, sorted here (docs/API.md): the key, then the id."""
    column, desc = repo.SORTS[sort]
    rows = conn.execute(repo.filtered(select(actions), acc, f)).all()

    def key(r: Any) -> Any:
        if column is None:
            return r.id
        value = getattr(r, column)
        return (_NEVER if value is None else value, r.id)
    return [r.id for r in sorted(rows, key=key, reverse=desc)]


def test_the_other_sorts_give_the_reference_order_whatever_the_plan(engine: Engine, data: Data, budgets: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``sorted_page`` (an event-date range's id window, the locking days of that window, the locking-date
    indexes led by a filter) pages through exactly the reference order, with random filters, limits and
    pages, the budgets at their defaults and shrunk (one locking day at a time, no id window for long
    ranges)."""
    calls: Counter[str] = Counter()
    for name in ("_locking_days_page", "_id_window"):
        real = getattr(repo, name)

        def wrapped(*a: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
            calls[_name] += 1
            return _real(*a, **kw)
        monkeypatch.setattr(repo, name, wrapped)
    rnd = random.Random(21 if budgets == "defaults" else 22)
    acc = data.w.account_id
    sorts = [s for s in repo.SORTS if s != repo.DEFAULT_SORT]
    nonempty = 0
    with db.read(engine) as conn:
        for n in range(70):
            f = _random_filters(rnd, data)
            if n % 2:  # an event-date range more often than the list's mix
                d0 = _day(BASE + timedelta(days=rnd.randrange(-5, SPAN)))
                f = replace(f, event_date_from=d0, event_date_to=d0 + timedelta(days=rnd.choice((1, 7, 30))),
                            order_id=None, action_id=None, promo_code=None, reason=None)
            sort = sorts[n % len(sorts)]
            want = _sorted_reference(conn, acc, f, sort)
            limit = rnd.choice((1, 4, 25))
            got: list[int] = []
            cursor: str | None = None
            for _page in range(4):
                page = ledger.list_actions(conn, acc, f, limit, cursor, sort)
                got += [x["id"] for x in page["items"]]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            assert got == want[:len(got)] and len(got) == min(len(want), 4 * limit), (f, sort, limit)
            nonempty += bool(want)
            if rnd.random() < 0.3 and want:  # a cursor from the middle (a page after a bookmarked one)
                mid = rnd.randrange(len(want))
                row = conn.execute(select(actions).where(actions.c.id == want[mid])).one()
                column, _ = repo.SORTS[sort]
                after = (getattr(row, column) if column else None, row.id)
                rows = repo.sorted_page(conn, acc, f, sort, limit, after)
                assert [r.id for r in rows] == want[mid + 1:mid + 1 + limit], (f, sort, after)
    assert nonempty > 40
    assert calls["_locking_days_page"] >= 5 and calls["_id_window"] >= 20, calls


def test_a_locking_date_sort_with_a_filter_walks_its_own_index(engine: Engine, data: Data) -> None:
    """The locking-date sorts with a partner, event type or state filter have indexes led by that filter
    (migration 0012): the plan names one of them, not the bare locking-date index checked on every row."""
    acc = data.w.account_id
    cases = [({"partner_id": data.partners[3]}, ("ix_actions_partner_locking",)),
             ({"state": "REVERSED"}, ("ix_actions_state_locking",)),
             ({"event_type_id": data.w.lead}, ("ix_actions_event_type_locking",))]
    with db.read(engine) as conn:
        sqlite = conn.dialect.name == "sqlite"
        if not sqlite:
            conn.exec_driver_sql("ANALYZE actions")
        for kw, names in cases:
            for sort in ("locking_date", "-locking_date"):
                column, desc = repo.SORTS[sort]
                stmt = repo.filtered(select(actions), acc, repo.Filters(**kw)).order_by(
                    *repo.sort_order(column, desc)).limit(21)
                sql = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
                if sqlite:
                    plan = " ".join(str(r[3]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
                else:
                    conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # a few thousand rows: any plan is cheap
                    plan = " ".join(str(r[0]) for r in conn.exec_driver_sql("EXPLAIN " + sql))
                assert any(n in plan for n in names) and "TEMP B-TREE" not in plan and "Sort" not in plan, (
                    kw, sort, plan)
