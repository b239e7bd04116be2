"""Campaigns, partners, event types, contracts and clicks."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, insert, select, update

from payoutdesk.accounts.service import hash_password
from payoutdesk.catalog import repository as repo
from payoutdesk.catalog import returns_settings
from payoutdesk.context import Actor
from payoutdesk.contracts.terms import Period, Terms
from payoutdesk.errors import NoContract, NotAttributable, NotFound, ValidationFailed, quote
from payoutdesk.kit.crypto import SecretBox
from payoutdesk.kit.ids import MAX_ID32
from payoutdesk.kit.money import (
    check_currency,
    format_amount,
    format_percent,
    parse_amount,
    parse_percent,
)
from payoutdesk.kit.time import as_utc, iso, utcnow
from payoutdesk.ledger.workflow import PREDEFINED_REASONS
from payoutdesk.models import campaigns, clicks, contract_payouts, contracts, event_types, partners

LOCKING_MODES = ("contract", "open_ended")
RETURNS_MODES = ("manual", "api", "ftp_upload", "ftp_pull", "email", "salesforce")
CODE_OPERATIONS = ("approve", "reverse", "modify")
SECRET_SETTINGS = ("password", "private_key", "security_token")


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed(f"{what} needs a name.")
    if len(value) > 200:
        raise ValidationFailed(f"The name of the {what.lower()} is longer than 200 characters.")
    return value.strip()


def get_owned(conn: Connection, table: Any, account_id: int, row_id: int, what: str) -> Row[Any]:
    # ids of these tables are 32-bit: a larger one names nothing (and is never cast to a 32-bit integer)
    row = repo.owned(conn, table, account_id, row_id) if 1 <= row_id <= MAX_ID32 else None
    if row is None:
        raise NotFound(f"No {what} with id {row_id}.")
    return row


# --- campaigns -------------------------------------------------------------------------------


def campaign_dict(row: Row[Any], mail_domain: str) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "currency": row.currency,
        "ftp_username": row.ftp_username,
        "returns_email": f"returns-{row.returns_token}@{mail_domain}",
        "created_at": iso(row.created_at),
    }


def create_campaign(
    conn: Connection, actor: Actor, name: str, currency: str, ftp_password: str | None, mail_domain: str
) -> dict[str, Any]:
    name = _name(name, "A campaign")
    currency = check_currency(currency)
    if ftp_password is not None and len(ftp_password) < 8:
        raise ValidationFailed("An FTP password needs at least 8 characters.")
    generated = ftp_password is None
    password = ftp_password or secrets.token_urlsafe(12)
    campaign_id = repo.insert_row(
        conn,
        campaigns,
        account_id=actor.account_id,
        name=name,
        currency=currency,
        ftp_username="ftp-" + secrets.token_hex(5),
        ftp_password_hash=hash_password(password),
        returns_token=secrets.token_hex(12),
        created_at=utcnow(),
    )
    out = campaign_dict(get_owned(conn, campaigns, actor.account_id, campaign_id, "campaign"), mail_domain)
    if generated:
        out["ftp_password"] = password
    return out


MAX_FTP_PASSWORD = 200


def set_ftp_password(conn: Connection, actor: Actor, campaign_id: int, password: object) -> str:
    """Give the campaign's FTP login a new password (at least 8 characters; the old one stops working at
    once, for new logins); its FTP user name, which does not change."""
    row = get_owned(conn, campaigns, actor.account_id, campaign_id, "campaign")
    if not isinstance(password, str) or len(password) < 8:
        raise ValidationFailed("An FTP password needs at least 8 characters.")
    if len(password) > MAX_FTP_PASSWORD:
        raise ValidationFailed(f"An FTP password has at most {MAX_FTP_PASSWORD} characters.")
    conn.execute(update(campaigns).where(campaigns.c.id == row.id).values(ftp_password_hash=hash_password(password)))
    return str(row.ftp_username)


def patch_campaign(conn: Connection, actor: Actor, campaign_id: int, data: Mapping[str, Any],
                   mail_domain: str) -> dict[str, Any]:
    """Rename a campaign and/or set its FTP password (``name``, ``ftp_password``); the campaign as shown."""
    get_owned(conn, campaigns, actor.account_id, campaign_id, "campaign")
    if "name" in data:
        conn.execute(update(campaigns).where(campaigns.c.id == campaign_id)
                     .values(name=_name(data["name"], "A campaign")))
    if "ftp_password" in data:
        set_ftp_password(conn, actor, campaign_id, data["ftp_password"])
    return campaign_dict(get_owned(conn, campaigns, actor.account_id, campaign_id, "campaign"), mail_domain)


# --- partners --------------------------------------------------------------------------------


def partner_dict(row: Row[Any]) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "created_at": iso(row.created_at)}


def create_partner(conn: Connection, actor: Actor, name: str) -> dict[str, Any]:
    pid = repo.insert_row(
        conn, partners, account_id=actor.account_id, name=_name(name, "A partner"), created_at=utcnow()
    )
    return partner_dict(get_owned(conn, partners, actor.account_id, pid, "partner"))


# --- event types -----------------------------------------------------------------------------


def _check_codes(codes: object) -> list[dict[str, str]]:
    if not isinstance(codes, list):
        raise ValidationFailed("disposition_codes must be a list of {code, name, operation}.")
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for c in codes:
        if not isinstance(c, Mapping):
            raise ValidationFailed("Each disposition code is an object {code, name, operation}.")
        code, name, op = c.get("code"), c.get("name"), c.get("operation")
        if not isinstance(code, str) or not code.strip() or len(code) > 64:
            raise ValidationFailed("A disposition code needs a code of 1 to 64 characters.")
        if code in PREDEFINED_REASONS or code == "APPROVED":
            raise ValidationFailed(f"{quote(code)} is a predefined reason; a custom code needs another name.")
        if code in seen:
            raise ValidationFailed(f"Disposition code {quote(code)} is given twice.")
        if op not in CODE_OPERATIONS:
            raise ValidationFailed(
                f"Disposition code {quote(code)} needs an operation: one of {', '.join(CODE_OPERATIONS)}."
            )
        seen.add(code)
        out.append({"code": code, "name": str(name or code), "operation": str(op)})
    return out


def _public_settings(mode: str, settings: dict[str, Any]) -> dict[str, Any]:
    shown = {k: v for k, v in settings.items() if k not in SECRET_SETTINGS}
    for k in SECRET_SETTINGS:
        if k in settings:
            shown[f"{k}_set"] = True
    return {"mode": mode, **shown}


def event_type_dict(conn: Connection, row: Row[Any], mail_domain: str, api_base: str = "",
                    public_url: str = "") -> dict[str, Any]:
    settings = json.loads(row.returns_settings or "{}")
    returns = _public_settings(row.returns_mode, settings)
    if row.returns_mode == "email":
        campaign = conn.execute(campaigns.select().where(campaigns.c.id == row.campaign_id)).one()
        returns["address"] = f"returns-{campaign.returns_token}@{mail_domain}"
    if row.returns_mode == "salesforce":  # where Salesforce posts its Outbound Messages (api/salesforce.py)
        returns["outbound_url"] = f"{public_url.rstrip('/')}/salesforce/outbound/{row.outbound_token}"
    return {
        "id": row.id,
        "campaign_id": row.campaign_id,
        "name": row.name,
        "locking": row.locking,
        "returns_processing": returns,
        "disposition_codes": [
            {"code": c.code, "name": c.name, "operation": c.operation} for c in repo.codes_of(conn, row.id)
        ],
        "created_at": iso(row.created_at),
    }


def create_event_type(conn: Connection, actor: Actor, data: Mapping[str, Any], box: SecretBox) -> int:
    campaign_id = data.get("campaign_id")
    if not isinstance(campaign_id, int):
        raise ValidationFailed("campaign_id is required.")
    get_owned(conn, campaigns, actor.account_id, campaign_id, "campaign")
    locking = data.get("locking", "contract")
    if locking not in LOCKING_MODES:
        raise ValidationFailed(f"locking must be 'contract' or 'open_ended', not {quote(locking)}.")
    codes = _check_codes(data.get("disposition_codes") or [])
    et_id = repo.insert_row(
        conn,
        event_types,
        account_id=actor.account_id,
        campaign_id=campaign_id,
        name=_name(data.get("name"), "An event type"),
        locking=locking,
        returns_mode="manual",
        returns_settings="{}",
        outbound_token=secrets.token_hex(16),
        created_at=utcnow(),
    )
    repo.replace_codes(conn, et_id, codes)
    if data.get("returns_processing") is not None:
        patch_event_type(conn, actor, et_id, {"returns_processing": data["returns_processing"]}, box)
    return et_id


def patch_event_type(
    conn: Connection, actor: Actor, event_type_id: int, data: Mapping[str, Any], box: SecretBox
) -> None:
    row = get_owned(conn, event_types, actor.account_id, event_type_id, "event type")
    values: dict[str, Any] = {}
    if "name" in data:
        values["name"] = _name(data["name"], "An event type")
    if "locking" in data:
        if data["locking"] not in LOCKING_MODES:
            raise ValidationFailed(f"locking must be 'contract' or 'open_ended', not {quote(data['locking'])}.")
        values["locking"] = data["locking"]
    if "returns_processing" in data:
        rp = data["returns_processing"]
        if not isinstance(rp, Mapping) or rp.get("mode") not in RETURNS_MODES:
            raise ValidationFailed(
                f"returns_processing needs a mode: one of {', '.join(RETURNS_MODES)}."
            )
        old = json.loads(row.returns_settings or "{}") if row.returns_mode == rp["mode"] else {}
        settings: dict[str, Any] = returns_settings.check(rp)
        for key in SECRET_SETTINGS:
            if settings.get(key):
                settings[key] = box.seal(str(settings[key]))
            elif key in old:
                settings[key] = old[key]  # not given again: keep the stored secret
            else:
                settings.pop(key, None)
        values["returns_mode"] = rp["mode"]
        values["returns_settings"] = json.dumps(settings, sort_keys=True)
    if "disposition_codes" in data:
        repo.replace_codes(conn, event_type_id, _check_codes(data["disposition_codes"]))
    if values:
        conn.execute(update(event_types).where(event_types.c.id == event_type_id).values(**values))


# --- contracts -------------------------------------------------------------------------------


def _period(value: object, what: str) -> Period:
    if value is None:
        return Period()
    if not isinstance(value, Mapping):
        raise ValidationFailed(f"{what} is an object like {{\"months\": 0, \"days\": 27}}.")
    months, days = value.get("months", 0), value.get("days", 0)
    for n, label in ((months, "months"), (days, "days")):
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValidationFailed(f"{what}.{label} must be a whole number ≥ 0.")
    if months > 120 or days > 3650:
        raise ValidationFailed(f"{what} is longer than ten years.")
    return Period(int(months), int(days))


def _date(value: object, what: str) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValidationFailed(f"{what} must be a date like 2026-01-15.")


def create_contract(conn: Connection, actor: Actor, data: Mapping[str, Any]) -> int:
    campaign_id, partner_id = data.get("campaign_id"), data.get("partner_id")
    if not isinstance(campaign_id, int) or not isinstance(partner_id, int):
        raise ValidationFailed("campaign_id and partner_id are required.")
    campaign = get_owned(conn, campaigns, actor.account_id, campaign_id, "campaign")
    get_owned(conn, partners, actor.account_id, partner_id, "partner")
    starts_on = _date(data.get("starts_on"), "starts_on")
    payout = data.get("payout")
    if not isinstance(payout, list) or not payout:
        raise ValidationFailed("payout is a list of {event_type_id, percent} or {event_type_id, fixed}.")
    rows: list[dict[str, Any]] = []
    for entry in payout:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("event_type_id"), int):
            raise ValidationFailed("Each payout entry needs an event_type_id.")
        et = get_owned(conn, event_types, actor.account_id, entry["event_type_id"], "event type")
        if et.campaign_id != campaign_id:
            raise ValidationFailed(f"Event type {et.id} belongs to another campaign.")
        if ("percent" in entry) == ("fixed" in entry):
            raise ValidationFailed(f"The payout for event type {et.id} needs either percent or fixed.")
        if any(r["event_type_id"] == et.id for r in rows):
            raise ValidationFailed(f"Event type {et.id} has two payout entries.")
        rows.append(
            {
                "event_type_id": et.id,
                "rate_ppm": parse_percent(entry["percent"]) if "percent" in entry else None,
                "fixed_minor": parse_amount(entry["fixed"], campaign.currency, what="fixed")
                if "fixed" in entry
                else None,
            }
        )
    cats = data.get("category_percent") or {}
    if not isinstance(cats, Mapping):
        raise ValidationFailed("category_percent is an object like {\"shoes\": \"10\"}.")
    category_rates = {str(k).lower(): parse_percent(v, what=f"category_percent.{k}") for k, v in cats.items()}
    window = data.get("referral_window_days", 30)
    if not isinstance(window, int) or isinstance(window, bool) or not 0 <= window <= 3650:
        raise ValidationFailed("referral_window_days must be a whole number from 0 to 3650.")
    lock_after = _period(data.get("lock_after"), "lock_after")
    pay_after = _period(data.get("pay_after"), "pay_after")
    contract_id = repo.insert_row(
        conn,
        contracts,
        account_id=actor.account_id,
        campaign_id=campaign_id,
        partner_id=partner_id,
        starts_on=starts_on,
        lock_months=lock_after.months,
        lock_days=lock_after.days,
        pay_months=pay_after.months,
        pay_days=pay_after.days,
        referral_window_days=window,
        category_rates=json.dumps(category_rates, sort_keys=True),
        created_at=utcnow(),
    )
    conn.execute(contract_payouts.insert(), [{"contract_id": contract_id, **r} for r in rows])
    return contract_id


def contract_dict(conn: Connection, row: Row[Any], currency: str) -> dict[str, Any]:
    payout = []
    for p in repo.contract_payout_rows(conn, row.id):
        if p.rate_ppm is not None:
            payout.append({"event_type_id": p.event_type_id, "percent": format_percent(p.rate_ppm)})
        else:
            payout.append({"event_type_id": p.event_type_id, "fixed": format_amount(p.fixed_minor, currency)})
    return {
        "id": row.id,
        "campaign_id": row.campaign_id,
        "partner_id": row.partner_id,
        "starts_on": row.starts_on.isoformat(),
        "payout": payout,
        "category_percent": {k: format_percent(v) for k, v in json.loads(row.category_rates).items()},
        "lock_after": {"months": row.lock_months, "days": row.lock_days},
        "pay_after": {"months": row.pay_months, "days": row.pay_days},
        "referral_window_days": row.referral_window_days,
        "created_at": iso(row.created_at),
    }


def terms_of(conn: Connection, contract: Row[Any], event_type_id: int) -> Terms | None:
    p = repo.contract_payout(conn, contract.id, event_type_id)
    if p is None:
        return None
    return Terms(
        contract_id=contract.id,
        lock_after=Period(contract.lock_months, contract.lock_days),
        pay_after=Period(contract.pay_months, contract.pay_days),
        referral_window_days=contract.referral_window_days,
        rate_ppm=p.rate_ppm,
        fixed_minor=p.fixed_minor,
        category_ppm=json.loads(contract.category_rates),
    )


# The contract in force (``repo.contract_in_force``) and its payout for the event type
# (``repo.contract_payout``) in one round trip; built once, executed with bound values (campaign_id,
# partner_id, on, event_type_id). One row, or none when no contract has started; its ``payout_event_type_id``
# is null when that contract does not pay for the event type. ``terms_from_row`` reads it.
_in_force = (
    select(contracts)
    .where(
        contracts.c.campaign_id == bindparam("campaign_id"),
        contracts.c.partner_id == bindparam("partner_id"),
        contracts.c.starts_on <= bindparam("on"),
    )
    .order_by(contracts.c.starts_on.desc(), contracts.c.id.desc())
    .limit(1)
    .subquery()
)
TERMS_IN_FORCE = select(
    _in_force.c.id, _in_force.c.lock_months, _in_force.c.lock_days, _in_force.c.pay_months, _in_force.c.pay_days,
    _in_force.c.referral_window_days, _in_force.c.category_rates, contract_payouts.c.rate_ppm,
    contract_payouts.c.fixed_minor, contract_payouts.c.event_type_id.label("payout_event_type_id"),
).select_from(
    _in_force.outerjoin(
        contract_payouts,
        and_(contract_payouts.c.contract_id == _in_force.c.id,
             contract_payouts.c.event_type_id == bindparam("event_type_id")),
    )
)


def terms_from_row(row: Any, prefix: str = "") -> Terms | None:
    """The terms of a ``TERMS_IN_FORCE`` row, its columns named with ``prefix`` (None for no row, or for
    a contract that does not pay for the event type)."""
    if row is None:
        return None
    m = row._mapping
    if m[prefix + "payout_event_type_id"] is None:
        return None
    return Terms(
        contract_id=m[prefix + "id"],
        lock_after=Period(m[prefix + "lock_months"], m[prefix + "lock_days"]),
        pay_after=Period(m[prefix + "pay_months"], m[prefix + "pay_days"]),
        referral_window_days=m[prefix + "referral_window_days"],
        rate_ppm=m[prefix + "rate_ppm"],
        fixed_minor=m[prefix + "fixed_minor"],
        category_ppm=json.loads(m[prefix + "category_rates"]),
    )


def terms_in_force(conn: Connection, campaign_id: int, partner_id: int, event_type_id: int, on: date) -> Terms:
    """R8: the terms of the contract in force on a day for one event type, or ``NoContract``."""
    terms = terms_from_row(conn.execute(
        TERMS_IN_FORCE,
        {"campaign_id": campaign_id, "partner_id": partner_id, "on": on, "event_type_id": event_type_id},
    ).first())
    if terms is None:
        raise NoContract(
            f"No contract of partner {partner_id} in campaign {campaign_id} pays for event type "
            f"{event_type_id} on {on.isoformat()}."
        )
    return terms


# --- clicks and attribution ------------------------------------------------------------------


def record_click(conn: Connection, actor: Actor, data: Mapping[str, Any]) -> dict[str, Any]:
    campaign_id, partner_id = data.get("campaign_id"), data.get("partner_id")
    if not isinstance(campaign_id, int) or not isinstance(partner_id, int):
        raise ValidationFailed("campaign_id and partner_id are required.")
    get_owned(conn, campaigns, actor.account_id, campaign_id, "campaign")
    get_owned(conn, partners, actor.account_id, partner_id, "partner")
    customer = data.get("customer_id")
    if not isinstance(customer, str) or not customer.strip() or len(customer) > 200:
        raise ValidationFailed("customer_id is required (at most 200 characters).")
    clicked_at = parse_time(data.get("clicked_at"), "clicked_at") if data.get("clicked_at") else utcnow()
    click_id = repo.insert_row(
        conn,
        clicks,
        account_id=actor.account_id,
        campaign_id=campaign_id,
        partner_id=partner_id,
        customer_id=customer.strip(),
        clicked_at=clicked_at,
    )
    return {
        "id": click_id,
        "campaign_id": campaign_id,
        "partner_id": partner_id,
        "customer_id": customer.strip(),
        "clicked_at": iso(clicked_at),
    }


MAX_BULK_CLICKS = 100_000
CLICK_COLUMNS = ("campaign_id", "customer_id", "partner_id", "clicked_at")
MAX_SHOWN_CLICK_ERRORS = 1_000
CLICK_CHUNK = 5_000


@dataclass
class ClickBatch:
    """A bulk batch of clicks, checked: the rows to insert and the refused rows with their errors (the
    first ``MAX_SHOWN_CLICK_ERRORS`` kept)."""

    rows: list[tuple[int, int, str, datetime]] = field(default_factory=list)  # campaign, partner, customer, time
    refused: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def refuse(self, row: int, column: str | None, message: str) -> None:
        self.refused += 1
        if len(self.errors) < MAX_SHOWN_CLICK_ERRORS:
            self.errors.append({"row": row, "column": column, "code": "validation_error", "message": message})


@dataclass(frozen=True)
class BadRow:
    """A row that a reader could not make into fields (a CSV line with too many cells): refused as it is."""

    message: str


def _click_id(value: object, what: str, *, from_text: bool) -> int:
    if from_text and isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID32:
        raise ValidationFailed(f"{what} must be the id of one of your {what[:-3]}s, not {quote(value)}.")
    return value


class _Refused(Exception):
    def __init__(self, column: str | None, message: str) -> None:
        super().__init__(message)
        self.column, self.message = column, message


def _click_fields(row: object, owned: Callable[[Any, int], bool],
                  from_text: bool) -> tuple[int, int, str, datetime]:
    """One bulk click's fields, or ``_Refused`` naming the column at fault."""
    if isinstance(row, BadRow):
        raise _Refused(None, row.message)
    if not isinstance(row, Mapping):
        raise _Refused(None, "A click is an object {campaign_id, customer_id, partner_id, clicked_at}.")
    unknown = sorted(str(k) for k in row if k not in CLICK_COLUMNS)
    if unknown:
        raise _Refused(unknown[0], f"{quote(unknown[0])} is not a field of a click.")
    ids: list[int] = []
    for column, table, what in (("campaign_id", campaigns, "campaign"), ("partner_id", partners, "partner")):
        try:
            ref = _click_id(row.get(column), column, from_text=from_text)
        except ValidationFailed as exc:
            raise _Refused(column, exc.detail) from None
        if not owned(table, ref):
            raise _Refused(column, f"No {what} with id {ref}.")
        ids.append(ref)
    customer = row.get("customer_id")
    if not isinstance(customer, str) or not customer.strip() or len(customer) > 200:
        raise _Refused("customer_id", "customer_id is required (at most 200 characters).")
    if "\x00" in customer or not _encodable(customer):
        raise _Refused("customer_id", "customer_id must be text without NUL characters or lone surrogates.")
    if not row.get("clicked_at"):
        raise _Refused("clicked_at", "clicked_at is required in a batch, an ISO 8601 time.")
    try:
        clicked_at = parse_time(row["clicked_at"], "clicked_at")
    except ValidationFailed as exc:
        raise _Refused("clicked_at", exc.detail) from None
    if not datetime(1900, 1, 1, tzinfo=UTC) <= clicked_at <= datetime(9000, 1, 1, tzinfo=UTC):
        raise _Refused("clicked_at", f"clicked_at {quote(row['clicked_at'])} is out of range.")
    return ids[0], ids[1], customer.strip(), clicked_at


