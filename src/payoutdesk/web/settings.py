"""Settings → Tracking → Event Types: the list, one event type with its Returns Processing row, and the
Returns Processing edit form with every option of DESIGN §3 (Manual, Web service (API), Upload to our FTP
server, Pull from your FTP server, E-mail to our SMTP server, Salesforce), "Run now" and the last runs.

Everyone signed in sees the settings; only an admin changes them (``Admin``). Saving goes through
``catalog.patch_event_type`` like the API's PATCH; a refusal shows the rule's message beside the form with
what was posted (never a password or a key: those are only ever "set" or "not set").
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Connection, Row
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from payoutdesk.catalog import repository as catalog_repo
from payoutdesk.catalog import service as catalog
from payoutdesk.context import Actor
from payoutdesk.errors import NotFound, PayoutdeskError, ValidationFailed
from payoutdesk.intake import returns_processing, runs
from payoutdesk.intake.common import IntakeContext
from payoutdesk.kit.ids import MAX_ID32, parse_id
from payoutdesk.models import campaigns, event_types
from payoutdesk.web import render
from payoutdesk.web.session import Admin, Viewer, posted, read, write

router = APIRouter(include_in_schema=False)

# (mode, the reference product's name, what it means): the options of the Returns Processing form
MODES: list[tuple[str, str, str]] = [
    ("manual", "Manual", "Only the pages and the single-action API change actions."),
    ("api", "Web service (API)", "Batches posted to the API (a file upload or JSON rows) become submissions."),
    ("ftp_upload", "Upload to our FTP server",
     "The campaign's own FTP login: each file uploaded to its home folder becomes a submission, and its results "
     "are written back to results/."),
    ("ftp_pull", "Pull from your FTP server",
     "payoutdesk logs in to your FTP, FTPS or SFTP server on a schedule and takes each new file once."),
    ("email", "E-mail to our SMTP server",
     "Every returns file attached to a mail to the campaign's address becomes a submission."),
    ("salesforce", "Salesforce",
     "A change of a status field of a Salesforce object becomes an approval, a reversal or a modification."),
]
MODE_NAMES = {mode: name for mode, name, _ in MODES}
PROTOCOLS = [("sftp", "SFTP"), ("ftps", "FTPS (explicit TLS)"), ("ftp", "FTP")]
AFTER = [("keep", "Keep it"), ("delete", "Delete it"), ("move", "Move it to a folder")]
OPERATIONS = [("approve", "Approve"), ("reverse", "Reverse"), ("modify", "Modify amount")]
SECRET_FIELDS = ("pull_password", "pull_private_key", "sf_password", "sf_security_token", "ftp_password")
OUTCOME_CLASS = {"running": "status-RUNNING", "ok": "status-COMPLETED", "failed": "status-FAILED"}
OUTCOME_LABEL = {"running": "Running", "ok": "OK", "failed": "Failed"}
RUNS_SHOWN = 10
SF_MIN_ROWS = 3
SF_MAX_ROWS = 50


def _event_type_id(raw: str) -> int:
    value = parse_id(raw)
    if value is None or value > MAX_ID32:
        raise NotFound(f"No event type with id {raw[:40]!r}.")
    return value


def _mail_domain(request: Request) -> str:
    return str(request.app.state.settings.mail_domain)


def _intake(request: Request) -> IntakeContext:
    ctx: IntakeContext = request.app.state.intake
    return ctx


def _ftp_server(request: Request) -> str:
    """Where a brand uploads by FTP: the host of the public address, the FTP port."""
    settings = request.app.state.settings
    host = urlsplit(str(settings.public_url)).hostname or "localhost"
    return f"{host}:{settings.ftp_port}"


def event_type_view(request: Request, conn: Connection, account_id: int, row: Row[Any]) -> dict[str, Any]:
    """The event type as the API shows it (``catalog.event_type_dict``, with the status of its channel), its
    campaign (name, currency, FTP login, e-mail address) and its mode's name."""
    out = catalog.event_type_dict(conn, row, _mail_domain(request),
                                  public_url=request.app.state.settings.public_url)
    if row.returns_mode not in ("manual", "api"):
        out["returns_processing"]["status"] = runs.status_of(conn, account_id, row)
    campaign = catalog.get_owned(conn, campaigns, account_id, row.campaign_id, "campaign")
    out["campaign"] = catalog.campaign_dict(campaign, _mail_domain(request))
    out["mode_name"] = MODE_NAMES.get(row.returns_mode, row.returns_mode)
    return out


