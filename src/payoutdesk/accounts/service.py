"""Accounts and users: creation, credentials, authentication."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, insert, select, update

from payoutdesk.errors import Conflict, NotFound, Unauthorized, ValidationFailed
from payoutdesk.kit.time import utcnow
from payoutdesk.models import accounts, users

ROLES = ("admin", "manager", "viewer")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_hasher = PasswordHasher()


@dataclass(frozen=True)
class AccountRef:
    id: int
    sid: str
    name: str


@dataclass(frozen=True)
class NewAccount:
    account: AccountRef
    auth_token: str


def hash_token(token: str) -> str:
    """API tokens are long random strings: a SHA-256 is enough and keeps requests fast."""
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str) -> str:
    return str(_hasher.hash(password))


def verify_password(stored: str, password: str) -> bool:
    try:
        return bool(_hasher.verify(stored, password))
    except (VerificationError, InvalidHashError):
        return False


def create_account(conn: Connection, name: str) -> NewAccount:
    name = name.strip()
    if not name:
        raise ValidationFailed("An account needs a name.")
    sid = "IR" + secrets.token_hex(15).upper()
    token = secrets.token_urlsafe(30)
    account_id = conn.execute(
        insert(accounts).values(sid=sid, name=name, token_hash=hash_token(token), created_at=utcnow())
    ).inserted_primary_key[0]  # type: ignore[index]
    return NewAccount(AccountRef(int(account_id), sid, name), token)


def rotate_token(conn: Connection, sid: str) -> NewAccount:
    """Give the account a new auth token; the old one stops working. A running API server that
    signed the old token in during the last 10 seconds remembers that sign-in for the rest of
    those seconds (its ``SignIns``), or until the new token is used there: docs/OPERATIONS.md."""
    account = account_by_sid(conn, sid)
    token = secrets.token_urlsafe(30)
    conn.execute(update(accounts).where(accounts.c.id == account.id).values(token_hash=hash_token(token)))
    return NewAccount(account, token)


def account_by_sid(conn: Connection, sid: str) -> AccountRef:
    row = conn.execute(select(accounts.c.id, accounts.c.sid, accounts.c.name).where(accounts.c.sid == sid)).first()
    if row is None:
        raise NotFound(f"No account with SID '{sid}'.")
    return AccountRef(row.id, row.sid, row.name)


def authenticate_token(conn: Connection, sid: str, token: str) -> AccountRef:
    row = conn.execute(select(accounts).where(accounts.c.sid == sid)).first()
    # compare even when the account does not exist, so timing tells nothing
    expected = row.token_hash if row is not None else "0" * 64
    if not hmac.compare_digest(expected, hash_token(token)) or row is None:
        raise Unauthorized("The Account SID or auth token is wrong.")
    return AccountRef(row.id, row.sid, row.name)


def add_user(conn: Connection, account_sid: str, email: str, role: str, password: str | None) -> tuple[str, str]:
    """Add a user; returns (email, password) where the password is generated when not given."""
    account = account_by_sid(conn, account_sid)
    email = email.strip().lower()
    if not _EMAIL_RE.match(email):
        raise ValidationFailed(f"'{email}' is not an e-mail address.")
    if role not in ROLES:
        raise ValidationFailed(f"Role must be one of {', '.join(ROLES)}, not '{role}'.")
    if password is None:
        password = secrets.token_urlsafe(12)
    if len(password) < 8:
        raise ValidationFailed("A password needs at least 8 characters.")
    if conn.execute(select(users.c.id).where(users.c.email == email)).first() is not None:
        raise Conflict(f"A user with e-mail {email} exists already.")
    conn.execute(
        insert(users).values(
            account_id=account.id, email=email, password_hash=hash_password(password), role=role,
            created_at=utcnow(),
        )
    )
    return email, password


@dataclass(frozen=True)
class UserRow:
    id: int
    email: str
    role: str


def list_users(conn: Connection, account_id: int) -> list[UserRow]:
    """The account's users, by e-mail address."""
    rows = conn.execute(select(users.c.id, users.c.email, users.c.role).where(users.c.account_id == account_id)
                        .order_by(users.c.email))
    return [UserRow(r.id, r.email, r.role) for r in rows]


def set_role(conn: Connection, account_id: int, user_id: int, role: str, *, by_user_id: int | None = None) -> UserRow:
    """Give a user of the account another role; ``by_user_id`` (who asks) cannot change their own, so that
    an account never loses its last admin by a slip."""
    if role not in ROLES:
        raise ValidationFailed(f"Role must be one of {', '.join(ROLES)}, not '{role}'.")
    row = conn.execute(select(users.c.id, users.c.email).where(users.c.id == user_id,
                                                               users.c.account_id == account_id)).first()
    if row is None:
        raise NotFound(f"No user with id {user_id}.")
    if by_user_id == user_id:
        raise Conflict("You cannot change your own role; ask another admin of your account.")
    conn.execute(update(users).where(users.c.id == user_id).values(role=role))
    return UserRow(row.id, row.email, role)
