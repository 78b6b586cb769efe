"""Users (site admins only): create, list, deactivate, reset a password."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from backend.api.deps import Admin, AuditDep, SessionDep
from backend.models import User
from backend.schemas.user import UserCreate, UserPublic, UsersPublic, UserUpdate
from backend.services.errors import Conflict, NotFound
from backend.services.users import create_user as create
from backend.services.users import set_active, set_password

router = APIRouter(prefix="/users", tags=["users"])


@router.get("", operation_id="listUsers")
def list_users(admin: Admin, session: SessionDep) -> UsersPublic:
    """All users."""
    users = session.scalars(select(User).order_by(User.id)).all()
    return UsersPublic(data=[UserPublic.model_validate(u) for u in users], count=len(users))


@router.post("", operation_id="createUser", status_code=201)
def create_user(body: UserCreate, admin: Admin, session: SessionDep, audit: AuditDep) -> UserPublic:
    """Create a user with a site role (admins create projects and manage users)."""
    user = create(session, username=body.username, password=body.password, role=body.role)
    audit.event("user_create", "user", object_id=user.id, detail=f"{user.username} as {user.role}")
    return UserPublic.model_validate(user)


@router.patch("/{user_id}", operation_id="updateUser")
def update_user(
    user_id: int, body: UserUpdate, admin: Admin, session: SessionDep, audit: AuditDep
) -> UserPublic:
    """Deactivate or reactivate a user, or set a new password (both revoke their tokens)."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    if body.is_active is False and user.id == admin.id:
        raise Conflict("you cannot deactivate yourself; another site admin can")
    if body.is_active is not None and body.is_active != user.is_active:
        revoked = set_active(session, user, body.is_active)
        action = "user_activate" if body.is_active else "user_deactivate"
        audit.event(
            action,
            "user",
            object_id=user.id,
            detail=f"{user.username}: {revoked} sessions/tokens revoked",
            commit=False,
        )
    if body.password is not None:
        revoked = set_password(session, user, body.password)
        audit.event(
            "password_reset",
            "user",
            object_id=user.id,
            detail=f"{user.username}: new password set, {revoked} sessions/tokens revoked",
            commit=False,
        )
    session.commit()
    return UserPublic.model_validate(session.get(User, user_id))
