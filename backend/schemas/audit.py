"""The audit log as the API shows it to site admins."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from backend.schemas.common import ORMModel

# Patient data and judgements (view ... export); accounts, memberships and blinding (the rest).
AuditAction = Literal[
    "view",
    "download",
    "rate",
    "export",
    "member_add",
    "member_role",
    "member_remove",
    "review_blinding",
    "user_create",
    "user_activate",
    "user_deactivate",
    "password_change",
    "password_reset",
]


class AuditEventPublic(ORMModel):
    id: int
    created_at: datetime
    user_id: int | None
    username: str
    action: str
    object_type: str
    object_id: int | None
    project_id: int | None
    detail: str
    client_ip: str


class AuditEventsPublic(BaseModel):
    data: list[AuditEventPublic]
    count: int  # events matching the filters (data holds at most ``limit`` of them)
