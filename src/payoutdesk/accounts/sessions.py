"""The pages' sign-ins: a user's password opens a session; the browser keeps a random token.

The table keeps the token's SHA-256 (``web_sessions``), so a copy of the database signs nobody in.
A session lasts ``LIFETIME``; signing out deletes it, and a sign-in deletes the user's expired ones.
Every form of a session carries its ``csrf_token`` (web/session.py checks it).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from functools import cache

from sqlalchemy import Connection, delete, insert, select

from payoutdesk.accounts.service import AccountRef, hash_password, hash_token, verify_password
from payoutdesk.errors import Unauthorized
from payoutdesk.kit.time import utcnow
from payoutdesk.models import accounts, users, web_sessions

LIFETIME = timedelta(hours=12)


@cache
def _unknown_user_hash() -> str:
    """Verified when the e-mail is unknown, so that the answer takes as long either way."""
    return hash_password("no such user: the time of a real check")


@dataclass(frozen=True)
class SignedIn:
    """A signed-in user of the pages: who, in which account, with which role, and the form token."""

    user_id: int
    email: str
    role: str  # admin | manager | viewer (accounts.service.ROLES)
    account: AccountRef
    csrf_token: str

    @property
    def can_change(self) -> bool:
        """Managers and admins change actions and submissions; viewers only look."""
        return self.role in ("admin", "manager")

    @property
    def is_admin(self) -> bool:
        """Admins also change the settings (event types, returns processing) and the users."""
        return self.role == "admin"


@dataclass(frozen=True)
class Opened:
    token: str  # for the cookie; never stored
    user: SignedIn


def open_session(conn: Connection, email: str, password: str) -> Opened:
    """Check ``email`` and ``password``; a new session for that user (``Unauthorized`` otherwise)."""
    row = conn.execute(
        select(users.c.id, users.c.email, users.c.role, users.c.password_hash, accounts.c.id.label("account_id"),
               accounts.c.sid, accounts.c.name)
        .join(accounts, accounts.c.id == users.c.account_id)
        .where(users.c.email == email.strip().lower())
    ).first()
    ok = verify_password(row.password_hash if row is not None else _unknown_user_hash(), password)
    if row is None or not ok:
        raise Unauthorized("The e-mail address or the password is wrong.")
    now = utcnow()
    conn.execute(delete(web_sessions).where(web_sessions.c.user_id == row.id, web_sessions.c.expires_at <= now))
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    conn.execute(insert(web_sessions).values(token_hash=hash_token(token), user_id=row.id, csrf_token=csrf,
                                             created_at=now, expires_at=now + LIFETIME))
    user = SignedIn(row.id, row.email, row.role, AccountRef(row.account_id, row.sid, row.name), csrf)
    return Opened(token, user)


def session_user(conn: Connection, token: str) -> SignedIn | None:
    """The user whose unexpired session ``token`` opened; None for anything else."""
    if not token or len(token) > 100:
        return None
    row = conn.execute(
        select(web_sessions.c.csrf_token, web_sessions.c.expires_at, users.c.id, users.c.email, users.c.role,
               accounts.c.id.label("account_id"), accounts.c.sid, accounts.c.name)
        .join(users, users.c.id == web_sessions.c.user_id)
        .join(accounts, accounts.c.id == users.c.account_id)
        .where(web_sessions.c.token_hash == hash_token(token))
    ).first()
    if row is None or row.expires_at <= utcnow():
        return None
    return SignedIn(row.id, row.email, row.role, AccountRef(row.account_id, row.sid, row.name), row.csrf_token)


def close_session(conn: Connection, token: str) -> None:
    """Sign out: the session of ``token`` ends (nothing happens for an unknown token)."""
    conn.execute(delete(web_sessions).where(web_sessions.c.token_hash == hash_token(token)))


def same_token(expected: str, given: str | None) -> bool:
    """``given`` is the form token ``expected`` (in constant time)."""
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())
