"""Returns by e-mail (DESIGN §3, "E-mail to our SMTP server"): who may write to a campaign's address, what
becomes of a mail received (each returns file attached becomes a submission of each campaign addressed), and
the results reply sent through the relay once a submission is done. The SMTP conversation itself is
``smtp_server``'s; everything here is synchronous and runs in a worker thread of the server.

A campaign's address is ``returns-<token>@<mail domain>`` (compared case-insensitively). The allowed-senders
lists of the campaign's event types in e-mail mode together guard it; with no list anywhere, anyone may send.
A reply never goes to a mail that is itself automatic (``Auto-Submitted`` other than ``no``, ``Precedence``
bulk, junk or list) or has an empty return path (RFC 3834: no mail loops).
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import queue
import re
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from email.utils import parseaddr
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import Connection

from payoutdesk.intake import deliveries, mail, mime_stream, runs
from payoutdesk.intake import repository as repo
from payoutdesk.intake.common import RETURNS_SUFFIXES, IntakeContext, Taken, looks_like_returns_file, take_file
from payoutdesk.kit import db, logs
from payoutdesk.kit.money import format_amount
from payoutdesk.ledger.workflow import Channel
from payoutdesk.submissions import result_file
from payoutdesk.submissions.service import label, parse_id

log = logging.getLogger("payoutdesk.intake")

CHANNEL = "email"
PIECE = 1024 * 1024  # a file is handed to take_file in pieces of 1 MiB
AHEAD = 2  # pieces decoded ahead of take_file
MAX_REPLY_ATTACHMENT = 10 * 1024 * 1024  # a result file larger than this is mailed gzip-compressed, or not at all
_TOKEN = re.compile(r"^[0-9a-z]{8,64}$")
_SUFFIXES = ", ".join("*" + s for s in RETURNS_SUFFIXES)


@dataclass(frozen=True)
class Recipient:
    """A campaign's returns address as a mail named it."""

    address: str
    campaign_id: int
    account_id: int
    campaign_name: str


@dataclass(frozen=True)
class Verdict:
    """What to answer to ``RCPT TO``: the campaign, or an SMTP refusal."""

    recipient: Recipient | None = None
    refusal: str | None = None


def bare_sender(mail_from: str | None) -> str:
    """The envelope sender without angle brackets; ``""`` for the empty return path (``MAIL FROM:<>``)."""
    value = (mail_from or "").strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    return value


def token_of(ctx: IntakeContext, address: str) -> str | None:
    """The campaign token of ``returns-<token>@<mail domain>`` (any case), or None for another address."""
    local, at, domain = bare_sender(address).lower().rpartition("@")
    if not at or domain != ctx.settings.mail_domain.lower() or not local.startswith("returns-"):
        return None
    token = local[len("returns-"):]
    return token if _TOKEN.match(token) else None


def allowed_senders(conn: Connection, campaign_id: int) -> set[str]:
    """The union of the allowed-senders lists of the campaign's event types in e-mail mode (empty: anyone)."""
    out: set[str] = set()
    for et in repo.event_types_in_mode(conn, CHANNEL, campaign_id):
        try:
            settings = json.loads(et.returns_settings or "{}")
        except ValueError:
            continue
        out.update(str(s).strip().lower() for s in settings.get("allowed_senders") or [])
    return out


def check_recipient(ctx: IntakeContext, sender: str, address: str) -> Verdict:
    """Whether ``sender`` may write to ``address``: the campaign, or the SMTP refusal (550 5.1.1 for an
    unknown address, 550 5.7.1 for a sender the campaign does not allow)."""
    token = token_of(ctx, address)
    shown = address[:200]
    if token is None:
        return Verdict(refusal=f"550 5.1.1 <{shown}>: no such returns address here")
    with db.read(ctx.engine) as conn:
        campaign = repo.campaign_by_returns_token(conn, token)
        senders = allowed_senders(conn, int(campaign.id)) if campaign is not None else set()
    if campaign is None:
        return Verdict(refusal=f"550 5.1.1 <{shown}>: no such returns address here")
    who = bare_sender(sender).lower()
    if senders and who not in senders:
        return Verdict(refusal=f"550 5.7.1 <{bare_sender(sender)[:200]}> is not an allowed sender of returns to "
                               f"<{shown}>: ask the brand to add it to the allowed senders of its event type")
    return Verdict(Recipient(address, int(campaign.id), int(campaign.account_id), str(campaign.name)))


# --- a mail received -------------------------------------------------------------------------------


Undecodable = mime_stream.Undecodable  # an attachment whose content cannot be decoded

Content = bytes | Path  # a mail: its bytes, or the file it was spooled to (read, never held whole)


