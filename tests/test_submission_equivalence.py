"""The bulk path equals the single-action path.

For random files over random actions (several rows per action included), applying the
submission gives the same final actions and history as applying the rows one by one through
the service layer.

Per example, two identical tenants are built with ``make_world``: the same actions recorded in
the same order (one-amount and one- to three-item sales and open-ended leads, order ids shared by
two actions) and put in the same state beforehand (modified, item returned, reversed, approved,
reversed and locked), sometimes with a newer contract in force from today (R8). The rows come from
a messy file (bad ids, unknown actions and skus, invalid amounts and quantities, unknown or
miscased reasons, wrong currency, over-long notes) or a tidy one (mostly valid order- and
item-level changes, the engine's fast lane). World A gets the rows as one API submission, drained
by the worker, or claimed and processed in tiny chunks so that rows of one action straddle chunks;
sometimes its dry run goes first, which must change nothing and report the same row outcomes. World B gets
each row in its own transaction through ``ledger.service.apply``, the action resolved as DESIGN
§3 and R12 say (ActionId, or ActionTrackerId + Oid with the newest action winning) and the row
turned into a command by ``submissions.rows``. Compared, mapping A's ids to B's by creation order:
every action (state, amount, payout, reason, whether locked, version, update count, what a
reversal would restore, items) and its whole history (kind, state, reason, note, deltas, changed
items; not the time, actor, channel or submission), each row's outcome (applied, unchanged or the
error code, with the action and the before/after amounts), and the submission's counts and deltas.
A's new history rows carry channel ``api`` and the submission's id; B's carry none.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any
from unittest.mock import patch

import pytest
from argon2 import PasswordHasher
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from payoutdesk.catalog import repository as catalog_repo
from payoutdesk.catalog import service as catalog_service
from payoutdesk.context import Actor
from payoutdesk.errors import NotFound, PayoutdeskError
from payoutdesk.kit import db
from payoutdesk.kit.money import format_amount
from payoutdesk.kit.time import utcnow
from payoutdesk.ledger import service as ledger
from payoutdesk.ledger import workflow as wf
from payoutdesk.models import action_items, action_updates, actions, submission_results
from payoutdesk.submissions import engine as sub_engine
from payoutdesk.submissions import repository as sub_repo
from payoutdesk.submissions import service as submissions
from payoutdesk.submissions.rows import RowError, command_for, interpret
from payoutdesk.worker.runner import claim, run_once
from tests.helpers import World, conversion, make_world

WORKER = "equivalence-worker"
UNKNOWN_ID = 10**12
ORDER_IDS = ["O-1", "O-2", "O-3"]  # few, so that actions share order ids (R12)
SKUS = ["RED", "BLUE", "GRÜN"]
PREDEFINED = list(wf.PREDEFINED_REASONS)  # RESET and the system-only SYSTEM_REATTRIBUTED included
REASONS = [*PREDEFINED, *["ITEM_RETURNED", "ORDER_UPDATE", "REJECTED", "CONS_FRAUD"] * 3,
           *["APPROVED", "RESET", "Wrong_Size"] * 3, "wrong_size", "approved", "NOT_A_REASON", ""]
NOTES = [None, None, None, "partial refund", "ünïcode ✓ note", "  ", "n" * 2000, "n" * 2001]

# --- the actions, as set up in both worlds -----------------------------------------------------


@dataclass(frozen=True)
class Spec:
    lead: bool  # the open-ended "Lead" event type (fixed payout, no custom codes) instead of "Online Sale"
    order_id: str
    amount: str | None  # the order total, or None for the items below
    items: tuple[tuple[str, int, str, str | None], ...]  # sku, quantity, amount, category
    before: str  # what happens to it before the file


BEFORE = [
    *["none"] * 5, "modified", "item_returned", "reversed", "approved", "reversed_locked", "modified_reversed",
]


def weighted(*choices: tuple[int, Any]) -> st.SearchStrategy[Any]:
    return st.sampled_from([value for weight, value in choices for _ in range(weight)])


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    lead = draw(st.booleans()) and draw(st.booleans())  # a quarter of the actions
    order_id = draw(st.sampled_from(ORDER_IDS))
    before = draw(st.sampled_from(BEFORE))
    if draw(st.booleans()):
        return Spec(lead, order_id, draw(st.sampled_from(["100.00", "19.99", "0.00", "50.00", "12.25"])), (), before)
    n = draw(weighted((2, 1), (1, 2), (1, 3)))  # one item: the engine's inline lane, with its category
    items = tuple(
        (SKUS[k], draw(st.integers(1, 3)), draw(st.sampled_from(["80.00", "39.99", "10.00", "0.00", "0.05"])),
         draw(st.sampled_from([None, "shoes"])))
        for k in range(n)
    )
    return Spec(lead, order_id, None, items, before)


def new_contract(w: World, percent: str) -> None:
    """R8: a newer contract in force from today; changes from now on are paid under it."""
    from payoutdesk.catalog import service as catalog

    with db.write(w.engine) as conn:
        catalog.create_contract(conn, w.actor, {
            "campaign_id": w.campaign_id, "partner_id": w.partners[0], "starts_on": utcnow().date(),
            "payout": [{"event_type_id": w.sale, "percent": percent}, {"event_type_id": w.lead, "fixed": "3.10"}],
            "category_percent": {}, "lock_after": {"months": 0, "days": 27}, "pay_after": {"months": 0, "days": 20},
            "referral_window_days": 30})


def set_up(w: World, spec_list: list[Spec]) -> list[int]:
    ids = []
    for s in spec_list:
        et = w.lead if s.lead else w.sale
        if s.amount is not None:
            aid = conversion(w, s.order_id, s.amount, event_type=et)
        else:
            aid = conversion(w, s.order_id, amount=None, event_type=et, items=[
                {"sku": sku, "quantity": q, "amount": a, **({"category": c} if c else {})} for sku, q, a, c in s.items])
        sku0 = s.items[0][0] if s.items else "ORDER"
        commands: list[wf.Command] = {
            "none": [],
            "modified": [wf.Modify(amount=3333, reason="ORDER_UPDATE")],
            "item_returned": [wf.Modify(items=(wf.ItemChange(sku0, 0),), reason="ITEM_RETURNED")],
            "reversed": [wf.Reverse("CONS_FRAUD")],
            "approved": [wf.Approve()],
            "reversed_locked": [wf.Reverse("OTHER"), wf.Lock()],
            "modified_reversed": [wf.Modify(amount=1234), wf.Reverse("REJECTED")],
        }[s.before]
        for cmd in commands:
            with db.write(w.engine) as conn:
                ledger.apply(conn, w.actor, aid, cmd, note="set-up")
        ids.append(aid)
    return ids


# --- the rows, abstract until rendered for one world -------------------------------------------


@dataclass(frozen=True)
class RowSpec:
    target: int  # index of the action
    ident: str  # id, id_int, oid, oid_other_type, oid_unknown, unknown_id, foreign_id, bad_id, none
    reason: str
    amount: Any  # a cell value, "@current"/"@intended" for the target's amount as text, or None (absent)
    items: tuple[tuple[str, Any, Any], ...]  # sku ("@0"/"@1" = the target's sku n), quantity, amount
    note: str | None
    currency: str | None


def row_specs(n_actions: int, clean: bool) -> st.SearchStrategy[RowSpec]:
    """Rows of a messy file, or (``clean``) of a tidy one: mostly valid order-level changes, the common case."""
    item = st.tuples(
        weighted((3, "@0"), (2, "@1"), (1, "NOPE")),
        weighted((4, "0"), (2, "1"), (2, "2"), (1, "5"), (1, "-1"), (1, "1000000000"), (1, "1000000001"),
                 (1, "99999999999")),
        weighted((6, None), (2, "5.00"), (1, "0.05"), (1, "0"), (1, "abc")),
    )
    clean_item = st.tuples(
        weighted((3, "@0"), (2, "@1")),
        weighted((2, "0"), (3, "1"), (2, "2"), (1, "7")),
        weighted((3, None), (2, "5.00"), (1, "0.05"), (1, "0")),
    )
    if clean:
        return st.builds(
            RowSpec,
            target=st.integers(0, n_actions - 1),
            ident=weighted((3, "id"), (1, "id_int"), (3, "oid")),
            reason=weighted((4, "ORDER_UPDATE"), (3, "ITEM_RETURNED"), (1, "CONS_FRAUD"), (1, "OTHER"),
                            (1, "Wrong_Size"), (1, "RESET"), (1, "APPROVED")),
            amount=weighted((4, "12.34"), (2, "12.25"), (1, "1000000"), (1, "0.01"), (3, "@current"),
                            (2, "@intended"), (1, "0"), (1, None)),
            items=weighted((5, 0), (2, 1), (1, 2)).flatmap(
                lambda n: st.lists(clean_item, min_size=n, max_size=n).map(tuple)),
            note=st.sampled_from(NOTES),
            currency=weighted((8, None), (1, "USD")),
        )
    return st.builds(
        RowSpec,
        target=st.integers(0, n_actions - 1),
        ident=weighted((8, "id"), (2, "id_int"), (8, "oid"), (1, "oid_other_type"), (1, "oid_unknown"),
                       (1, "unknown_id"), (1, "foreign_id"), (1, "bad_id"), (1, "none")),
        reason=st.sampled_from(REASONS),
        amount=weighted((8, None), (1, ""), (3, "0"), (1, 0), (3, "12.34"), (1, "12.25"), (4, "@current"),
                        (2, "@intended"), (1, "abc"), (1, "-1"), (1, "1.234")),
        items=weighted((3, 0), (1, 1), (1, 2)).flatmap(lambda n: st.lists(item, min_size=n, max_size=n).map(tuple)),
        note=st.sampled_from(NOTES),
        currency=weighted((20, None), (1, "USD"), (1, "usd"), (1, "EUR")),
    )


@dataclass
class Rendered:
    world: World
    ids: list[int]
    other_ids: list[int]
    specs: list[Spec]
    amounts: list[tuple[int, int]]  # (amount, intended amount) of each action once set up

    def row(self, r: RowSpec) -> dict[str, Any]:
        s = self.specs[r.target]
        w = self.world
        et = w.lead if s.lead else w.sale
        out: dict[str, Any] = {}
        if r.ident == "id":
            out["ActionId"] = str(self.ids[r.target])
        elif r.ident == "id_int":
            out["actionid"] = self.ids[r.target]
        elif r.ident == "oid":
            out.update(ActionTrackerId=str(et), Oid=s.order_id)
        elif r.ident == "oid_other_type":
            out.update(ActionTrackerId=str(w.sale if s.lead else w.lead), OrderId=s.order_id)
        elif r.ident == "oid_unknown":
            out.update(ActionTrackerId=et, Oid="NO-SUCH-ORDER")
        elif r.ident == "unknown_id":
            out["ActionId"] = str(UNKNOWN_ID)
        elif r.ident == "foreign_id":  # the same action of the other tenant
            out["ActionId"] = str(self.other_ids[r.target])
        elif r.ident == "bad_id":
            out["ActionId"] = "12x"
        out["Reason"] = r.reason
        if r.amount == "@current":
            out["Amount"] = format_amount(self.amounts[r.target][0], "USD")
        elif r.amount == "@intended":
            out["Amount"] = format_amount(self.amounts[r.target][1], "USD")
        elif r.amount is not None:
            out["Amount"] = r.amount
        skus = [i[0] for i in s.items] or ["ORDER"]
        for n, (pick, qty, amt) in enumerate(r.items, 1):
            k = int(pick[1:]) if pick.startswith("@") else len(skus)
            out[f"Sku{n}"] = skus[k] if k < len(skus) else "NOPE"
            out[f"Quantity{n}"] = qty
            if amt is not None:
                out[f"Amount{n}"] = amt
        if r.note is not None:
            out["Note"] = r.note
        if r.currency is not None:
            out["CurrencyCode"] = r.currency
        return out

    def expected_target(self, r: RowSpec) -> int | None:
        """Which action the row names (DESIGN §3, R12), worked out from the set-up alone."""
        if r.ident in ("id", "id_int"):
            return r.target
        if r.ident == "oid":
            s = self.specs[r.target]
            return max(n for n, o in enumerate(self.specs) if o.lead == s.lead and o.order_id == s.order_id)
        if r.ident == "oid_other_type":
            s = self.specs[r.target]
            same = [n for n, o in enumerate(self.specs) if o.lead != s.lead and o.order_id == s.order_id]
            return max(same) if same else None
        return None


# --- world B: one row at a time through the service layer -------------------------------------


@dataclass(frozen=True)
class Outcome:
    outcome: str  # applied, unchanged, error
    code: str | None
    target: int | None  # index of the action the row was applied to
    before: tuple[int, int] | None = None  # amount, payout
    after: tuple[int, int, str] | None = None  # amount, payout, state


def one_by_one(w: World, rendered: Rendered, rows: list[dict[str, Any]], plan: list[RowSpec]) -> list[Outcome]:
    index = {aid: n for n, aid in enumerate(rendered.ids)}
    out: list[Outcome] = []
    for number, (raw, r) in enumerate(zip(rows, plan, strict=True), 1):
        fields = _canonical(raw)
        intent = interpret(number, fields, w.currency)
        if isinstance(intent, RowError):
            out.append(Outcome("error", intent.code, None))
            continue
        target: int | None = None
        try:
            with db.read(w.engine) as conn:
                if intent.action_id is not None:
                    aid = int(ledger.action_row(conn, w.account_id, intent.action_id).id)
                else:
                    assert intent.event_type_id is not None and intent.order_id is not None
                    aid = ledger.find_by_order(conn, w.account_id, intent.event_type_id, intent.order_id)
                target = index[aid]
                codes = {c.code: c.operation for c in catalog_repo.codes_of(
                    conn, int(ledger.action_row(conn, w.account_id, aid).event_type_id))}
        except NotFound:
            assert rendered.expected_target(r) is None, f"row {number}: {raw} names an action but B found none"
            out.append(Outcome("error", "unknown_action", None))
            continue
        assert target == rendered.expected_target(r), f"row {number}: {raw} resolved to action #{target}"
        cmd = command_for(intent, codes)
        if isinstance(cmd, RowError):
            out.append(Outcome("error", cmd.code, target))
            continue
        try:
            with db.write(w.engine) as conn:
                done = ledger.apply(conn, w.actor, aid, cmd, note=intent.note, submission_id=None)
        except PayoutdeskError as exc:
            out.append(Outcome("error", exc.code, target))
            continue
        res = done.outcome
        if isinstance(res, wf.Unchanged):
            a = res.action
            out.append(Outcome("unchanged", None, target, (a.amount, a.payout), (a.amount, a.payout, a.state.value)))
        else:
            b, a = res.before, res.after
            out.append(Outcome("applied", None, target, (b.amount, b.payout), (a.amount, a.payout, a.state.value)))
    return out


def _canonical(raw: dict[str, Any]) -> dict[str, str]:
    """The row's cells as the API batch reader hands them over (column names canonical, values text)."""
    from payoutdesk.submissions.jsonrows import canonical_rows

    return canonical_rows([json.loads(json.dumps(raw, default=str))])[0].fields


