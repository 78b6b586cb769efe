"""The audit log (site admins only): who viewed, downloaded, rated or exported what."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from backend.api.deps import Admin, SessionDep
from backend.schemas.audit import AuditAction, AuditEventPublic, AuditEventsPublic
from backend.services import audit as svc

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", operation_id="listAuditEvents")
def list_audit_events(
    admin: Admin,
    session: SessionDep,
    user_id: int | None = None,
    username: Annotated[str | None, Query(max_length=64)] = None,
    action: AuditAction | None = None,
    object_type: Annotated[str | None, Query(max_length=32)] = None,
    object_id: int | None = None,
    project_id: int | None = None,
    since: Annotated[datetime | None, Query(description="events at or after this time")] = None,
    until: Annotated[datetime | None, Query(description="events before this time")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> AuditEventsPublic:
    """Audit events, newest first, filtered by user, action, object, project and time."""
    rows, total = svc.search(
        session,
        user_id=user_id,
        username=username,
        action=action,
        object_type=object_type,
        object_id=object_id,
        project_id=project_id,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )
    return AuditEventsPublic(data=[AuditEventPublic.model_validate(r) for r in rows], count=total)
