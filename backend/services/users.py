"""Users, passwords and bearer tokens."""

from __future__ import annotations

import math
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from backend.core.security import (
    dummy_password_hash,
    hash_password,
    hash_token,
    new_token,
    verify_password,
)
from backend.models import ApiToken, LoginAttempt, Project, ProjectMember, Role, User
from backend.services.errors import Conflict

__all__ = [
    "authenticate",
    "create_user",
    "ensure_admin",
    "issue_token",
    "login_delay",
    "record_login",
    "resolve_token",
    "revoke_all_tokens",
    "revoke_token",
    "set_active",
    "set_password",
    "token_is_live",
]


def create_user(session: Session, *, username: str, password: str, role: str) -> User:
    if session.scalar(select(User).where(User.username == username)) is not None:
        raise Conflict(f"user {username!r} already exists")
    user = User(username=username, password_hash=hash_password(password), role=Role(role).value)
    session.add(user)
    session.flush()
    return user


def ensure_admin(session: Session) -> tuple[User, str] | None:
    """Create the first admin when there are no users; returns it with its new password."""
    if session.scalar(select(func.count(User.id))):
        return None
    password = secrets.token_urlsafe(12)
    user = create_user(session, username="admin", password=password, role=Role.admin.value)
    # Projects made before the first user (the demo dataset's) get the admin as their admin.
    for project_id in session.scalars(select(Project.id)):
        session.add(ProjectMember(project_id=project_id, user_id=user.id, role="admin"))
    session.flush()
    return user, password


def authenticate(session: Session, *, username: str, password: str) -> User | None:
    """The active user with this username and password, or None.

    Every attempt verifies exactly one argon2 hash, the user's or a fixed dummy one, so that
    the time taken does not tell unknown, inactive and known usernames apart.
    """
    user = session.scalar(select(User).where(User.username == username))
    stored = user.password_hash if user is not None else dummy_password_hash()
    matches = verify_password(password, stored)
    if user is None or not matches or not user.is_active:
        return None
    return user


def login_delay(
    session: Session,
    *,
    username: str,
    client_ip: str,
    max_failures: int,
    address_max_failures: int,
    window_seconds: int,
) -> int:
    """Seconds the login attempt must wait (0: go ahead).

    Failures count per (address, username): guessing one account from one address stops after
    ``max_failures`` in the window, without locking that user out elsewhere. An address with
    more than ``address_max_failures`` failures in the window (whatever the usernames) backs
    off exponentially from its latest failure (1, 2, 4 ... seconds, at most the window): that
    slows a guesser behind a shared address to a trickle, while the other users behind it
    still get in between its attempts instead of being locked out.
    """
    now = datetime.now(UTC)
    since = now - timedelta(seconds=window_seconds)
    failures = select(func.count(LoginAttempt.id)).where(
        LoginAttempt.succeeded.is_(False),
        LoginAttempt.created_at >= since,
        LoginAttempt.client_ip == client_ip,
    )
    by_pair = session.scalar(failures.where(LoginAttempt.username == username)) or 0
    if by_pair >= max_failures:
        return window_seconds
    by_address = session.scalar(failures) or 0
    if by_address < address_max_failures:
        return 0
    latest = session.scalar(
        select(func.max(LoginAttempt.created_at)).where(
            LoginAttempt.succeeded.is_(False),
            LoginAttempt.created_at >= since,
            LoginAttempt.client_ip == client_ip,
        )
    )
    if latest is None:
        return 0
    if latest.tzinfo is None:  # SQLite hands back naive datetimes
        latest = latest.replace(tzinfo=UTC)
    backoff = min(window_seconds, 2 ** min(by_address - address_max_failures, 30))
    remaining = (latest + timedelta(seconds=backoff) - now).total_seconds()
    return max(0, math.ceil(remaining))


def record_login(session: Session, *, username: str, client_ip: str, succeeded: bool) -> None:
    session.add(LoginAttempt(username=username, client_ip=client_ip, succeeded=succeeded))
    session.flush()


def issue_token(
    session: Session, *, user: User, kind: str, name: str = "", lifetime: timedelta | None
) -> tuple[ApiToken, str]:
    """A new bearer token; the plain value is returned once and only its hash is kept."""
    plain = new_token()
    expires = datetime.now(UTC) + lifetime if lifetime else None
    row = ApiToken(
        user_id=user.id, token_hash=hash_token(plain), kind=kind, name=name, expires_at=expires
    )
    session.add(row)
    session.flush()
    return row, plain


# Made once: every authenticated request runs it (its parameter is bound at execution).
_TOKEN_AND_USER = (
    select(ApiToken, User)
    .join(User, User.id == ApiToken.user_id)
    .where(ApiToken.token_hash == bindparam("token_hash"))
)


def resolve_token(session: Session, plain: str) -> tuple[User, ApiToken] | None:
    """The active user behind a live token, and the token; None otherwise (one query)."""
    found = session.execute(_TOKEN_AND_USER, {"token_hash": hash_token(plain)}).first()
    if found is None:
        return None
    row, user = found
    if not token_is_live(row.revoked_at, row.expires_at, user.is_active):
        return None
    return user, row


def token_is_live(
    revoked_at: datetime | None, expires_at: datetime | None, user_active: bool
) -> bool:
    """Whether a token with these columns authenticates: not revoked, not expired, and its
    user active (``resolve_token``'s decision, also for queries that read columns only)."""
    if revoked_at is not None:
        return False
    if expires_at is not None:
        if expires_at.tzinfo is None:  # SQLite hands back naive datetimes
            expires_at = expires_at.replace(tzinfo=UTC)
        if expires_at <= datetime.now(UTC):
            return False
    return bool(user_active)


def revoke_token(session: Session, token: ApiToken) -> None:
    token.revoked_at = datetime.now(UTC)


def revoke_all_tokens(session: Session, user: User) -> int:
    """Revoke every live session and personal token of ``user``; how many were revoked."""
    result = session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
        .execution_options(synchronize_session=False)
    )
    session.expire_all()
    return int(getattr(result, "rowcount", 0) or 0)


def set_password(session: Session, user: User, password: str) -> int:
    """Give ``user`` a new password and revoke all their sessions and tokens (returns how many).

    The caller issues a fresh session for the request that changed it, if it should go on.
    """
    user.password_hash = hash_password(password)
    session.flush()
    return revoke_all_tokens(session, user)


def set_active(session: Session, user: User, active: bool) -> int:
    """Activate or deactivate ``user``; deactivating revokes all their sessions and tokens.

    A deactivated user cannot log in, and ``resolve_token`` refuses their tokens anyway.
    """
    user.is_active = active
    session.flush()
    return 0 if active else revoke_all_tokens(session, user)
