"""Login, logout, the current user and personal API tokens."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, HTTPException, Request, Response, status
from sqlalchemy import select

from backend.api.deps import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    AuditDep,
    CurrentUser,
    Public,
    SessionDep,
    SettingsDep,
)
from backend.core.config import Settings
from backend.core.security import csrf_token_for
from backend.models import ApiToken, User
from backend.schemas.user import (
    LoginRequest,
    LoginResponse,
    PasswordChange,
    TokenCreate,
    TokenCreated,
    TokenPublic,
    UserPublic,
)
from backend.services.users import (
    authenticate,
    issue_token,
    login_delay,
    record_login,
    resolve_token,
    revoke_token,
    set_password,
)

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/login", operation_id="login", dependencies=[Public])
def login(
    body: LoginRequest,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
) -> LoginResponse:
    """Log in; returns a bearer token and sets the session and CSRF cookies for the browser.

    Too many failed attempts for a username from one address within the window give 429; an
    address with many failures (any usernames) backs off exponentially (429 with Retry-After).
    """
    client_ip = request.client.host if request.client else ""
    wait = login_delay(
        session,
        username=body.username,
        client_ip=client_ip,
        max_failures=settings.login_max_failures,
        address_max_failures=settings.login_address_max_failures,
        window_seconds=settings.login_window_seconds,
    )
    if wait > 0:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail="too many failed logins; try again later",
            headers={"Retry-After": str(wait)},
        )
    user = authenticate(session, username=body.username, password=body.password)
    record_login(session, username=body.username, client_ip=client_ip, succeeded=user is not None)
    session.commit()
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="wrong username or password")
    token = _new_session(session, settings, response, user)
    return LoginResponse(access_token=token, user=UserPublic.model_validate(user))


def _new_session(session: SessionDep, settings: Settings, response: Response, user: User) -> str:
    """Issue a session token for ``user``, set its cookies on ``response``, return it."""
    lifetime = timedelta(hours=settings.session_hours)
    _, token = issue_token(session, user=user, kind="session", lifetime=lifetime)
    session.commit()
    max_age = int(lifetime.total_seconds())
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        httponly=True,
        secure=settings.secure_cookies,
        samesite="strict",
    )
    response.set_cookie(
        CSRF_COOKIE,
        csrf_token_for(token, settings.secret()),
        max_age=max_age,
        httponly=False,
        secure=settings.secure_cookies,
        samesite="strict",
    )
    return token


@router.post("/password", operation_id="changePassword")
def change_password(
    body: PasswordChange,
    response: Response,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    audit: AuditDep,
) -> LoginResponse:
    """Change the current user's password.

    Every session and personal token of the user is revoked, the one this request used too;
    the answer carries a new session (token and cookies) so that this browser stays logged in.
    """
    if authenticate(session, username=user.username, password=body.current_password) is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="the current password is wrong")
    revoked = set_password(session, user, body.new_password)
    audit.event(
        "password_change",
        "user",
        object_id=user.id,
        detail=f"{user.username}: password changed, {revoked} sessions/tokens revoked",
    )
    token = _new_session(session, settings, response, user)
    return LoginResponse(access_token=token, user=UserPublic.model_validate(user))


@router.post("/logout", operation_id="logout", status_code=204)
def logout(request: Request, response: Response, user: CurrentUser, session: SessionDep) -> None:
    """Revoke the token this request was made with and clear the cookies."""
    header = request.headers.get("authorization", "")
    token = header.partition(" ")[2] if header else request.cookies.get(SESSION_COOKIE, "")
    resolved = resolve_token(session, token)
    if resolved is not None:
        revoke_token(session, resolved[1])
        session.commit()
    response.delete_cookie(SESSION_COOKIE)
    response.delete_cookie(CSRF_COOKIE)


@router.get("/me", operation_id="readMe")
def read_me(user: CurrentUser) -> UserPublic:
    """The logged-in user."""
    return UserPublic.model_validate(user)


@router.post("/tokens", operation_id="createToken", status_code=201)
def create_token(body: TokenCreate, user: CurrentUser, session: SessionDep) -> TokenCreated:
    """A personal API token for scripts; its value is shown once."""
    lifetime = timedelta(days=body.expires_in_days) if body.expires_in_days else None
    row, token = issue_token(session, user=user, kind="personal", name=body.name, lifetime=lifetime)
    session.commit()
    return TokenCreated.model_validate(
        {**TokenPublic.model_validate(row).model_dump(), "token": token}
    )


@router.get("/tokens", operation_id="listTokens")
def list_tokens(user: CurrentUser, session: SessionDep) -> list[TokenPublic]:
    """The current user's personal tokens (never their values)."""
    rows = session.scalars(
        select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.kind == "personal")
    )
    return [TokenPublic.model_validate(r) for r in rows]


@router.delete("/tokens/{token_id}", operation_id="revokeToken", status_code=204)
def delete_token(token_id: int, user: CurrentUser, session: SessionDep) -> None:
    """Revoke one of the current user's tokens."""
    row = session.get(ApiToken, token_id)
    if row is None or row.user_id != user.id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"token {token_id} not found")
    revoke_token(session, row)
    session.commit()


__all__ = ["router"]
