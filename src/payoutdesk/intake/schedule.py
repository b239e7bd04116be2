"""The scheduled work of the intake channels, for worker/scheduler.py: the pulls from brands' servers and the
Salesforce polls due now (each occurrence run by one process: ``scheduler.run_if_due``), and the results
waiting to be sent back (every tick; each attempt is taken by one process: ``deliveries``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from payoutdesk.intake import deliveries
from payoutdesk.intake.common import IntakeContext

Job = tuple[str, str, Callable[[], str]]


def load_handlers() -> None:
    """Import the channels that register result deliveries (the pull's result files, the mail replies)."""
    from payoutdesk.intake import mail_intake, pull  # noqa: F401


def due_jobs(ctx: IntakeContext, now: datetime) -> list[Job]:
    """(job, slot, run) of every pull and poll whose occurrence is due at ``now``."""
    from payoutdesk.intake import pull, salesforce

    return [*pull.scheduled(ctx, now), *salesforce.scheduled(ctx, now)]


def deliver(ctx: IntakeContext, now: datetime) -> str:
    load_handlers()
    return deliveries.deliver_due(ctx, now)
