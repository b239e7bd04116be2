"""The lock forecast: ``GET /api/v1/locking/forecast`` (ledger/forecast.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import Field

from payoutdesk.api import plumbing
from payoutdesk.api.native import Day
from payoutdesk.api.plumbing import Account, QueryId
from payoutdesk.api.schemas import Shape
from payoutdesk.kit.ids import ref32
from payoutdesk.ledger import forecast as ledger_forecast

router = APIRouter()

PayoutByCurrency = dict[str, str]


class ForecastPartner(Shape):
    partner_id: int
    partner_name: str | None
    count: int
    payout: PayoutByCurrency = Field(description="Payout per currency, decimal strings: {\"USD\": \"12.50\"}.")


class ForecastDate(Shape):
    locking_date: str = Field(examples=["2026-12-28"])
    count: int
    payout: PayoutByCurrency
    partners: list[ForecastPartner]


class ForecastOpenEnded(Shape):
    count: int
    payout: PayoutByCurrency
    partners: list[ForecastPartner]


class ForecastTotal(Shape):
    count: int
    payout: PayoutByCurrency


class LockForecast(Shape):
    """What locks on which date (unlocked PENDING actions), per partner and in total; open-ended actions
    have no locking date and are counted apart (they lock when approved, or 730 days after the event)."""

    dates: list[ForecastDate]
    open_ended: ForecastOpenEnded
    total: ForecastTotal


@router.get("/locking/forecast", tags=["locking"])
def lock_forecast(request: Request, account: Account, campaign_id: QueryId = None, partner_id: QueryId = None,
                  locking_date_from: Day | None = None, locking_date_to: Day | None = None) -> Response:
    """Per locking date, the number of unlocked actions and their payout per partner and in total, and what is
    open-ended. Filters: `campaign_id`, `partner_id`, `locking_date_from`, `locking_date_to` (inclusive)."""
    f = ledger_forecast.ForecastFilters(ref32(campaign_id), ref32(partner_id), locking_date_from, locking_date_to)
    return plumbing.read(request, lambda conn: ledger_forecast.forecast(conn, account.id, f))