# --- reading both worlds back ------------------------------------------------------------------


def snapshot(engine: Engine, ids: list[int]) -> list[dict[str, Any]]:
    out = []
    with db.read(engine) as conn:
        for aid in ids:
            a = conn.execute(select(actions).where(actions.c.id == aid)).one()
            items = conn.execute(select(action_items).where(action_items.c.action_id == aid)
                                 .order_by(action_items.c.position)).all()
            ups = conn.execute(select(action_updates).where(action_updates.c.action_id == aid)
                               .order_by(action_updates.c.id)).all()
            out.append({
                "state": a.state, "amount": a.amount, "payout": a.payout, "reason": a.reason,
                "locked": a.locked_at is not None, "version": a.version, "update_count": a.update_count,
                "restore": json.loads(a.restore) if a.restore else None,
                "intended": (a.intended_amount, a.intended_payout),
                "items": [(i.sku, i.quantity, i.amount, i.payout, i.intended_quantity, i.intended_amount,
                           i.intended_payout) for i in items],
                "history": [(u.kind, u.state, u.reason, u.note, u.delta_amount, u.delta_payout,
                             json.loads(u.items) if u.items else None) for u in ups],
                "sources": [(u.channel, u.submission_id) for u in ups],
            })
    return out


def submission_outcomes(engine: Engine, sid: int, ids: list[int]) -> list[Outcome]:
    index = {aid: n for n, aid in enumerate(ids)}
    with db.read(engine) as conn:
        res = conn.execute(select(submission_results).where(submission_results.c.submission_id == sid)
                           .order_by(submission_results.c.row_no)).all()
    out = []
    for n, r in enumerate(res, 1):
        assert r.row_no == n
        target = index[r.action_id] if r.action_id is not None else None
        if r.outcome == "error":
            out.append(Outcome("error", r.code, target))
        else:
            out.append(Outcome(r.outcome, None, target, (r.amount_before, r.payout_before),
                               (r.amount_after, r.payout_after, r.state_after)))
    return out


