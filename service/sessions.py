"""Admin sessions, after the Copenhagen Book: random tokens, only their hash stored, sliding expiry.

Every function here is a sync ``db_session`` function: call it through ``run_in_threadpool``
from async code. ``now`` is integer unix seconds from the caller's clock.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from service.db import Session, User, db_session
from service.passwords import AdminPassword

SESSION_SECONDS = 30 * 24 * 3600
# A session used when less than this remains is pushed back to the full length.
EXTEND_WHEN_UNDER = SESSION_SECONDS // 2
TOKEN_PREFIX = "pbs_"


@dataclass(frozen=True)
class IssuedSession:
    """A new session: the token goes to the client once and is never stored."""

    token: str
    expires_at: int


@dataclass(frozen=True)
class ValidSession:
    """A session that a token proved, after any sliding extension."""

    id: str
    user_id: str
    expires_at: int
    extended: bool


def new_token() -> str:
    """A fresh session token: 256 random bits behind a prefix that log redaction recognises."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The stored id of a session: the SHA-256 hex of its token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@db_session
def create_session(password: AdminPassword, now: int) -> IssuedSession:
    """Start a new session for the admin, creating the admin user on the first login."""
    user = User.select().first()
    if user is None:
        user = User(id=str(uuid.uuid4()), password_hash=password.storage_hash())
    token = new_token()
    expires_at = now + SESSION_SECONDS
    Session(id=hash_token(token), user=user, expires_at=expires_at)
    return IssuedSession(token=token, expires_at=expires_at)


@db_session
def validate_session(token: str, now: int) -> ValidSession | None:
    """Return the session ``token`` proves, extending it when under half its life remains.

    An expired session is refused and removed.
    """
    row = Session.get(id=hash_token(token))
    if row is None:
        return None
    if row.expires_at <= now:
        row.delete()
        return None
    extended = row.expires_at - now < EXTEND_WHEN_UNDER
    if extended:
        row.expires_at = now + SESSION_SECONDS
    return ValidSession(
        id=row.id, user_id=row.user.id, expires_at=row.expires_at, extended=extended
    )


@db_session
def delete_session(session_id: str) -> None:
    """End one session (logout)."""
    row = Session.get(id=session_id)
    if row is not None:
        row.delete()


@db_session
def delete_expired_sessions(now: int) -> int:
    """Remove every session that has expired; return how many."""
    return int(Session.select(lambda s: s.expires_at <= now).delete(bulk=True))


@db_session
def end_sessions_if_password_changed(password: AdminPassword) -> bool:
    """End every session when the admin password is not the one they were issued under.

    Returns True when sessions were ended. Called at web start, where the password is read.
    """
    user = User.select().first()
    if user is None or password.is_stored_as(user.password_hash):
        return False
    Session.select().delete(bulk=True)
    user.password_hash = password.storage_hash()
    return True
