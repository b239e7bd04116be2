"""A stateful test of the ledger: the real service layer on a real database against a reference model.

Hypothesis drives ``record_conversion``, ``apply`` and ``lock_run`` with a simulated clock on both
backends. The reference model below is plain Python written from DESIGN.md section 2 (R1-R15) and the
decisions recorded in the implementation; it does not call ``ledger.workflow``. After every step:

(a) every action in the database equals the model (state, reason, amounts, payouts, items, lock dates,
    ``locked_at``, update count and the whole history: kind, state, reason, deltas, changed items);
(b) the R10 invariants hold when read from the database alone;
(c) a locked action never changes afterwards (row, items and history are compared with a snapshot);
(d) a refused command raises the expected error class and changes nothing; *unchanged* writes nothing;
    a change touches only its own action.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, select, update

from payoutdesk import errors
from payoutdesk.catalog import service as catalog
from payoutdesk.kit import db
from payoutdesk.kit.time import iso
from payoutdesk.ledger import service as ledger
from payoutdesk.ledger import workflow as wf
from payoutdesk.models import action_items, action_updates, actions
from tests.helpers import World, make_world

# --- the reference model ---------------------------------------------------------------------

EXPONENT = {"USD": 2, "JPY": 0, "BHD": 3}
FIXED_LEAD = {"USD": "2.50", "JPY": "250", "BHD": "2.505"}
USER_REASONS = [
    "ORDER_UPDATE", "ITEM_RETURNED", "ITEM_OUT_OF_STOCK", "ORDER_ERROR", "CONS_FRAUD", "CONS_ERROR",
    "CONS_INFO_INVALID", "PUB_ACT_DISPUTE", "ADV_ACT_DISPUTE", "NOT_COMPLIANCE_TERMS", "TEST_ACTION",
    "REJECTED", "OTHER",
]
CUSTOM_CODE = "Wrong_Size"  # a disposition code of the `sale` event type only (see make_world)
BAD_REASONS = ["SYSTEM_REATTRIBUTED", "rejected", "NO_SUCH_REASON"]
CAP = 1000
CATEGORIES = [None, "shoes", "Shoes", "books", "toys"]


def minor_to_text(minor: int, currency: str) -> str:
    exp = EXPONENT[currency]
    return str(Decimal(minor).scaleb(-exp)) if exp else str(minor)


def percent_ppm(text: str) -> int:
    return int(Decimal(text) * 10_000)


def half_up(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def spread(total: int, weights: list[int]) -> list[int]:
    """R6: proportional shares rounded down, the remainder one unit each to the largest weights
    (earlier first on ties); all-zero weights share evenly."""
    ws = weights if sum(weights) > 0 else [1] * len(weights)
    shares = [total * w // sum(ws) for w in ws]
    for i in sorted(range(len(ws)), key=lambda i: (-ws[i], i))[: total - sum(shares)]:
        shares[i] += 1
    return shares


def total_over(amount: int, new: list[tuple[int, int]], fixed: set[int]) -> list[tuple[int, int]]:
    """R6 with R7: items whose amount the change set keep it; the rest of the total goes to the other
    items still there, by their amounts (evenly when those are all zero)."""
    rest = amount - sum(new[n][1] for n in fixed)
    free = [n for n in range(len(new)) if n not in fixed and (not fixed or new[n][0] > 0)]
    if rest < 0 or (fixed and not free and rest):
        raise Refused(errors.InvalidAmount)
    if not free:
        return new
    weights = [new[n][1] for n in free]
    if not any(weights) and any(new[n][0] for n in free):  # nothing to weigh by: the items still there
        weights = [1 if new[n][0] > 0 else 0 for n in free]
        event("a total spread over zero amounts")
    out = list(new)
    for n, a in zip(free, spread(rest, weights), strict=True):
        out[n] = (new[n][0], a)
    return out


@dataclass(frozen=True)
class MTerms:
    seq: int
    starts_on: date
    pays: dict[str, tuple[str, int]]  # "sale"/"lead" -> ("percent", ppm) or ("fixed", minor)
    cats: dict[str, int]  # lower-cased category -> ppm
    lock_after: tuple[int, int]

    def payouts(self, kind: str, amounts: list[int], cats: list[str | None]) -> list[int]:
        how, value = self.pays[kind]
        if how == "fixed":
            return spread(value, amounts)
        out = []
        for amount, cat in zip(amounts, cats, strict=True):
            rate = self.cats.get(cat.lower(), value) if cat is not None else value
            out.append(half_up(Decimal(amount) * rate / 1_000_000))
        return out


@dataclass
class MItem:
    sku: str
    category: str | None
    q: int
    a: int
    p: int
    iq: int
    ia: int
    ip: int

    def now(self) -> tuple[int, int, int]:
        return (self.q, self.a, self.p)


@dataclass
class MAction:
    aid: int
    kind: str
    partner: int
    recording: MTerms
    event_at: datetime
    locking_date: date | None
    lock_due: date
    items: list[MItem]
    order_id: str = ""
    state: str = "PENDING"
    reason: str | None = None
    locked_at: datetime | None = None
    restore: list[tuple[int, int]] | None = None
    count_offset: int = 0  # update_count set directly by the test (the 1,000 cap)
    history: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def update_count(self) -> int:
        return len(self.history) + self.count_offset

    @property
    def amount(self) -> int:
        return sum(i.a for i in self.items)

    @property
    def payout(self) -> int:
        return sum(i.p for i in self.items)


def first_of_next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def lock_date_of(event_day: date, months: int, days: int) -> date:
    """R2: first day of the month after the event + N months + D days."""
    d = first_of_next_month(event_day)
    for _ in range(months):
        d = first_of_next_month(d)
    return d + timedelta(days=days)


class Refused(Exception):
    """The model's answer that the service must raise ``error``."""

    def __init__(self, error: type[Exception]) -> None:
        super().__init__(error.__name__)
        self.error = error


