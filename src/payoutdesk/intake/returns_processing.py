"""An event type's returns processing as the API and the pages both use it: run its pull or Salesforce poll
now, and a page of the runs of its channel (DESIGN §3, "Run now" and the last runs' results)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from payoutdesk.catalog.service import get_owned
from payoutdesk.errors import Conflict
from payoutdesk.intake import pull, runs, salesforce
from payoutdesk.intake.common import IntakeContext
from payoutdesk.kit import db
from payoutdesk.models import event_types

RUNNABLE = (pull.CHANNEL, "salesforce")  # the modes that fetch returns themselves, so can be run now


def run_now(ctx: IntakeContext, account_id: int, event_type_id: int) -> dict[str, Any]:
    """Pull the brand's server (mode ftp_pull) or poll Salesforce (mode salesforce) now: the finished run
    (``runs.run_dict``). A run that fails (a server down, a refused login) is returned with outcome
    ``failed`` and its ``detail``; NotFound for another account's event type, Conflict for another mode."""
    with db.read(ctx.engine) as conn:
        et = get_owned(conn, event_types, account_id, event_type_id, "event type")
    if et.returns_mode == pull.CHANNEL:
        return pull.run(ctx, int(et.id), "run_now")
    if et.returns_mode == "salesforce":
        return salesforce.poll(ctx, int(et.id), trigger="run_now")
    raise Conflict(f"Event type {et.id} has returns processing {et.returns_mode!r}: only an event type that "
                   "pulls from the brand's server (ftp_pull) or polls Salesforce (salesforce) can be run now.")


def runs_page(conn: Connection, account_id: int, event_type_id: int, *, limit: int,
              before: int | None = None) -> dict[str, Any]:
    """The latest runs of the event type's channel, newest first (``items``, ``next_cursor``) and, while
    they fail, the failure spell (``failing``)."""
    et = get_owned(conn, event_types, account_id, event_type_id, "event type")
    items = runs.runs_of(conn, account_id, et, limit=limit + 1, before=before)
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next_cursor": str(items[-1]["id"]) if more and items else None,
            "failing": runs.failing(conn, account_id, et)}
