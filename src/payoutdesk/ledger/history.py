"""Rebuild an action's state from its history (pure): used by undo and by invariant checks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from payoutdesk.ledger import workflow as wf


def state_after(action_id: int, updates: Sequence[Any]) -> wf.Action:
    """The action as it was after the given updates (oldest first; the first is CREATED)."""
    if not updates or updates[0].kind != wf.Kind.CREATED.value:
        raise ValueError(f"history of action {action_id} does not start with CREATED")
    created = json.loads(updates[0].items)
    items = [
        wf.Item(i["sku"], None, None, i["quantity"], i["amount"], i["payout"], i["quantity"], i["amount"], i["payout"])
        for i in created
    ]
    action = wf.Action(id=action_id, state=wf.State(updates[0].state), items=tuple(items), update_count=1)
    for u in updates[1:]:
        before = action
        pos = {it.sku: n for n, it in enumerate(before.items)}
        new_items = list(before.items)
        for changed in json.loads(u.items) if u.items else []:
            n = pos[changed["sku"]]
            new_items[n] = replace(new_items[n], quantity=changed["quantity"], amount=changed["amount"],
                                   payout=changed["payout"])
        state = wf.State(u.state)
        restore = before.restore
        if state is wf.State.REVERSED and before.state is not wf.State.REVERSED:
            restore = tuple((i.quantity, i.amount) for i in before.items)
        elif state is not wf.State.REVERSED:
            restore = None
        locked_at = before.locked_at
        if u.kind in (wf.Kind.APPROVED.value, wf.Kind.LOCKED.value):
            locked_at = u.at
        action = replace(
            before,
            state=state,
            items=tuple(new_items),
            reason=(u.reason if u.kind == wf.Kind.REVERSED.value else before.reason)
            if state is wf.State.REVERSED
            else None,
            restore=restore,
            locked_at=locked_at,
            update_count=before.update_count + 1,
        )
    return action