# --- the list and one event type ----------------------------------------------------------------


@router.get("/settings/event-types", response_class=HTMLResponse)
def event_types_page(request: Request, user: Viewer) -> Response:
    def load(conn: Connection) -> list[dict[str, Any]]:
        return [event_type_view(request, conn, user.account.id, r)
                for r in catalog_repo.list_rows(conn, event_types, user.account.id)]

    return render.page(request, "event_types.html", title="Event Types", user=user, section="event-types",
                       items=read(request, load), outcome_class=OUTCOME_CLASS, outcome_label=OUTCOME_LABEL)


def _one(request: Request, account_id: int, event_type_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    def load(conn: Connection) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        row = catalog.get_owned(conn, event_types, account_id, event_type_id, "event type")
        view = event_type_view(request, conn, account_id, row)
        recent = (returns_processing.runs_page(conn, account_id, event_type_id, limit=RUNS_SHOWN)["items"]
                  if row.returns_mode not in ("manual", "api") else [])
        return view, recent

    return read(request, load)


def _shared(request: Request, recent: list[dict[str, Any]]) -> dict[str, Any]:
    """What the settings' templates share; ``shown_run``: the run that "Run now" just made (``?run=``)."""
    run_id = parse_id(request.query_params.get("run", ""))
    shown = next((r for r in recent if r["id"] == run_id), None) if run_id is not None else None
    return {"shown_run": shown, "outcome_class": OUTCOME_CLASS, "outcome_label": OUTCOME_LABEL,
            "runnable": returns_processing.RUNNABLE, "ftp_server": _ftp_server(request), "protocols": dict(PROTOCOLS),
            "after_names": dict(AFTER),
            "operations": dict(OPERATIONS)}


@router.get("/settings/event-types/{event_type_id}", response_class=HTMLResponse)
def event_type_page(request: Request, event_type_id: str, user: Viewer) -> Response:
    et_id = _event_type_id(event_type_id)
    et, recent = _one(request, user.account.id, et_id)
    return render.page(request, "event_type.html", title=f"Event type {et['name']}", user=user,
                       section="event-types", et=et, rp=et["returns_processing"], recent=recent,
                       **_shared(request, recent))


# --- the Returns Processing form ----------------------------------------------------------------


def form_values(rp: dict[str, Any]) -> dict[str, str]:
    """The stored settings as the form's fields (no secret: those are only "set")."""
    mode = str(rp.get("mode", "manual"))
    v: dict[str, str] = {"mode": mode}
    if mode == "email":
        v["email_allowed_senders"] = "\n".join(rp.get("allowed_senders") or [])
    if mode == "ftp_pull":
        schedule = rp.get("schedule") or {}
        v.update(pull_protocol=str(rp.get("protocol", "sftp")), pull_host=str(rp.get("host", "")),
                 pull_port=str(rp.get("port", "")), pull_username=str(rp.get("username", "")),
                 pull_folder=str(rp.get("folder", "/")), pull_pattern=str(rp.get("pattern", "*")),
                 pull_schedule="every_hours" if "every_hours" in schedule else "daily_at",
                 pull_daily_at=str(schedule.get("daily_at", "02:00")),
                 pull_every_hours=str(schedule.get("every_hours", "")),
                 pull_after=str(rp.get("after", "keep")), pull_move_to=str(rp.get("move_to") or ""),
                 pull_write_receipts="on" if rp.get("write_receipts") else "",
                 pull_write_results="on" if rp.get("write_results") else "")
    if mode == "salesforce":
        for key in ("object", "order_id_field", "status_field", "amount_field", "instance_url", "username",
                    "organization_id"):
            v[f"sf_{key}"] = str(rp.get(key) or "")
        v["sf_poll_every_minutes"] = str(rp.get("poll_every_minutes") or "")
    return v


def _status_rows(rp: dict[str, Any]) -> list[tuple[str, str, str]]:
    if rp.get("mode") != "salesforce":
        return []
    return [(str(status), str(rule.get("operation", "")), str(rule.get("reason") or ""))
            for status, rule in (rp.get("status_map") or {}).items()]


def _posted_rows(form: FormData) -> list[tuple[str, str, str]]:
    rows = []
    for i in range(SF_MAX_ROWS):
        if f"sf_status_{i}" not in form:
            break
        rows.append((_field(form, f"sf_status_{i}"), _field(form, f"sf_operation_{i}"),
                     _field(form, f"sf_reason_{i}")))
    return rows


def _padded(rows: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    filled = [r for r in rows if any(r)]
    blanks = max(SF_MIN_ROWS - len(filled), 2)
    return (filled + [("", "", "")] * blanks)[:SF_MAX_ROWS]


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _whole(form: FormData, name: str, what: str) -> int | None:
    text = _field(form, name)
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise ValidationFailed(f"{what} must be a whole number.")
    return int(text)


_SENDER_SPLIT = re.compile(r"[\s,;]+")
_SETTING = re.compile(r"returns_processing\.([a-z_]+(?:\.[a-z_]+)?)")
LABELS = {"protocol": "Protocol", "host": "Host", "port": "Port", "username": "User", "folder": "Folder",
          "pattern": "File pattern", "schedule": "Schedule", "schedule.daily_at": "The daily time",
          "schedule.every_hours": "Every … hours", "after": "After a file is taken", "move_to": "Move to folder",
          "object": "Object", "order_id_field": "Order id field", "status_field": "Status field",
          "amount_field": "Amount field", "status_map": "The status mapping", "instance_url": "Instance URL",
          "poll_every_minutes": "Poll every … minutes", "organization_id": "Organization id",
          "allowed_senders": "Allowed senders"}


def in_words(detail: str) -> str:
    """A refusal of ``returns_settings`` in the form's words: "returns_processing.host is required" becomes
    "Host is required", "status_map['Adjusted']" becomes "Status 'Adjusted'"."""
    text = _SETTING.sub(lambda m: LABELS.get(m.group(1), m.group(1)), detail)
    text = re.sub(r"status_map\[([^\]]*)\]", r"Status \1", text)
    return text.replace("amount_field is required", "an Amount field is required")


def settings_from_form(form: FormData) -> dict[str, Any]:
    """The ``returns_processing`` of a posted form: only the fields of the chosen mode; an empty secret
    field is left out (``catalog.patch_event_type`` then keeps the stored one)."""
    mode = _field(form, "mode")
    if mode not in MODE_NAMES:
        raise ValidationFailed("Choose a Returns Processing option.")
    rp: dict[str, Any] = {"mode": mode}
    if mode == "email":
        senders = [s for s in _SENDER_SPLIT.split(_field(form, "email_allowed_senders")) if s]
        if senders:
            rp["allowed_senders"] = senders
    elif mode == "ftp_pull":
        rp["protocol"] = _field(form, "pull_protocol") or "sftp"
        for key in ("host", "username", "folder", "pattern"):
            if _field(form, f"pull_{key}"):
                rp[key] = _field(form, f"pull_{key}")
        port = _whole(form, "pull_port", "The port")
        if port is not None:
            rp["port"] = port
        for key in ("password", "private_key"):
            value = form.get(f"pull_{key}")
            if isinstance(value, str) and value.strip():
                rp[key] = value.strip() if key == "password" else value.replace("\r\n", "\n").strip() + "\n"
        if _field(form, "pull_schedule") == "every_hours":
            hours = _whole(form, "pull_every_hours", "Every … hours")
            if hours is None:
                raise ValidationFailed("Say every how many hours to pull (1 to 168).")
            rp["schedule"] = {"every_hours": hours}
        else:
            rp["schedule"] = {"daily_at": _field(form, "pull_daily_at")[:5] or "02:00"}
        rp["after"] = _field(form, "pull_after") or "keep"
        if rp["after"] == "move":
            rp["move_to"] = _field(form, "pull_move_to")
        rp["write_receipts"] = bool(_field(form, "pull_write_receipts"))
        rp["write_results"] = bool(_field(form, "pull_write_results"))
    elif mode == "salesforce":
        for key in ("object", "order_id_field", "status_field", "amount_field", "instance_url", "username",
                    "organization_id"):
            if _field(form, f"sf_{key}"):
                rp[key] = _field(form, f"sf_{key}")
        for key in ("password", "security_token"):
            if _field(form, f"sf_{key}"):
                rp[key] = _field(form, f"sf_{key}")
        minutes = _whole(form, "sf_poll_every_minutes", "Poll every … minutes")
        if minutes is not None:
            rp["poll_every_minutes"] = minutes
        status_map: dict[str, Any] = {}
        for status, operation, reason in _posted_rows(form):
            if not status:
                continue
            if status in status_map:
                raise ValidationFailed(f"The status value {status!r} is mapped twice.")
            status_map[status] = {"operation": operation, **({"reason": reason} if reason else {})}
        rp["status_map"] = status_map
    return rp


def _edit_page(request: Request, user: Any, et: dict[str, Any], recent: list[dict[str, Any]],
               values: dict[str, str], status_rows: list[tuple[str, str, str]], error: str = "",
               status: int = 200) -> HTMLResponse:
    return render.page(request, "returns_processing.html", title=f"Returns Processing · {et['name']}", user=user,
                       section="event-types", status=status, et=et, rp=et["returns_processing"], recent=recent,
                       values=values, status_rows=_padded(status_rows), modes=MODES, protocol_list=PROTOCOLS,
                       after_list=AFTER, operation_list=OPERATIONS, error=error, **_shared(request, recent))


def _edit_url(event_type_id: int) -> str:
    return f"/settings/event-types/{event_type_id}/returns-processing"


@router.get("/settings/event-types/{event_type_id}/returns-processing", response_class=HTMLResponse)
def returns_processing_page(request: Request, event_type_id: str, user: Admin) -> Response:
    et_id = _event_type_id(event_type_id)
    et, recent = _one(request, user.account.id, et_id)
    rp = et["returns_processing"]
    return _edit_page(request, user, et, recent, form_values(rp), _status_rows(rp))


def save_returns_processing(request: Request, user: Any, event_type_id: int, form: FormData) -> None:
    """Apply the posted form in one transaction: the event type's returns processing and, for our FTP
    server, the campaign's new FTP password when one was typed."""
    rp = settings_from_form(form)
    ftp_password = form.get("ftp_password")

    def apply(conn: Connection, actor: Actor) -> None:
        catalog.patch_event_type(conn, actor, event_type_id, {"returns_processing": rp}, request.app.state.box)
        if rp["mode"] == "ftp_upload" and isinstance(ftp_password, str) and ftp_password:
            row = catalog.get_owned(conn, event_types, actor.account_id, event_type_id, "event type")
            catalog.set_ftp_password(conn, actor, int(row.campaign_id), ftp_password)

    write(request, user, apply)


@router.post("/settings/event-types/{event_type_id}/returns-processing")
async def save_returns_processing_form(request: Request, event_type_id: str, user: Admin) -> Response:
    et_id = _event_type_id(event_type_id)
    form = await posted(request, user)
    try:
        await run_in_threadpool(save_returns_processing, request, user, et_id, form)
    except ValidationFailed as exc:
        et, recent = await run_in_threadpool(_one, request, user.account.id, et_id)
        values = {k: v for k, v in form.items() if isinstance(v, str) and k not in SECRET_FIELDS}
        return _edit_page(request, user, et, recent, values, _posted_rows(form), error=in_words(exc.detail),
                          status=exc.status)
    mode = _field(form, "mode")
    message = f"Returns Processing saved: {MODE_NAMES.get(mode, mode)}."
    if mode == "ftp_upload" and form.get("ftp_password"):
        message += " The FTP password was changed."
    return render.redirect(f"/settings/event-types/{et_id}", message)


@router.post("/settings/event-types/{event_type_id}/returns-processing/run")
async def run_now(request: Request, event_type_id: str, user: Admin) -> Response:
    """"Run now": the same service as ``POST /api/v1/event-types/{id}/returns-processing/run``; the page
    comes back with the run's outcome (a failed run says why) and the last runs."""
    et_id = _event_type_id(event_type_id)
    form = await posted(request, user)
    back = _edit_url(et_id) if form.get("back") == "edit" else f"/settings/event-types/{et_id}"
    try:
        done = await run_in_threadpool(returns_processing.run_now, _intake(request), user.account.id, et_id)
    except PayoutdeskError as exc:
        if isinstance(exc, NotFound):
            raise
        return render.redirect(back, f"Not run: {exc.detail}")
    return render.redirect(f"{back}?run={done['id']}")
