from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from backend.schemas.common import ORMModel

RoleName = Literal["admin", "researcher", "clinician"]


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class UserPublic(ORMModel):
    id: int
    username: str
    role: RoleName
    is_active: bool = True


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=10, max_length=256)


class UserUpdate(BaseModel):
    """A site admin's change to a user; omitted fields stay as they are."""

    is_active: bool | None = Field(
        default=None, description="false: the user cannot log in and all their tokens fail"
    )
    password: str | None = Field(
        default=None,
        min_length=10,
        max_length=256,
        description="a new password; revokes all the user's sessions and tokens",
    )


class UserCreate(BaseModel):
    username: str = Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    password: str = Field(min_length=10, max_length=256)
    role: RoleName = "researcher"


class UsersPublic(BaseModel):
    data: list[UserPublic]
    count: int


class LoginResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    user: UserPublic


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    expires_in_days: int | None = Field(default=90, ge=1, le=3650)


class TokenPublic(ORMModel):
    id: int
    name: str
    kind: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenPublic):
    token: str