# --- reading the database ----------------------------------------------------------------------


def snapshot(engine: Engine, account_id: int) -> dict[int, dict[str, Any]]:
    """Every action of the account with its items and history, as plain data."""
    out: dict[int, dict[str, Any]] = {}
    with db.read(engine) as conn:
        for r in conn.execute(select(actions).where(actions.c.account_id == account_id).order_by(actions.c.id)):
            out[r.id] = {"row": dict(r._mapping), "items": [], "updates": []}
        ids = select(actions.c.id).where(actions.c.account_id == account_id)
        for r in conn.execute(
            select(action_items).where(action_items.c.action_id.in_(ids))
            .order_by(action_items.c.action_id, action_items.c.position)
        ):
            out[r.action_id]["items"].append(dict(r._mapping))
        for r in conn.execute(
            select(action_updates).where(action_updates.c.action_id.in_(ids))
            .order_by(action_updates.c.action_id, action_updates.c.id)
        ):
            out[r.action_id]["updates"].append(dict(r._mapping))
    return out


def check_r10(aid: int, snap: dict[str, Any]) -> None:
    """R10 from the database alone."""
    row, items, updates = snap["row"], snap["items"], snap["updates"]
    assert updates and updates[0]["kind"] == "CREATED", f"action {aid}: first update is not CREATED"
    assert all(u["kind"] != "CREATED" for u in updates[1:])
    assert updates[0]["delta_amount"] == row["intended_amount"]
    assert updates[0]["delta_payout"] == row["intended_payout"]
    assert row["amount"] == row["intended_amount"] + sum(u["delta_amount"] for u in updates[1:]), aid
    assert row["payout"] == row["intended_payout"] + sum(u["delta_payout"] for u in updates[1:]), aid
    assert row["amount"] == sum(i["amount"] for i in items), aid
    assert row["payout"] == sum(i["payout"] for i in items), aid
    assert row["intended_amount"] == sum(i["intended_amount"] for i in items), aid
    assert row["intended_payout"] == sum(i["intended_payout"] for i in items), aid
    assert updates[-1]["state"] == row["state"]
    assert (row["locked_at"] is None) == all(u["kind"] not in ("APPROVED", "LOCKED") for u in updates)
    if row["state"] == "APPROVED":
        assert row["locked_at"] is not None
    assert all(i["amount"] >= 0 and i["payout"] >= 0 and i["quantity"] >= 0 for i in items)
    if row["state"] == "REVERSED":
        assert row["amount"] == 0 and row["payout"] == 0 and row["reason"] is not None


# --- the machine -------------------------------------------------------------------------------

START_DAYS = [date(2026, 1, 25), date(2026, 2, 26), date(2024, 2, 20), date(2026, 12, 20), date(2025, 7, 31)]
CLOCK_STEPS = (
    [timedelta(hours=h) for h in (1, 5, 11, 23)]
    + [timedelta(days=d) for d in (1, 2, 3, 5, 9, 13)]
    + [timedelta(weeks=w) for w in (1, 2, 3, 3, 4, 5, 5, 6)]
    + [timedelta(days=d) for d in (30, 31, 45)]
    + [timedelta(days=400)]  # rare: reaches the 730 days of open-ended locking after two
)
PERCENTS = ["10", "7.25", "0", "33.3333", "12.5"]
CATEGORY_RATES: list[dict[str, str]] = [{}, {"shoes": "15"}, {"Shoes": "12.5", "books": "3.3333"}, {"toys": "0"}]


