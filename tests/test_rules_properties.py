"""Properties of the pure rules (no database): R2 locking dates, R6 spreads, R7 scaling, R4 restore,
R8 payouts, R9 reset, R10 deltas, R11 no-ops. The expected values are computed here with ``Decimal``."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payoutdesk.contracts.terms import Period, Terms, item_payouts, locking_date
from payoutdesk.errors import PayoutdeskError
from payoutdesk.kit.money import allocate, round_half_up
from payoutdesk.ledger import workflow as wf

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
T10 = Terms(1, Period(0, 27), Period(0, 20), 30, rate_ppm=100_000)
FIXED = Terms(2, Period(0, 27), Period(0, 20), 30, fixed_minor=250)

amounts = st.integers(0, 10**9)
rates = st.integers(0, 1_000_000)
weights = st.lists(st.integers(0, 10**7), min_size=1, max_size=8)


def half_up(num: int, den: int) -> int:
    return int((Decimal(num) / Decimal(den)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def change(outcome: wf.Outcome) -> wf.Change:
    assert isinstance(outcome, wf.Change), outcome
    return outcome


@st.composite
def actions(draw: st.DrawFn, terms: Terms = T10) -> wf.Action:
    n = draw(st.integers(1, 4))
    items = tuple(
        (f"S{k}", None, draw(st.sampled_from([None, "shoes"])), draw(st.integers(1, 5)), draw(st.integers(0, 10**6)))
        for k in range(n)
    )
    return wf.new_action(items, terms, action_id=1)


# --- money --------------------------------------------------------------------------------------


@given(st.integers(-(10**12), 10**12), st.integers(1, 10**9))
def test_round_half_up_is_decimal_half_up(num: int, den: int) -> None:
    assert round_half_up(num, den) == half_up(num, den)


@given(amounts, weights)
def test_allocate_spreads_the_whole_total_in_proportion(total: int, ws: list[int]) -> None:
    parts = allocate(total, ws)
    assert sum(parts) == total and all(p >= 0 for p in parts)
    if sum(ws) == 0:
        assert max(parts) - min(parts) <= 1  # nothing to weigh by: even
        return
    exact = [Decimal(total) * w / sum(ws) for w in ws]
    for p, e, w in zip(parts, exact, ws, strict=True):
        assert e - 1 < p < e + 1, (p, e)
        if w == 0:
            assert p == 0
    # R6: the remainder units go to the largest items (earlier first on ties)
    got_extra = [p > int(e) for p, e in zip(parts, exact, strict=True)]
    for i, extra_i in enumerate(got_extra):
        for j, extra_j in enumerate(got_extra):
            if extra_j and not extra_i and Decimal(total) * ws[i] % sum(ws) != 0:
                assert (ws[j], -j) > (ws[i], -i)


@given(st.lists(amounts, min_size=1, max_size=6), st.lists(st.sampled_from([None, "shoes", "SHOES", "toys"]),
                                                            min_size=6, max_size=6), rates, rates)
def test_item_payouts(item_amounts: list[int], cats: list[str | None], rate: int, shoes: int) -> None:
    cats = cats[: len(item_amounts)]
    terms = replace(T10, rate_ppm=rate, category_ppm={"shoes": shoes})
    got = item_payouts(terms, item_amounts, cats, reversed_=False)
    want = [half_up(a * (shoes if c and c.lower() == "shoes" else rate), 1_000_000) for a, c in zip(item_amounts, cats,
                                                                                                    strict=True)]
    assert got == want
    fixed = item_payouts(replace(FIXED, category_ppm={"shoes": shoes}), item_amounts, cats, reversed_=False)
    assert sum(fixed) == 250  # R8: fixed per action, spread over the items
    assert item_payouts(terms, item_amounts, cats, reversed_=True) == [0] * len(item_amounts)


# --- R2 -----------------------------------------------------------------------------------------


@given(st.dates(date(2000, 1, 1), date(2090, 12, 31)), st.integers(0, 24), st.integers(0, 400))
def test_locking_date(day: date, months: int, days: int) -> None:
    got = locking_date(day, Period(months, days))
    index = day.year * 12 + day.month + months  # month after the event, N months on (0-based month)
    first = date(index // 12, index % 12 + 1, 1)
    assert got == first + timedelta(days=days)
    assert got > day
    assert locking_date(date(day.year, day.month, 1), Period(months, days)) == got  # the whole month alike


# --- R6, R7 -------------------------------------------------------------------------------------


@given(actions(), amounts)
def test_modify_amount_spreads_exactly(action: wf.Action, total: int) -> None:
    outcome = wf.decide(action, wf.Modify(amount=total), T10, NOW)
    if total == action.amount:
        assert isinstance(outcome, wf.Unchanged)  # R11
        return
    c = change(outcome)
    if total == 0 and action.intended_amount != 0:
        assert c.after.state is wf.State.REVERSED and c.after.amount == 0  # R6: 0 reverses
        return
    assert c.after.amount == total == sum(i.amount for i in c.after.items)
    assert c.after.payout == sum(i.payout for i in c.after.items)
    assert [i.quantity for i in c.after.items] == [i.quantity for i in action.items]
    assert c.delta_amount == total - action.amount and c.delta_payout == c.after.payout - action.payout


def test_a_total_over_zero_amounts_skips_returned_items() -> None:
    """R6 + R7: with every current amount 0 the total is shared by the items still there, never by a
    returned one (quantity 0)."""
    a = wf.new_action((("S0", None, None, 1, 100), ("S1", None, None, 1, 200), ("S2", None, None, 2, 300)), T10)
    a = change(wf.decide(a, wf.Modify(items=(wf.ItemChange("S0", 0),)), T10, NOW)).after
    a = change(wf.decide(a, wf.Modify(items=(wf.ItemChange("S1", 1, 0), wf.ItemChange("S2", 2, 0))), T10, NOW)).after
    assert a.state is wf.State.PENDING and a.amount == 0
    c = change(wf.decide(a, wf.Modify(amount=1001), T10, NOW))
    assert [(i.quantity, i.amount, i.payout) for i in c.after.items] == [(0, 0, 0), (1, 501, 50), (2, 500, 50)]
    rows = [(i.sku, i.name, i.category, i.quantity, i.amount, i.payout, i.intended_quantity, i.intended_amount,
             i.intended_payout) for i in a.items]
    assert wf.quick_modify(rows, 1001, (), T10) == [
        (i.sku, i.name, i.category, i.quantity, i.amount, i.payout, i.intended_quantity, i.intended_amount,
         i.intended_payout) for i in c.after.items]


@given(actions(), st.data())
def test_item_quantity_scales_the_amount(action: wf.Action, data: st.DataObject) -> None:
    n = data.draw(st.integers(0, len(action.items) - 1))
    q = data.draw(st.integers(1, 20))
    item = action.items[n]
    outcome = wf.decide(action, wf.Modify(items=(wf.ItemChange(item.sku, q),)), T10, NOW)
    want = half_up(item.amount * q, item.quantity)
    if q == item.quantity:
        assert isinstance(outcome, wf.Unchanged)
        return
    after = change(outcome).after.items[n]
    assert (after.quantity, after.amount) == (q, want)
    assert after.payout == half_up(want * 100_000, 1_000_000)


# --- sequences: R4 restore, R9 reset, R10 deltas, R11 ------------------------------------------

commands = st.one_of(
    st.builds(wf.Approve),
    st.builds(wf.Reverse, st.sampled_from([None, "REJECTED", "CONS_FRAUD"])),
    st.builds(wf.Modify, amount=st.none() | st.just(0) | st.integers(0, 10**6),
              items=st.lists(st.builds(wf.ItemChange, st.sampled_from(["S0", "S1", "S2", "S3"]), st.integers(0, 4),
                                       st.none() | st.integers(0, 10**6)), max_size=3, unique_by=lambda c: c.sku)
              .map(tuple),
              reason=st.sampled_from([None, "ITEM_RETURNED"])),
    st.builds(wf.Reset),
)


@settings(max_examples=300)
@given(actions(), st.lists(commands, max_size=12), st.sampled_from([T10, replace(T10, rate_ppm=72_500)]))
def test_any_sequence_keeps_the_invariants(action: wf.Action, cmds: list[wf.Command], terms: Terms) -> None:
    original = action.items
    for cmd in cmds:
        try:
            outcome = wf.decide(action, cmd, terms, NOW)
        except PayoutdeskError:
            continue
        if isinstance(outcome, wf.Unchanged):
            assert outcome.action == action
        else:
            c = outcome
            assert c.before == action and c.after.update_count == action.update_count + 1
            assert [(i.sku, i.intended_quantity, i.intended_amount, i.intended_payout) for i in c.after.items] == [
                (i.sku, i.intended_quantity, i.intended_amount, i.intended_payout) for i in original
            ]  # the intended values never change
            if c.after.state is wf.State.REVERSED:
                assert c.after.amount == 0 and c.after.payout == 0 and c.after.restore is not None
                assert c.after.reason is not None
            if c.kind is wf.Kind.RESTORED:  # R4: the amounts as they were before the reversal
                assert action.restore is not None
                assert [(i.quantity, i.amount) for i in c.after.items] == list(action.restore)
            if c.kind is wf.Kind.RESET:  # R9
                assert c.after.items == original and c.after.state is wf.State.PENDING
            if c.after.locked_at is not None:
                assert c.after.state is wf.State.APPROVED and c.kind is wf.Kind.APPROVED
            action = c.after
            # replaying a reversal, a modification or a reset is harmless (R11)
            if isinstance(cmd, wf.Reverse | wf.Reset | wf.Modify):
                again = wf.decide(action, cmd, terms, NOW)
                assert isinstance(again, wf.Unchanged), (cmd, again)
        if action.locked_at is not None:
            for other in (wf.Reverse("OTHER"), wf.Modify(amount=action.amount + 1), wf.Reset()):
                with pytest.raises(PayoutdeskError):
                    wf.decide(action, other, terms, NOW)


@given(actions(), st.lists(st.builds(wf.Modify, amount=st.integers(1, 10**6)), max_size=4),
       st.sampled_from(["reverse", "zero", "return all"]), st.integers(0, 2))
def test_restore_brings_back_the_amounts_before_the_reversal(
    action: wf.Action, mods: list[wf.Modify], how: str, rereversals: int
) -> None:
    for m in mods:
        outcome = wf.decide(action, m, T10, NOW)
        action = outcome.after if isinstance(outcome, wf.Change) else action
    before = [(i.quantity, i.amount) for i in action.items]
    by_how: dict[str, wf.Command] = {
        "reverse": wf.Reverse("CONS_FRAUD"),
        "zero": wf.Modify(amount=0),
        "return all": wf.Modify(items=tuple(wf.ItemChange(i.sku, 0) for i in action.items)),
    }
    outcome = wf.decide(action, by_how[how], T10, NOW)
    if isinstance(outcome, wf.Unchanged):  # an order of 0 set to 0 is a no-op
        assert how == "zero" and action.intended_amount == 0
        return
    action = outcome.after
    for n in range(rereversals):  # another reason: the restore point is kept
        action = change(wf.decide(action, wf.Reverse(["OTHER", "ORDER_ERROR"][n]), T10, NOW)).after
    restored = change(wf.decide(action, wf.Approve(), T10, NOW)).after
    assert [(i.quantity, i.amount) for i in restored.items] == before
    assert restored.state is wf.State.PENDING and restored.locked_at is None
    assert restored.payout == sum(half_up(a * 100_000, 1_000_000) for _, a in before)
