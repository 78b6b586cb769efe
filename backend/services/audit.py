"""The audit log: who viewed, downloaded, rated or exported what, and when.

Routes that hand out patient data or record a judgement write one ``AuditEvent`` in the same
transaction as their own work (or in a short one of their own for read-only routes). Site
admins read the log through ``GET /api/v1/audit``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.models import AuditEvent, User

__all__ = ["record", "search"]


def record(
    session: Session,
    *,
    user: User,
    action: str,
    object_type: str,
    object_id: int | None = None,
    project_id: int | None = None,
    detail: str = "",
    client_ip: str = "",
) -> AuditEvent:
    """Add one event to the session (the caller commits)."""
    event = AuditEvent(
        user_id=user.id,
        username=user.username,
        action=action,
        object_type=object_type,
        object_id=object_id,
        project_id=project_id,
        detail=detail[:255],
        client_ip=client_ip[:64],
    )
    session.add(event)
    return event


def search(
    session: Session,
    *,
    user_id: int | None = None,
    username: str | None = None,
    action: str | None = None,
    object_type: str | None = None,
    object_id: int | None = None,
    project_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[AuditEvent], int]:
    """Events matching every given filter, newest first, and how many match in all."""
    query = select(AuditEvent)
    for column, value in (
        (AuditEvent.user_id, user_id),
        (AuditEvent.username, username),
        (AuditEvent.action, action),
        (AuditEvent.object_type, object_type),
        (AuditEvent.object_id, object_id),
        (AuditEvent.project_id, project_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(AuditEvent.created_at >= _utc(since))
    if until is not None:
        query = query.where(AuditEvent.created_at < _utc(until))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit).offset(offset)).all()
    return list(rows), total


def _utc(moment: datetime) -> datetime:
    """A time without a zone is taken as UTC (how the log stores its times)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
