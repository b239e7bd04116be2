"""The submission engine's fast lanes answer exactly what the general code answers.

- ``engine.quick_plan`` (a row's cells into a plan) gives what ``rows.interpret`` gives, or declines;
- ``workflow.quick_modify`` (a modification of a plain pending action, on tuples) gives what
  ``workflow.decide`` gives, or declines;
- ``terms.one_item_payout`` is ``item_payouts`` for one item.

Pure: no database. The end-to-end equivalence of the engine and the single-action service is
tests/test_submission_equivalence.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from payoutdesk.contracts.terms import Period, Terms, item_payouts, one_item_payout
from payoutdesk.kit.money import exponent
from payoutdesk.ledger import workflow as wf
from payoutdesk.submissions.engine import quick_plan
from payoutdesk.submissions.rows import RowError, interpret

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
SKUS = ["A", "B", "C"]


def terms_strategy() -> st.SearchStrategy[Terms]:
    rate = st.builds(lambda ppm, cat: Terms(1, Period(0, 27), Period(0, 20), 30, rate_ppm=ppm,
                                            category_ppm={"shoes": cat} if cat is not None else {}),
                     st.integers(0, 1_000_000), st.none() | st.integers(0, 1_000_000))
    fixed = st.builds(lambda f: Terms(1, Period(0, 27), Period(0, 20), 30, fixed_minor=f), st.integers(0, 10_000))
    return rate | fixed


@st.composite
def pending_actions(draw: st.DrawFn) -> wf.Action:
    n = draw(st.integers(1, 3))
    items = []
    for k in range(n):
        iq = draw(st.integers(0, 4))
        ia = draw(st.sampled_from([0, 1, 999, 3_000, 10**15]) | st.integers(0, 50_000))
        q = draw(st.sampled_from([iq, 0, 1, 3]))
        a = draw(st.sampled_from([ia, 0, 1_234]))
        items.append(wf.Item(SKUS[k], None, draw(st.sampled_from([None, "shoes", "Shoes", "hats"])), q, a,
                             draw(st.integers(0, 5_000)), iq, ia, draw(st.integers(0, 5_000))))
    return wf.Action(draw(st.integers(1, 10**6)), wf.State.PENDING, tuple(items), None, None,
                     draw(st.integers(1, wf.MAX_UPDATES - 1)), None)


changes_strategy = st.lists(
    st.builds(wf.ItemChange, st.sampled_from([*SKUS, "NOPE"]), st.sampled_from([0, 1, 2, 5, 10**15, -1]),
              st.none() | st.sampled_from([0, 1, 500, 10**15, -3])),
    max_size=3,
).map(tuple)


@settings(max_examples=3000, deadline=None)
@given(action=pending_actions(), amount=st.none() | st.sampled_from([0, 1, 7_999, 10**15, -1]) | st.integers(0, 10**6),
       changes=changes_strategy, terms=terms_strategy(), reason=st.sampled_from([None, "ORDER_UPDATE", "Wrong_Size"]))
def test_quick_modify_is_decide(action: wf.Action, amount: int | None, changes: tuple[wf.ItemChange, ...],
                                terms: Terms, reason: str | None) -> None:
    rows = [(i.sku, i.name, i.category, i.quantity, i.amount, i.payout, i.intended_quantity, i.intended_amount,
             i.intended_payout) for i in action.items]
    quick = wf.quick_modify(rows, amount, changes, terms)
    if quick == wf.SLOW:
        return
    outcome = wf.decide(action, wf.Modify(amount, changes, reason), terms, NOW)
    if quick is None:
        assert outcome == wf.Unchanged(action)
        return
    assert isinstance(quick, list)
    after = wf.Action(action.id, action.state, tuple(wf.Item(*r) for r in quick), action.locked_at, action.reason,
                      action.update_count + 1, action.restore)
    assert outcome == wf.Change(action, after, wf.Kind.MODIFIED, reason or wf.DEFAULT_MODIFY_REASON)


@settings(max_examples=500, deadline=None)
@given(amount=st.integers(0, 10**15), category=st.sampled_from([None, "shoes", "SHOES", "hats"]),
       terms=terms_strategy())
def test_one_item_payout(amount: int, category: str | None, terms: Terms) -> None:
    assert one_item_payout(terms, amount, category) == item_payouts(terms, [amount], [category], reversed_=False)[0]


ODD = ["", " ", "12.0", ".5", "+5", "-1", "1e3", "1_000", "²", "١٢", " 12", "12 ", "9" * 19, "abc", "12.345"]
IDS = st.sampled_from(["7", "007", "0", "9" * 18, "123456"] * 8 + ODD)
AMOUNTS = st.sampled_from(["0", "7", "80.", "80.5", "80.00", "12.34", "9" * 13, "9" * 13 + ".99", "9" * 16] * 4 + ODD)
REASONS = st.sampled_from(["ORDER_UPDATE", " ITEM_RETURNED ", "APPROVED", "x"] * 8 + ODD)
EXTRA = ["Note", "CurrencyCode", "CustomerStatus", "Category1", "Sku01", "Quantity1000", "Sku1001", "Other", "Amount3"]


@st.composite
def row_fields(draw: st.DrawFn) -> dict[str, str]:
    """Mostly valid rows (order or item level), some with an odd cell or an odd column."""
    fields: dict[str, str] = {}
    if draw(st.booleans()):
        fields["ActionId"] = draw(IDS)
    else:
        fields["ActionTrackerId"] = draw(IDS)
        fields["Oid"] = draw(st.sampled_from(["O-1", " O-2 ", ""]))
    fields["Reason"] = draw(REASONS)
    if draw(st.booleans()):
        fields["Amount"] = draw(AMOUNTS)
    for n in range(1, draw(st.integers(0, 3)) + 1):
        fields[f"Sku{n}"] = draw(st.sampled_from(["A", "B", ""]))
        if draw(st.integers(0, 9)):
            fields[f"Quantity{n}"] = draw(IDS)
        if draw(st.booleans()):
            fields[f"Amount{n}"] = draw(AMOUNTS)
    for key in draw(st.lists(st.sampled_from(EXTRA), max_size=2)) if not draw(st.integers(0, 2)) else []:
        fields[key] = draw(st.sampled_from(["USD", "usd", "EUR", "note", "", "x" * 2001, "5", "A"]))
    items = list(fields.items())
    return dict(draw(st.permutations(items)))


@settings(max_examples=5000, deadline=None)
@given(fields=row_fields(), currency=st.sampled_from(["USD", "USD", "JPY", "BHD"]), number=st.integers(1, 10**6))
def test_quick_plan_is_interpret(fields: dict[str, str], currency: str, number: int) -> None:
    quick = quick_plan(number, fields, currency, exponent(currency))
    if quick is None:
        return
    i = interpret(number, fields, currency)
    assert not isinstance(i, RowError), (fields, quick, i)
    assert quick == (i.row, i.action_id, i.event_type_id, i.order_id, i.reason, i.amount, i.items, i.note)


def test_quick_plan_takes_the_common_rows() -> None:
    assert quick_plan(3, {"ActionId": "42", "Amount": "80.00", "Reason": "ORDER_UPDATE"}, "USD", 2) == (
        3, 42, None, None, "ORDER_UPDATE", 8000, (), None)
    assert quick_plan(4, {"ActionTrackerId": "7", "Oid": "O-1", "Sku1": "A", "Quantity1": "0",
                          "Reason": "ITEM_RETURNED"}, "USD", 2) == (
        4, None, 7, "O-1", "ITEM_RETURNED", None, (wf.ItemChange("A", 0, None),), None)
