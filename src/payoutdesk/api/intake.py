"""Returns processing of an event type through the API: run a pull or a Salesforce poll now, and the latest
runs of its channel (DESIGN §3 and the appendix, ``POST /event-types/{id}/returns-processing/run``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import Field
from sqlalchemy import Connection

from payoutdesk.api.plumbing import Account, PathId, json_answer, read, whole_between
from payoutdesk.api.schemas import Cursor, FailureSpell, IntakeRun, Shape, Submission
from payoutdesk.errors import PayoutdeskError, ValidationFailed
from payoutdesk.intake import returns_processing
from payoutdesk.intake.common import IntakeContext
from payoutdesk.kit import db
from payoutdesk.kit.ids import parse_id
from payoutdesk.submissions import service as submissions

router = APIRouter(tags=["returns processing"])
RUNS_PAGE = (20, 100)  # default and largest page of runs


# --- the answers' shapes (for the OpenAPI document) ---------------------------------------------------


class IntakeRunNow(IntakeRun):
    submission_details: list[Submission] = Field(description="The submissions the run queued, in full.")


class IntakeRunList(Shape):
    items: list[IntakeRun]
    next_cursor: Cursor
    failing: FailureSpell | None = Field(description="While the runs fail: since when, how often, the last error "
                                                     "(null once a run works again).")


# --- the routes ----------------------------------------------------------------------------------


def _context(request: Request) -> IntakeContext:
    ctx: IntakeContext = request.app.state.intake
    return ctx


@router.post("/event-types/{event_type_id}/returns-processing/run")
def run_now(request: Request, event_type_id: PathId, account: Account) -> Response:
    """Pull the brand's server (mode ftp_pull) or poll Salesforce (mode salesforce) now; the run, with the
    submissions it queued. A run that fails (a server that is down, a refused login) answers 200 too, with
    ``outcome`` failed and ``detail`` saying why; nothing is lost."""
    ctx = _context(request)
    done = returns_processing.run_now(ctx, account.id, event_type_id)
    details = []
    with db.read(ctx.engine) as conn:
        for name in done.get("submissions") or []:
            try:
                details.append(submissions.get(conn, account.id, name))
            except PayoutdeskError:  # gone meanwhile
                continue
    return json_answer(request, {**done, "submission_details": details})


@router.get("/event-types/{event_type_id}/returns-processing/runs")
def list_runs(request: Request, event_type_id: PathId, account: Account,
              limit: Annotated[int, whole_between(1, RUNS_PAGE[1])] = RUNS_PAGE[0],
              cursor: str | None = None) -> Response:
    """The latest runs of the event type's channel, newest first; ``next_cursor`` gives the next page. For an
    event type in mode ftp_upload or email: the uploads to the campaign's FTP login, the mails to its address
    (which its other event types share)."""
    before: int | None = None
    if cursor:
        before = parse_id(cursor)
        if before is None:
            raise ValidationFailed("cursor is not one this API gave out; use next_cursor of the previous page.")

    def page(conn: Connection) -> dict[str, Any]:
        return returns_processing.runs_page(conn, account.id, event_type_id, limit=limit, before=before)

    return read(request, page)


__all__ = ["IntakeRunList", "IntakeRunNow", "router"]
