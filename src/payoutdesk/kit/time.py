"""Time: always timezone-aware UTC."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta


def _offset_from_env() -> timedelta:
    """``PAYOUTDESK_CLOCK_OFFSET_SECONDS``: whole seconds added to the system clock (0 by default). The
    test suite sets it so that its fixed dates stay in the future whatever day it runs; every process
    it starts inherits the same offset, so all their clocks agree."""
    raw = os.environ.get("PAYOUTDESK_CLOCK_OFFSET_SECONDS", "").strip()
    return timedelta(seconds=int(raw)) if raw else timedelta(0)


OFFSET = _offset_from_env()


def utcnow() -> datetime:
    """Now, timezone-aware UTC: the only clock of the application."""
    if OFFSET:
        return datetime.now(UTC) + OFFSET
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Attach UTC to a naive value (taken as UTC) or convert an aware one."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    # isoformat, not strftime: strftime writes the year 244 as "244", which is not ISO 8601
    return as_utc(value).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def iso_date(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def start_of_day(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)
