"""Actions as the API shows them (DESIGN appendix)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Row

from payoutdesk.kit.money import format_amount
from payoutdesk.kit.time import iso, iso_date


def item_dict(i: Row[Any], currency: str) -> dict[str, Any]:
    return {
        "sku": i.sku,
        "name": i.name,
        "category": i.category,
        "quantity": i.quantity,
        "amount": format_amount(i.amount, currency),
        "payout": format_amount(i.payout, currency),
        "intended_quantity": i.intended_quantity,
        "intended_amount": format_amount(i.intended_amount, currency),
        "intended_payout": format_amount(i.intended_payout, currency),
    }


def submission_label(submission_id: int | None, labels: Mapping[int, str]) -> str | None:
    """A history entry's submission as the API names it (``F-17``, ``A-18``; ``labels`` from
    ``repository.submission_labels``)."""
    if submission_id is None:
        return None
    return labels.get(int(submission_id), f"F-{submission_id}")


def update_dict(u: Row[Any], currency: str, labels: Mapping[int, str] | None = None) -> dict[str, Any]:
    items = json.loads(u.items) if u.items else None
    return {
        "at": iso(u.at),
        "kind": u.kind,
        "state": u.state,
        "reason": u.reason,
        "note": u.note,
        "delta_amount": format_amount(u.delta_amount, currency),
        "delta_payout": format_amount(u.delta_payout, currency),
        "items": [
            {
                "sku": i["sku"],
                "quantity": i["quantity"],
                "amount": format_amount(i["amount"], currency),
                "payout": format_amount(i["payout"], currency),
            }
            for i in items
        ]
        if items is not None
        else None,
        "channel": u.channel,
        "submission_id": submission_label(u.submission_id, labels or {}),
        "actor": u.actor,
    }


def action_dict(
    row: Row[Any], items: Sequence[Row[Any]], updates: Sequence[Row[Any]] | None = None,
    labels: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    c = row.currency
    out: dict[str, Any] = {
        "id": row.id,
        "campaign_id": row.campaign_id,
        "event_type_id": row.event_type_id,
        "partner_id": row.partner_id,
        "contract_id": row.contract_id,
        "order_id": row.order_id,
        "customer_id": row.customer_id,
        "promo_code": row.promo_code,
        "event_date": iso(row.event_date),
        "state": row.state,
        "status_detail": row.reason,
        "currency": c,
        "amount": format_amount(row.amount, c),
        "payout": format_amount(row.payout, c),
        "intended_amount": format_amount(row.intended_amount, c),
        "intended_payout": format_amount(row.intended_payout, c),
        "locking_date": iso_date(row.locking_date),
        "lock_due": iso_date(row.lock_due),
        "locked_at": iso(row.locked_at),
        "version": row.version,
        "items": [item_dict(i, c) for i in items],
    }
    if updates is not None:
        out["updates"] = [update_dict(u, c, labels) for u in updates]
    return out
