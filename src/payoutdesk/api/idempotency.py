"""Idempotency-Key on POST: the same key answers the first answer and changes nothing.

The stored answer is written in the same transaction as the effect, so a request is either
done and remembered, or neither.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, insert, select
from sqlalchemy.exc import IntegrityError

from payoutdesk.errors import IdempotencyKeyReused, ValidationFailed, quote
from payoutdesk.kit import db
from payoutdesk.kit.time import utcnow
from payoutdesk.models import idempotency_keys

Handler = Callable[[Connection], tuple[int, Any]]


def dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def fingerprint(method: str, path: str, body: Any) -> str:
    return hashlib.sha256(dumps([method, path, body])).hexdigest()


def _stored(conn: Connection, account_id: int, key: str) -> Any:
    return conn.execute(
        select(idempotency_keys).where(idempotency_keys.c.account_id == account_id, idempotency_keys.c.key == key)
    ).first()


def run(
    engine: Engine, account_id: int, key: str | None, request_hash: str, handler: Handler, *, wait: bool = True
) -> tuple[int, bytes, bool]:
    """Run a write; returns (status, body, replayed). ``wait=False``: see ``db.transaction``."""
    if key is None:
        status, payload = db.transaction(engine, handler, wait=wait)
        return status, dumps(payload), False
    if not key.strip() or len(key) > 255 or not key.isprintable():
        raise ValidationFailed("Idempotency-Key must be 1 to 255 printable characters.")

    def unit(conn: Connection) -> tuple[int, bytes, bool]:
        row = _stored(conn, account_id, key)
        if row is not None:
            return _replay(row, request_hash, key)
        status, payload = handler(conn)
        body = dumps(payload)
        conn.execute(
            insert(idempotency_keys).values(
                account_id=account_id, key=key, request_hash=request_hash, status=status, body=body,
                created_at=utcnow(),
            )
        )
        return status, body, False

    try:
        return db.transaction(engine, unit, wait=wait)
    except IntegrityError:
        # another request with the same key won the race; answer what it answered
        with db.read(engine) as conn:
            row = _stored(conn, account_id, key)
        if row is None:
            raise
        return _replay(row, request_hash, key)


def _replay(row: Any, request_hash: str, key: str) -> tuple[int, bytes, bool]:
    if row.request_hash != request_hash:
        raise IdempotencyKeyReused(
            f"Idempotency-Key {quote(key)} was first used for another request; use a new key for a new request."
        )
    return int(row.status), bytes(row.body), True
