"""Payments owed and recorded: ``GET /api/v1/payments``, ``GET /api/v1/payments.csv``, ``POST /api/v1/payments``
(payments/service.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import Field
from sqlalchemy import Connection

from payoutdesk.api import plumbing
from payoutdesk.api.native import Body, Day, Id
from payoutdesk.api.plumbing import Account, IdemKey, QueryId
from payoutdesk.api.schemas import Shape
from payoutdesk.context import Actor
from payoutdesk.kit import db
from payoutdesk.kit.ids import ref32
from payoutdesk.payments import service

router = APIRouter()


class PaymentIn(Body):
    partner_id: Id
    clearing_date: Day
    amount: Any = Field(description="A decimal string such as \"12.50\".", examples=["12.50"])
    currency: str | None = Field(default=None, description="Needed when the partner is owed in several "
                                                           "currencies, or nothing, on that date.")
    reference: str | None = None


class Payment(Shape):
    id: int
    partner_id: int
    clearing_date: str
    currency: str
    amount: str
    reference: str | None
    created_at: str


class PaymentLine(Shape):
    partner_id: int
    partner_name: str | None
    clearing_date: str
    currency: str
    actions: int
    owed: str
    paid: str
    difference: str = Field(description="owed - paid")
    due: bool = Field(description="The clearing date has come.")
    cleared: bool = Field(description="What was paid covers what is owed.")


class PaymentTotal(Shape):
    currency: str
    actions: int
    owed: str
    due: str
    paid: str
    difference: str


class PaymentReport(Shape):
    """Per partner and clearing date, the locked APPROVED actions owed and the payments recorded."""

    items: list[PaymentLine]
    totals: list[PaymentTotal]


def _filters(partner_id: int | None, low: Any, high: Any) -> service.PaymentFilters:
    return service.PaymentFilters(ref32(partner_id), low, high)


@router.get("/payments", tags=["payments"])
def payments_report(request: Request, account: Account, partner_id: QueryId = None,
                    clearing_date_from: Day | None = None, clearing_date_to: Day | None = None) -> Response:
    """What is owed per partner and clearing date (R16), what is due, what was paid and the difference."""
    f = _filters(partner_id, clearing_date_from, clearing_date_to)
    return plumbing.read(request, lambda conn: service.report(conn, account.id, f))


@router.get("/payments.csv", tags=["payments"])
def payments_csv(request: Request, account: Account, partner_id: QueryId = None,
                 clearing_date_from: Day | None = None, clearing_date_to: Day | None = None) -> Response:
    """The payments report as CSV."""
    f = _filters(partner_id, clearing_date_from, clearing_date_to)
    with db.read(plumbing.engine_of(request)) as conn:
        text = "".join(service.report_csv(conn, account.id, f))
    return Response(text, media_type="text/csv; charset=utf-8", headers={
        **plumbing.request_rate_headers(request), "Content-Disposition": 'attachment; filename="payments.csv"'})


@router.post("/payments", status_code=201, tags=["payments"])
def record_payment(request: Request, body: PaymentIn, account: Account, key: IdemKey = None) -> Response:
    """Record a payment to a partner for one clearing date."""
    data = body.model_dump()
    data["clearing_date"] = body.clearing_date.isoformat()

    def handler(conn: Connection, actor: Actor) -> tuple[int, Any]:
        return 201, service.record_payment(conn, actor, data)

    return plumbing.write(request, account, key, data, handler)
