"""Column names: matching a header to the canonical names, and the required columns."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from payoutdesk.errors import FileRejected, quote

MAX_ITEMS = 1000

# Lower-cased header text -> canonical name. Aliases map to the name they stand for.
_PLAIN: dict[str, str] = {
    "actionid": "ActionId",
    "actiontrackerid": "ActionTrackerId",
    "oid": "Oid",
    "orderid": "Oid",
    "amount": "Amount",
    "reason": "Reason",
    "dispositioncode": "Reason",
    "customerstatus": "CustomerStatus",
    "currencycode": "CurrencyCode",
    "note": "Note",
}
_ITEM_RE = re.compile(r"^(sku|quantity|amount|category)([1-9][0-9]{0,3})$")
_ITEM_CANON = {"sku": "Sku", "quantity": "Quantity", "amount": "Amount", "category": "Category"}
_ITEM_NAME_RE = re.compile(r"^(Sku|Quantity|Amount|Category)([0-9]+)$")


def canonical(name: str) -> str | None:
    """The canonical column a header cell stands for, or None for a column we do not use."""
    key = name.strip().lower()
    found = _PLAIN.get(key)
    if found is not None:
        return found
    m = _ITEM_RE.match(key)
    if m is None:
        return None
    n = int(m.group(2))
    if n > MAX_ITEMS:
        return None
    return f"{_ITEM_CANON[m.group(1)]}{n}"


def is_amount(name: str) -> bool:
    """Amount and AmountN: the columns where a decimal comma is turned into a dot."""
    return name == "Amount" or (name.startswith("Amount") and name[6:].isdigit())


def _show(names: Iterable[str], limit: int = 30) -> str:
    shown = []
    for i, raw in enumerate(names):
        if i == limit:
            shown.append("…")
            break
        text = raw.strip()
        shown.append(text if len(text) <= 40 else text[:39] + "…")
    return ", ".join(shown) if shown else "(none)"


@dataclass(frozen=True, slots=True)
class Header:
    """A header matched to canonical names."""

    columns: tuple[str, ...]  # canonical names in file order
    positions: tuple[tuple[int, str], ...]  # (cell index, canonical name) for every used column
    item_level: bool


def resolve(raw_names: Sequence[str], *, what: str = "column") -> Header:
    """Match header cells to canonical columns and check the file can be a returns file.

    Raises ``FileRejected`` when a column appears twice (also through an alias),
    when an item column has no matching SkuN, or when a required column is missing.
    """
    seen: dict[str, str] = {}
    positions: list[tuple[int, str]] = []
    for index, raw in enumerate(raw_names):
        name = canonical(raw)
        if name is None:
            continue
        if name in seen:
            raise FileRejected(
                f"The {what} {name} appears twice (as {quote(seen[name].strip())} and {quote(raw.strip())}); "
                "keep only one of them.",
                column=name,
            )
        seen[name] = raw
        positions.append((index, name))
    columns = tuple(name for _, name in positions)
    check_columns(columns, raw_names, what=what)
    return Header(columns=columns, positions=tuple(positions), item_level=item_level(columns))


def item_level(columns: Iterable[str]) -> bool:
    """True when Sku columns are present."""
    return any(c.startswith("Sku") for c in columns)


def check_columns(columns: Sequence[str], raw_names: Iterable[str], *, what: str = "column") -> None:
    """Raise ``FileRejected`` unless the columns identify actions and carry a Reason."""
    present = set(columns)
    for name in columns:
        m = _ITEM_NAME_RE.match(name)
        if m and m.group(1) != "Sku" and f"Sku{m.group(2)}" not in present:
            raise FileRejected(
                f"The {what} {name} has no matching Sku{m.group(2)} {what}: each item needs its SKU.",
                column=name,
            )
    missing: list[str] = []
    described: list[str] = []
    if "Reason" not in present:
        missing.append("Reason")
        described.append("Reason (or DispositionCode)")
    if "ActionId" not in present and not {"ActionTrackerId", "Oid"} <= present:
        if "ActionTrackerId" in present:
            missing.append("Oid")
            described.append("Oid (or OrderId) to go with ActionTrackerId, or ActionId")
        elif "Oid" in present:
            missing.append("ActionTrackerId")
            described.append("ActionTrackerId to go with Oid, or ActionId")
        else:
            missing.append("ActionId")
            described.append("ActionId (or ActionTrackerId and Oid)")
    if missing:
        found = list(raw_names)
        plural = "s" if len(described) > 1 else ""
        raise FileRejected(
            f"This is not a returns file: the required {what}{plural} "
            f"{' and '.join(described)} {'are' if plural else 'is'} missing. "
            f"{what.capitalize()}s found: {_show(found)}.",
            missing=missing,
            found=[f.strip() for f in found[:100]],
        )
