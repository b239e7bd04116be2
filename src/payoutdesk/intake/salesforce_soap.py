"""Salesforce's side of the Salesforce channel, in pure code (DESIGN §3, "Salesforce"): no database, no network.

- Outbound Messages: :func:`parse_notifications` reads the SOAP ``notifications`` call that Salesforce posts
  (safely: defusedxml, no DTD, no entity), :func:`ack` and :func:`fault` are the two answers it understands.
- The mapping: :func:`row_for` turns one record (an Outbound Message's sObject, or a record a SOQL poll
  returned) into one JSON row of the returns file format (``ActionTrackerId`` + ``Oid``, ``Reason``,
  ``Amount``), by the event type's ``status_map``; a status the map does not name is skipped, with a reason.
- Polling: the SOAP ``login`` call (:func:`login_envelope`, :func:`parse_login_response`), the SOQL query
  (:func:`soql`) and the cursor, the last ``SystemModstamp`` taken (:func:`parse_stamp`, :func:`stamp_literal`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from xml.etree.ElementTree import Element, ParseError
from xml.sax.saxutils import escape

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

NS_SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
NS_OUTBOUND = "http://soap.sforce.com/2005/09/outbound"
NS_XSI = "http://www.w3.org/2001/XMLSchema-instance"
NS_PARTNER = "urn:partner.soap.sforce.com"
API_VERSION = "59.0"
MAX_NOTIFICATIONS = 1000  # Salesforce sends at most 100 in one message
MAX_VALUE = 1000  # characters of one field value taken into a row
MAX_NOTE = 2000  # as the returns file's Note (submissions.rows.MAX_NOTE)
_ID = re.compile(r"^[A-Za-z0-9]{1,40}$")  # a Salesforce id (15 or 18 characters), as stored
DEFAULT_REASONS = {"reverse": "REJECTED", "modify": "ORDER_UPDATE"}  # R15's defaults


class SoapFault(Exception):
    """A message we cannot take. ``client``: the sender's fault (the message is malformed), else ours."""

    def __init__(self, message: str, *, client: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.client = client


class LoginFailed(Exception):
    """Salesforce refused the login (or answered something that is not a login answer)."""


# --- Outbound Messages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    """One ``Notification``: its id (what Salesforce re-sends until acknowledged), the record's id and the
    record's fields by API name (None for a field sent as ``xsi:nil``)."""

    id: str
    record_id: str | None
    fields: dict[str, str | None]


@dataclass(frozen=True)
class Message:
    organization_id: str | None
    action_id: str | None
    notifications: list[Notification] = field(default_factory=list)


def _local(tag: object) -> str:
    text = tag if isinstance(tag, str) else ""
    return text.rsplit("}", 1)[-1]


def _child(parent: Element, name: str) -> Element | None:
    for child in parent:
        if _local(child.tag) == name:
            return child
    return None


def _text(element: Element | None) -> str | None:
    if element is None or element.get(f"{{{NS_XSI}}}nil") == "true":
        return None
    return (element.text or "").strip()


def parse_notifications(body: bytes) -> Message:
    """The ``notifications`` of a SOAP envelope, or :class:`SoapFault` (a body that is not XML, has a DTD
    or an entity, is not a SOAP ``notifications`` call, or has a ``Notification`` without ``Id`` or
    ``sObject``). Several ``Notification``s; a notification id given twice is taken once."""
    if not body.strip():
        raise SoapFault("The request has no body; Salesforce posts a SOAP notifications message.")
    try:
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise SoapFault("The message has a DTD or an entity declaration; they are refused.") from None
    except (ParseError, ValueError) as exc:
        raise SoapFault(f"The message is not well-formed XML ({str(exc)[:100]}).") from None
    if root.tag != f"{{{NS_SOAP}}}Envelope":
        raise SoapFault("The message is not a SOAP 1.1 envelope.")
    soap_body = root.find(f"{{{NS_SOAP}}}Body")
    call = _child(soap_body, "notifications") if soap_body is not None else None
    if call is None:
        raise SoapFault("The SOAP body has no notifications element.")
    out = Message(_text(_child(call, "OrganizationId")), _text(_child(call, "ActionId")))
    seen: set[str] = set()
    for n, element in enumerate((c for c in call if _local(c.tag) == "Notification"), 1):
        if n > MAX_NOTIFICATIONS:
            raise SoapFault(f"The message has more than {MAX_NOTIFICATIONS} notifications.")
        nid = _text(_child(element, "Id"))
        if not nid or not _ID.match(nid):
            raise SoapFault(f"Notification {n} has no valid Id.")
        sobject = _child(element, "sObject")
        if sobject is None:
            raise SoapFault(f"Notification {nid} has no sObject.")
        fields: dict[str, str | None] = {}
        for f in sobject:
            if len(f):  # a related record's fields (Account.Name ...): not a field of this object
                continue
            fields[_local(f.tag)] = _text(f)
        if nid in seen:
            continue
        seen.add(nid)
        out.notifications.append(Notification(nid, fields.get("Id"), fields))
    if not out.notifications:
        raise SoapFault("The message has no Notification.")
    return out


def _envelope(inner: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?>'
            f'<soapenv:Envelope xmlns:soapenv="{NS_SOAP}"><soapenv:Body>{inner}</soapenv:Body></soapenv:Envelope>'
            ).encode()


def ack() -> bytes:
    """The answer Salesforce takes as delivered (``notificationsResponse`` with ``Ack`` true)."""
    return _envelope(f'<notificationsResponse xmlns="{NS_OUTBOUND}"><Ack>true</Ack></notificationsResponse>')


def fault(message: str, *, client: bool = True) -> bytes:
    """A SOAP 1.1 fault: Salesforce keeps the message and sends it again later (for up to 24 hours)."""
    code = "soapenv:Client" if client else "soapenv:Server"
    return _envelope(f"<soapenv:Fault><faultcode>{code}</faultcode><faultstring>{escape(message[:500])}"
                     "</faultstring></soapenv:Fault>")


# --- the mapping -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rules:
    """The Salesforce settings of an event type that the mapping uses."""

    object: str
    order_id_field: str
    status_field: str
    amount_field: str | None
    status_map: dict[str, dict[str, str]]

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> Rules:
        return cls(str(settings["object"]), str(settings["order_id_field"]), str(settings["status_field"]),
                   str(settings["amount_field"]) if settings.get("amount_field") else None,
                   {str(k): dict(v) for k, v in dict(settings["status_map"]).items()})


def value_text(value: object) -> str | None:
    """A field's value as the text a row holds: REST's JSON values (numbers as Decimal, booleans) and the
    SOAP texts alike; None for a null or empty value."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Decimal)):
        return amount_text(str(value))
    text = str(value).strip()
    return text or None


def amount_text(text: str) -> str:
    """A number as a plain decimal string: ``150.0`` → ``150``, ``1.5E7`` → ``15000000`` (Java writes large
    doubles with an exponent), ``19.990`` → ``19.99``. Anything else is given back as it is, for the engine
    to refuse with a clear row error (``invalid_amount``)."""
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        return text
    if not number.is_finite():
        return text
    plain = format(number, "f")
    if "." in plain:
        plain = plain.rstrip("0").rstrip(".")
    return "0" if plain in ("-0", "") else plain


def row_for(event_type_id: int, rules: Rules, fields: Mapping[str, object], record_id: str | None = None
            ) -> tuple[dict[str, str] | None, str | None]:
    """The JSON row of one record, or (None, why it is skipped): its status is not in ``status_map``, it
    has no order id, or a modification has no amount."""
    rid = record_id or value_text(fields.get("Id")) or "?"
    what = f"{rules.object} {rid}"
    status = value_text(fields.get(rules.status_field))
    if status is None or status not in rules.status_map:
        shown = "empty" if status is None else repr(status[:100])
        return None, f"{what}: {rules.status_field} {shown} is not in status_map"
    order_id = value_text(fields.get(rules.order_id_field))
    if order_id is None:
        return None, f"{what}: {rules.order_id_field} is empty"
    if len(order_id) > MAX_VALUE:
        return None, f"{what}: {rules.order_id_field} is longer than {MAX_VALUE} characters"
    rule = rules.status_map[status]
    operation = rule["operation"]
    row = {"ActionTrackerId": str(event_type_id), "Oid": order_id}
    if operation == "approve":
        row["Reason"] = "APPROVED"
    elif operation == "reverse":
        row["Reason"] = rule.get("reason") or DEFAULT_REASONS["reverse"]  # a reason alone reverses
    else:
        amount = value_text(fields.get(rules.amount_field)) if rules.amount_field else None
        if amount is None:
            return None, f"{what}: {rules.amount_field or 'the amount field'} is empty for a modification"
        row["Amount"] = amount_text(amount[:MAX_VALUE])
        row["Reason"] = rule.get("reason") or DEFAULT_REASONS["modify"]
    row["Note"] = f"Salesforce {what}: {rules.status_field} {status}"[:MAX_NOTE]
    return row, None


# --- polling -------------------------------------------------------------------------------------------


def login_envelope(username: str, password: str) -> bytes:
    """The SOAP ``login`` call of the partner API (the password is the password and the security token)."""
    return ('<?xml version="1.0" encoding="utf-8"?>'
            f'<env:Envelope xmlns:env="{NS_SOAP}" xmlns:urn="{NS_PARTNER}"><env:Body><urn:login>'
            f"<urn:username>{escape(username)}</urn:username><urn:password>{escape(password)}</urn:password>"
            "</urn:login></env:Body></env:Envelope>").encode()


def parse_login_response(status: int, body: bytes) -> tuple[str, str]:
    """(session id, the instance's base URL ``https://host[:port]``) of a login answer, or LoginFailed with
    Salesforce's fault string (INVALID_LOGIN ...)."""
    try:
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (DefusedXmlException, ParseError, ValueError):
        raise LoginFailed(f"the login answer (HTTP {status}) is not a SOAP message") from None
    faultstring = next((e.text for e in root.iter() if _local(e.tag) == "faultstring"), None)
    if faultstring:
        raise LoginFailed(f"Salesforce refused the login: {faultstring.strip()[:300]}")
    session = next((e.text for e in root.iter() if _local(e.tag) == "sessionId"), None)
    server = next((e.text for e in root.iter() if _local(e.tag) == "serverUrl"), None)
    if status != 200 or not session or not server:
        raise LoginFailed(f"the login answer (HTTP {status}) has no session")
    m = re.match(r"^(https://[^/\s]+)", server.strip())
    if m is None:
        raise LoginFailed("the login answer names no https:// server")
    return session.strip(), m.group(1)


def soql(rules: Rules, cursor: str) -> str:
    """The poll's query: the records changed after the cursor, oldest first (their fields are API names,
    checked when the settings were saved; the cursor is a ``stamp_literal``)."""
    names = ["Id", rules.order_id_field, rules.status_field]
    if rules.amount_field:
        names.append(rules.amount_field)
    names.append("SystemModstamp")
    fields = ", ".join(dict.fromkeys(names))
    return f"SELECT {fields} FROM {rules.object} WHERE SystemModstamp > {cursor} ORDER BY SystemModstamp, Id"


def parse_stamp(text: object) -> datetime:
    """A SystemModstamp as Salesforce writes it (``2026-11-26T12:00:00.000+0000``) or as a cursor."""
    value = (text if isinstance(text, str) else "").strip().replace("Z", "+00:00")
    m = re.match(r"^(.*[T ]\d\d:\d\d:\d\d(?:\.\d+)?)([+-]\d\d):?(\d\d)$", value)
    if m:
        value = f"{m.group(1)}{m.group(2)}:{m.group(3)}"
    stamp = datetime.fromisoformat(value)
    if stamp.tzinfo is None:
        raise ValueError(f"SystemModstamp {text!r} has no time zone")
    return stamp.astimezone(UTC)


def stamp_literal(stamp: datetime) -> str:
    """A SOQL dateTime literal (UTC, whole seconds: Salesforce keeps SystemModstamp to the second)."""
    return stamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
