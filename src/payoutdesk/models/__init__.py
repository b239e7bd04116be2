"""SQLAlchemy tables."""

from payoutdesk.models.submissions import job_runs, submission_files, submission_results, submissions
from payoutdesk.models.tables import (
    accounts,
    action_items,
    action_updates,
    actions,
    campaigns,
    clicks,
    contract_payouts,
    contracts,
    disposition_codes,
    event_types,
    idempotency_keys,
    metadata,
    partners,
    users,
)

__all__ = [
    "accounts",
    "action_items",
    "action_updates",
    "actions",
    "campaigns",
    "clicks",
    "contract_payouts",
    "contracts",
    "disposition_codes",
    "event_types",
    "idempotency_keys",
    "job_runs",
    "metadata",
    "partners",
    "submission_files",
    "submission_results",
    "submissions",
    "users",
]
