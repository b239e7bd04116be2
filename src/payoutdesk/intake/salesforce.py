"""The Salesforce channel (DESIGN §3, "Salesforce"; docs/CHANNELS.md): a change of an order's status in
Salesforce becomes a row of a submission (channel ``salesforce``, kind ``A``), by the event type's
``status_map``. Two ways in:

**Outbound Messages** (:func:`receive_outbound`, served by api/salesforce.py). Salesforce posts a SOAP
``notifications`` message to the event type's ``outbound_url`` (:func:`outbound_url`; the unguessable token
in it is the credential: no HTTP Basic). Every notification not seen before becomes a row; they are queued
as ONE submission and their ids recorded in ``salesforce_notifications`` in the same transaction, and only
after that transaction committed is the answer ``<Ack>true</Ack>``. Salesforce re-sends a message until it
is acknowledged: a notification id already taken is ignored (a replay is acknowledged and queues nothing),
a message whose notifications were all skipped (a status outside the map) is acknowledged too. Anything
else answers a SOAP fault, and Salesforce sends the message again later (for up to 24 hours):

- an unknown token: HTTP 404 with a fault;
- a body that is not a SOAP ``notifications`` message (not XML, a DTD or entity, a ``Notification``
  without ``Id`` or ``sObject``), an event type that is not in Salesforce mode, or our own failure to store
  the message: HTTP 500 with a fault (SOAP 1.1 §6.2: a fault travels with status 500; Salesforce counts
  it as not delivered). Nothing is queued.

Each message is an intake run (trigger ``outbound_message``); a refused one is a failed run, which alerts
the account once per failure spell (intake.runs). With the optional setting ``organization_id``, a message
from another Salesforce organization is refused (a fault); without it the OrganizationId is not checked.
Notification ids are kept 7 days (Salesforce gives up re-sending after 24 hours).

**Polling** (:func:`poll`, and :func:`scheduled` for the scheduler). payoutdesk logs in with the username,
password and security token of the settings (sealed at rest) by the SOAP ``login`` call against
``instance_url`` (default ``https://login.salesforce.com``; simple-salesforce's own login only knows
``https://<domain>.salesforce.com``), then hands the session to ``simple_salesforce.Salesforce`` for the
SOQL query ``SELECT Id, <order id>, <status>[, <amount>], SystemModstamp FROM <object> WHERE SystemModstamp
> <cursor> ORDER BY SystemModstamp, Id``, read page by page (``nextRecordsUrl``). The rows are queued in
submissions of at most ``CHUNK_RECORDS`` records, each in the transaction that also moves the cursor (the
last SystemModstamp taken, in ``intake_cursors``) from the value the poll started from: a crash can neither
apply a change twice nor skip one, and of two polls at once only one takes the records. The first poll of
an event type starts 24 hours back (as far as Salesforce keeps Outbound Messages). Every request has a
timeout; a refused login or a failed query is a failed run whose detail says why.

SystemModstamp has whole seconds in Salesforce; a record changed in the same second as the cursor but
committed after the poll read that second is not taken by ``>`` (a limit of polling on SystemModstamp;
Outbound Messages have none).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

import requests
import urllib3
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceError
from sqlalchemy import Connection, Row
from sqlalchemy.exc import IntegrityError

from payoutdesk.errors import NotFound, PayoutdeskError
from payoutdesk.intake import repository as repo
from payoutdesk.intake import runs
from payoutdesk.intake import salesforce_repository as srepo
from payoutdesk.intake import salesforce_soap as soap
from payoutdesk.intake.common import IntakeContext, channel_actor
from payoutdesk.kit import db, logs
from payoutdesk.kit.time import as_utc, iso, utcnow
from payoutdesk.ledger.workflow import Channel
from payoutdesk.submissions import service
from payoutdesk.submissions.jsonrows import validate_rows

log = logging.getLogger("payoutdesk.intake")

CHANNEL = "salesforce"
TIMEOUT = (10.0, 60.0)  # seconds to connect, to wait for an answer: every request to Salesforce
LOGIN_URL = "https://login.salesforce.com"
FIRST_POLL_BACK = timedelta(hours=24)
NOTIFICATIONS_KEPT = timedelta(days=7)
CHUNK_RECORDS = 50_000  # records of one poll submission (a JSON batch takes at most 100,000 rows)
MAX_NOTES = 5  # skipped records named in a run's detail
MAX_LOGIN_ANSWER = 1024 * 1024  # bytes of the login answer read (Salesforce's is about 2 KB)
_TOKEN = re.compile(r"^[0-9A-Za-z_-]{16,100}$")


def outbound_url(public_url: str, token: str) -> str:
    """Where Salesforce posts the Outbound Messages of an event type."""
    return f"{public_url.rstrip('/')}/salesforce/outbound/{token}"


def _source(event_type_id: int) -> str:
    return f"event_type:{event_type_id}"


def _settings(et: Row[Any]) -> dict[str, Any]:
    return dict(json.loads(et.returns_settings or "{}"))


def _notes(counts: runs.RunCounts, skipped: list[str], total: int | None = None) -> None:
    """Count the skipped records (``total``, default all of ``skipped``) and name the first few."""
    total = len(skipped) if total is None else total
    counts.skipped += total
    counts.notes.extend(f"skipped {why}" for why in skipped[:MAX_NOTES])
    if total > MAX_NOTES:
        counts.notes.append(f"and {total - MAX_NOTES:,} more skipped")


def _queue(conn: Connection, et: Row[Any], rows: list[dict[str, str]], file_name: str, actor_name: str
           ) -> dict[str, Any]:
    body = json.dumps(validate_rows(rows), separators=(",", ":")).encode()
    actor = channel_actor(et.account_id, Channel.SALESFORCE, actor_name)
    return service.create(conn, actor, et.campaign_id, body, file_name=file_name, content_type="application/json",
                          kind="A")


# --- Outbound Messages ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """The HTTP answer to an Outbound Message."""

    status: int
    body: bytes
    media_type: str = "text/xml; charset=utf-8"


def _refuse(ctx: IntakeContext, et: Row[Any], message: str, *, client: bool = True) -> Answer:
    try:
        runs.record(ctx, account_id=et.account_id, campaign_id=et.campaign_id, event_type_id=et.id, channel=CHANNEL,
                    trigger="outbound_message", counts=runs.RunCounts(), source=_source(et.id),
                    error=f"Outbound Message refused: {message}",
                    what=f"Salesforce Outbound Messages of event type {et.name}")
    except Exception:
        log.exception("the failed run of an Outbound Message could not be recorded")
    return Answer(500, soap.fault(message, client=client))


@dataclass
class _Taken:
    submission: dict[str, Any] | None = None
    new: int = 0
    seen: int = 0
    skipped: list[str] = field(default_factory=list)


def _take(conn: Connection, et: Row[Any], rules: soap.Rules, message: soap.Message) -> _Taken:
    """Queue the rows of the notifications not seen before and record their ids: one transaction."""
    now = utcnow()
    ids = [n.id for n in message.notifications]
    seen = srepo.seen_notifications(conn, et.id, ids)
    out = _Taken(seen=len(seen))
    fresh = [n for n in message.notifications if n.id not in seen]
    out.new = len(fresh)
    rows: list[dict[str, str]] = []
    for n in fresh:
        row, why = soap.row_for(et.id, rules, n.fields, n.record_id)
        if row is None:
            out.skipped.append(f"notification {n.id}: {why}")
        else:
            row["Note"] = f"{row['Note']} (notification {n.id})"
            rows.append(row)
    if rows:
        out.submission = _queue(conn, et, rows, f"salesforce-outbound-{fresh[0].id}.json", "salesforce outbound")
    sid = service.parse_id(out.submission["id"]) if out.submission else None
    srepo.insert_notifications(conn, et.id, [n.id for n in fresh], sid, now)
    srepo.forget_notifications(conn, et.id, now - NOTIFICATIONS_KEPT)
    return out


def receive_outbound(ctx: IntakeContext, token: str, body: bytes) -> Answer:
    """Take one Outbound Message posted to ``/salesforce/outbound/{token}`` (see the module's text)."""
    et = None
    if _TOKEN.match(token):
        with db.read(ctx.engine) as conn:
            et = repo.event_type_by_outbound_token(conn, token)
    if et is None:
        return Answer(404, soap.fault("No Outbound Message endpoint at this address; copy the event type's "
                                      "outbound_url into the Outbound Message again."))
    if et.returns_mode != "salesforce":
        return _refuse(ctx, et, f"event type {et.id} does not take Salesforce Outbound Messages: its returns "
                                f"processing is {et.returns_mode}.")
    try:
        message = soap.parse_notifications(body)
    except soap.SoapFault as exc:
        return _refuse(ctx, et, exc.message)
    settings = _settings(et)
    org = settings.get("organization_id")
    if org and (message.organization_id or "")[:15] != str(org)[:15]:  # an 18-character id ends in a checksum
        return _refuse(ctx, et, f"the message comes from Salesforce organization {message.organization_id or '(none)'}"
                                f", not from {org} that the event type names.")
    try:
        rules = soap.Rules.of(settings)
    except (KeyError, TypeError, ValueError, AttributeError):
        return _refuse(ctx, et, "the event type's Salesforce settings are incomplete; save them again.", client=False)
    taken: _Taken | None = None
    for attempt in range(3):
        try:
            with db.write(ctx.engine) as conn:
                taken = _take(conn, et, rules, message)
            break
        except IntegrityError:  # the same message, delivered twice at once: the other delivery took it
            if attempt == 2:
                return _refuse(ctx, et, "the message is being taken by another delivery; send it again.",
                               client=False)
        except PayoutdeskError as exc:
            return _refuse(ctx, et, f"the message could not be queued: {exc.detail}", client=False)
        except Exception as exc:
            log.exception("an Outbound Message for event type %s could not be stored", et.id)
            return _refuse(ctx, et, f"the message could not be stored ({type(exc).__name__}); it is taken "
                                    "when Salesforce sends it again.", client=False)
    assert taken is not None
    counts = runs.RunCounts(duplicates=taken.seen)
    if taken.submission is not None:
        counts.files_taken = 1
        counts.submissions.append(str(taken.submission["id"]))
    _notes(counts, taken.skipped)
    if taken.seen:
        counts.notes.append(f"{taken.seen} notification(s) already taken")
    try:
        runs.record(ctx, account_id=et.account_id, campaign_id=et.campaign_id, event_type_id=et.id, channel=CHANNEL,
                    trigger="outbound_message", counts=counts, source=_source(et.id))
    except Exception:
        log.exception("the run of an Outbound Message could not be recorded")
    logs.event(log, f"salesforce: Outbound Message for event type {et.id}: {len(message.notifications)} "
               f"notification(s), {taken.seen} already taken, {len(taken.skipped)} skipped"
               + (f", queued as {taken.submission['id']}" if taken.submission else ""),
               event="salesforce_outbound", event_type=et.id, notifications=len(message.notifications),
               seen=taken.seen, skipped=len(taken.skipped),
               submission=taken.submission["id"] if taken.submission else None)
    return Answer(200, soap.ack())


# --- polling -------------------------------------------------------------------------------------------


class PollFailed(Exception):
    """A poll that could not run: the run's detail."""


def _login(ctx: IntakeContext, settings: dict[str, Any], session: requests.Session) -> Salesforce:
    username = settings.get("username")
    if not username or not settings.get("password"):
        raise PollFailed("no Salesforce username and password are set for polling")
    try:
        password = ctx.box.open(str(settings["password"]))
        token = ctx.box.open(str(settings["security_token"])) if settings.get("security_token") else ""
    except ValueError as exc:
        raise PollFailed(f"the Salesforce password: {exc}; set it again") from None
    base = str(settings.get("instance_url") or LOGIN_URL).rstrip("/")
    url = f"{base}/services/Soap/u/{soap.API_VERSION}"
    try:
        with session.post(url, data=soap.login_envelope(str(username), password + token),
                          headers={"Content-Type": "text/xml; charset=UTF-8", "SOAPAction": "login"},
                          timeout=TIMEOUT, allow_redirects=False, stream=True) as answer:
            status, content = answer.status_code, answer.raw.read(MAX_LOGIN_ANSWER, decode_content=True)
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:  # raw.read: urllib3's
        raise PollFailed(f"cannot reach Salesforce at {base}: {type(exc).__name__}: {str(exc)[:300]}") from None
    try:
        session_id, instance = soap.parse_login_response(status, content)
    except soap.LoginFailed as exc:
        raise PollFailed(f"login as {username} at {base} failed: {exc}") from None
    return Salesforce(instance_url=instance, session_id=session_id, session=session, version=soap.API_VERSION,
                      parse_float=Decimal)


def _query_error(exc: SalesforceError) -> str:
    content = exc.content
    if isinstance(content, list) and content and isinstance(content[0], dict):
        first = content[0]
        text = f"{first.get('errorCode', '')}: {first.get('message', '')}"
    else:
        text = str(content)
    return f"the SOQL query failed (HTTP {exc.status}): {text[:300]}"


def _records(sf: Salesforce, query: str) -> Iterator[dict[str, Any]]:
    try:
        for record in sf.query_all_iter(query, timeout=TIMEOUT):
            yield dict(record)
    except SalesforceError as exc:
        raise PollFailed(_query_error(exc)) from None
    except requests.RequestException as exc:
        raise PollFailed(f"the SOQL query failed: {type(exc).__name__}: {str(exc)[:300]}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise PollFailed(f"the SOQL query's answer is not what Salesforce answers ({exc!r:.200})") from None


class _Lost(Exception):
    """Another poll moved the cursor first."""


def _poll(ctx: IntakeContext, et: Row[Any], counts: runs.RunCounts) -> None:
    if et.returns_mode != "salesforce":
        raise PollFailed(f"event type {et.id} is not in Salesforce mode (its returns processing is "
                         f"{et.returns_mode})")
    settings = _settings(et)
    rules = soap.Rules.of(settings)
    with requests.Session() as session:
        sf = _login(ctx, settings, session)
        with db.read(ctx.engine) as conn:
            cursor = srepo.cursor(conn, et.id)
        start = cursor or soap.stamp_literal(utcnow() - FIRST_POLL_BACK)
        taken = skips = 0
        skipped: list[str] = []  # the first few, for the run's detail
        rows: list[dict[str, str]] = []
        in_chunk = 0
        last: datetime | None = None

        def flush() -> None:
            nonlocal cursor, rows, in_chunk
            assert last is not None
            new = soap.stamp_literal(last)

            def store(conn: Connection) -> dict[str, Any] | None:
                if not srepo.move_cursor(conn, et.id, cursor, new, utcnow()):
                    raise _Lost
                if not rows:
                    return None
                return _queue(conn, et, rows, f"salesforce-poll-{new}.json", "salesforce poll")

            try:
                with db.write(ctx.engine) as conn:
                    sub = store(conn)
            except IntegrityError:
                raise _Lost from None
            if sub is not None:
                counts.files_taken += 1
                counts.submissions.append(str(sub["id"]))
            cursor, rows, in_chunk = new, [], 0

        try:
            for record in _records(sf, soap.soql(rules, start)):
                try:
                    stamp = soap.parse_stamp(record.get("SystemModstamp"))
                except ValueError as exc:
                    raise PollFailed(f"a record has no usable SystemModstamp ({exc})") from None
                if (in_chunk >= CHUNK_RECORDS and last is not None
                        and soap.stamp_literal(stamp) != soap.stamp_literal(last)):
                    flush()  # between two seconds only: a cursor never splits the records of one second
                taken += 1
                in_chunk += 1
                last = stamp if last is None or stamp > last else last
                row, why = soap.row_for(et.id, rules, record, soap.value_text(record.get("Id")))
                if row is None:
                    skips += 1
                    if len(skipped) < MAX_NOTES:
                        skipped.append(str(why))
                else:
                    row["Note"] = f"{row['Note']} (SystemModstamp {iso(stamp)})"
                    rows.append(row)
            if in_chunk:
                flush()
        except _Lost:
            counts.notes.append("another poll took these changes at the same time; nothing was taken twice")
        _notes(counts, skipped, skips)
        counts.notes.insert(0, f"{taken:,} record(s) changed after {start}" if taken
                            else f"no record changed after {start}")


def poll(ctx: IntakeContext, event_type_id: int, trigger: str) -> dict[str, Any]:
    """Poll Salesforce for one event type now (``trigger``: schedule, run_now ...): the finished run
    (``intake.runs.run_dict``), failed with a clear detail when the login or the query failed.
    ``NotFound`` for an event type that does not exist (the caller checked it is the account's)."""
    with db.read(ctx.engine) as conn:
        et = repo.event_type(conn, event_type_id)
    if et is None:
        raise NotFound(f"No event type with id {event_type_id}.")
    run_id = runs.start(ctx, account_id=et.account_id, campaign_id=et.campaign_id, event_type_id=et.id,
                        channel=CHANNEL, trigger=trigger)
    counts = runs.RunCounts()
    error: str | None = None
    try:
        _poll(ctx, et, counts)
    except PollFailed as exc:
        error = str(exc)
    except Exception as exc:
        log.exception("the Salesforce poll of event type %s failed", et.id)
        error = f"the poll failed unexpectedly: {type(exc).__name__}: {str(exc)[:300]}"
    runs.finish(ctx, run_id, account_id=et.account_id, source=_source(et.id), counts=counts, error=error,
                what=f"Salesforce polling of event type {et.name}")
    logs.event(log, f"salesforce: poll of event type {et.id} ({trigger}): "
               + (f"failed: {error}" if error else
                  f"{counts.files_taken} submission(s) {', '.join(counts.submissions)}, {counts.skipped} skipped"),
               event="salesforce_poll", event_type=et.id, trigger=trigger, ok=error is None,
               submissions=counts.submissions, skipped=counts.skipped)
    with db.read(ctx.engine) as conn:
        row = srepo.run(conn, run_id)
    return runs.run_dict(row)


def slot(now: datetime, every_minutes: int) -> str:
    """``now`` floored to ``every_minutes``, counted from the Unix epoch (so every 45 minutes stays every
    45 minutes across midnight)."""
    minutes = int(as_utc(now).timestamp()) // 60 // every_minutes * every_minutes
    return f"{datetime.fromtimestamp(minutes * 60, UTC):%Y-%m-%dT%H:%M}"


def _scheduled_poll(ctx: IntakeContext, event_type_id: int) -> str:
    run = poll(ctx, event_type_id, "schedule")
    if run["outcome"] != "ok":
        return f"failed: {run['detail']}"[:500]
    subs = run["submissions"]
    return (f"ok: {len(subs)} submission(s){' ' + ', '.join(subs) if subs else ''}, "
            f"{run['skipped']} skipped")[:500]


def scheduled(ctx: IntakeContext, now: datetime) -> list[tuple[str, str, Callable[[], str]]]:
    """The polls due at ``now``: (job name ``poll:<event type id>``, slot, the poll) for every event type in
    Salesforce mode with a username, a password and ``poll_every_minutes`` (for worker.scheduler.run_if_due)."""
    with db.read(ctx.engine) as conn:
        types = repo.event_types_in_mode(conn, "salesforce")
    jobs: list[tuple[str, str, Callable[[], str]]] = []
    for et in types:
        settings = _settings(et)
        minutes = settings.get("poll_every_minutes")
        if not isinstance(minutes, int) or minutes < 1 or not settings.get("username") or not settings.get("password"):
            continue
        jobs.append((f"poll:{et.id}", slot(now, minutes), partial(_scheduled_poll, ctx, et.id)))
    return jobs
