"""Pure rule tests (no database): R4-R7, R9-R11, the 1,000-update cap."""

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from payoutdesk.contracts.terms import Period, Terms
from payoutdesk.errors import ActionLocked, InvalidAmount, InvalidState, TooManyUpdates, UnknownSku, ValidationFailed
from payoutdesk.ledger import workflow as wf

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
T10 = Terms(1, Period(0, 27), Period(0, 20), 30, rate_ppm=100_000)  # 10 %


def order(*items: tuple[str, int, int], terms: Terms = T10) -> wf.Action:
    return wf.new_action(tuple((sku, None, None, q, a) for sku, q, a in items), terms, action_id=7)


def change(outcome: wf.Outcome) -> wf.Change:
    assert isinstance(outcome, wf.Change), outcome
    return outcome


def test_new_action_payout_is_sum_of_items() -> None:
    a = order(("A", 2, 6000), ("B", 1, 4000))
    assert (a.amount, a.payout, a.intended_amount, a.intended_payout) == (10000, 1000, 10000, 1000)
    with pytest.raises(ValidationFailed, match="twice"):
        order(("A", 1, 1), ("A", 1, 2))


def test_approve_locks_now() -> None:
    c = change(wf.decide(order(("A", 1, 1000)), wf.Approve(), T10, NOW))
    assert c.after.state is wf.State.APPROVED and c.after.locked_at == NOW and c.kind is wf.Kind.APPROVED
    assert isinstance(wf.decide(c.after, wf.Approve(), T10, NOW), wf.Unchanged)  # R11: replay harmless
    with pytest.raises(ActionLocked, match="Action 7 is locked"):
        wf.decide(c.after, wf.Reverse("CONS_FRAUD"), T10, NOW)


def test_reverse_zeroes_and_restore_brings_back() -> None:
    a = order(("A", 2, 6000), ("B", 1, 4000))
    a = change(wf.decide(a, wf.Modify(amount=8000), T10, NOW)).after
    r = change(wf.decide(a, wf.Reverse("ITEM_RETURNED"), T10, NOW))
    assert r.after.state is wf.State.REVERSED and r.after.amount == 0 and r.after.payout == 0
    assert r.delta_amount == -8000 and r.delta_payout == -800 and r.after.intended_amount == 10000
    assert isinstance(wf.decide(r.after, wf.Reverse("ITEM_RETURNED"), T10, NOW), wf.Unchanged)
    other = change(wf.decide(r.after, wf.Reverse("CONS_FRAUD"), T10, NOW))  # new reason: a change, no money
    assert other.delta_amount == 0 and other.after.reason == "CONS_FRAUD"
    restored = change(wf.decide(other.after, wf.Approve(), T10, NOW))
    assert restored.kind is wf.Kind.RESTORED and restored.after.state is wf.State.PENDING
    assert restored.after.amount == 8000 and restored.after.payout == 800  # as before the reversal (R4)
    assert restored.after.locked_at is None


def test_modify_spreads_with_remainder_to_largest() -> None:
    a = order(("A", 1, 3000), ("B", 1, 6000), ("C", 1, 1000))
    c = change(wf.decide(a, wf.Modify(amount=1001), T10, NOW))
    assert [i.amount for i in c.after.items] == [300, 601, 100]
    assert c.after.amount == 1001 and c.after.payout == sum(i.payout for i in c.after.items)
    assert c.kind is wf.Kind.MODIFIED and c.reason == "ORDER_UPDATE"


def test_modify_to_zero_reverses_unless_original_zero() -> None:
    a = order(("A", 1, 5000))
    c = change(wf.decide(a, wf.Modify(amount=0, reason="ITEM_RETURNED"), T10, NOW))
    assert c.kind is wf.Kind.REVERSED and c.after.reason == "ITEM_RETURNED"
    assert isinstance(wf.decide(c.after, wf.Modify(amount=0), T10, NOW), wf.Unchanged)  # R11 amount it has
    zero = order(("LEAD", 1, 0))
    assert isinstance(wf.decide(zero, wf.Modify(amount=0), T10, NOW), wf.Unchanged)
    m = change(wf.decide(zero, wf.Modify(amount=2500), T10, NOW))
    assert m.kind is wf.Kind.MODIFIED and m.after.amount == 2500


def test_same_amount_is_unchanged() -> None:
    a = order(("A", 1, 5000))
    assert isinstance(wf.decide(a, wf.Modify(amount=5000), T10, NOW), wf.Unchanged)


def test_modify_refused_when_not_pending() -> None:
    a = order(("A", 1, 5000))
    rev = change(wf.decide(a, wf.Reverse("OTHER"), T10, NOW)).after
    with pytest.raises(InvalidState, match="approve a reversed action"):
        wf.decide(rev, wf.Modify(amount=100), T10, NOW)
    locked = change(wf.lock(rev, NOW)).after
    with pytest.raises(ActionLocked):
        wf.decide(locked, wf.Approve(), T10, NOW)


def test_item_changes() -> None:
    a = order(("RED", 2, 8000), ("BLUE", 1, 3999))
    c = change(wf.decide(a, wf.Modify(items=(wf.ItemChange("RED", 1),), reason="ITEM_RETURNED"), T10, NOW))
    assert [(i.quantity, i.amount) for i in c.after.items] == [(1, 4000), (1, 3999)]  # scales with quantity
    c2 = change(wf.decide(c.after, wf.Modify(items=(wf.ItemChange("BLUE", 1, 3500),)), T10, NOW))
    assert c2.after.items[1].amount == 3500 and c2.after.amount == 7500
    with pytest.raises(UnknownSku, match="no item with sku 'GREEN'"):
        wf.decide(a, wf.Modify(items=(wf.ItemChange("GREEN", 0),)), T10, NOW)
    gone = change(wf.decide(a, wf.Modify(items=(wf.ItemChange("RED", 0), wf.ItemChange("BLUE", 0)),
                                         reason="ITEM_RETURNED"), T10, NOW))
    assert gone.kind is wf.Kind.REVERSED and gone.after.reason == "ITEM_RETURNED" and gone.after.amount == 0
    back = change(wf.decide(gone.after, wf.Approve(), T10, NOW)).after
    assert [(i.quantity, i.amount) for i in back.items] == [(2, 8000), (1, 3999)]


