"""Users (site admins only)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from backend.api.deps import Admin, SessionDep
from backend.models import User
from backend.schemas.user import UserCreate, UserPublic, UsersPublic
from backend.services.users import create_user as create

router = APIRouter(prefix="/users", tags=["users"])


@router.get("", operation_id="listUsers")
def list_users(admin: Admin, session: SessionDep) -> UsersPublic:
    """All users."""
    users = session.scalars(select(User).order_by(User.id)).all()
    return UsersPublic(data=[UserPublic.model_validate(u) for u in users], count=len(users))


@router.post("", operation_id="createUser", status_code=201)
def create_user(body: UserCreate, admin: Admin, session: SessionDep) -> UserPublic:
    """Create a user with a site role (admins create projects and manage users)."""
    user = create(session, username=body.username, password=body.password, role=body.role)
    session.commit()
    return UserPublic.model_validate(user)