def _opener(content: Content) -> Callable[[], BinaryIO]:
    if isinstance(content, Path):
        return lambda: content.open("rb")
    return lambda: io.BytesIO(content)


@dataclass(frozen=True)
class Attachment:
    """A returns file attached to a mail: where its MIME part lies in the mail, decoded only as it is
    taken."""

    name: str
    content_type: str
    leaf: mime_stream.Leaf
    source: Callable[[], BinaryIO]

    def pieces(self) -> Iterator[bytes]:
        """The decoded content in pieces of ``PIECE`` bytes, read from the mail a block at a time (so that
        neither the mail nor the file is ever held whole); ``Undecodable`` for a payload that is not. The
        decoding runs in a thread of its own, ``AHEAD`` pieces ahead of the consumer, so that it overlaps
        the consumer's work (the store's writes and hashing, which release the GIL)."""
        return _read_ahead(self._decoded)

    def _decoded(self) -> Iterator[bytes]:
        with self.source() as f:
            yield from mime_stream.decode(f, self.leaf, PIECE)


def _read_ahead(make: Callable[[], Iterator[bytes]], depth: int = 0) -> Generator[bytes, None, None]:
    """The pieces of ``make()``, produced in a thread at most ``depth`` (``AHEAD``) pieces ahead; its error
    is raised here; closing this generator stops the thread."""
    box: queue.Queue[tuple[bytes | None, BaseException | None]] = queue.Queue(depth or AHEAD)
    stop = threading.Event()

    def put(item: tuple[bytes | None, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        pieces = make()
        try:
            for piece in pieces:
                if not put((piece, None)):
                    return
            put((None, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put((None, exc))
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=run, name="mail-decode", daemon=True)
    thread.start()
    try:
        while True:
            piece, error = box.get()
            if error is not None:
                raise error
            if piece is None:
                return
            yield piece
    finally:
        stop.set()
        thread.join()


@dataclass
class ParsedMail:
    message_id: str | None
    subject: str
    header_from: str
    auto: str | None  # why no reply may go to it (an automatic mail), None when one may
    returns_files: list[Attachment] = field(default_factory=list)
    others: list[str] = field(default_factory=list)  # what else it carried: attachments that are no returns file
    unreadable: str | None = None


def _clean_name(raw: str) -> str:
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[-300:] if name else ""


def _header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except Exception:  # noqa: BLE001 - a header that does not parse counts as absent
        return ""
    return " ".join(str(value).split()) if value is not None else ""


def _auto(msg: Message) -> str | None:
    auto = _header(msg, "Auto-Submitted").split(";", 1)[0].strip().lower()
    if auto and auto != "no":
        return f"Auto-Submitted: {auto}"
    precedence = _header(msg, "Precedence").lower()
    if precedence in ("bulk", "junk", "list"):
        return f"Precedence: {precedence}"
    return None


def parse(content: Content) -> ParsedMail:
    """The facts of a mail and its returns files (attachments named like one, decoded as they are taken):
    the top-level headers and each part's headers are read with the email package, the bodies are not
    read here at all (``mime_stream``)."""
    source = _opener(content)
    try:
        with source() as f:
            structure = mime_stream.scan(f)
            msg = structure.headers
            out = ParsedMail(message_id=_header(msg, "Message-ID")[:998] or None,
                             subject=_header(msg, "Subject")[:200], header_from=parseaddr(_header(msg, "From"))[1],
                             auto=_auto(msg))
            for leaf in structure.leaves():
                part = leaf.headers
                name = _clean_name(mime_stream.filename(part) or "")
                if not name:
                    if part.get_content_disposition() == "attachment":
                        out.others.append(f"an attachment without a name ({part.get_content_type()})")
                    continue
                if not looks_like_returns_file(name):
                    out.others.append(f"{name} ({part.get_content_type()})")
                    continue
                out.returns_files.append(Attachment(name, part.get_content_type(), leaf, source))
            if structure.truncated:
                out.others.append(f"more parts, not looked at (at most {mime_stream.MAX_PARTS} are)")
    except Exception as exc:  # noqa: BLE001 - a mail that does not parse is recorded, not fatal
        return ParsedMail(None, "", "", None, unreadable=f"the mail could not be read ({exc})")
    return out


def may_reply(ctx: IntakeContext, sender: str, parsed: ParsedMail) -> bool:
    """Whether a reply may go to ``sender``: a relay is configured, the mail has a return path, it is not
    automatic and does not come from payoutdesk itself."""
    who = bare_sender(sender).lower()
    return (mail.relay_address(ctx.settings) is not None and "@" in who and parsed.auto is None
            and who != ctx.settings.sender.lower() and not who.startswith("mailer-daemon@"))


@dataclass
class MailOutcome:
    """What became of a mail, for the log and the reply."""

    queued: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # one per campaign and file, for people


def _no_file_error(parsed: ParsedMail) -> str:
    if parsed.unreadable:
        return f"No returns file: {parsed.unreadable}"
    if parsed.others:
        seen = ", ".join(parsed.others[:10]) + (f" and {len(parsed.others) - 10} more" if len(parsed.others) > 10
                                                 else "")
        return (f"No returns file in the mail: it carried {seen}; a returns file is an attachment named "
                f"{_SUFFIXES}")
    return f"No returns file in the mail: it had no attachment; a returns file is an attachment named {_SUFFIXES}"


def take_mail(ctx: IntakeContext, sender: str, recipients: list[str], content: Content) -> MailOutcome:
    """Take a mail accepted for ``recipients``: each returns file attached becomes a submission of each
    campaign addressed (a result reply registered when one may be sent); each campaign records one intake
    run. ``content`` is the mail's bytes or, from the SMTP server, the file it was spooled to. A mail without
    a returns file is recorded as a failure and answered (when a reply may go)."""
    who = bare_sender(sender)
    parsed = parse(content)
    actor_name = who or parsed.header_from or "(no return path)"
    reply = may_reply(ctx, sender, parsed)
    outcome = MailOutcome()
    campaigns: dict[int, Recipient] = {}
    for address in recipients:
        verdict = check_recipient(ctx, sender, address)  # again: the campaign or its senders may have changed
        if verdict.recipient is not None:
            campaigns.setdefault(verdict.recipient.campaign_id, verdict.recipient)
        else:
            outcome.lines.append(f"{address}: not taken ({verdict.refusal})")
    for rcpt in campaigns.values():
        _take_for_campaign(ctx, rcpt, who, actor_name, parsed, reply, outcome)
    logs.event(log, f"email: mail from {who or '<>'} to {len(campaigns)} campaign(s) with "
               f"{len(parsed.returns_files)} returns file(s): {len(outcome.queued)} queued"
               f"{'' if outcome.queued else ' (' + '; '.join(outcome.lines)[:300] + ')'}",
               event="mail_received", channel=CHANNEL, sender=who, campaigns=sorted(campaigns),
               files=len(parsed.returns_files), queued=outcome.queued, message_id=parsed.message_id)
    if campaigns and not outcome.queued and reply:
        _reply_nothing_taken(ctx, who, parsed, outcome)
    return outcome


def _take_for_campaign(ctx: IntakeContext, rcpt: Recipient, sender: str, actor_name: str, parsed: ParsedMail,
                       reply: bool, outcome: MailOutcome) -> None:
    counts = runs.RunCounts(skipped=len(parsed.others))
    refused: list[str] = []
    target = {"to": sender, "message_id": parsed.message_id, "subject": parsed.subject}

    def register(conn: Connection, sub: dict[str, Any]) -> None:
        deliveries.register(conn, parse_id(sub["id"]), CHANNEL, target)

    for att in parsed.returns_files:
        try:
            taken: Taken = take_file(ctx, account_id=rcpt.account_id, campaign_id=rcpt.campaign_id,
                                     channel=Channel.EMAIL, actor_name=actor_name, parts=att.pieces(),
                                     file_name=att.name, content_type=att.content_type,
                                     after_queued=register if reply else None)
        except Undecodable as exc:
            taken = Taken("refused", f"its content could not be decoded: {exc}")
        if taken.outcome == "queued" and taken.label:
            counts.files_taken += 1
            counts.submissions.append(taken.label)
            outcome.queued.append(taken.label)
            line = f"{att.name}: queued as {taken.label}"
        elif taken.outcome == "duplicate":
            counts.duplicates += 1
            line = f"{att.name}: not taken, a duplicate of {taken.first_submission}"
        else:
            refused.append(f"{att.name}: {taken.message}")
            line = f"{att.name}: refused: {taken.message}"
        counts.notes.append(line)
        outcome.lines.append(f"{line} (campaign {rcpt.campaign_name})")
    error: str | None = None
    if not parsed.returns_files:
        error = _no_file_error(parsed)
        outcome.lines.append(f"{error} (campaign {rcpt.campaign_name})")
    elif refused and not counts.files_taken and not counts.duplicates:
        error = "No returns file of the mail could be taken: " + "; ".join(refused)
    if parsed.others:
        counts.notes.append("not returns files: " + ", ".join(parsed.others[:10]))
    if error is not None:
        error = f"Mail from {sender or '<>'}" + (
            f" ({parsed.subject!r})" if parsed.subject else "") + f": {error}"
    runs.record(ctx, account_id=rcpt.account_id, campaign_id=rcpt.campaign_id, event_type_id=None, channel=CHANNEL,
                trigger="mail", counts=counts, source=f"campaign:{rcpt.campaign_id}:email", error=error,
                what=f"mail to the returns address of campaign {rcpt.campaign_name}")


def _reply_subject(subject: str, fallback: str) -> str:
    if not subject:
        return fallback
    return subject if subject.lower().startswith("re:") else f"Re: {subject}"


def _reply_nothing_taken(ctx: IntakeContext, to: str, parsed: ParsedMail, outcome: MailOutcome) -> None:
    body = ("payoutdesk received your mail but took no returns file from it:\n\n"
            + "\n".join(f"- {line}" for line in outcome.lines)
            + f"\n\nSend each returns file as an attachment named {_SUFFIXES} (CSV, XML or XLSX, optionally "
              "gzip- or zip-compressed). A file already sent for a campaign is not processed a second time.\n")
    msg = mail.message(ctx.settings, to, _reply_subject(parsed.subject, "payoutdesk: no returns file taken"), body,
                       in_reply_to=parsed.message_id)
    try:
        mail.send(ctx.settings, msg)
    except Exception as exc:  # noqa: BLE001 - the mail is recorded; the reply is a courtesy
        logs.event(log, f"email: reply to {to} not sent: {exc}", level=logging.WARNING, event="reply_failed",
                   channel=CHANNEL)
        return
    logs.event(log, f"email: told {to} that no returns file was taken", event="reply_sent", channel=CHANNEL)


# --- the results reply ------------------------------------------------------------------------------


def result_attachment(ctx: IntakeContext, submission_id: int, name: str) -> tuple[str, bytes] | None:
    """The result file to attach: the CSV, gzip-compressed when larger than ``MAX_REPLY_ATTACHMENT``, or
    None when even that is too large to mail."""
    raw = bytearray()
    packed: io.BytesIO | None = None
    gz: gzip.GzipFile | None = None
    for chunk in result_file.csv_chunks(ctx.engine, submission_id):
        if gz is None:
            raw += chunk
            if len(raw) <= MAX_REPLY_ATTACHMENT:
                continue
            packed = io.BytesIO()
            gz = gzip.GzipFile(fileobj=packed, mode="wb", mtime=0)
            gz.write(bytes(raw))
            raw.clear()
        else:
            gz.write(chunk)
        assert packed is not None
        if packed.tell() > MAX_REPLY_ATTACHMENT:
            gz.close()
            return None
    if gz is None:
        return name, bytes(raw)
    gz.close()
    assert packed is not None
    data = packed.getvalue()
    return (name + ".gz", data) if len(data) <= MAX_REPLY_ATTACHMENT else None


def results_message(ctx: IntakeContext, sub: Any, target: dict[str, Any]) -> EmailMessage:
    with db.read(ctx.engine) as conn:
        campaign = repo.campaign(conn, int(sub.campaign_id))
    currency = str(campaign.currency) if campaign is not None else ""
    campaign_name = str(campaign.name) if campaign is not None else f"campaign {sub.campaign_id}"
    file_name = sub.file_name or label(sub)
    name = result_file.result_name(sub.file_name, label(sub))
    attached = result_attachment(ctx, int(sub.id), name)
    if sub.status == "FAILED":
        summary = f"The file could not be processed and changed nothing: {sub.failure}"
    else:
        summary = (f"Rows: {sub.total_records or 0} ({sub.applied} applied, {sub.unchanged} unchanged, "
                   f"{sub.errors} errors).\nPayout change: {format_amount(int(sub.payout_delta), currency)} "
                   f"{currency}\nAmount change: {format_amount(int(sub.amount_delta), currency)} {currency}")
    if attached is None:
        where = "The result file is too large to mail; find it with the submission in payoutdesk."
    else:
        where = f"What each row did is in the attached {attached[0]}."
    body = (f"payoutdesk processed your returns file {file_name} for {campaign_name} as {label(sub)}: "
            f"{sub.status}.\n\n{summary}\n\n{where}\n")
    subject = _reply_subject(str(target.get("subject") or ""), f"payoutdesk results of {file_name}")
    msg = mail.message(ctx.settings, str(target["to"]), f"{subject} [{label(sub)} {sub.status}]", body,
                       in_reply_to=target.get("message_id") or None)
    if attached is not None:
        if attached[0].endswith(".gz"):
            msg.add_attachment(attached[1], maintype="application", subtype="gzip", filename=attached[0])
        else:
            msg.add_attachment(attached[1], maintype="text", subtype="csv", filename=attached[0],
                               params={"charset": "utf-8"})
    return msg


@deliveries.handler(CHANNEL)
def deliver_results(ctx: IntakeContext, sub: Any, target: dict[str, Any]) -> None:
    """The results reply of a submission that came by mail (deliveries.deliver_due retries a failure)."""
    mail.send(ctx.settings, results_message(ctx, sub, target))
