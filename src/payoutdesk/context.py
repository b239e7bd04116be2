"""Who is acting, for whom, and through which channel: passed to every service call."""

from __future__ import annotations

from dataclasses import dataclass

from payoutdesk.ledger.workflow import Channel


@dataclass(frozen=True)
class Actor:
    account_id: int
    name: str
    channel: Channel
    system: bool = False  # may use system-only reasons
