from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from backend.schemas.common import ORMModel

ProjectRole = Literal["admin", "researcher", "clinician"]


class ProjectCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=5000)


class ProjectPublic(ORMModel):
    id: int
    name: str
    description: str
    created_at: datetime
    review_blinded: bool = Field(
        default=True,
        description="the review round is blinded: clinicians see no run, method or map id",
    )
    role: ProjectRole | None = None  # the caller's role in it


class ProjectUpdate(BaseModel):
    """A project admin's change to the project; omitted fields stay as they are."""

    description: str | None = Field(default=None, max_length=5000)
    review_blinded: bool | None = Field(
        default=None,
        description="blind the project's review round (its clinicians see no run, method or "
        "map id) or open it",
    )


class ProjectsPublic(BaseModel):
    data: list[ProjectPublic]
    count: int


class MemberSet(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    role: ProjectRole


class MemberPublic(BaseModel):
    user_id: int
    username: str
    role: ProjectRole


class MembersPublic(BaseModel):
    data: list[MemberPublic]
    count: int
