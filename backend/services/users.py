"""Users, passwords and bearer tokens."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.core.security import hash_password, hash_token, new_token, verify_password
from backend.models import ApiToken, LoginAttempt, Project, ProjectMember, Role, User
from backend.services.errors import Conflict

__all__ = [
    "authenticate",
    "create_user",
    "ensure_admin",
    "issue_token",
    "login_blocked",
    "record_login",
    "resolve_token",
    "revoke_token",
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
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        # Spend the same time as a real check so usernames cannot be probed by timing.
        verify_password(password, hash_password("not-a-user"))
        return None
    if not user.is_active or not verify_password(password, user.password_hash):
        return None
    return user


def login_blocked(
    session: Session, *, username: str, client_ip: str, max_failures: int, window_seconds: int
) -> bool:
    """Too many failed logins for this username, or from this address, within the window."""
    since = datetime.now(UTC) - timedelta(seconds=window_seconds)
    failures = select(func.count(LoginAttempt.id)).where(
        LoginAttempt.succeeded.is_(False), LoginAttempt.created_at >= since
    )
    by_user = session.scalar(failures.where(LoginAttempt.username == username)) or 0
    by_ip = session.scalar(failures.where(LoginAttempt.client_ip == client_ip)) or 0
    # An address may try several usernames; allow it a few times the per-user budget.
    return by_user >= max_failures or by_ip >= 4 * max_failures


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


def resolve_token(session: Session, plain: str) -> tuple[User, ApiToken] | None:
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(plain)))
    if row is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None:
        expires = row.expires_at
        if expires.tzinfo is None:  # SQLite hands back naive datetimes
            expires = expires.replace(tzinfo=UTC)
        if expires <= datetime.now(UTC):
            return None
    user = session.get(User, row.user_id)
    if user is None or not user.is_active:
        return None
    return user, row


def revoke_token(session: Session, token: ApiToken) -> None:
    token.revoked_at = datetime.now(UTC)
