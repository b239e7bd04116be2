"""Re-processing (R13): ``POST /api/v1/reprocess`` (ledger/reprocess.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ConfigDict, Field, model_validator
from sqlalchemy import Connection

from payoutdesk.api import plumbing
from payoutdesk.api.native import Body, Id
from payoutdesk.api.plumbing import Account, IdemKey
from payoutdesk.api.schemas import Shape
from payoutdesk.context import Actor
from payoutdesk.ledger import reprocess

router = APIRouter()

DayOrTime = Annotated[str, Field(min_length=10, max_length=40)]
OrderId = Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")]


_CRITERIA = ("campaign_id", "event_date_from", "event_date_to", "order_ids")


def _documented(schema: dict[str, Any]) -> None:
    """The body's schema as the route accepts it: at least one criterion, none null."""
    schema["anyOf"] = [{"required": [name]} for name in _CRITERIA]
    for prop in schema["properties"].values():
        branches = [b for b in prop.pop("anyOf", ()) if b.get("type") != "null"]
        if branches:
            prop.update(branches[0])


class ReprocessIn(Body):
    """Which actions to re-process: at least one criterion; they combine (all must hold)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_documented)

    campaign_id: Id | None = None
    event_date_from: DayOrTime | None = Field(default=None, description="Event date from (inclusive): a date "
                                              "(from its midnight UTC) or a time.")
    event_date_to: DayOrTime | None = Field(default=None, description="Event date to: a date (inclusive, the "
                                            "whole day) or a time (exclusive).")
    order_ids: list[OrderId] | None = Field(default=None, min_length=1, max_length=reprocess.MAX_ORDER_IDS)

    @model_validator(mode="before")
    @classmethod
    def _no_null(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in _CRITERIA:
                if name in data and data[name] is None:
                    raise ValueError(f"{name} must not be null; leave it out")
        return data


class ReprocessCounts(Shape):
    """What a run did with the actions it chose (every state): each is counted once in ``reattributed``,
    ``recalculated``, ``unchanged``, ``skipped_locked`` or ``skipped_reversed``; ``not_attributable`` counts,
    among the recalculated and unchanged, those for which no click qualified (or no customer id)."""

    reattributed: int = Field(description="Credited to another partner: reversed SYSTEM_REATTRIBUTED, a new "
                                          "PENDING action created.")
    recalculated: int = Field(description="Same partner; the payout recomputed under the terms in force now.")
    unchanged: int = Field(description="Same partner; the payout came out the same.")
    skipped_locked: int = Field(description="Locked, approved, or at their locking date.")
    skipped_reversed: int
    not_attributable: int
    chosen: int = Field(description="How many actions the criteria chose.")


@router.post("/reprocess", tags=["locking"], responses={202: {"description": "Accepted"}})
def reprocess_route(request: Request, body: ReprocessIn, account: Account, key: IdemKey = None) -> Response:
    """Run attribution again over the chosen unlocked PENDING actions (R13). Up to 1,000 chosen actions:
    200 with the counts. More: 202 with a submission (kind R, channel `system`) that the worker runs; its
    counts move as it runs (`GET /api/v1/submissions/{id}`, `reprocess` counts)."""
    c = reprocess.criteria(body.campaign_id, body.event_date_from, body.event_date_to, body.order_ids)
    data: Any = body.model_dump(mode="json")

    def handler(conn: Connection, actor: Actor) -> tuple[int, Any]:
        return reprocess.start(conn, actor.account_id, c, asked_by=actor.name)

    return plumbing.write(request, account, key, data, handler)
