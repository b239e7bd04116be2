"""What every intake channel shares: its context, its actor, and ``take_file``, which stores a file as it
streams in and queues a submission with the channel's name (DESIGN §5: check who sent it, store the raw
bytes, queue a submission)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, Engine

from payoutdesk.config import Settings
from payoutdesk.context import Actor
from payoutdesk.errors import DuplicateFile, PayoutdeskError
from payoutdesk.kit import db, logs
from payoutdesk.kit.crypto import SecretBox, load_secret_key
from payoutdesk.ledger.workflow import Channel
from payoutdesk.submissions import files, service

log = logging.getLogger("payoutdesk.intake")

RETURNS_SUFFIXES = (".csv", ".txt", ".tsv", ".xml", ".xlsx", ".gz", ".zip")


@dataclass(frozen=True)
class IntakeContext:
    """What a channel needs: the settings, the database and the box that opens stored secrets."""

    settings: Settings
    engine: Engine
    box: SecretBox

    @classmethod
    def build(cls, settings: Settings, engine: Engine) -> IntakeContext:
        return cls(settings, engine, SecretBox(load_secret_key(settings.secret_key, settings.data_dir)))


def channel_actor(account_id: int, channel: Channel, name: str) -> Actor:
    """The actor of a change that came in through ``channel``; ``name`` says who (the FTP login, the
    sender of a mail, the remote server) and is what the history shows."""
    return Actor(account_id, name[:320], channel)


def looks_like_returns_file(name: str) -> bool:
    """Whether a file name has a suffix the readers take (csv, txt, tsv, xml, xlsx, gz, zip)."""
    return name.lower().endswith(RETURNS_SUFFIXES)


@dataclass(frozen=True)
class Taken:
    """What became of a file offered to ``take_file``."""

    outcome: Literal["queued", "duplicate", "refused"]
    message: str  # for people: the FTP reply, the run's detail, the mail's answer
    submission: dict[str, Any] | None = None  # the submission as the API shows it, when queued
    first_submission: str | None = None  # for a duplicate: the submission that took this content first
    sha256: str | None = None
    size: int = 0

    @property
    def label(self) -> str | None:
        return str(self.submission["id"]) if self.submission else None

    @property
    def submission_id(self) -> int | None:
        return service.parse_id(self.submission["id"]) if self.submission else None


AfterQueued = Callable[[Connection, dict[str, Any]], None]


def take_file(
    ctx: IntakeContext,
    *,
    account_id: int,
    campaign_id: int,
    channel: Channel,
    actor_name: str,
    parts: Iterable[bytes],
    file_name: str,
    content_type: str | None = None,
    after_queued: AfterQueued | None = None,
) -> Taken:
    """Store ``parts`` (any iterable of bytes: read as it comes, never held whole) and queue it as a
    submission of ``campaign_id`` through ``channel``. ``after_queued`` runs in the queuing transaction
    (record a result to deliver, a notification seen ...), so that both happen or neither.

    A file over the size limit, an empty file or a duplicate (same SHA-256 already submitted for the
    campaign) is not queued: the answer says so and nothing is kept. An error of ``parts`` itself (a
    connection cut half-way) is raised after the chunks written so far are deleted."""
    max_bytes = ctx.settings.max_file_bytes
    actor = channel_actor(account_id, channel, actor_name)
    try:
        stored = files.store_stream(ctx.engine, parts, max_bytes=max_bytes)
    except PayoutdeskError as exc:  # FileTooLarge
        logs.event(log, f"{channel.value}: {file_name} refused for campaign {campaign_id}: {exc.detail}",
                   level=logging.WARNING, event="file_refused", channel=channel.value, campaign=campaign_id,
                   file_name=file_name, code=exc.code)
        return Taken("refused", exc.detail)
    try:
        with db.write(ctx.engine) as conn:
            sub = service.create(conn, actor, campaign_id, stored, file_name=file_name, content_type=content_type,
                                 max_bytes=max_bytes,
                                 force_hint="send it through the API or the pages with force=true")
            if after_queued is not None:
                after_queued(conn, sub)
    except DuplicateFile as exc:
        first = exc.extra.get("first_submission")
        logs.event(log, f"{channel.value}: {file_name} for campaign {campaign_id} is a duplicate of {first}",
                   event="file_duplicate", channel=channel.value, campaign=campaign_id, file_name=file_name,
                   first_submission=first)
        return Taken("duplicate", exc.detail, first_submission=str(first) if first else None,
                     sha256=stored.sha256, size=stored.size)
    except PayoutdeskError as exc:  # the empty file, a campaign that went away
        logs.event(log, f"{channel.value}: {file_name} refused for campaign {campaign_id}: {exc.detail}",
                   level=logging.WARNING, event="file_refused", channel=channel.value, campaign=campaign_id,
                   file_name=file_name, code=exc.code)
        return Taken("refused", exc.detail, sha256=stored.sha256, size=stored.size)
    finally:
        files.discard(ctx.engine, stored.id)  # deletes it only when no submission uses it
    logs.event(log, f"{channel.value}: {file_name} ({stored.size:,} bytes) taken for campaign {campaign_id} "
               f"as {sub['id']}", event="file_taken", channel=channel.value, campaign=campaign_id,
               file_name=file_name, size=stored.size, submission=sub["id"], actor=actor.name)
    return Taken("queued", f"queued as {sub['id']}", submission=sub, sha256=stored.sha256, size=stored.size)
