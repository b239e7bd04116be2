"""SQLAlchemy tables."""

from payoutdesk.models.submissions import (
    job_runs,
    stored_file_chunks,
    stored_files,
    submission_results,
    submissions,
)
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
    "stored_file_chunks",
    "stored_files",
    "submission_results",
    "submissions",
    "users",
]
