"""Pure rules of an action's life (R1, R4-R7, R9-R11, R15). No I/O, no clock, no database.

``decide`` takes an action as it is, a command and the contract terms in force now, and
answers either :class:`Unchanged` or a :class:`Change` with the action as it will be and the
history entry to append. The service layer loads, calls this, and writes the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from payoutdesk.contracts.terms import Terms, item_payouts
from payoutdesk.errors import (
    ActionLocked,
    InvalidAmount,
    InvalidState,
    TooManyUpdates,
    UnknownSku,
    ValidationFailed,
    quote,
)
from payoutdesk.kit.money import MAX_MINOR, allocate, round_half_up
from payoutdesk.kit.time import iso

MAX_UPDATES = 1000
_new_object = object.__new__


class State(StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REVERSED = "REVERSED"


class Kind(StrEnum):
    CREATED = "CREATED"
    APPROVED = "APPROVED"
    REVERSED = "REVERSED"
    RESTORED = "RESTORED"
    MODIFIED = "MODIFIED"
    RESET = "RESET"
    LOCKED = "LOCKED"


class Channel(StrEnum):
    WEB = "web"
    API = "api"
    FILE = "file"
    FTP = "ftp"
    FTP_PULL = "ftp_pull"
    EMAIL = "email"
    SALESFORCE = "salesforce"
    SYSTEM = "system"


# R15
PREDEFINED_REASONS: dict[str, str] = {
    "ORDER_UPDATE": "Order update",
    "ITEM_RETURNED": "Item returned",
    "ITEM_OUT_OF_STOCK": "Item out of stock",
    "ORDER_ERROR": "Order error",
    "CONS_FRAUD": "Consumer fraud",
    "CONS_ERROR": "Consumer error",
    "CONS_INFO_INVALID": "Consumer information invalid",
    "PUB_ACT_DISPUTE": "Partner disputes action",
    "ADV_ACT_DISPUTE": "Brand disputes action",
    "NOT_COMPLIANCE_TERMS": "Not in compliance with terms",
    "TEST_ACTION": "Test action",
    "REJECTED": "Rejected",
    "OTHER": "Other",
    "RESET": "Reset to original",
    "SYSTEM_REATTRIBUTED": "Re-attributed by the system",
}
SYSTEM_ONLY_REASONS = frozenset({"SYSTEM_REATTRIBUTED"})
DEFAULT_MODIFY_REASON = "ORDER_UPDATE"
DEFAULT_REVERSE_REASON = "REJECTED"


@dataclass(frozen=True)
class Item:
    sku: str
    name: str | None
    category: str | None
    quantity: int
    amount: int
    payout: int
    intended_quantity: int
    intended_amount: int
    intended_payout: int


@dataclass(frozen=True)
class Action:
    id: int
    state: State
    items: tuple[Item, ...]
    locked_at: datetime | None = None
    reason: str | None = None  # the reversal reason while REVERSED
    update_count: int = 1
    # what a reversal replaced, (quantity, amount) per item, so that approve can restore it (R4)
    restore: tuple[tuple[int, int], ...] | None = None
    # the day the lock run locks it (R2; 730 days after the event for open-ended locking); from that
    # day on the action is final (R1) even before a lock run has marked it
    lock_due: date | None = None

    @property
    def amount(self) -> int:
        return sum(i.amount for i in self.items)

    @property
    def payout(self) -> int:
        return sum(i.payout for i in self.items)

    @property
    def intended_amount(self) -> int:
        return sum(i.intended_amount for i in self.items)

    @property
    def intended_payout(self) -> int:
        return sum(i.intended_payout for i in self.items)


@dataclass(frozen=True)
class ItemChange:
    sku: str
    quantity: int
    amount: int | None = None


@dataclass(frozen=True)
class Approve:
    pass


@dataclass(frozen=True)
class Reverse:
    reason: str | None = None


@dataclass(frozen=True)
class Modify:
    amount: int | None = None
    items: tuple[ItemChange, ...] = ()
    reason: str | None = None


@dataclass(frozen=True)
class Reset:
    pass


@dataclass(frozen=True)
class Lock:
    pass


@dataclass(frozen=True)
class Recalculate:
    """R13: the payout of a PENDING action recomputed under the terms in force now (amounts kept)."""


Command = Approve | Reverse | Modify | Reset | Lock | Recalculate


@dataclass(frozen=True)
class Unchanged:
    action: Action


@dataclass(frozen=True)
class Change:
    before: Action
    after: Action
    kind: Kind
    reason: str | None

    @property
    def delta_amount(self) -> int:
        return self.after.amount - self.before.amount

    @property
    def delta_payout(self) -> int:
        return self.after.payout - self.before.payout

    def changed_items(self) -> list[Item]:
        """Items whose quantity, amount or payout differ, as they are after the change."""
        return [a for b, a in zip(self.before.items, self.after.items, strict=True) if a != b]


Outcome = Unchanged | Change


def new_action(
    items: tuple[tuple[str, str | None, str | None, int, int], ...], terms: Terms, action_id: int = 0
) -> Action:
    """An action as recorded (R8): (sku, name, category, quantity, amount) per item."""
    if not items:
        raise ValidationFailed("An action needs at least one item or an amount.")
    skus = [i[0] for i in items]
    if len(set(skus)) != len(skus):
        raise ValidationFailed("Each item of an action needs its own sku; a sku appears twice.")
    payouts = item_payouts(terms, [i[4] for i in items], [i[2] for i in items], reversed_=False)
    return Action(
        id=action_id,
        state=State.PENDING,
        items=tuple(
            Item(sku, name, cat, qty, amt, pay, qty, amt, pay)
            for (sku, name, cat, qty, amt), pay in zip(items, payouts, strict=True)
        ),
    )


def _locked_error(action: Action) -> ActionLocked:
    return ActionLocked(
        f"Action {action.id} is locked (since {iso(action.locked_at)}, {action.state}); it can no longer change.",
        action_id=action.id,
        locked_at=iso(action.locked_at),
    )


def is_final(action: Action, today: date) -> bool:
    """R1: locked, or its locking date has come and only the lock run has not marked it yet."""
    return action.locked_at is not None or (action.lock_due is not None and action.lock_due <= today)


def check_not_final(action: Action, today: date) -> None:
    if action.locked_at is not None:
        raise _locked_error(action)
    if action.lock_due is not None and action.lock_due <= today:
        raise ActionLocked(
            f"Action {action.id} reached its locking date on {action.lock_due.isoformat()}; it can no longer "
            f"change (the next lock run marks it {'approved' if action.state is State.PENDING else 'locked'}).",
            action_id=action.id,
            locked_at=None,
            lock_due=action.lock_due.isoformat(),
        )


def _check_can_change(action: Action, today: date) -> None:
    check_not_final(action, today)
    if action.update_count >= MAX_UPDATES:
        raise TooManyUpdates(
            f"Action {action.id} already has {action.update_count} updates, the most one action may have."
        )


def _item(i: Item, quantity: int, amount: int, payout: int) -> Item:
    """``replace(i, quantity=…, amount=…, payout=…)``, without ``replace``'s introspection (hot in bulk work);
    ``i`` itself when nothing differs (items are immutable values)."""
    if quantity == i.quantity and amount == i.amount and payout == i.payout:
        return i
    # the same object as Item(...) gives, built without the frozen __init__'s nine object.__setattr__ calls
    new = _new_object(Item)
    fields = new.__dict__
    fields.update(i.__dict__)
    fields["quantity"] = quantity
    fields["amount"] = amount
    fields["payout"] = payout
    return new


def spread_total(total: int, amounts: Sequence[int], quantities: Sequence[int]) -> list[int]:
    """R6: a new order total over the items in proportion to their current amounts; when those are all
    zero, evenly over the items still there (quantity > 0): a returned item (R7) gets no amount."""
    if not any(amounts) and any(quantities):
        return allocate(total, [1 if q > 0 else 0 for q in quantities])
    return allocate(total, amounts)


def apply_total(total: int | None, amounts: Sequence[int], quantities: Sequence[int], fixed: set[int]) -> list[int]:
    """R6 with R7: a new order total over the items after an item change.

    Items whose amount the change set (an explicit amount, or returned) keep it; the rest of the
    total is spread over the other items still there. Refused when the set amounts exceed the
    total, or when a rest is left and no other item can carry it.
    """
    if total is None:
        return list(amounts)
    if not fixed:
        return spread_total(total, amounts, quantities)
    rest = total - sum(amounts[n] for n in fixed)
    if rest < 0:
        raise InvalidAmount(
            f"The item amounts given add up to more than the new order amount ({sum(amounts[n] for n in fixed)} "
            f"> {total} in minor units)."
        )
    free = [n for n in range(len(amounts)) if n not in fixed and quantities[n] > 0]
    out = list(amounts)
    if not free:
        if rest:
            raise InvalidAmount("The new order amount differs from the items' amounts, and no other item is left "
                                "to carry the difference.")
        return out
    for n, a in zip(free, spread_total(rest, [amounts[n] for n in free], [quantities[n] for n in free]), strict=True):
        out[n] = a
    return out


def _recompute(items: tuple[Item, ...], terms: Terms, *, reversed_: bool) -> tuple[Item, ...]:
    payouts = item_payouts(terms, [i.amount for i in items], [i.category for i in items], reversed_=reversed_)
    return tuple(_item(i, i.quantity, i.amount, p) for i, p in zip(items, payouts, strict=True))


def _reversed(before: Action, items: tuple[Item, ...], reason: str) -> Action:
    """R5: amounts and payouts to zero (quantities kept); remember what to restore."""
    snapshot = before.restore if before.state is State.REVERSED else tuple(
        (i.quantity, i.amount) for i in before.items
    )
    return Action(
        before.id, State.REVERSED, tuple(_item(i, i.quantity, 0, 0) for i in items), before.locked_at, reason,
        before.update_count + 1, snapshot, before.lock_due,
    )


def decide(action: Action, command: Command, terms: Terms, now: datetime) -> Outcome:
    """Apply one command to one action under the terms in force now."""
    if isinstance(command, Approve):
        return _approve(action, terms, now)
    today = now.date()
    if isinstance(command, Reverse):
        return _reverse(action, command.reason or DEFAULT_REVERSE_REASON, today)
    if isinstance(command, Modify):
        return _modify(action, command, terms, today)
    if isinstance(command, Reset):
        return _reset(action, today)
    if isinstance(command, Recalculate):
        return recalculate(action, terms, today)
    return lock(action, now)


def recalculate(action: Action, terms: Terms, today: date) -> Outcome:
    """R13 (re-processing) with R8: a PENDING action's payouts recomputed from its current amounts under
    ``terms``; Unchanged when they come out the same, or when the action is not PENDING (a reversed or
    approved action is not recalculated). Refused (R1) when the action is final."""
    if action.state is not State.PENDING:
        return Unchanged(action)
    items = _recompute(action.items, terms, reversed_=False)
    if items == action.items:
        return Unchanged(action)
    _check_can_change(action, today)
    after = Action(action.id, action.state, items, action.locked_at, action.reason, action.update_count + 1,
                   action.restore, action.lock_due)
    return Change(action, after, Kind.MODIFIED, None)


def _approve(action: Action, terms: Terms, now: datetime) -> Outcome:
    if action.state is State.APPROVED:
        return Unchanged(action)
    _check_can_change(action, now.date())
    if action.state is State.PENDING:
        after = Action(action.id, State.APPROVED, action.items, now, action.reason, action.update_count + 1,
                       action.restore, action.lock_due)
        return Change(action, after, Kind.APPROVED, None)
    # R4: approve on an unlocked reversal restores it
    snapshot = action.restore or tuple((i.quantity, i.intended_amount) for i in action.items)
    items = tuple(_item(i, q, a, i.payout) for i, (q, a) in zip(action.items, snapshot, strict=True))
    after = Action(
        action.id, State.PENDING, _recompute(items, terms, reversed_=False), action.locked_at, None,
        action.update_count + 1, None, action.lock_due,
    )
    return Change(action, after, Kind.RESTORED, None)


def _reverse(action: Action, reason: str, today: date) -> Outcome:
    if action.state is State.REVERSED and action.reason == reason:
        return Unchanged(action)
    _check_can_change(action, today)
    if action.state is State.APPROVED:  # pragma: no cover - approved is always locked
        raise _locked_error(action)
    return Change(action, _reversed(action, action.items, reason), Kind.REVERSED, reason)


def _scaled_amount(item: Item, quantity: int) -> int:
    if item.quantity > 0:
        return round_half_up(item.amount * quantity, item.quantity)
    if item.intended_quantity > 0:
        return round_half_up(item.intended_amount * quantity, item.intended_quantity)
    return 0


def _modify(action: Action, command: Modify, terms: Terms, today: date) -> Outcome:
    if command.amount is None and not command.items:
        raise ValidationFailed("A modification needs a new amount or item changes.")
    if command.amount is not None and command.amount < 0:
        raise ValidationFailed("The new amount must not be negative.")
    by_sku = {item.sku: n for n, item in enumerate(action.items)}
    items = list(action.items)
    fixed: set[int] = set()
    for change in command.items:
        if change.sku not in by_sku:
            known = ", ".join(sorted(by_sku)) or "none"
            raise UnknownSku(f"Action {action.id} has no item with sku {quote(change.sku)} (its skus: {known}).")
        if change.quantity < 0:
            raise ValidationFailed(f"The quantity of sku {quote(change.sku)} must not be negative.")
        if change.amount is not None and change.amount < 0:
            raise ValidationFailed(f"The amount of sku {quote(change.sku)} must not be negative.")
        n = by_sku[change.sku]
        item = items[n]
        if change.quantity == 0 or change.amount is not None:
            fixed.add(n)
        if change.quantity == 0:
            new_amount = 0
        elif change.amount is not None:
            new_amount = change.amount
        else:
            new_amount = _scaled_amount(item, change.quantity)
            if new_amount > MAX_MINOR:
                raise InvalidAmount(
                    f"Quantity {change.quantity} of sku {quote(change.sku)} would make its amount too large; "
                    "give the item's amount as well."
                )
        items[n] = _item(item, change.quantity, new_amount, item.payout)

    # R11: setting the amount a reversed action already has is "unchanged"
    if (
        action.state is State.REVERSED
        and command.amount == 0
        and all(a == b for a, b in zip(items, action.items, strict=True))
    ):
        return Unchanged(action)
    reason = command.reason
    returned_all = bool(command.items) and all(i.quantity == 0 for i in items)
    to_zero = command.amount == 0 and action.intended_amount != 0
    if returned_all or to_zero:
        if action.state is State.REVERSED and action.reason == (reason or DEFAULT_REVERSE_REASON):
            return Unchanged(action)
        _check_can_change(action, today)
        if action.state is not State.PENDING:
            raise InvalidState(f"Action {action.id} is {action.state}; only a PENDING action can be modified.")
        rev_reason = reason or DEFAULT_REVERSE_REASON
        return Change(action, _reversed(action, tuple(items), rev_reason), Kind.REVERSED, rev_reason)

    if command.amount is not None:
        spread = apply_total(command.amount, [i.amount for i in items], [i.quantity for i in items], fixed)
        items = [_item(i, i.quantity, a, i.payout) for i, a in zip(items, spread, strict=True)]
    new_items = _recompute(tuple(items), terms, reversed_=False)
    amounts_same = all(
        (a.quantity, a.amount) == (b.quantity, b.amount) for a, b in zip(new_items, action.items, strict=True)
    )
    if amounts_same and action.state is not State.REVERSED:
        return Unchanged(action)
    _check_can_change(action, today)
    if action.state is not State.PENDING:
        raise InvalidState(
            f"Action {action.id} is {action.state}; only a PENDING action can be modified "
            "(approve a reversed action to restore it first)."
        )
    after = Action(action.id, action.state, new_items, action.locked_at, action.reason, action.update_count + 1,
                   action.restore, action.lock_due)
    return Change(action, after, Kind.MODIFIED, reason or DEFAULT_MODIFY_REASON)


# --- the bulk engine's lane: _modify of a plain pending action, on plain tuples -----------------

# The fields of an Item, in order: sku, name, category, quantity, amount, payout, intended quantity, amount, payout.
ItemRow = tuple[str, str | None, str | None, int, int, int, int, int, int]
SLOW = "slow"  # quick_modify's answer for a case outside its lane: ask decide


def quick_modify(items: Sequence[ItemRow], amount: int | None, changes: Sequence[ItemChange], terms: Terms
                 ) -> list[ItemRow] | str | None:
    """``decide(action, Modify(amount, changes, reason), terms, now)`` for an action that is PENDING, unlocked,
    not yet at its locking date (``is_final`` false), has fewer than MAX_UPDATES updates and nothing to
    restore, whose items are ``items``, without building objects: None when decide answers Unchanged; the
    items of ``after`` (as rows) when it answers a MODIFIED Change (``update_count`` + 1, reason
    ``reason or DEFAULT_MODIFY_REASON``, nothing else changed); SLOW for every other case (a refusal, a
    reversal, a zero amount), which decide then answers itself.
    """
    if amount is None:
        if not changes:
            return SLOW
    elif amount <= 0:
        return SLOW
    rows = list(items)
    fixed: set[int] = set()
    if changes:
        by_sku = {row[0]: n for n, row in enumerate(items)}
        for change in changes:
            n = by_sku.get(change.sku, -1)
            quantity, given = change.quantity, change.amount
            if n < 0 or quantity < 0 or (given is not None and given < 0):
                return SLOW
            row = rows[n]
            if quantity == 0 or given is not None:
                fixed.add(n)
            if quantity == 0:
                new_amount = 0
            elif given is not None:
                new_amount = given
            elif row[3] > 0:  # _scaled_amount
                new_amount = round_half_up(row[4] * quantity, row[3])
            elif row[6] > 0:
                new_amount = round_half_up(row[7] * quantity, row[6])
            else:
                new_amount = 0
            if new_amount > MAX_MINOR and given is None and quantity != 0:
                return SLOW
            rows[n] = (row[0], row[1], row[2], quantity, new_amount, row[5], row[6], row[7], row[8])
        if all(row[3] == 0 for row in rows):
            return SLOW  # every item returned: a reversal
    amounts = [row[4] for row in rows]
    if amount is not None:
        try:
            amounts = apply_total(amount, amounts, [row[3] for row in rows], fixed)
        except InvalidAmount:
            return SLOW
    payouts = item_payouts(terms, amounts, [row[2] for row in rows], reversed_=False)
    if all(row[3] == old[3] and a == old[4] for row, a, old in zip(rows, amounts, items, strict=True)):
        return None
    return [(row[0], row[1], row[2], row[3], a, p, row[6], row[7], row[8])
            for row, a, p in zip(rows, amounts, payouts, strict=True)]


def _reset(action: Action, today: date) -> Outcome:
    items = tuple(_item(i, i.intended_quantity, i.intended_amount, i.intended_payout) for i in action.items)
    if action.state is State.PENDING and items == action.items:
        return Unchanged(action)
    _check_can_change(action, today)
    after = Action(action.id, State.PENDING, items, action.locked_at, None, action.update_count + 1, None,
                   action.lock_due)
    return Change(action, after, Kind.RESET, "RESET")


def lock(action: Action, now: datetime) -> Outcome:
    """R3 for one action: PENDING -> APPROVED, REVERSED stays; both get ``locked_at``."""
    if action.locked_at is not None:
        return Unchanged(action)
    state = State.APPROVED if action.state is State.PENDING else State.REVERSED
    after = Action(action.id, state, action.items, now, action.reason, action.update_count + 1, action.restore,
                   action.lock_due)
    return Change(action, after, Kind.LOCKED, None)