def test_reset_goes_back_to_original() -> None:
    a = order(("RED", 2, 8000), ("BLUE", 1, 3999))
    assert isinstance(wf.decide(a, wf.Reset(), T10, NOW), wf.Unchanged)
    m = change(wf.decide(a, wf.Modify(items=(wf.ItemChange("RED", 0),)), T10, NOW)).after
    r = change(wf.decide(m, wf.Reset(), T10, NOW))
    assert r.kind is wf.Kind.RESET and r.after.items == a.items and r.after.state is wf.State.PENDING
    rev = change(wf.decide(a, wf.Reverse(None), T10, NOW)).after
    assert rev.reason == "REJECTED"  # default reversal reason
    assert change(wf.decide(rev, wf.Reset(), T10, NOW)).after.items == a.items


def test_payout_recomputed_under_terms_of_change() -> None:
    a = order(("A", 1, 10000))
    t20 = replace(T10, rate_ppm=200_000)
    c = change(wf.decide(a, wf.Modify(amount=5000), t20, NOW))
    assert c.after.payout == 1000  # 20 % of 50.00 under the newer contract
    assert c.after.intended_payout == 1000 or c.after.intended_payout == a.intended_payout
    assert c.after.intended_payout == a.intended_payout


def test_lock() -> None:
    a = order(("A", 1, 100))
    c = change(wf.lock(a, NOW))
    assert c.after.state is wf.State.APPROVED and c.kind is wf.Kind.LOCKED and c.delta_amount == 0
    assert isinstance(wf.lock(c.after, NOW), wf.Unchanged)
    rev = change(wf.decide(a, wf.Reverse("OTHER"), T10, NOW)).after
    assert change(wf.lock(rev, NOW)).after.state is wf.State.REVERSED


@pytest.mark.parametrize("state", ["PENDING", "REVERSED"])
def test_final_from_its_locking_date_before_a_lock_run(state: str) -> None:
    """R1: on and after its locking date an action is final, though no lock run has marked it yet."""
    a = change(wf.decide(order(("A", 2, 1000), ("B", 1, 500)), wf.Modify(amount=2000), T10, NOW)).after
    if state == "REVERSED":
        a = change(wf.decide(a, wf.Reverse("OTHER"), T10, NOW)).after
    today = NOW.date()
    day_before = replace(a, lock_due=today.replace(day=today.day + 1))
    due = replace(a, lock_due=today)
    commands: list[wf.Command] = [wf.Approve(), wf.Reverse("CONS_FRAUD"), wf.Modify(amount=700),
                                  wf.Modify(items=(wf.ItemChange("A", 1),)), wf.Reset()]
    for command in commands:
        try:  # the day before it may change (a reversed action is restored first to be modified)
            assert isinstance(wf.decide(day_before, command, T10, NOW), wf.Change), command
        except InvalidState:
            assert state == "REVERSED" and isinstance(command, wf.Modify)
        with pytest.raises(ActionLocked, match=f"Action 7 reached its locking date on {today.isoformat()}"):
            wf.decide(due, command, T10, NOW)
    assert wf.is_final(due, today) and not wf.is_final(day_before, today)
    # what changes nothing stays "unchanged" (R11), and the lock run locks it
    same = wf.Reverse("OTHER") if state == "REVERSED" else wf.Modify(amount=2000)
    assert isinstance(wf.decide(due, same, T10, NOW), wf.Unchanged)
    assert change(wf.lock(due, NOW)).after.lock_due == today


def test_update_cap() -> None:
    a = replace(order(("A", 1, 100)), update_count=wf.MAX_UPDATES)
    with pytest.raises(TooManyUpdates, match="1000 updates"):
        wf.decide(a, wf.Modify(amount=50), T10, NOW)
    assert isinstance(wf.decide(a, wf.Modify(amount=100), T10, NOW), wf.Unchanged)
    assert isinstance(wf.lock(a, NOW), wf.Change)  # the lock run always locks


def test_order_total_with_explicit_item_amounts() -> None:
    """R7 amounts are absolute: with an order total too, the given amounts stay and the rest is spread."""
    a = order(("S0", 1, 10000), ("S1", 1, 20000), ("S2", 1, 10000))
    cmd = wf.Modify(amount=25000, items=(wf.ItemChange("S0", 1, 5000),))
    c = change(wf.decide(a, cmd, T10, NOW))
    assert [i.amount for i in c.after.items] == [5000, 13334, 6666]
    assert isinstance(wf.decide(c.after, cmd, T10, NOW), wf.Unchanged)  # a replay is harmless (R11)
    with pytest.raises(InvalidAmount, match="more than the new order amount"):
        wf.decide(a, wf.Modify(amount=100, items=(wf.ItemChange("S0", 1, 5000),)), T10, NOW)
    only = order(("S0", 1, 10000))
    with pytest.raises(InvalidAmount, match="no other item"):
        wf.decide(only, wf.Modify(amount=6000, items=(wf.ItemChange("S0", 1, 5000),)), T10, NOW)
