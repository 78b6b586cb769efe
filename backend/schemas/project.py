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
    role: ProjectRole | None = None  # the caller's role in it


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
