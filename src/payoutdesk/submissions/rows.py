"""What one row of a returns file asks for (DESIGN §3), in pure code.

``interpret`` turns a row's cells into an :class:`Intent` (which action, which operation) or a
:class:`RowError`; ``command_for`` turns an intent into a ledger command once the action (and so
its event type's custom disposition codes) is known. Values are checked here; the file's
structure was checked by the reader.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from payoutdesk.errors import PayoutdeskError, quote
from payoutdesk.kit.money import parse_file_amount
from payoutdesk.ledger import workflow as wf

MAX_NOTE = 2000
MAX_QUANTITY = 10**9  # as the API and record_conversion; the column is a 32-bit integer
ITEM_RE = re.compile(r"^(Sku|Quantity|Amount|Category)(\d+)$")


@dataclass(frozen=True, slots=True)
class RowError:
    row: int
    column: str | None
    type: str  # VALIDATION or CONTRACT
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Intent:
    row: int
    action_id: int | None
    event_type_id: int | None
    order_id: str | None
    reason: str
    amount: int | None
    items: tuple[wf.ItemChange, ...]
    note: str | None


def _err(row: int, column: str | None, code: str, message: str, kind: str = "VALIDATION") -> RowError:
    return RowError(row, column, kind, code, message)


def _int(text: str) -> int | None:
    """A whole number in ASCII digits (spaces around it and a spreadsheet's ``.0`` allowed), else None."""
    t = text.strip()
    if t.endswith(".0"):
        t = t[:-2]
    return int(t) if t.isascii() and t.isdigit() and len(t) <= 18 else None


def interpret(number: int, fields: Mapping[str, str], currency: str) -> Intent | RowError:
    """Check one row's values. ``fields`` has canonical column names (ActionId, Oid, Amount, …)."""
    action_id = event_type_id = None
    order_id = None
    if fields.get("ActionId"):
        action_id = _int(fields["ActionId"])
        if action_id is None:
            return _err(number, "ActionId", "invalid_id", f"ActionId {quote(fields['ActionId'])} is not an action id.")
    else:
        et, oid = fields.get("ActionTrackerId"), fields.get("Oid")
        if not et or not oid:
            missing = "ActionTrackerId" if not et else "Oid"
            return _err(number, missing, "missing_id",
                        "The row names no action: give ActionId, or ActionTrackerId and Oid.")
        event_type_id = _int(et)
        if event_type_id is None:
            return _err(number, "ActionTrackerId", "invalid_id",
                        f"ActionTrackerId {quote(et)} is not an event type id.")
        order_id = oid
    reason = (fields.get("Reason") or "").strip()
    if not reason:
        return _err(number, "Reason", "missing_reason", "Reason is empty; every row needs one (e.g. ITEM_RETURNED).")
    code = fields.get("CurrencyCode")
    if code and code.strip().upper() != currency:
        return _err(number, "CurrencyCode", "wrong_currency",
                    f"CurrencyCode {quote(code)} is not the campaign's currency {currency}.")
    amount = None
    if fields.get("Amount"):
        try:
            amount = parse_file_amount(fields["Amount"], currency, what="Amount")
        except PayoutdeskError as exc:
            return _err(number, "Amount", exc.code, exc.detail)
    items: list[wf.ItemChange] = []
    slots: dict[int, dict[str, str]] = {}
    for name, value in fields.items():
        m = ITEM_RE.match(name)
        if m and value:
            slots.setdefault(int(m.group(2)), {})[m.group(1)] = value
    for n in sorted(slots):
        slot = slots[n]
        sku = slot.get("Sku")
        if not sku:
            return _err(number, f"Sku{n}", "missing_sku", f"Quantity{n}/Amount{n} are given but Sku{n} is empty.")
        if "Quantity" not in slot:
            return _err(number, f"Quantity{n}", "missing_quantity",
                        f"Sku{n} {quote(sku)} needs Quantity{n} (0 when the item was returned).")
        qty = _int(slot["Quantity"])
        if qty is None:
            return _err(number, f"Quantity{n}", "invalid_quantity",
                        f"Quantity{n} {quote(slot['Quantity'])} is not a whole number ≥ 0.")
        if qty > MAX_QUANTITY:
            return _err(number, f"Quantity{n}", "invalid_quantity",
                        f"Quantity{n} {qty} is more than {MAX_QUANTITY:,}.")
        item_amount = None
        if slot.get("Amount"):
            try:
                item_amount = parse_file_amount(slot["Amount"], currency, what=f"Amount{n}")
            except PayoutdeskError as exc:
                return _err(number, f"Amount{n}", exc.code, exc.detail)
        items.append(wf.ItemChange(sku, qty, item_amount))
    note = fields.get("Note") or None
    if note is not None and len(note) > MAX_NOTE:
        return _err(number, "Note", "validation_error", f"Note is longer than {MAX_NOTE} characters.")
    return Intent(number, action_id, event_type_id, order_id, reason, amount, tuple(items), note)


def command_for(intent: Intent, custom_codes: Mapping[str, str], *, system: bool = False) -> wf.Command | RowError:
    """The ledger command of a row, given the event type's custom codes {code: operation}.

    ``APPROVED`` approves, ``RESET`` resets; a custom code does its operation; a predefined reason
    modifies with the row's items and/or amount (an Amount of 0 reverses, R6) or, with neither,
    reverses the action with that reason.
    """
    r = intent.reason
    has_change = intent.amount is not None or bool(intent.items)
    if r == "APPROVED":
        return wf.Approve()
    if r == "RESET":
        return wf.Reset()
    op = custom_codes.get(r)
    if op is None:
        if r not in wf.PREDEFINED_REASONS or (r in wf.SYSTEM_ONLY_REASONS and not system):
            upper = r.upper()
            hint = f" (did you mean {upper}?)" if upper in wf.PREDEFINED_REASONS or upper == "APPROVED" else ""
            return _err(intent.row, "Reason", "unknown_reason",
                        f"Unknown reason {quote(r)}{hint}: use a predefined reason, APPROVED, RESET or a "
                        "disposition code of the event type.")
        op = "modify" if has_change else "reverse"
    if op == "approve":
        return wf.Approve()
    if op == "reverse":
        return wf.Reverse(r)
    if not has_change:
        return _err(intent.row, "Amount", "missing_amount",
                    f"Disposition code {quote(r)} modifies the action: give Amount or item columns.")
    return wf.Modify(intent.amount, intent.items, r)
