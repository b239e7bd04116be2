"""Mail sent by payoutdesk through the configured relay (``PAYOUTDESK_SMTP_RELAY``): results replies to
the senders of returns files and alerts to an account's alert address. Without a relay nothing is sent
(``RelayNotConfigured``)."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import make_msgid

from payoutdesk.config import Settings

TIMEOUT_SECONDS = 30


class RelayNotConfigured(Exception):
    """No PAYOUTDESK_SMTP_RELAY: payoutdesk sends no mail."""


def relay_address(settings: Settings) -> tuple[str, int] | None:
    if not settings.smtp_relay:
        return None
    host, _, port = settings.smtp_relay.rpartition(":")
    if not host:
        return settings.smtp_relay, 25
    return host, int(port)


def message(settings: Settings, to: str, subject: str, body: str, *, in_reply_to: str | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = settings.sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain=settings.mail_domain)
    msg["Auto-Submitted"] = "auto-replied" if in_reply_to else "auto-generated"  # RFC 3834: no loops
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg.set_content(body)
    return msg


def send(settings: Settings, msg: EmailMessage) -> None:
    """Send ``msg`` through the relay (STARTTLS and a login when configured); raises ``RelayNotConfigured``
    or the relay's error (``smtplib.SMTPException``, ``OSError``) for the caller to retry later."""
    address = relay_address(settings)
    if address is None:
        raise RelayNotConfigured("PAYOUTDESK_SMTP_RELAY is not set: no mail is sent")
    with smtplib.SMTP(address[0], address[1], timeout=TIMEOUT_SECONDS) as smtp:
        if settings.smtp_relay_starttls:
            smtp.starttls(context=ssl.create_default_context())
        if settings.smtp_relay_user:
            smtp.login(settings.smtp_relay_user, settings.smtp_relay_password)
        smtp.send_message(msg)
