"""One error class per business situation, each with an HTTP status and a stable code.

Adapters turn these into problem+json (API), a message (CLI) or a row error (files).
"""

from __future__ import annotations

from typing import Any, ClassVar

MAX_QUOTED = 200  # characters of what was sent that a message quotes (DESIGN §6)


def _cut(value: object, limit: int) -> tuple[str, str]:
    """(at most ``limit`` characters of the value's text, what follows them: "" or "… (N characters)")."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return text, ""
    return text[:limit], f"… ({len(text):,} characters)"


def shorten(value: object, limit: int = MAX_QUOTED) -> str:
    """What was sent, as a message may echo it: at most ``limit`` of its characters.

    A longer value is cut, and the cut says how long the value was, so that an error text never
    echoes unbounded input (a 10,000-character reason is not sent back whole, nor stored as a row
    error).
    """
    head, tail = _cut(value, limit)
    return head + tail


def quote(value: object, limit: int = MAX_QUOTED) -> str:
    """``shorten`` in single quotes: 'what was sent', or 'the first 200 characters…' (N characters)."""
    head, tail = _cut(value, limit)
    return f"'{head}…'{tail[1:]}" if tail else f"'{head}'"


class PayoutdeskError(Exception):
    """Base of every expected refusal."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"
    # VALIDATION: the input itself is wrong; CONTRACT: the input is fine but the action's state refuses it.
    kind: ClassVar[str] = "VALIDATION"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class ValidationFailed(PayoutdeskError):
    status = 422
    code = "validation_error"
    title = "Invalid request"


class InvalidAmount(ValidationFailed):
    code = "invalid_amount"
    title = "Invalid amount"


class UnknownReason(ValidationFailed):
    code = "unknown_reason"
    title = "Unknown reason"


class UnknownSku(ValidationFailed):
    code = "unknown_sku"
    title = "Unknown SKU"


class WrongCurrency(ValidationFailed):
    code = "wrong_currency"
    title = "Wrong currency"


class NotFound(PayoutdeskError):
    status = 404
    code = "not_found"
    title = "Not found"


class ActionLocked(PayoutdeskError):
    status = 409
    code = "action_locked"
    title = "Action is locked"
    kind = "CONTRACT"


class InvalidState(PayoutdeskError):
    status = 409
    code = "invalid_state"
    title = "Not possible in the action's state"
    kind = "CONTRACT"


class TooManyUpdates(PayoutdeskError):
    status = 409
    code = "too_many_updates"
    title = "Too many updates"
    kind = "CONTRACT"


class StaleVersion(PayoutdeskError):
    status = 409
    code = "stale_version"
    title = "The action changed meanwhile"
    kind = "CONTRACT"


class NotAttributable(PayoutdeskError):
    status = 422
    code = "not_attributable"
    title = "No partner to credit"
    kind = "CONTRACT"


class NoContract(PayoutdeskError):
    status = 422
    code = "no_contract"
    title = "No contract covers this"
    kind = "CONTRACT"


class DuplicateFile(PayoutdeskError):
    status = 409
    code = "duplicate_file"
    title = "Duplicate file"


class Conflict(PayoutdeskError):
    status = 409
    code = "conflict"
    title = "Conflict"


class IdempotencyKeyReused(PayoutdeskError):
    status = 422
    code = "idempotency_key_reused"
    title = "Idempotency-Key reused with another request"


class Unauthorized(PayoutdeskError):
    status = 401
    code = "unauthorized"
    title = "Unauthorized"


class Forbidden(PayoutdeskError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class RateLimited(PayoutdeskError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int, limit: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
        self.limit = limit


class FileRejected(PayoutdeskError):
    """A returns file that cannot be used as a whole (not a table, wrong encoding, missing columns...)."""

    status = 422
    code = "invalid_file"
    title = "The file cannot be used"
    kind = "VALIDATION"


class FileTooLarge(PayoutdeskError):
    """A file above PAYOUTDESK_MAX_FILE_MB, refused as soon as its bytes pass the limit."""

    status = 413
    code = "file_too_large"
    title = "File too large"


class BodyTooLarge(PayoutdeskError):
    """A request body above the limit of its route, refused as soon as its bytes pass it."""

    status = 413
    code = "body_too_large"
    title = "Request body too large"


class FileDeleted(PayoutdeskError):
    """The original file of a submission, deleted after PAYOUTDESK_FILE_RETENTION_DAYS."""

    status = 410
    code = "file_deleted"
    title = "File deleted"


class MalformedJson(PayoutdeskError):
    status = 400
    code = "malformed_json"
    title = "Invalid request"


class MalformedMultipart(PayoutdeskError):
    status = 400
    code = "malformed_multipart"
    title = "Invalid request"