def machine_for(engine: Engine) -> type[RuleBasedStateMachine]:
    class LedgerMachine(RuleBasedStateMachine):
        handles = Bundle("actions")

        def __init__(self) -> None:
            super().__init__()
            self.world: World | None = None
            self.model: dict[int, MAction] = {}
            self.contracts: dict[int, list[MTerms]] = {}
            self.snap: dict[int, dict[str, Any]] = {}
            self.locked_snaps: dict[int, dict[str, Any]] = {}
            self.now = datetime(2026, 1, 1, tzinfo=UTC)
            self.seq = 0
            self.orders = 0
            self.last: tuple[int, wf.Command, Callable[[MAction], bool]] | None = None

        # --- set-up ---------------------------------------------------------------------------

        @initialize(
            currency=st.sampled_from(sorted(EXPONENT)),
            percent=st.sampled_from(PERCENTS),
            cats=st.sampled_from(CATEGORY_RATES),
            start=st.sampled_from(START_DAYS),
            lock_days=st.sampled_from([27, 27, 0, 3]),
        )
        def setup(self, currency: str, percent: str, cats: dict[str, str], start: date, lock_days: int) -> None:
            self.world = make_world(engine, currency=currency, percent=percent, category_percent=cats,
                                    fixed_lead=FIXED_LEAD[currency], lock_after={"months": 0, "days": lock_days})
            self.now = datetime(start.year, start.month, start.day, 12, 0, tzinfo=UTC)
            fixed = int(Decimal(FIXED_LEAD[currency]).scaleb(EXPONENT[currency]))
            for pid in self.world.partners:
                self.contracts[pid] = [self._terms(date(2020, 1, 1), {"sale": ("percent", percent_ppm(percent)),
                                                                      "lead": ("fixed", fixed)}, cats, (0, lock_days))]
            self.snap = snapshot(engine, self.world.account_id)

        def _terms(self, starts_on: date, pays: dict[str, tuple[str, int]], cats: dict[str, str],
                   lock_after: tuple[int, int]) -> MTerms:
            self.seq += 1
            return MTerms(self.seq, starts_on, pays, {k.lower(): percent_ppm(v) for k, v in cats.items()}, lock_after)

        @property
        def w(self) -> World:
            assert self.world is not None
            return self.world

        @property
        def currency(self) -> str:
            return self.w.currency

        def terms_on(self, partner: int, day: date, kind: str) -> MTerms | None:
            """R8: the newest contract started on or before the day, if it pays for the event type."""
            started = [t for t in self.contracts[partner] if t.starts_on <= day]
            newest = max(started, key=lambda t: (t.starts_on, t.seq)) if started else None
            return newest if newest is not None and kind in newest.pays else None

        def terms_now(self, m: MAction) -> MTerms:
            # the implementation falls back to the recording contract when none pays for it today
            terms = self.terms_on(m.partner, self.now.date(), m.kind)
            if terms is None:
                event("payout under the recording contract (none pays today)")
            return terms or m.recording

        # --- the model's rules ----------------------------------------------------------------

        def can_change(self, m: MAction) -> None:
            if m.locked_at is not None:
                raise Refused(errors.ActionLocked)
            if m.lock_due <= self.now.date():  # R1: final from its locking date, before the lock run marks it
                event("refused: locking date has come, not yet locked by a run")
                raise Refused(errors.ActionLocked)
            if m.update_count >= CAP:
                raise Refused(errors.TooManyUpdates)

        def record(self, m: MAction, kind: str, reason: str | None, before: list[tuple[int, int, int]]) -> None:
            changed = [
                {"sku": i.sku, "quantity": i.q, "amount": i.a, "payout": i.p}
                for i, b in zip(m.items, before, strict=True) if i.now() != b or kind == "CREATED"
            ]
            m.history.append((kind, m.state, reason, m.amount - sum(b[1] for b in before),
                              m.payout - sum(b[2] for b in before), changed or None))

        def reprice(self, m: MAction) -> None:
            pays = self.terms_now(m).payouts(m.kind, [i.a for i in m.items], [i.category for i in m.items])
            for i, p in zip(m.items, pays, strict=True):
                i.p = p

        def reverse_model(self, m: MAction, reason: str, quantities: list[int] | None = None) -> None:
            """R5: amounts and payouts to zero, quantities kept; what to restore is remembered."""
            if m.state != "REVERSED":
                m.restore = [(i.q, i.a) for i in m.items]
            for n, i in enumerate(m.items):
                if quantities is not None:
                    i.q = quantities[n]
                i.a = i.p = 0
            m.state, m.reason = "REVERSED", reason

        def model_approve(self, m: MAction) -> bool:
            if m.state == "APPROVED":
                return False
            self.can_change(m)
            before = [i.now() for i in m.items]
            if m.state == "PENDING":  # R4: approved means locked, now
                m.state, m.locked_at = "APPROVED", self.now
                self.record(m, "APPROVED", None, before)
                return True
            assert m.restore is not None  # R4: approve on an unlocked reversal restores it
            for i, (q, a) in zip(m.items, m.restore, strict=True):
                i.q, i.a = q, a
            m.state, m.reason, m.restore = "PENDING", None, None
            self.reprice(m)
            self.record(m, "RESTORED", None, before)
            return True

        def model_reverse(self, m: MAction, reason: str | None) -> bool:
            reason = reason or "REJECTED"
            if m.state == "REVERSED" and m.reason == reason:
                return False  # R11
            self.can_change(m)
            before = [i.now() for i in m.items]
            self.reverse_model(m, reason)
            self.record(m, "REVERSED", reason, before)
            return True

        def model_modify(self, m: MAction, amount: int | None, changes: list[tuple[str, int, int | None]],
                         reason: str | None) -> bool:
            if amount is None and not changes:
                raise Refused(errors.ValidationFailed)
            if amount is not None and amount < 0:
                raise Refused(errors.ValidationFailed)
            skus = [i.sku for i in m.items]
            new = [(i.q, i.a) for i in m.items]
            fixed: set[int] = set()  # items whose amount the change sets (given, or returned)
            for sku, q, a in changes:
                if sku not in skus:
                    raise Refused(errors.UnknownSku)
                if q < 0 or (a is not None and a < 0):
                    raise Refused(errors.ValidationFailed)
                n = skus.index(sku)
                item = m.items[n]
                cur_q, cur_a = new[n]
                if q == 0 or a is not None:
                    fixed.add(n)
                if q == 0:
                    new_a = 0  # R7: quantity 0 = returned
                elif a is not None:
                    new_a = a
                elif cur_q > 0:  # R7: the amount scales with the quantity
                    new_a = half_up(Decimal(cur_a) * q / cur_q)
                elif item.iq > 0:
                    new_a = half_up(Decimal(item.ia) * q / item.iq)
                else:
                    new_a = 0
                new[n] = (q, new_a)
            intended = sum(i.ia for i in m.items)
            returned_all = bool(changes) and all(q == 0 for q, _ in new)
            to_zero = amount == 0 and intended != 0  # R6: 0 reverses unless the original was 0
            if m.state == "REVERSED":
                if amount == 0 and new == [(i.q, i.a) for i in m.items]:
                    return False  # R11: the amount it already has
                if (returned_all or to_zero) and m.reason == (reason or "REJECTED"):
                    return False  # R11: reversing a reversed action with the same reason
                if not (returned_all or to_zero) and amount is not None:
                    total_over(amount, new, fixed)  # a total that cannot fit is refused first
                self.can_change(m)
                raise Refused(errors.InvalidState)
            if returned_all or to_zero:
                self.can_change(m)
                if m.state != "PENDING":
                    raise Refused(errors.InvalidState)
                before = [i.now() for i in m.items]
                self.reverse_model(m, reason or "REJECTED", [q for q, _ in new])
                self.record(m, "REVERSED", m.reason, before)
                return True
            if amount is not None:
                new = total_over(amount, new, fixed)
            if new == [(i.q, i.a) for i in m.items]:
                return False  # R11: nothing different (payouts are not recomputed then)
            self.can_change(m)
            if m.state != "PENDING":
                raise Refused(errors.InvalidState)
            before = [i.now() for i in m.items]
            for i, (q, a) in zip(m.items, new, strict=True):
                i.q, i.a = q, a
            self.reprice(m)
            self.record(m, "MODIFIED", reason or "ORDER_UPDATE", before)
            return True

        def model_reset(self, m: MAction) -> bool:
            if m.state == "PENDING" and all(i.now() == (i.iq, i.ia, i.ip) for i in m.items):
                return False
            self.can_change(m)
            before = [i.now() for i in m.items]
            for i in m.items:  # R9: original items, amount and payout
                i.q, i.a, i.p = i.iq, i.ia, i.ip
            m.state, m.reason, m.restore = "PENDING", None, None
            self.record(m, "RESET", "RESET", before)
            return True

        # --- driving the service --------------------------------------------------------------

        def refresh(self, changed: set[int]) -> None:
            """Take a new snapshot; only ``changed`` actions may differ from the previous one (d)."""
            new = snapshot(engine, self.w.account_id)
            assert set(self.snap) <= set(new)
            for aid, old in self.snap.items():
                if aid in changed:
                    assert len(new[aid]["updates"]) == len(old["updates"]) + 1, f"action {aid}: one update per change"
                    assert new[aid]["updates"][: len(old["updates"])] == old["updates"], "history edited in place"
                else:
                    assert new[aid] == old, f"action {aid} changed though it should not have"
            self.snap = new

        def run(self, aid: int, command: wf.Command, model_step: Callable[[MAction], bool]) -> None:
            m = self.model[aid]
            probe = MAction(**{**m.__dict__, "items": [MItem(**i.__dict__) for i in m.items],
                               "history": list(m.history)})
            try:
                expected: bool | Refused = model_step(probe)
            except Refused as refused:
                expected = refused
            refusal: errors.PayoutdeskError | None = None
            try:
                with db.write(engine) as conn:
                    applied = ledger.apply(conn, self.w.actor, aid, command, now=self.now)
            except errors.PayoutdeskError as exc:
                refusal = exc
            if refusal is not None:
                assert isinstance(expected, Refused), f"{command} on {aid} raised {refusal!r}; model: {expected}"
                assert type(refusal) is expected.error, f"{command} on {aid}: {refusal!r}, model {expected.error}"
                if isinstance(refusal, errors.ActionLocked):  # R11: the error names the action and its lock time
                    when = (f"since {iso(m.locked_at)}" if m.locked_at is not None
                            else f"reached its locking date on {m.lock_due.isoformat()}")
                    assert f"Action {aid} " in refusal.detail and when in refusal.detail, refusal.detail
                event(f"{type(command).__name__}: refused {type(refusal).__name__}")
                self.refresh(set())
                return
            assert not isinstance(expected, Refused), f"{command} on {aid} passed; model: {expected.error.__name__}"
            assert applied.unchanged == (not expected), f"{command} on {aid}: unchanged={applied.unchanged}"
            self.model[aid] = probe
            self.last = (aid, command, model_step)
            event(f"{type(command).__name__}: " + (probe.history[-1][0] if expected else "unchanged"))
            self.refresh({aid} if expected else set())

        # --- rules ----------------------------------------------------------------------------

        @precondition(lambda self: self.last is not None)
        @rule()
        def replay(self) -> None:
            """The last accepted command once more (R11: replaying a file is harmless, mostly unchanged)."""
            assert self.last is not None
            self.run(*self.last)

        def _record(self, kind: str, data: st.DataObject) -> int | Any:
            partner = data.draw(st.sampled_from(self.w.partners), label="partner")
            days = data.draw(st.sampled_from([0, 0, 1, 3, 10, 25, 40, 60, 75, 729, 731]), label="days ago")
            hours = days * 24 + data.draw(st.integers(0, 23) | st.integers(-25, 0), label="hours ago")
            event_at = self.now - timedelta(hours=hours)
            if hours < -24:  # an event more than a day in the future is refused
                with pytest.raises(errors.ValidationFailed, match="future"), db.write(engine) as conn:
                    ledger.record_conversion(conn, self.w.actor, {
                        "event_type_id": self.w.sale, "order_id": "F", "amount": "1", "partner_id": partner,
                        "event_date": event_at.strftime("%Y-%m-%dT%H:%M:%SZ")}, now=self.now)
                self.refresh(set())
                return multiple()
            exp = EXPONENT[self.currency]
            money = st.integers(0, 5000 * 10**exp) | st.sampled_from([0, 1, 3, 10**exp, 99_999 * 10**exp])
            order_id = f"O-{self.orders}"
            self.orders += 1
            if self.model and data.draw(st.sampled_from([False] * 4 + [True]), label="reuse an order id"):
                order_id = data.draw(st.sampled_from(sorted({m.order_id for m in self.model.values()})))
            payload: dict[str, Any] = {
                "event_type_id": self.w.sale if kind == "sale" else self.w.lead,
                "order_id": order_id, "event_date": event_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "partner_id": partner,
            }
            if data.draw(st.booleans(), label="order-level amount"):
                amount = data.draw(money, label="amount")
                payload["amount"] = minor_to_text(amount, self.currency)
                lines: list[tuple[str, str | None, int, int]] = [("ORDER", None, 1, amount)]
            else:
                n = data.draw(st.integers(1, 4), label="items")
                lines = [
                    (f"S{k}", data.draw(st.sampled_from(CATEGORIES)),
                     data.draw(st.integers(0, 5) | st.just(1)), data.draw(money))
                    for k in range(n)
                ]
                payload["items"] = [
                    {"sku": s, "quantity": q, "amount": minor_to_text(a, self.currency),
                     **({"category": c} if c else {})}
                    for s, c, q, a in lines
                ]
            terms = self.terms_on(partner, event_at.date(), kind)
            try:
                with db.write(engine) as conn:
                    aid = ledger.record_conversion(conn, self.w.actor, payload, now=self.now)
            except errors.NoContract:
                assert terms is None, "a covered conversion was refused"
                event("record: no contract")
                self.refresh(set())
                return multiple()
            assert terms is not None, "a conversion that no contract covers was recorded (R8)"
            pays = terms.payouts(kind, [a for *_, a in lines], [c for _, c, _, _ in lines])
            items = [MItem(s, c, q, a, p, q, a, p) for (s, c, q, a), p in zip(lines, pays, strict=True)]
            if kind == "sale":
                locking: date | None = lock_date_of(event_at.date(), *terms.lock_after)
                due = locking
            else:
                locking, due = None, event_at.date() + timedelta(days=730)
            assert due is not None
            m = MAction(aid, kind, partner, terms, event_at, locking, due, items, order_id)
            self.record(m, "CREATED", None, [(0, 0, 0)] * len(items))
            self.model[aid] = m
            self.refresh(set())
            return aid

        @rule(target=handles, data=st.data())
        def record_sale(self, data: st.DataObject) -> int | Any:
            return self._record("sale", data)

        @rule(target=handles, data=st.data())
        def record_lead(self, data: st.DataObject) -> int | Any:
            return self._record("lead", data)

        # mostly the default or a few common codes, so that "same reason" no-ops happen
        reasons = st.sampled_from([None, None, None, "REJECTED", "ITEM_RETURNED", "CONS_FRAUD", CUSTOM_CODE]) | (
            st.sampled_from(USER_REASONS)
        )

        @rule(aid=handles)
        def approve(self, aid: int) -> None:
            self.run(aid, wf.Approve(), self.model_approve)

        @rule(aid=handles, reason=st.one_of(reasons, reasons, reasons, st.sampled_from(BAD_REASONS)))
        def reverse(self, aid: int, reason: str | None) -> None:
            self.run(aid, wf.Reverse(reason), self.reason_checked(aid, reason, lambda m: self.model_reverse(m, reason)))

        def reason_checked(self, aid: int, reason: str | None,
                           step: Callable[[MAction], bool]) -> Callable[[MAction], bool]:
            """R15: predefined reasons (not the system-only one), or the event type's own codes."""
            ok = reason is None or reason in USER_REASONS or (reason == CUSTOM_CODE and self.model[aid].kind == "sale")

            def checked(m: MAction) -> bool:
                if not ok:
                    raise Refused(errors.UnknownReason)
                return step(m)

            return checked

        @rule(aid=handles, data=st.data(), reason=reasons)
        def modify_amount(self, aid: int, data: st.DataObject, reason: str | None) -> None:
            m = self.model[aid]
            exp = EXPONENT[self.currency]
            amount = data.draw(
                st.sampled_from([0, m.amount, m.amount // 2, m.amount + 1, sum(i.ia for i in m.items), -1])
                | st.integers(0, 3000 * 10**exp),
                label="new amount",
            )
            self.run(aid, wf.Modify(amount=amount, reason=reason),
                     self.reason_checked(aid, reason, lambda x: self.model_modify(x, amount, [], reason)))

        @rule(aid=handles, data=st.data(), reason=reasons)
        def modify_items(self, aid: int, data: st.DataObject, reason: str | None) -> None:
            m = self.model[aid]
            skus = [i.sku for i in m.items]
            chosen = data.draw(st.lists(st.sampled_from(skus), min_size=0, max_size=len(skus), unique=True),
                               label="skus")
            if data.draw(st.sampled_from([False] * 9 + [True]), label="unknown sku"):
                chosen.append("NOPE")
            exp = EXPONENT[self.currency]
            changes = [
                (s, data.draw(st.integers(0, 6) | st.just(0), label=f"qty {s}"),
                 data.draw(st.none() | st.integers(0, 2000 * 10**exp), label=f"amount {s}"))
                for s in chosen
            ]
            amount = data.draw(st.none() | st.just(0) | st.integers(0, 3000 * 10**exp), label="with amount")
            cmd = wf.Modify(amount=amount, items=tuple(wf.ItemChange(*c) for c in changes), reason=reason)
            step = self.reason_checked(aid, reason, lambda x: self.model_modify(x, amount, changes, reason))
            self.run(aid, cmd, step)

        @rule(aid=handles)
        def read_back(self, aid: int) -> None:
            """The action as the API shows it, and R12: an order id means the newest action with it."""
            m = self.model[aid]
            with db.read(engine) as conn:
                shown = ledger.get_action(conn, self.w.account_id, aid)
                found = ledger.find_by_order(conn, self.w.account_id, self.w.sale if m.kind == "sale" else self.w.lead,
                                             m.order_id)
            assert found == max(a for a, o in self.model.items() if o.order_id == m.order_id and o.kind == m.kind)
            c = self.currency
            # R16's status detail: the reversal reason; PAYMENT_PENDING/PAID once approved; OPEN when open-ended
            detail = (shown["status_detail"] in ("PAYMENT_PENDING", "PAID") if m.state == "APPROVED"
                      else "OPEN" if m.state == "PENDING" and m.kind == "lead" else m.reason)
            assert (shown["state"], shown["status_detail"] if m.state != "APPROVED" else True, shown["amount"],
                    shown["payout"], shown["locked_at"]) == (
                m.state, detail, minor_to_text(m.amount, c), minor_to_text(m.payout, c), iso(m.locked_at))
            assert [(i["sku"], i["quantity"], i["amount"], i["payout"]) for i in shown["items"]] == [
                (i.sku, i.q, minor_to_text(i.a, c), minor_to_text(i.p, c)) for i in m.items]
            assert [u["kind"] for u in shown["updates"]] == [h[0] for h in m.history]

        @rule(aid=handles)
        def reset(self, aid: int) -> None:
            self.run(aid, wf.Reset(), self.model_reset)

        @rule(back=st.sampled_from([0, 0, 0, 1, 5]), chunk=st.sampled_from([ledger.LOCK_CHUNK, 1, 2]))
        def lock_run(self, back: int, chunk: int) -> None:
            as_of = self.now.date() - timedelta(days=back)
            due = [m for m in self.model.values() if m.locked_at is None and m.lock_due <= as_of]
            n = ledger.lock_run(engine, as_of=as_of, account_id=self.w.account_id, now=self.now, chunk=chunk)
            assert n == len(due), f"lock run locked {n}, expected {len(due)}"
            event(f"lock run: {'some' if n else 'none'} locked")
            for m in due:  # R3: PENDING -> APPROVED, REVERSED stays; both get locked_at
                event(f"lock run locks a {m.state} {m.kind}")
                before = [i.now() for i in m.items]
                m.state = "APPROVED" if m.state == "PENDING" else m.state
                m.locked_at = self.now
                m.history.append(("LOCKED", m.state, None, 0, 0, None))
                assert before == [i.now() for i in m.items]
            self.refresh({m.aid for m in due})
            assert ledger.lock_run(engine, as_of=as_of, account_id=self.w.account_id, now=self.now) == 0

        @rule(step=st.sampled_from(CLOCK_STEPS))
        def tick(self, step: timedelta) -> None:
            self.now += step

        @rule(minutes=st.sampled_from([1, 30, 60 * 13]))
        def to_month_end(self, minutes: int) -> None:
            """Just before the end of the month, so the next steps cross it."""
            last = first_of_next_month(self.now.date()) - timedelta(days=1)
            moved = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1, minutes=-minutes)
            self.now = max(self.now, moved)

        @rule(
            data=st.data(),
            percent=st.sampled_from(PERCENTS),
            cats=st.sampled_from(CATEGORY_RATES),
            lock_after=st.sampled_from([(0, 27), (0, 10), (1, 0), (0, 27)]),
            pays_for=st.sampled_from([("sale", "lead")] * 4 + [("sale",), ("lead",)]),
        )
        def new_contract(self, data: st.DataObject, percent: str, cats: dict[str, str],
                         lock_after: tuple[int, int], pays_for: tuple[str, ...]) -> None:
            """A newer contract starting today (R8: payouts after today's changes follow it)."""
            partners = data.draw(st.sampled_from([self.w.partners, *[[p] for p in self.w.partners]]))
            exp = EXPONENT[self.currency]
            fixed = data.draw(st.sampled_from([0, 1, 175 * 10**exp // 100, 7 * 10**exp]), label="fixed")
            payout: list[dict[str, Any]] = []
            pays: dict[str, tuple[str, int]] = {}
            if "sale" in pays_for:
                payout.append({"event_type_id": self.w.sale, "percent": percent})
                pays["sale"] = ("percent", percent_ppm(percent))
            if "lead" in pays_for:
                payout.append({"event_type_id": self.w.lead, "fixed": minor_to_text(fixed, self.currency)})
                pays["lead"] = ("fixed", fixed)
            today = self.now.date()
            with db.write(engine) as conn:
                for pid in partners:
                    catalog.create_contract(conn, self.w.actor, {
                        "campaign_id": self.w.campaign_id, "partner_id": pid, "starts_on": today.isoformat(),
                        "payout": payout, "category_percent": cats,
                        "lock_after": {"months": lock_after[0], "days": lock_after[1]},
                        "pay_after": {"months": 0, "days": 20}, "referral_window_days": 30})
                    self.contracts[pid].append(self._terms(today, pays, cats, lock_after))
            self.refresh(set())

        @precondition(lambda self: any(m.locked_at is None and m.update_count < CAP - 1 for m in self.model.values()))
        @rule(data=st.data())
        def near_the_cap(self, data: st.DataObject) -> None:
            """R10: bring an unlocked action to 999 updates (directly), so the cap is reached next change."""
            aid = data.draw(st.sampled_from(sorted(a for a, m in self.model.items()
                                                   if m.locked_at is None and m.update_count < CAP - 1)))
            m = self.model[aid]
            with db.write(engine) as conn:
                conn.execute(update(actions).where(actions.c.id == aid).values(update_count=CAP - 1))
            m.count_offset = CAP - 1 - len(m.history)
            self.snap = snapshot(engine, self.w.account_id)

        # --- checks ---------------------------------------------------------------------------

        @invariant()
        def database_matches_model(self) -> None:
            if self.world is None:
                return
            assert set(self.snap) == set(self.model)
            for aid, m in self.model.items():
                s = self.snap[aid]
                row = s["row"]
                check_r10(aid, s)  # (b)
                got = (row["state"], row["reason"], row["amount"], row["payout"], row["locked_at"],
                       row["update_count"], row["version"], row["lock_due"], row["locking_date"], row["partner_id"])
                want = (m.state, m.reason, m.amount, m.payout, m.locked_at, m.update_count, len(m.history),
                        m.lock_due, m.locking_date, m.partner)
                assert got == want, f"action {aid}: database {got} != model {want}"  # (a)
                assert row["intended_amount"] == sum(i.ia for i in m.items)
                assert row["intended_payout"] == sum(i.ip for i in m.items)
                assert row["contract_id"] > 0 and row["event_date"] == m.event_at
                db_items = [(i["sku"], i["category"], i["quantity"], i["amount"], i["payout"], i["intended_quantity"],
                             i["intended_amount"], i["intended_payout"]) for i in s["items"]]
                model_items = [(i.sku, i.category, i.q, i.a, i.p, i.iq, i.ia, i.ip) for i in m.items]
                assert db_items == model_items, f"action {aid}: items {db_items} != {model_items}"
                history = [(u["kind"], u["state"], u["reason"], u["delta_amount"], u["delta_payout"],
                            json.loads(u["items"]) if u["items"] else None) for u in s["updates"]]
                assert history == m.history, f"action {aid}: history {history} != {m.history}"
                if m.locked_at is not None:  # (c) locked means locked
                    frozen = self.locked_snaps.setdefault(aid, s)
                    assert s == frozen, f"locked action {aid} changed"

    return LedgerMachine


@pytest.fixture
def backend(engine: Engine) -> str:
    return engine.dialect.name


def test_ledger_state_machine(engine: Engine, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # make_world hashes a generated FTP password with argon2 (0.2 s), irrelevant here: one world per example
    monkeypatch.setattr(catalog, "hash_password", lambda password: "not-hashed")
    sqlite = backend == "sqlite"
    more = os.environ.get("PAYOUTDESK_STATEFUL_EXAMPLES")  # a longer shake-out locally, e.g. 1000
    # SQLite checkpoints its WAL whenever the last connection closes (NullPool: after every transaction);
    # one idle connection held open for the run makes that cost go away (three times faster).
    with engine.connect():
        run_state_machine_as_test(
            machine_for(engine),
            settings=settings(
                max_examples=int(more) if more else 60 if sqlite else 35,
                stateful_step_count=30,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
            ),
        )
