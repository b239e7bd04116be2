"""Reading the fields of a page's filter form (a GET query) into values, with a sentence for a person when
one is not what the form offers. Shared by the pages' filters (Pending Payouts, Lock Forecast, Payments)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from payoutdesk.errors import ValidationFailed, shorten
from payoutdesk.kit.ids import parse_id


def text(params: Mapping[str, str], name: str, what: str, limit: int = 200) -> str | None:
    """A text field, trimmed; None when empty."""
    value = (params.get(name) or "").strip()
    if not value:
        return None
    if "\x00" in value:
        raise ValidationFailed(f"{what} contains a NUL character, which no {what.lower()} has.")
    if len(value) > limit:
        raise ValidationFailed(f"{what} is longer than {limit} characters.")
    return value


def ident(params: Mapping[str, str], name: str, what: str) -> int | None:
    """An id (a choice of a drop-down, or typed); None when empty."""
    value = text(params, name, what, 40)
    if value is None:
        return None
    number = parse_id(value)
    if number is None:
        raise ValidationFailed(f"{what} must be a whole number like 1234, not {shorten(value, 40)}.")
    return number


def day(params: Mapping[str, str], name: str, what: str) -> date | None:
    """A date of a date field (2026-01-15); None when empty."""
    value = text(params, name, what, 40)
    if value is None:
        return None
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
    except ValueError:
        pass
    raise ValidationFailed(f"{what} must be a date like 2026-01-15.")