def check_clicks(conn: Connection, account_id: int, rows: Iterable[tuple[int, Any]], *,
                 from_text: bool) -> ClickBatch:
    """Check bulk clicks ``(row number, {campaign_id, customer_id, partner_id, clicked_at})`` (``from_text``:
    ids may be digit strings, as in a CSV file): a row with an unknown field, an id that is not one of the
    account's campaigns or partners, a blank customer id or a time that is not ISO 8601 is refused with
    its error; more than ``MAX_BULK_CLICKS`` rows refuse the whole batch."""
    batch = ClickBatch()
    known: dict[tuple[str, int], bool] = {}

    def owned(table: Any, row_id: int) -> bool:
        if (table.name, row_id) not in known:
            known[(table.name, row_id)] = repo.owned(conn, table, account_id, row_id) is not None
        return known[(table.name, row_id)]

    for count, (number, row) in enumerate(rows, 1):
        if count > MAX_BULK_CLICKS:
            raise ValidationFailed(f"A batch has at most {MAX_BULK_CLICKS:,} clicks; split it.")
        try:
            batch.rows.append(_click_fields(row, owned, from_text))
        except _Refused as exc:
            batch.refuse(number, exc.column, exc.message)
    return batch


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def insert_clicks(conn: Connection, actor: Actor, batch: ClickBatch) -> dict[str, Any]:
    """Insert the checked clicks set-based, ``CLICK_CHUNK`` rows a statement; the batch's report."""
    rows = batch.rows
    for start in range(0, len(rows), CLICK_CHUNK):
        conn.execute(insert(clicks), [
            {"account_id": actor.account_id, "campaign_id": c, "partner_id": p, "customer_id": cu, "clicked_at": t}
            for c, p, cu, t in rows[start:start + CLICK_CHUNK]])
    return {"inserted": len(rows), "refused": batch.refused, "errors": batch.errors,
            "errors_truncated": batch.refused > len(batch.errors)}