# --- the property ------------------------------------------------------------------------------


def run_submission(engine: Engine, actor: Actor, campaign_id: int, rows: list[dict[str, Any]], chunk: int | None,
                   *, dry_run: bool = False, batch: int | None = None) -> int:
    with db.write(engine) as conn:
        created = submissions.create_from_rows(conn, actor, campaign_id, rows, dry_run=dry_run)
    sid = submissions.parse_id(created["id"])
    if chunk is None:
        while run_once(engine, WORKER) is not None:
            pass
    else:
        assert claim(engine, sid, WORKER)
        sub_engine.process(engine, sid, WORKER, chunk=chunk, batch=batch)
    return sid


def check_equivalence(engine: Engine, spec_list: list[Spec], data: st.DataObject) -> None:
    # 7.5 % (15 % on shoes): payouts with half cents to round
    wa, wb = (make_world(engine, percent="7.5", category_percent={"shoes": "15"}) for _ in range(2))
    ids_a, ids_b = set_up(wa, spec_list), set_up(wb, spec_list)
    terms_now = data.draw(st.sampled_from([None, None, "12.5"]), label="newer contract")
    if terms_now is not None:
        new_contract(wa, terms_now)
        new_contract(wb, terms_now)
    before_a, before_b = snapshot(engine, ids_a), snapshot(engine, ids_b)
    assert [{**s, "sources": None} for s in before_a] == [{**s, "sources": None} for s in before_b]
    amounts = [(s["amount"], s["intended"][0]) for s in before_a]
    n_rows = data.draw(st.integers(1, 40), label="number of rows")
    clean = data.draw(st.booleans(), label="clean file")
    plan = data.draw(st.lists(row_specs(len(spec_list), clean), min_size=n_rows, max_size=n_rows), label="rows")
    chunk = data.draw(st.sampled_from([None, None, 1, 3, 8]), label="chunk")
    batch = data.draw(st.sampled_from([None, 1, 2]), label="batch") if chunk not in (None, 1) else None
    ra = Rendered(wa, ids_a, ids_b, spec_list, amounts)
    rb = Rendered(wb, ids_b, ids_a, spec_list, amounts)
    rows_a, rows_b = [ra.row(r) for r in plan], [rb.row(r) for r in plan]

    # A: one API submission, drained by the worker (or claimed and processed in tiny chunks); sometimes its
    # dry run first, which must change nothing and foretell every row's outcome
    api_actor = Actor(wa.account_id, "bulk", wf.Channel.API)
    dry_sid = None
    if data.draw(st.booleans(), label="dry run first"):
        dry_sid = run_submission(engine, api_actor, wa.campaign_id, rows_a, chunk, dry_run=True, batch=batch)
        assert snapshot(engine, ids_a) == before_a
    sid = run_submission(engine, api_actor, wa.campaign_id, rows_a, chunk, batch=batch)

    # B: each row in its own transaction through the single-action service
    got_b = one_by_one(wb, rb, rows_b, plan)

    got_a = submission_outcomes(engine, sid, ids_a)
    if dry_sid is not None:
        assert submission_outcomes(engine, dry_sid, ids_a) == got_a
    for o in got_b:
        event(f"row {o.outcome} {o.code or ''}".strip())
    event(f"chunk {chunk}")
    for n, (oa, ob) in enumerate(zip(got_a, got_b, strict=True), 1):
        assert oa == ob, f"row {n} {rows_a[n - 1]}: submission {oa} != one by one {ob}"
    assert len(got_a) == len(plan)

    with db.read(engine) as conn:
        sub = submissions.get(conn, wa.account_id, sid)
    applied = [o for o in got_b if o.outcome == "applied"]
    assert sub["status"] == "COMPLETE"
    assert (sub["total_records"], sub["processed_records"]) == (len(plan), len(plan))
    assert (sub["applied"], sub["unchanged"], sub["errors"]) == (
        len(applied), sum(o.outcome == "unchanged" for o in got_b), sum(o.outcome == "error" for o in got_b))
    assert sub["amount_delta"] == format_amount(sum(o.after[0] - o.before[0] for o in applied), "USD")  # type: ignore[index]
    assert sub["payout_delta"] == format_amount(sum(o.after[1] - o.before[1] for o in applied), "USD")  # type: ignore[index]

    after_a, after_b = snapshot(engine, ids_a), snapshot(engine, ids_b)
    for n, (sa, sb, pre) in enumerate(zip(after_a, after_b, before_a, strict=True)):
        assert {**sa, "sources": None} == {**sb, "sources": None}, f"action #{n} ({spec_list[n]}) differs"
        kept = len(pre["history"])
        assert sa["sources"][:kept] == pre["sources"]
        assert all(src == ("api", sid) for src in sa["sources"][kept:]), f"action #{n}: {sa['sources']}"
        assert all(src == ("api", None) for src in sb["sources"])
    assert sum(len(s["history"]) - len(p["history"]) for s, p in zip(after_a, before_a, strict=True)) == len(applied)


def test_submission_equals_rows_one_by_one(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    sqlite = engine.dialect.name == "sqlite"
    # two tenants per example: their campaigns' FTP passwords need not cost half a second of argon2 each
    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    monkeypatch.setattr(catalog_service, "hash_password", cheap.hash)
    scale = float(os.environ.get("PAYOUTDESK_EQUIVALENCE_SCALE", "1"))  # more examples when shaking out bugs

    @settings(max_examples=int((25 if sqlite else 10) * scale), deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(spec_list=st.lists(specs(), min_size=1, max_size=6), data=st.data())
    def run(spec_list: list[Spec], data: st.DataObject) -> None:
        # PostgreSQL loads a batch's actions a slice of ids at a time: slices of one or two ids put an
        # action's items and the actions of one batch across several statements
        load_slice = data.draw(st.sampled_from([sub_repo._LOAD_SLICE, 1, 2]), label="ids per load statement")
        with patch.object(sub_repo, "_LOAD_SLICE", load_slice):
            check_equivalence(engine, spec_list, data)

    run()
