"""Returns-processing settings of an event type, checked per mode (DESIGN §3 and the appendix). Pure."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from payoutdesk.errors import ValidationFailed, quote

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
DEFAULT_PORTS = {"ftp": 21, "ftps": 21, "sftp": 22}
OPERATIONS = ("approve", "reverse", "modify")


def _text(
    s: Mapping[str, Any], key: str, *, required: bool, limit: int = 500, default: str | None = None
) -> str | None:
    value = s.get(key, default)
    if value is None or value == "":
        if required:
            raise ValidationFailed(f"returns_processing.{key} is required for this mode.")
        return default
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise ValidationFailed(f"returns_processing.{key} must be a text of at most {limit} characters.")
    return value.strip()


def _unknown(s: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(s) - allowed - {"mode"})
    if extra:
        raise ValidationFailed(f"returns_processing: {', '.join(extra)} is not a setting of mode {s.get('mode')}.")


def check(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings as stored (secrets still in clear; the caller seals them), or ValidationFailed."""
    mode = settings.get("mode")
    if mode in ("manual", "api", "ftp_upload"):
        _unknown(settings, set())
        return {}
    if mode == "ftp_pull":
        return _ftp_pull(settings)
    if mode == "email":
        _unknown(settings, {"allowed_senders"})
        senders = settings.get("allowed_senders") or []
        if not isinstance(senders, list) or not all(isinstance(x, str) and _EMAIL.match(x) for x in senders):
            raise ValidationFailed("returns_processing.allowed_senders is a list of e-mail addresses.")
        return {"allowed_senders": [x.strip().lower() for x in senders]} if senders else {}
    if mode == "salesforce":
        return _salesforce(settings)
    raise ValidationFailed("returns_processing needs a mode: manual, api, ftp_upload, ftp_pull, email or salesforce.")


def _ftp_pull(s: Mapping[str, Any]) -> dict[str, Any]:
    _unknown(s, {"protocol", "host", "port", "username", "password", "private_key", "folder", "pattern",
                 "schedule", "after", "move_to", "write_receipts", "write_results"})
    protocol = s.get("protocol", "sftp")
    if protocol not in DEFAULT_PORTS:
        raise ValidationFailed("returns_processing.protocol must be ftp, ftps or sftp.")
    port = s.get("port", DEFAULT_PORTS[protocol])
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValidationFailed("returns_processing.port must be a whole number from 1 to 65535.")
    out: dict[str, Any] = {
        "protocol": protocol,
        "host": _text(s, "host", required=True, limit=253),
        "port": port,
        "username": _text(s, "username", required=True, limit=200),
        "folder": _text(s, "folder", required=False, default="/"),
        "pattern": _text(s, "pattern", required=False, limit=200, default="*"),
    }
    for secret in ("password", "private_key"):
        value = _text(s, secret, required=False, limit=20_000)
        if value:
            out[secret] = value
    schedule = s.get("schedule") or {"daily_at": "02:00"}
    if not isinstance(schedule, Mapping) or len(schedule) != 1:
        raise ValidationFailed('returns_processing.schedule is {"daily_at": "02:00"} or {"every_hours": 4}.')
    if "daily_at" in schedule:
        if not isinstance(schedule["daily_at"], str) or not _TIME.match(schedule["daily_at"]):
            raise ValidationFailed("returns_processing.schedule.daily_at is a UTC time like 02:00.")
    elif "every_hours" in schedule:
        hours = schedule["every_hours"]
        if isinstance(hours, bool) or not isinstance(hours, int) or not 1 <= hours <= 168:
            raise ValidationFailed("returns_processing.schedule.every_hours is a whole number from 1 to 168.")
    else:
        raise ValidationFailed('returns_processing.schedule is {"daily_at": "02:00"} or {"every_hours": 4}.')
    out["schedule"] = dict(schedule)
    after = s.get("after", "keep")
    if after not in ("keep", "delete", "move"):
        raise ValidationFailed("returns_processing.after must be keep, delete or move.")
    out["after"] = after
    if after == "move":
        out["move_to"] = _text(s, "move_to", required=True)
    for flag in ("write_receipts", "write_results"):  # receipt_<name>, result_<name>.csv in the brand's folder
        on = s.get(flag)
        if on is not None and not isinstance(on, bool):
            raise ValidationFailed(f"returns_processing.{flag} must be true or false.")
        out[flag] = bool(on)
    return out


def _salesforce(s: Mapping[str, Any]) -> dict[str, Any]:
    _unknown(s, {"object", "order_id_field", "status_field", "amount_field", "status_map", "instance_url",
                 "username", "password", "security_token", "poll_every_minutes", "organization_id"})
    out: dict[str, Any] = {}
    for key, required in (("object", True), ("order_id_field", True), ("status_field", True),
                          ("amount_field", False)):
        value = _text(s, key, required=required, limit=80)
        if value is not None:
            if not _FIELD.match(value):
                raise ValidationFailed(f"returns_processing.{key} {quote(value)} is not a Salesforce API name.")
            out[key] = value
    status_map = s.get("status_map")
    if not isinstance(status_map, Mapping) or not status_map:
        raise ValidationFailed("returns_processing.status_map maps status values to {operation, reason?}.")
    mapped: dict[str, Any] = {}
    for value, rule in status_map.items():
        if not isinstance(rule, Mapping) or rule.get("operation") not in OPERATIONS:
            raise ValidationFailed(f"status_map[{quote(value)}] needs an operation: approve, reverse or modify.")
        if rule["operation"] == "modify" and "amount_field" not in out:
            raise ValidationFailed(f"status_map[{quote(value)}] modifies the amount: amount_field is required.")
        reason = rule.get("reason")
        if reason is not None and (not isinstance(reason, str) or not reason.strip()):
            raise ValidationFailed(f"status_map[{quote(value)}].reason must be a reason code.")
        mapped[str(value)] = {"operation": rule["operation"], **({"reason": reason} if reason else {})}
    out["status_map"] = mapped
    url = _text(s, "instance_url", required=False)
    if url is not None:
        if not url.startswith("https://"):
            raise ValidationFailed("returns_processing.instance_url must be an https:// address.")
        out["instance_url"] = url
    for key in ("username", "password", "security_token"):
        value = _text(s, key, required=False)
        if value:
            out[key] = value
    minutes = s.get("poll_every_minutes")
    if minutes is not None:
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= 1440:
            raise ValidationFailed("returns_processing.poll_every_minutes is a whole number from 1 to 1440.")
        out["poll_every_minutes"] = minutes
    org = _text(s, "organization_id", required=False, limit=18)
    if org is not None:  # Outbound Messages from another Salesforce organization are refused
        if not re.match(r"^00D[A-Za-z0-9]{12}([A-Za-z0-9]{3})?$", org):
            raise ValidationFailed(f"returns_processing.organization_id {quote(org)} is not a Salesforce "
                                   "organization id (00D…, 15 or 18 characters).")
        out["organization_id"] = org
    return out
