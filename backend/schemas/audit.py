"""The audit log as the API shows it to site admins."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from backend.schemas.common import ORMModel

AuditAction = Literal["view", "download", "rate", "export"]


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
