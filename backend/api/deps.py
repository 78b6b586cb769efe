"""Annotated dependencies so that every route reads like its intent."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Annotated, TypeVar

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from backend.core.config import Settings, get_settings
from backend.core.db import new_session, session_scope
from backend.core.security import csrf_token_for
from backend.models import Role, User
from backend.services import audit
from backend.services.projects import READ, project_of, require_object
from backend.services.users import resolve_token
from backend.storage import Storage, get_storage

__all__ = [
    "SESSION_COOKIE",
    "CSRF_COOKIE",
    "CurrentUser",
    "SessionDep",
    "SettingsDep",
    "get_db",
    "StorageDep",
    "Admin",
    "AuditDep",
    "Auditor",
    "Public",
    "Writer",
    "authenticates_in_body",
    "authorize",
    "not_authenticated",
    "request_token",
    "credentials_problem",
    "public_route",
    "require_roles",
]

SESSION_COOKIE = "attrivue_session"
CSRF_COOKIE = "attrivue_csrf"
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


async def get_db() -> AsyncIterator[Session]:
    """One session per request; routes commit explicitly.

    Async so that it costs no trip through the threadpool: making a session touches no
    database (it connects at its first query, in the route's thread). At the end, a session
    that still holds a connection is closed in the threadpool (closing rolls back: I/O); one
    that holds none (never used, or closed by the route) is closed here.
    """
    session = new_session()
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()


async def _settings() -> Settings:
    # Async: reading the cached settings needs no threadpool trip.
    return get_settings()


SessionDep = Annotated[Session, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(_settings)]


def _storage(settings: SettingsDep) -> Storage:
    return get_storage(settings)


StorageDep = Annotated[Storage, Depends(_storage)]


def _unauthorised(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


_BAD_TOKEN = "the token is invalid, expired or revoked"


def _credentials(connection: HTTPConnection) -> tuple[str, bool]:
    """The request's token and whether it came from the session cookie; 401 if none."""
    header = connection.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _unauthorised("the Authorization header must be 'Bearer <token>'")
        return token, False
    token = connection.cookies.get(SESSION_COOKIE, "")
    if not token:
        raise _unauthorised("not logged in")
    return token, True


def request_token(connection: HTTPConnection) -> str:
    """The request's bearer token or session cookie (401 as ``current_user`` answers if none)."""
    return _credentials(connection)[0]


def not_authenticated() -> HTTPException:
    """``current_user``'s 401 for a token that is unknown, expired or revoked."""
    return _unauthorised(_BAD_TOKEN)


# The endpoints that authenticate in their own body instead of through ``current_user``.
SELF_AUTHENTICATED: set[Callable[..., object]] = set()


_Endpoint = TypeVar("_Endpoint", bound=Callable[..., object])


def authenticates_in_body(endpoint: _Endpoint) -> _Endpoint:
    """Marks a route whose body makes ``current_user``'s check itself (``request_token``, a
    query that resolves it, ``not_authenticated``), so that a hot route reads the token and
    its data in one query and one threadpool trip. Safe methods only: no CSRF check here.

    tests/backend/test_route_access.py accepts exactly the routes it lists as marked.
    """
    SELF_AUTHENTICATED.add(endpoint)
    return endpoint


def credentials_problem(connection: HTTPConnection) -> str | None:
    """None when the request's token resolves to a user, else why not (the 401 message).

    The check ``RequestGate`` makes before a protected route's body is read; the route's
    ``current_user`` makes it again, with the CSRF check, once the request is admitted.
    """
    try:
        token, _ = _credentials(connection)
    except HTTPException as exc:
        return str(exc.detail)
    with session_scope() as session:
        return None if resolve_token(session, token) is not None else _BAD_TOKEN


def current_user(request: Request, session: SessionDep, settings: SettingsDep) -> User:
    """The user behind a bearer token (scripts) or the session cookie (the browser)."""
    token, from_cookie = _credentials(request)
    resolved = resolve_token(session, token)
    if resolved is None:
        raise _unauthorised(_BAD_TOKEN)
    if from_cookie and request.method not in _SAFE_METHODS:
        # A cookie is sent by the browser on cross-site requests too: demand the CSRF header.
        sent = request.headers.get("x-csrf-token", "")
        expected = csrf_token_for(token, settings.secret())
        if not hmac.compare_digest(sent, expected):
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail="missing or bad CSRF token")
    return resolved[0]


CurrentUser = Annotated[User, Depends(current_user)]


def require_roles(*roles: Role) -> Callable[[User], User]:
    allowed = {r.value for r in roles}

    def check(user: CurrentUser) -> User:
        if user.role not in allowed:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"this action needs one of the roles: {', '.join(sorted(allowed))}",
            )
        return user

    return check


def authorize(session: Session, user: User, obj: object, roles: Iterable[str] = READ) -> None:
    """Check the user's role in the project that ``obj`` belongs to.

    Outsiders get 404 with the same message as for an id that does not exist.
    """
    require_object(session, user, obj, roles)


Writer = Annotated[User, Depends(require_roles(Role.admin, Role.researcher))]
Admin = Annotated[User, Depends(require_roles(Role.admin))]


def public_route() -> None:
    """The marker of a route that needs no login (health, login, the browser app).

    Every other route depends on ``current_user``; tests/backend/test_route_access.py walks
    the app's routes and fails on one that has neither.
    """


Public = Depends(public_route)


class Auditor:
    """Writes the audit events of one request: who did what to which object."""

    def __init__(self, request: Request, session: Session, user: User) -> None:
        self.session = session
        self.user = user
        self.client_ip = request.client.host if request.client else ""

    def __call__(self, action: str, obj: object, *, detail: str = "", commit: bool = True) -> None:
        """Record ``action`` on a subject, attribution map or review (and commit)."""
        obj_id = getattr(obj, "id", None)
        self.event(
            action,
            _OBJECT_TYPES.get(type(obj).__name__, type(obj).__name__.lower()),
            object_id=obj_id if isinstance(obj_id, int) else None,
            project_id=project_of(self.session, obj),
            detail=detail,
            commit=commit,
        )

    def event(
        self,
        action: str,
        object_type: str,
        *,
        object_id: int | None = None,
        project_id: int | None = None,
        detail: str = "",
        commit: bool = True,
    ) -> None:
        audit.record(
            self.session,
            user=self.user,
            action=action,
            object_type=object_type,
            object_id=object_id,
            project_id=project_id,
            detail=detail,
            client_ip=self.client_ip,
        )
        if commit:
            self.session.commit()


_OBJECT_TYPES = {"AttributionMap": "attribution", "Subject": "subject", "Review": "review"}


def _auditor(request: Request, session: SessionDep, user: CurrentUser) -> Auditor:
    return Auditor(request, session, user)


AuditDep = Annotated[Auditor, Depends(_auditor)]