@dataclass(frozen=True)
class Attribution:
    """R13's decision: the click that credits a conversion, its partner and that partner's contract."""

    click_id: int
    partner_id: int
    contract_id: int
    clicked_at: datetime

    @property
    def note(self) -> str:
        """How the decision reads in the action's CREATED history entry."""
        return (f"attributed to click {self.click_id} of {iso(self.clicked_at)} "
                f"(partner {self.partner_id}, contract {self.contract_id})")


def attribute_click(conn: Connection, campaign_id: int, event_type_id: int, customer_id: str,
                    at: datetime) -> Attribution:
    """R13: the customer's latest click before the event (``clicked_at <= at``) among the clicks whose
    partner's contract, in force on the event date and paying for the event type, has a referral window
    covering the event (``at - clicked_at <= window days``: the window's last instant counts). An older
    click inside its own window wins over a newer one outside its own; ``NotAttributable`` when none
    qualifies.

    One range scan of ``ix_clicks_customer`` (campaign, customer, clicked_at) back to the widest window
    of the campaign's contracts, newest first; the terms are looked up once per partner met."""
    widest = repo.widest_referral_window(conn, campaign_id)
    if widest is not None:
        at = as_utc(at)
        since = at - timedelta(days=widest)
        terms_by_partner: dict[int, Terms | None] = {}
        for click in repo.clicks_between(conn, campaign_id, customer_id, since, at):
            pid = int(click.partner_id)
            if pid not in terms_by_partner:
                terms_by_partner[pid] = terms_from_row(conn.execute(
                    TERMS_IN_FORCE,
                    {"campaign_id": campaign_id, "partner_id": pid, "on": at.date(), "event_type_id": event_type_id},
                ).first())
            terms = terms_by_partner[pid]
            if terms is None:
                continue
            clicked_at = as_utc(click.clicked_at)
            if at - clicked_at <= timedelta(days=terms.referral_window_days):
                return Attribution(int(click.id), pid, terms.contract_id, clicked_at)
    raise NotAttributable(
        f"No click of customer {quote(customer_id)} in campaign {campaign_id} within a referral window "
        f"before {iso(at)}; give partner_id to credit a partner."
    )


def attribute(conn: Connection, campaign_id: int, event_type_id: int, customer_id: str, at: datetime) -> int:
    """The partner that ``attribute_click`` credits."""
    return attribute_click(conn, campaign_id, event_type_id, customer_id, at).partner_id


def parse_time(value: object, what: str) -> datetime:
    """ISO 8601 time (or date, taken as midnight UTC); naive times are UTC."""
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        try:
            return as_utc(datetime.fromisoformat(text))
        except ValueError:
            pass
        except OverflowError:
            raise ValidationFailed(f"{what} {quote(value)} is out of range.") from None
    raise ValidationFailed(f"{what} must be an ISO 8601 time like 2026-01-15T10:00:00Z, not {quote(value)}.")
